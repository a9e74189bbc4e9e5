"""Figure 5, events: transitions per second through the subscriber fan-out (:class:`Hub`).

Each generation is a :class:`~hybridgen.core.Core` taking the default path (start, ws_timeout,
poll_result: three transitions, each an immutable :class:`~hybridgen.events.Transition`) with its
sink on a :class:`~hybridgen.events.Hub` holding 0, 1 or 10 sync callbacks, or 1 or 10 async
streams read by trio tasks. The baseline is the same run with no subscriber::

    python -m hybridgen.bench events [--smoke]
"""

from __future__ import annotations

import time

import trio
import trio.testing

from ..core import Core
from ..events import Event, EventStream, Hub
from ..machine import State
from ..policy import Policy
from ..wire import FileStatus
from ._report import Figure, figure

__all__ = ["run"]

POLICY = Policy.default()
FILE = FileStatus("f1")
DONE = FileStatus("f1", url="u")
PER_GENERATION = 3
BATCH = 64
"""Generations emitted between checkpoints in the async case (3 x 64 events < the buffer)."""


def _generation(hub: Hub) -> None:
    core = Core("g", POLICY, hub.emit, 0.0)
    core.accepted(FILE, 0.0)
    core.advance(POLICY.push_timeout)
    core.poll_sent(2.0)
    core.poll_reply(DONE, 2.1)


def _noop(event: Event) -> None:
    pass


def sync_rate(subscribers: int, n: int) -> float:
    """Transitions per second with ``subscribers`` sync callbacks."""
    hub = Hub()
    for _ in range(subscribers):
        hub.subscribe(_noop)
    start = time.perf_counter()
    for _ in range(n):
        _generation(hub)
    return PER_GENERATION * n / (time.perf_counter() - start)


def async_rate(streams: int, n: int) -> float:
    """Transitions per second with ``streams`` async streams, each read by its own task."""

    async def main() -> float:
        hub = Hub()
        received = [0] * streams

        async def read(i: int, stream: EventStream) -> None:
            async for _ in stream:
                received[i] += 1

        async with trio.open_nursery() as nursery:
            subs = [hub.stream(4 * PER_GENERATION * BATCH, follows=None) for _ in range(streams)]
            for i, s in enumerate(subs):
                nursery.start_soon(read, i, s)
            await trio.testing.wait_all_tasks_blocked()
            start = time.perf_counter()
            for k in range(n):
                _generation(hub)
                if k % BATCH == BATCH - 1:
                    await trio.lowlevel.checkpoint()
            for s in subs:
                s.close()
        elapsed = time.perf_counter() - start
        lost = sum(s.dropped for s in subs)
        if lost or any(r != PER_GENERATION * n for r in received):
            raise RuntimeError(f"the async readers lost events: {received}, dropped {lost}")
        return PER_GENERATION * n / elapsed

    return trio.run(main)


def run(smoke: bool = False, n: int | None = None) -> list[Figure]:
    """Measure figure 5 (the best of three runs of each case, to damp a shared machine's noise)."""
    n = n or (500 if smoke else 20000)
    repeats = 1 if smoke else 3
    _generation(Hub())
    assert State.DONE  # the path ends in done (checked by bench.machine too)
    base = max(sync_rate(0, n) for _ in range(repeats))
    figures = [
        figure("events.sync.0_subscribers", base, "transitions/s", base, higher_is_better=True)
    ]
    for k in (1, 10):
        rate = max(sync_rate(k, n) for _ in range(repeats))
        figures.append(
            figure(
                f"events.sync.{k}_subscribers", rate, "transitions/s", base, higher_is_better=True
            )
        )
    for k in (1, 10):
        rate = max(async_rate(k, n) for _ in range(repeats))
        figures.append(
            figure(f"events.async.{k}_streams", rate, "transitions/s", base, higher_is_better=True)
        )
    return figures
