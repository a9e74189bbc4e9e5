"""Figure 3, scale: N concurrent generations in one client process against an emulator running in
another process (``hybridgen serve``), push on (``normal``) and push silent.

For each mode and N the benchmark starts ``hybridgen serve --port 0 --gen-time G`` (its first
stdout line is its URL), then a fresh client process (so its peak RSS is its own) that starts N
generations at once with the default policy (real timings, unscaled) and waits for all of them. It
reports client CPU seconds per generation (``time.process_time()``), peak RSS per in-flight
generation (``VmHWM`` minus ``VmRSS`` before the first start, over the most generations alive at
once), the time to drain (first start to last terminal state, beside G) and the server's CPU per
generation. The soft ``RLIMIT_NOFILE`` is raised to the hard limit in both processes::

    python -m hybridgen.bench scale [--smoke] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from ._report import Figure, figure

__all__ = ["SIZES", "measure", "raise_fd_limit", "run"]

SIZES: Final = (100, 1000, 10000)
SMOKE_SIZES: Final = (20,)
MODES: Final = ("normal", "silent")
CPU_GOAL_MS: Final = 1.0
RSS_GOAL_KB: Final = 50.0
START_TIMEOUT: Final = 30.0


def gen_time(n: int, smoke: bool) -> float:
    """The emulated generation time for N generations: long enough for all to be in flight."""
    if smoke:
        return 0.5
    return 5.0 if n <= 1000 else 30.0


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return ``(soft, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client process -------------------------------------------------------------------------


async def _client(url: str, n: int) -> dict[str, Any]:
    from ..api import Config, ImageRequest
    from ..driver import Client, Generation
    from ..events import Event
    from ..transport import SuperDuperTransport

    config = Config(url=url, token="bench", allow_insecure=True)
    gens: list[Generation] = []
    live = max_live = 0
    max_fds = 0

    def on_event(event: Event) -> None:
        nonlocal live
        if event.terminal:
            live -= 1

    async def sample_fds() -> None:
        nonlocal max_fds
        while True:
            max_fds = max(max_fds, len(os.listdir("/proc/self/fd")))
            await trio.sleep(0.2)

    async with Client(SuperDuperTransport(config)) as client:
        client.subscribe(on_event)
        rss0 = _status_kb("VmRSS")
        cpu0 = time.process_time()
        t0 = trio.current_time()
        async with trio.open_nursery() as outer:
            outer.start_soon(sample_fds)
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    gen = await nursery.start(client.start, ImageRequest(prompt="a red fox"))
                    gens.append(gen)
                    live += 1
                    max_live = max(max_live, live)
                started_in = trio.current_time() - t0
            outer.cancel_scope.cancel()
        wall = trio.current_time() - t0
        cpu = time.process_time() - cpu0
        hwm = _status_kb("VmHWM")
    results = [g.result() for g in gens]
    return {
        "n": n,
        "states": collections.Counter(str(r.state) for r in results),
        "channels": collections.Counter(str(r.channel) for r in results),
        "reasons": collections.Counter(r.reason for r in results if r.reason).most_common(3),
        "polls": sum(r.polls for r in results),
        "poll_errors": sum(r.poll_errors for r in results),
        "ws_failures": sum(r.ws_failures for r in results),
        "cpu": cpu,
        "rss0_kb": rss0,
        "hwm_kb": hwm,
        "wall": wall,
        "started_in": started_in,
        "max_live": max_live,
        "max_fds": max_fds,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def _worker(url: str, n: int) -> int:
    raise_fd_limit()
    print(json.dumps(trio.run(_client, url, n)), flush=True)
    return 0


# -- the parent -----------------------------------------------------------------------------------


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout).strip()
    except queue.Empty:
        raise RuntimeError("the emulator did not print its URL in time") from None
    if not line.startswith("http"):
        raise RuntimeError(f"the emulator printed {line!r} instead of its URL")
    return line


def measure(mode: str, n: int, gen: float, timeout: float) -> dict[str, Any]:
    """Run one size against a fresh ``hybridgen serve`` process; client and server figures."""
    raise_fd_limit()  # inherited by both child processes
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridgen",
            "serve",
            "--port",
            "0",
            "--ws-mode",
            mode,
            "--gen-time",
            str(gen),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = _first_line(server, START_TIMEOUT)
        server_cpu0 = _cpu_of(server.pid)
        done = subprocess.run(
            [sys.executable, "-m", "hybridgen.bench.scale", "--worker", url, str(n)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the client process failed: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        out["server_cpu"] = _cpu_of(server.pid) - server_cpu0
        out["server_hwm_kb"] = _status_kb("VmHWM", str(server.pid))
        out["server_fds_after"] = len(os.listdir(f"/proc/{server.pid}/fd"))
        return out
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def run(
    smoke: bool = False,
    sizes: Sequence[int] | None = None,
    modes: Sequence[str] = MODES,
    timeout: float | None = None,
) -> list[Figure]:
    """Measure figure 3 for each mode and size; raw measurements go to stderr as JSON too."""
    sizes = tuple(sizes or (SMOKE_SIZES if smoke else SIZES))
    figures: list[Figure] = []
    for mode in modes:
        for n in sizes:
            g = gen_time(n, smoke)
            m = measure(mode, n, g, timeout=timeout or (60 if smoke else 900))
            print(f"# scale {mode} N={n} G={g:g}s: {json.dumps(m)}", file=sys.stderr, flush=True)
            key = f"scale.{mode}.n{n}"
            done = m["states"].get("done", 0) / n
            figures += [
                figure(f"{key}.done", done, "fraction", 1.0, higher_is_better=True),
                figure(f"{key}.client_cpu_per_generation", 1e3 * m["cpu"] / n, "ms", CPU_GOAL_MS),
                figure(
                    f"{key}.peak_rss_per_generation",
                    (m["hwm_kb"] - m["rss0_kb"]) * 1024 / 1000 / max(m["max_live"], 1),
                    "KB",
                    RSS_GOAL_KB,
                ),
                figure(f"{key}.drain", m["wall"], "s", g),
                figure(
                    f"{key}.server_cpu_per_generation",
                    1e3 * m["server_cpu"] / n,
                    "ms",
                    1e3 * m["cpu"] / n,
                ),
            ]
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybridgen.bench.scale``: the benchmark, or (``--worker URL N``) one client."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--sizes", help="comma-separated N values")
    parser.add_argument("--modes", default=",".join(MODES), help="normal,silent")
    parser.add_argument("--timeout", type=float, help="seconds one client process may take")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]))
    from ._report import emit

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    emit(run(args.smoke, sizes, args.modes.split(","), args.timeout), title="# scale")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
