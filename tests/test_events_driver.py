"""Events, subscribers and the trio driver, on the virtual clock over the in-memory transport."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from hybridgen import (
    Client,
    Generation,
    GenerationFailed,
    LoggingSubscriber,
    Policy,
    State,
    Transition,
)
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.events import Event, EventStream, Progress
from hybridgen.testing import MemoryTransport


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def client_for(faults: Faults, policy: Policy | None = None) -> Client:
    return Client(MemoryTransport(ServerModel(faults)), policy=policy)


async def test_generate_returns_the_result(autojump_clock: trio.testing.MockClock) -> None:
    client = client_for(Faults(gen_time=35))
    t0 = trio.current_time()
    result = await client.generate("a red fox")
    assert result.state is State.DONE and result.channel == "websocket"
    assert result.url and result.url.endswith(".webp")
    assert trio.current_time() - t0 == pytest.approx(35.0)


async def test_generate_raises_on_failure_with_the_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = client_for(Faults(gen_time=5, job_fails=True))
    with pytest.raises(GenerationFailed) as info:
        await client.generate("a red fox")
    assert info.value.result.state is State.FAILED
    assert "job failed" in info.value.result.reason


async def test_start_in_callers_nursery_and_stream_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = client_for(Faults(ws_mode="silent", gen_time=7))
    seen: list[Event] = []
    async with trio.open_nursery() as nursery:
        gen = await nursery.start(client.start, "a red fox")
        assert gen.state is State.REQUESTED

        async def follow(stream: EventStream) -> None:
            async for event in stream:
                seen.append(event)

        nursery.start_soon(follow, gen.events())
        result = await gen.wait()
    assert result.state is State.DONE and result.channel == "polling"
    path = [(e.source, e.dest) for e in seen if isinstance(e, Transition)]
    assert path == [("requested", "awaiting_ws"), ("awaiting_ws", "polling"), ("polling", "done")]
    assert seen[-1].terminal


async def test_late_stream_replays_the_path(autojump_clock: trio.testing.MockClock) -> None:
    client = client_for(Faults(gen_time=1, sse_mode="normal"))
    async with trio.open_nursery() as nursery:
        gen = await nursery.start(client.start, "a red fox")
        await gen.wait()
    replay = [e async for e in gen.events()]
    assert [e.dest for e in replay if isinstance(e, Transition)] == ["awaiting_ws", "done"]


async def test_handle_cancel_raises_generation_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = client_for(Faults(gen_time=60))

    def cancel_on_polling(event: Event) -> None:
        if isinstance(event, Transition) and event.dest is State.POLLING:
            gens[0].cancel("user pressed stop")

    gens: list = []
    async with trio.open_nursery() as nursery:
        gens.append(await nursery.start(client.start, "x"))
        gens[0].subscribe(cancel_on_polling)
        result = await gens[0].wait()
    assert result.state is State.CANCELLED and result.reason == "user pressed stop"
    assert result.elapsed == pytest.approx(Policy.default().push_timeout)


async def test_trio_cancellation_moves_to_cancelled_and_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = MemoryTransport(ServerModel(Faults(gen_time=60)))
    client = Client(transport)
    events: list[Event] = []
    with trio.move_on_after(10) as scope:
        await client.generate("x", on_event=events.append)
    assert scope.cancelled_caught
    assert isinstance(events[-1], Transition) and events[-1].dest is State.CANCELLED
    assert transport.open_sockets == 0


async def test_a_raising_subscriber_is_detached_and_the_generation_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(Faults(gen_time=5))
    calls = []

    def bad(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    good: list[Event] = []
    client.subscribe(bad)
    client.subscribe(good.append)
    with caplog.at_level(logging.ERROR, logger="hybridgen"):
        result = await client.generate("x")
    assert result.state is State.DONE
    assert len(calls) == 1 and len(good) > 1
    assert "detached" in caplog.text


async def test_progress_events_from_the_socket(autojump_clock: trio.testing.MockClock) -> None:
    client = client_for(Faults(gen_time=8, progress_steps=3), Policy.eager())
    events: list[Event] = []
    await client.generate("x", on_event=events.append)
    fractions = [e.fraction for e in events if isinstance(e, Progress)]
    assert fractions == [0.25, 0.5, 0.75]


async def test_a_transport_bug_fails_the_generation_not_the_caller(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(MemoryTransport):
        async def poll(self, file_id: str):  # type: ignore[no-untyped-def]
            raise KeyError("bug")

    client = Client(Broken(ServerModel(Faults(ws_mode="silent", gen_time=5))))
    with caplog.at_level(logging.ERROR), pytest.raises(GenerationFailed) as info:
        await client.generate("x")
    assert "internal error" in info.value.result.reason


def test_slow_stream_drops_oldest_but_keeps_the_terminal_event() -> None:
    stream = EventStream(max_buffer=2)
    for k in range(5):
        stream._put(Progress("g", k / 10, "polling", 0.0, 0.0))
    stream._put(Transition("g", State.POLLING, State.DONE, "poll_result", 1.0, 1.0))  # type: ignore[arg-type]

    async def drain() -> list[Event]:
        return [e async for e in stream]

    got = trio.run(drain)
    assert stream.dropped == 4
    assert isinstance(got[-1], Transition) and got[-1].terminal and len(got) == 2


def test_logging_subscriber(caplog: pytest.LogCaptureFixture) -> None:
    sub = LoggingSubscriber()
    with caplog.at_level(logging.DEBUG, logger="hybridgen.events"):
        sub(Transition("g", State.POLLING, State.FAILED, "deadline", 1.0, 1.0, "too slow"))  # type: ignore[arg-type]
        sub(Progress("g", 0.5, "websocket", 0.0, 0.0))
    assert "g polling -> failed (deadline): too slow" in caplog.text
    assert "progress 50% via websocket" in caplog.text
    assert caplog.records[0].levelno == logging.WARNING


class _PushSteps(trio.abc.Instrument):
    """Counts the steps of the push tasks, by channel."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        frame = getattr(task.coro, "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "_push_task":
            channel = frame.f_locals["channel"]
            self.steps[channel] = self.steps.get(channel, 0) + 1


async def test_a_push_task_not_wanted_is_not_woken_by_every_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # SSE first says nothing for push_quiet (5 s), so the WebSocket opens; SSE's first progress
    # message (at 10 s) closes it again, and its task waits while 39 more messages and the result
    # change the core. Under lean, SSE up, the WebSocket's task never even starts.
    faults = Faults(gen_time=410, ws_mode="silent", sse_mode="normal", progress_steps=40)
    policy = Policy.default().replace(push_quiet=5.0, deadline=500.0)
    counter = _PushSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        result = await client_for(faults, policy).generate("x")
        assert result.channel == "sse"
        assert counter.steps["sse"] > 40  # one step per message at least: the counter counts
        assert 0 < counter.steps["websocket"] <= 8
        counter.steps.clear()
        result = await client_for(faults, Policy.lean().replace(deadline=500.0)).generate("x")
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert result.channel == "sse"
    assert "websocket" not in counter.steps


async def test_a_socket_that_delivered_opens_from_the_start_on_later_generations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A seed-era server: SSE connects and says nothing, the socket pushes. The default opens the
    # socket only after push_quiet the first time; once it has delivered on this client (trust
    # earned by a result), later generations open it at once, and their polls relax.
    transport = MemoryTransport(ServerModel(Faults(gen_time=35, sse_mode="silent")))
    async with Client(transport) as client:
        policy = client.policy
        assert policy.push_quiet is not None
        first = await client.generate("x")
        assert first.channel == "websocket" and client.trusted == {"websocket"}
        t0 = trio.current_time()
        calls = len(transport.calls)
        second = await client.generate("y")
    assert second.channel == "websocket"
    ws_connects = [t - t0 for t, what in transport.calls[calls:] if what == "ws_connect"]
    assert ws_connects and ws_connects[0] < policy.push_quiet
    assert second.polls < first.polls


async def test_a_generation_started_in_a_cancelled_scope_ends_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = client_for(Faults(gen_time=5))
    scope = trio.CancelScope()
    scope.cancel()

    async def run(task_status: trio.TaskStatus[Generation]) -> None:
        with scope:
            await client.start("a red fox", task_status=task_status)

    async with trio.open_nursery() as nursery:
        gen: Generation = await nursery.start(run)
        with trio.fail_after(5):  # virtual seconds: a generation left running never ends
            result = await gen.wait()
    assert result.state is State.CANCELLED
