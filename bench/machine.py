"""Machine overhead: one generation's state machine, ours vs a ``transitions.Machine`` per object.

Both build the machine for one generation and run the same triggers (start, ws_timeout,
poll_result). Prints one JSON object per figure on stdout, a table on stderr:

    python -m bench.machine [--n 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable

from transitions import Machine

from hybridgen.api import FileStatus
from hybridgen.core import Core
from hybridgen.machine import INITIAL, TRANSITIONS, State, _plain
from hybridgen.policy import Policy

POLICY = Policy.default()
FILE = FileStatus("f1")
DONE = FileStatus("f1", url="u")


def _sink(event: object) -> None:
    pass


def ours() -> object:
    core = Core("g", POLICY, _sink, 0.0)
    core.accepted(FILE, 0.0)
    core.advance(POLICY.ws_timeout)
    core.poll_sent(2.0)
    core.poll_reply(DONE, 2.1)
    assert core.state is State.DONE
    return core


class _Model:
    state: str


_KW = {
    "states": [s.value for s in State],
    "transitions": [{k: _plain(v) for k, v in t.items()} for t in TRANSITIONS],
    "initial": INITIAL.value,
    "auto_transitions": False,
}


def per_object() -> object:
    model = _Model()
    Machine(model=model, **_KW)
    model.start()  # type: ignore[attr-defined]
    model.ws_timeout()  # type: ignore[attr-defined]
    model.poll_result()  # type: ignore[attr-defined]
    assert model.state == "done"
    return model


def cpu_per_call(fn: Callable[[], object], n: int) -> float:
    gc.collect()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def bytes_per_object(fn: Callable[[], object], n: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [fn() for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="generations per measurement")
    args = parser.parse_args(argv)
    n = args.n
    cpu_ours, cpu_base = cpu_per_call(ours, n), cpu_per_call(per_object, max(n // 10, 1))
    mem_ours, mem_base = bytes_per_object(ours, n), bytes_per_object(per_object, max(n // 10, 1))
    figures = [
        {
            "name": "machine.cpu_per_generation",
            "value": cpu_ours * 1e6,
            "unit": "us",
            "baseline": cpu_base * 1e6,
            "ratio": cpu_base / cpu_ours,
        },
        {
            "name": "machine.bytes_per_generation",
            "value": mem_ours,
            "unit": "B",
            "baseline": mem_base,
            "ratio": mem_base / mem_ours,
        },
    ]
    for f in figures:
        print(json.dumps(f))
    print(f"{'figure':34} {'ours':>10} {'Machine/object':>15} {'ratio':>8}", file=sys.stderr)
    for f in figures:
        print(
            f"{f['name']:34} {f['value']:>8.1f}{f['unit']:>2} {f['baseline']:>13.1f}{f['unit']:>2}"
            f" {f['ratio']:>7.1f}x",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
