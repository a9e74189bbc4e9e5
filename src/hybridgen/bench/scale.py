"""Figure 3, scale: N concurrent generations in one client process, hybridgen beside a hand-written
asyncio + aiohttp client (:mod:`hybridgen.bench.baseline`) in the same run.

For each push mode (``silent``, the default: the push never comes, on the legacy socket and on
SSE alike, so both clients learn the result by polling, like for like; ``normal``: the push
works; ``--smoke`` runs both), each N and each client, the benchmark starts its own
``hybridgen serve --port 0 --ws-mode M --sse-mode M --gen-time G`` process (its first
stdout line is its URL), then a fresh client process (so its CPU and peak RSS are its own) that
starts N generations at once and waits for all of them; the two clients run one after the other,
their order alternating between repetitions. hybridgen uses a preset policy (``--policy``: the
default, or ``lean`` with one push connection per generation; real timings, unscaled); the
baseline polls every 2 s. Reported per client: CPU per generation (``getrusage`` of
the client process from the first start to the last end, less what sampling its open descriptors
took), peak RSS per generation in flight
(``VmHWM`` minus ``VmRSS`` before the first start, over the most generations alive at once),
done / failed (the server says the job failed) / lost (anything else: a start or the deadline
failed), HTTP requests per generation (start + polls, counted by the server), the time to drain
and the server's CPU per generation. The soft ``RLIMIT_NOFILE`` is raised to the hard limit::

    python -m hybridgen.bench.scale [--smoke] [--sizes 100,1000,5000] [--repeat 3] [--plot PNG]
                                    [--modes silent,normal] [--policy default|lean|...] [--steps]

``--steps`` (always with ``--smoke``) also counts hybridgen's trio task steps and tasks per
generation (a :class:`StepCounter` instrument in the client process; its own calls then cost a
little CPU there, so full runs leave it off unless asked).

The summary on stderr gives, per mode and N, hybridgen's CPU per generation as a multiple of the
loop's, the drain times and requests per generation side by side, and how flat the cost is in N
(the largest N's CPU per generation over that at 1,000, or at the smallest N).
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
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any, Final

import trio

from ._report import Figure, figure

__all__ = ["CLIENTS", "SIZES", "StepCounter", "measure", "raise_fd_limit", "run"]

SIZES: Final = (100, 1000, 5000)
SMOKE_SIZES: Final = (20,)
MODES: Final = ("silent", "normal")
"""Every push mode; ``--smoke`` runs them all."""
DEFAULT_MODES: Final = ("silent",)
"""The modes a full run measures unless ``--modes`` says otherwise: both channels silent, as the
loop's own push is (like for like)."""
CLIENTS: Final = ("hybridgen", "aiohttp")
"""The clients measured: hybridgen and the hand-written baseline, in this order on odd runs."""
CPU_GOAL_RATIO: Final = 1.0
"""hybridgen's client CPU per generation may be at most this many times the baseline's."""
FLAT_GOAL_RATIO: Final = 1.2
"""CPU per generation at the largest N may be at most this many times that at 1,000."""
DRAIN_GOAL_RATIO: Final = 1.1
"""hybridgen's time to drain N generations may be at most this many times the baseline's."""
START_TIMEOUT: Final = 30.0
STEP_BOUND: Final = 40.0
"""Task steps per generation ``--smoke`` must stay under (about 20 today, 3 polls or an SSE
result each): the guard against a wake-up loop, or a task woken on every change of the core."""


class StepCounter(trio.abc.Instrument):
    """Counts trio's scheduler work while installed: task steps (each a wake-up of a task,
    run until it waits again) and tasks spawned."""

    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """One more step."""
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        """One more task."""
        self.spawned += 1


def gen_time(smoke: bool) -> float:
    """The emulated generation time: short jobs (5 s) keep the 5,000 runs to minutes."""
    return 0.5 if smoke else 5.0


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


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _outcome(state: str, reason: str) -> str:
    """``done``, ``failed`` (the server reported the job failed) or ``lost`` (anything else)."""
    if state == "done":
        return "done"
    return "failed" if reason.startswith("the server reports the job failed") else "lost"


async def _client(
    url: str, n: int, policy: str = "default", count_steps: bool = False
) -> dict[str, Any]:
    from ..config import Config
    from ..driver import Client, Generation
    from ..events import Event
    from ..policy import PRESETS
    from ..transport import SuperDuperTransport
    from ..wire import ImageRequest

    config = Config(url=url, token="bench", allow_insecure=True)
    gens: list[Generation] = []
    live = max_live = 0
    max_fds = 0

    def on_event(event: Event) -> None:
        nonlocal live
        if event.terminal:
            live -= 1

    sampling = 0.0  # the sampler's own CPU, not the client's (the baseline samples nothing)

    async def sample_fds() -> None:
        nonlocal max_fds, sampling
        while True:
            t = time.process_time()
            max_fds = max(max_fds, len(os.listdir("/proc/self/fd")))
            sampling += time.process_time() - t
            await trio.sleep(0.2)

    counter = StepCounter()
    async with Client(SuperDuperTransport(config), policy=PRESETS[policy]()) as client:
        client.subscribe(on_event)
        rss0 = _status_kb("VmRSS")
        if count_steps:  # its own calls cost CPU: counted only when asked (--smoke, --steps)
            trio.lowlevel.add_instrument(counter)
        cpu0 = _cpu_self()
        t0 = trio.current_time()
        async with trio.open_nursery() as outer:
            outer.start_soon(sample_fds)
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    gen = await nursery.start(client.start, ImageRequest(prompt="a red fox"))
                    gens.append(gen)
                    live += 1
                    max_live = max(max_live, live)
            outer.cancel_scope.cancel()
        wall = trio.current_time() - t0
        cpu = _cpu_self() - cpu0 - sampling
        if count_steps:
            trio.lowlevel.remove_instrument(counter)
        hwm = _status_kb("VmHWM")
    results = [g.result() for g in gens]
    return {
        "n": n,
        "states": collections.Counter(_outcome(str(r.state), r.reason) for r in results),
        "channels": collections.Counter(str(r.channel) for r in results),
        "reasons": collections.Counter(r.reason for r in results if r.reason).most_common(3),
        "polls": sum(r.polls for r in results),
        "poll_errors": sum(r.poll_errors for r in results),
        "push_failures": sum(r.push_failures for r in results),
        "cpu": cpu,
        "rss0_kb": rss0,
        "hwm_kb": hwm,
        "wall": wall,
        "max_live": max_live,
        "max_fds": max_fds,
        "fd_sampling_cpu": sampling,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        # the sampler's steps (every 0.2 s) are left in: a few per second against thousands
        "task_steps": counter.steps if count_steps else None,
        "tasks_spawned": counter.spawned if count_steps else None,
    }


def _worker(url: str, n: int, policy: str, count_steps: bool = False) -> int:
    raise_fd_limit()
    print(json.dumps(trio.run(_client, url, n, policy, count_steps)), flush=True)
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


@contextlib.contextmanager
def _server(mode: str, gen: float) -> Iterator[tuple[str, int]]:
    """A ``hybridgen serve`` process of its own: ``(url, pid)``; stopped on exit."""
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
            "--sse-mode",
            mode,
            "--gen-time",
            str(gen),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield _first_line(server, START_TIMEOUT), server.pid
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _command(
    client: str, url: str, n: int, policy: str = "default", count_steps: bool = False
) -> list[str]:
    if client == "hybridgen":
        command = [sys.executable, "-m", "hybridgen.bench.scale", "--worker", url, str(n), policy]
        return [*command, "--count-steps"] if count_steps else command
    if client == "aiohttp":
        return [sys.executable, "-m", "hybridgen.bench.baseline", url, str(n)]
    raise ValueError(f"unknown client {client!r}; choose from {', '.join(CLIENTS)}")


def measure(
    client: str,
    mode: str,
    n: int,
    gen: float,
    timeout: float,
    policy: str = "default",
    count_steps: bool = False,
) -> dict[str, Any]:
    """Run ``client`` with N generations against a fresh ``hybridgen serve``; its figures
    (with ``count_steps``, hybridgen's task steps and tasks spawned too)."""
    raise_fd_limit()  # inherited by both child processes
    with _server(mode, gen) as (url, pid):
        command = _command(client, url, n, policy, count_steps)
        server_cpu0 = _cpu_of(pid)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the {client} client process failed: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        out["server_cpu"] = _cpu_of(pid) - server_cpu0
        out["server_hwm_kb"] = _status_kb("VmHWM", str(pid))
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as reply:
            out["server"] = json.loads(reply.read())
    out["client"] = client
    return out


def _per_gen(m: dict[str, Any]) -> dict[str, float]:
    """The figures of one measurement, per generation where that makes sense."""
    n = m["n"]
    states = m["states"]
    steps = {}
    if m.get("task_steps") is not None:  # hybridgen's, when counted
        steps = {"steps": m["task_steps"] / n, "tasks": m["tasks_spawned"] / n}
    return {
        **steps,
        "cpu_ms": 1e3 * m["cpu"] / n,
        "kb": (m["hwm_kb"] - m["rss0_kb"]) * 1024 / 1000 / max(m["max_live"], 1),
        "done": states.get("done", 0) / n,
        "failed": states.get("failed", 0),
        "lost": states.get("lost", 0),
        "requests": (m["server"].get("start", 0) + m["server"].get("poll", 0)) / n,
        "drain": m["wall"],
        "server_cpu_ms": 1e3 * m["server_cpu"] / n,
    }


def _median(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def run(
    smoke: bool = False,
    sizes: Sequence[int] | None = None,
    modes: Sequence[str] | None = None,
    timeout: float | None = None,
    *,
    repeat: int = 1,
    plot: str | None = None,
    gen: float | None = None,
    policy: str = "default",
    count_steps: bool | None = None,
) -> list[Figure]:
    """Measure figure 3 for each mode and size, hybridgen beside the baseline (medians of
    ``repeat`` runs each); raw measurements go to stderr as JSON too, ``plot`` draws CPU per
    generation against N for both clients. ``count_steps`` (default: with ``smoke``) adds
    hybridgen's trio task steps per generation (counted by an instrument, whose own calls
    then cost CPU too)."""
    if count_steps is None:
        count_steps = smoke
    sizes = tuple(sizes or (SMOKE_SIZES if smoke else SIZES))
    modes = tuple(modes or (MODES if smoke else DEFAULT_MODES))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    g = gen if gen is not None else gen_time(smoke)
    figures: list[Figure] = []
    curves: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
    for mode in modes:
        for n in sizes:
            runs: dict[str, list[dict[str, float]]] = {c: [] for c in CLIENTS}
            for rep in range(repeat):
                for client in CLIENTS if rep % 2 == 0 else CLIENTS[::-1]:
                    m = measure(
                        client,
                        mode,
                        n,
                        g,
                        timeout=timeout or (60 if smoke else 900),
                        policy=policy,
                        count_steps=count_steps,
                    )
                    print(
                        f"# scale {client} ({policy}) {mode} N={n} G={g:g}s: {json.dumps(m)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[client].append(_per_gen(m))
            ours, base = _median(runs["hybridgen"]), _median(runs["aiohttp"])
            for client, values in (("hybridgen", ours), ("aiohttp", base)):
                curves[(client, mode)].append((n, values["cpu_ms"]))
            key = f"scale.{mode}.n{n}"
            figures += [
                figure(f"{key}.client_cpu_per_generation", ours["cpu_ms"], "ms", base["cpu_ms"]),
                figure(f"{key}.peak_rss_per_generation", ours["kb"], "KB", base["kb"]),
                figure(
                    f"{key}.done", ours["done"], "fraction", base["done"], higher_is_better=True
                ),
                figure(f"{key}.failed", ours["failed"], "generations", base["failed"]),
                figure(f"{key}.lost", ours["lost"], "generations", base["lost"]),
                figure(
                    f"{key}.requests_per_generation", ours["requests"], "requests", base["requests"]
                ),
                figure(f"{key}.drain", ours["drain"], "s", base["drain"]),
                figure(
                    f"{key}.server_cpu_per_generation",
                    ours["server_cpu_ms"],
                    "ms",
                    base["server_cpu_ms"],
                ),
            ]
            if "steps" in ours:  # hybridgen's own: the loop's asyncio steps are not counted
                figures += [
                    figure(f"{key}.task_steps_per_generation", ours["steps"], "steps", None),
                    figure(f"{key}.tasks_per_generation", ours["tasks"], "tasks", None),
                ]
    if plot is not None:
        from .plot import scale_plot

        scale_plot(curves, plot)
    return figures


def summary(figures: Sequence[Figure]) -> str:
    """hybridgen beside the baseline, per mode and N: CPU per generation as a multiple of the
    baseline's, drain times and requests per generation side by side, and how flat the CPU per
    generation is in N (lower is better everywhere)."""
    by = {f["name"]: f for f in figures}
    cells = [
        f["name"].removesuffix(".client_cpu_per_generation")
        for f in figures
        if f["name"].endswith(".client_cpu_per_generation")
    ]
    lines = [
        f"# hybridgen CPU/gen ÷ aiohttp CPU/gen (lower is better; goal ≤ {CPU_GOAL_RATIO:g}), "
        f"drain hybridgen / aiohttp (goal ≤ {DRAIN_GOAL_RATIO:g}x), "
        "requests/gen hybridgen / aiohttp"
    ]
    for cell in cells:
        cpu, drain = by[f"{cell}.client_cpu_per_generation"], by.get(f"{cell}.drain")
        requests = by.get(f"{cell}.requests_per_generation")
        words = [f"{cell}: {_times(cpu)}"]
        if drain is not None:
            words.append(f"drain {_pair(drain, 's')} ({_times(drain)})")
        if requests is not None:
            words.append(f"requests/gen {_pair(requests, '')}")
        steps = by.get(f"{cell}.task_steps_per_generation")
        if steps is not None and steps["value"] is not None:
            words.append(f"hybridgen task steps/gen {steps['value']:.3g}")
        lost = by.get(f"{cell}.lost")
        if lost is not None and (lost["value"] or lost["baseline"]):
            ours, theirs = int(lost["value"] or 0), int(lost["baseline"] or 0)
            words.append(f"LOST {ours} / {theirs}: the CPU per generation is not like for like")
        lines.append(", ".join(words))
    for mode in dict.fromkeys(cell.split(".")[1] for cell in cells):
        per_n: dict[int, float] = {}
        for cell in cells:
            value = by[f"{cell}.client_cpu_per_generation"]["value"]
            if cell.split(".")[1] == mode and value:
                per_n[int(cell.rsplit(".n", 1)[1])] = value
        if len(per_n) < 2:
            continue
        top = max(per_n)
        low = 1000 if 1000 in per_n and top != 1000 else min(per_n)
        lines.append(
            f"flat in N ({mode}): hybridgen CPU/gen at N={top} ÷ at N={low}: "
            f"{per_n[top] / per_n[low]:.2f}x (goal ≤ {FLAT_GOAL_RATIO:g})"
        )
    return "\n".join(lines)


def _times(f: Figure) -> str:
    """ours ÷ baseline, from a figure's ratio (baseline ÷ ours for a lower-is-better figure)."""
    return f"{1 / f['ratio']:.2f}x" if f["ratio"] else "-"


def _pair(f: Figure, unit: str) -> str:
    return f"{f['value'] or 0:.3g}{unit} / {f['baseline'] or 0:.3g}{unit}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybridgen.bench.scale``: the benchmark, or (``--worker URL N``) one client."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--sizes", help="comma-separated N values")
    parser.add_argument(
        "--modes",
        help=f"comma-separated push modes: {', '.join(MODES)} "
        f"(default: {', '.join(DEFAULT_MODES)}; --smoke: all)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per client; medians reported")
    parser.add_argument("--gen-time", type=float, help="emulated generation time, seconds")
    parser.add_argument("--plot", metavar="PNG", help="draw CPU per generation against N")
    parser.add_argument("--timeout", type=float, help="seconds one client process may take")
    parser.add_argument("--policy", default="default", help="hybridgen's preset (default, lean...)")
    parser.add_argument(
        "--steps",
        action="store_true",
        help="count hybridgen's trio task steps per generation (always with --smoke)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("URL", "N", "POLICY"), help=argparse.SUPPRESS)
    parser.add_argument("--count-steps", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from ..policy import PRESETS

    if args.policy not in PRESETS:
        parser.error(f"--policy: unknown preset {args.policy!r}; choose from {', '.join(PRESETS)}")
    modes = args.modes.split(",") if args.modes else None
    if modes is not None and any(m not in MODES for m in modes):
        bad = next(m for m in modes if m not in MODES)
        parser.error(f"--modes: unknown mode {bad!r}; choose from {', '.join(MODES)}")
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]), args.worker[2], args.count_steps)
    from ._report import emit

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    figures = run(
        args.smoke,
        sizes,
        modes,
        args.timeout,
        repeat=args.repeat,
        plot=args.plot,
        gen=args.gen_time,
        policy=args.policy,
        count_steps=args.steps or args.smoke,
    )
    emit(figures, title="# scale: ratio above 1 means hybridgen beats the aiohttp loop")
    print(summary(figures), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
