"""Figure 4, machine overhead: one generation's state machine, ours vs a ``Machine`` per object.

Both build the machine for one generation and run the same triggers (start, ws_timeout,
poll_result) with no I/O. Ours is a :class:`~hybridgen.core.Core` firing through the shared
definition; the baseline is a plain ``transitions.Machine`` built per object::

    python -m hybridgen.bench machine [--smoke]
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from transitions import Machine

from ..core import Core
from ..machine import INITIAL, TRANSITIONS, State, _plain
from ..policy import Policy
from ..wire import FileStatus
from ._report import Figure, figure

__all__ = ["per_object", "ours", "run"]

POLICY = Policy.default()
FILE = FileStatus("f1")
DONE = FileStatus("f1", url="u")


def _sink(event: object) -> None:
    pass


def ours() -> object:
    """One generation's machine, ours: build it and run start, ws_timeout, poll_result."""
    core = Core("g", POLICY, _sink, 0.0)
    core.accepted(FILE, 0.0)
    core.advance(POLICY.push_timeout)
    core.poll_sent(2.0)
    core.poll_reply(DONE, 2.1)
    assert core.state is State.DONE
    return core


class _Model:
    state: str


_KW: dict[str, Any] = {
    "states": [s.value for s in State],
    "transitions": [{k: _plain(v) for k, v in t.items()} for t in TRANSITIONS],
    "initial": INITIAL.value,
    "auto_transitions": False,
}


def per_object() -> object:
    """The baseline: a ``transitions.Machine`` per object doing the same triggers."""
    model = _Model()
    Machine(model=model, **_KW)
    model.start()  # type: ignore[attr-defined]
    model.ws_timeout()  # type: ignore[attr-defined]
    model.poll_result()  # type: ignore[attr-defined]
    assert model.state == "done"
    return model


def cpu_per_call(fn: Callable[[], object], n: int) -> float:
    """CPU seconds per call of ``fn`` over ``n`` calls."""
    gc.collect()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def bytes_per_object(fn: Callable[[], object], n: int) -> float:
    """Bytes (tracemalloc) each result of ``fn`` keeps alive, over ``n`` kept results."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [fn() for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n


def run(smoke: bool = False, n: int | None = None) -> list[Figure]:
    """Measure figure 4; ``smoke`` runs a tiny ``n``."""
    n = n or (200 if smoke else 20000)
    m = max(n // 10, 1)
    cpu_ours, cpu_base = cpu_per_call(ours, n), cpu_per_call(per_object, m)
    mem_ours, mem_base = bytes_per_object(ours, n), bytes_per_object(per_object, m)
    return [
        figure("machine.cpu_per_generation", cpu_ours * 1e6, "us", cpu_base * 1e6),
        figure("machine.bytes_per_generation", mem_ours, "B", mem_base),
    ]
