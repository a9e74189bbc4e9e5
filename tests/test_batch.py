"""Batches: a concurrency limit, per-item results, partial failure."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hybridgen import Client, Generation, ImageRequest, State
from hybridgen.batch import run_batch
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.events import Event, Transition
from hybridgen.testing import MemoryTransport


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_concurrency_limit_and_results_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = ServerModel(Faults(gen_time=10, sse_mode="normal"))  # pushed: each takes 10 s
    client = Client(MemoryTransport(model))
    live = 0
    peak = 0

    def follow(event: Event) -> None:
        nonlocal live, peak
        if isinstance(event, Transition) and event.trigger == "start":
            live += 1
            peak = max(peak, live)
        elif event.terminal:
            live -= 1

    client.subscribe(follow)
    t0 = trio.current_time()
    results = await run_batch(client, [f"fox {k}" for k in range(10)], concurrency=3)
    assert [r.state for r in results] == [State.DONE] * 10
    assert len({r.file_id for r in results}) == 10
    assert peak == 3
    assert trio.current_time() - t0 == pytest.approx(40.0)  # ceil(10 / 3) rounds of 10 s
    assert model.counts["start"] == 10


async def test_one_failure_does_not_stop_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    model = ServerModel(Faults(gen_time=5))
    bad = "00000000-0000-4000-8000-000000000002"
    model.project_faults[bad] = Faults(gen_time=2, job_fails=True)
    started: list[int] = []

    def note(index: int, gen: Generation) -> None:
        started.append(index)
        if index == 2:
            gen.cancel("the user removed this item")

    requests = ["p0", ImageRequest(prompt="p1", project_id=bad), "p2", "p3"]
    results = await run_batch(
        Client(MemoryTransport(model)), requests, concurrency=2, on_start=note
    )
    assert [r.state for r in results] == [State.DONE, State.FAILED, State.CANCELLED, State.DONE]
    assert "job failed" in results[1].reason
    assert started == [0, 1, 2, 3]  # items start in order


async def test_fail_fast_cancels_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    model = ServerModel(Faults(gen_time=5))
    bad = "00000000-0000-4000-8000-000000000001"
    model.project_faults[bad] = Faults(gen_time=1, job_fails=True)
    requests = [ImageRequest(prompt="bad", project_id=bad)] + [f"ok {k}" for k in range(5)]
    results = await run_batch(
        Client(MemoryTransport(model)), requests, concurrency=2, fail_fast=True
    )
    assert results[0].state is State.FAILED
    assert results[1].state is State.CANCELLED  # was running
    assert all(r.state is State.CANCELLED and "item 0 failed" in r.reason for r in results[2:])
    assert model.counts["start"] == 2


async def test_bad_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await run_batch(Client(MemoryTransport()), ["x"], concurrency=0)
