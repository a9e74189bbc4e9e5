"""The core is the one owner of a generation's schedule (issue 23 item 3): every input returns a
Plan of what changed, and carrying the plans out is all a driver needs to know."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import cast

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen import Channel, Client, FileStatus, Policy, State
from hybridgen.api import Push
from hybridgen.core import NOTHING, Core, Plan
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.errors import AuthError, TransientError
from hybridgen.events import Event, EventStream, Hub, Retry, Transition
from hybridgen.machine import Trigger
from hybridgen.testing import MemoryTransport, run_virtual
from hybridgen.testing.strategies import policies, seconds

EAGER = Policy.eager().replace(push=("websocket",), push_quiet=None)


@attrs.define
class Mirror:
    """A driver's view of the schedule, built from the plans alone."""

    wake_at: float = math.nan
    channels: dict[Channel, float | None] = attrs.field(factory=dict)
    ended: bool = False

    def apply(self, plan: Plan) -> None:
        assert not self.ended or plan is NOTHING, "a plan after the end"
        if plan.ended:
            self.ended = True
            return
        if plan.wake_at is not None:
            assert plan.wake_at != self.wake_at, "a plan repeats what was said"
            self.wake_at = plan.wake_at
        for channel in plan.close:
            assert self.channels.get(channel) is not None, "closes what was not open"
            self.channels[channel] = None
        for channel, at in plan.open:
            assert type(channel) is Channel
            assert self.channels.get(channel) != at, "a plan repeats what was said"
            self.channels[channel] = at
        assert bool(plan) == (plan is not NOTHING), "an empty plan is NOTHING"


def matches(core: Core, mirror: Mirror) -> None:
    """What the plans said is what the core says now."""
    if core.terminal:
        assert mirror.ended
        return
    assert mirror.wake_at == core.wake_at()
    for name in core.policy.push:
        wanted = core.wants(name)
        at = core.connect_at(name)
        expected = (math.inf if at is None else at) if wanted else None
        assert mirror.channels.get(name) == expected, name


CHANNELS = st.sampled_from([Channel.SSE, Channel.WEBSOCKET])
PUSHES = st.one_of(
    st.builds(lambda p: Push("f", "progress", progress=p), st.floats(0.0, 1.0)),
    st.just(Push("f", "result", url="u")),
    st.just(Push("f", "completed")),
    st.just(Push("other", "result", url="x")),
    st.just(Push("f", "failed", reason="no")),
)
FILES = st.one_of(
    st.builds(lambda p: FileStatus("f", progress=p), st.none() | st.floats(0.0, 1.0)),
    st.just(FileStatus("f", url="u")),
)
ERRORS = st.one_of(
    st.builds(
        lambda status, after, unsafe: TransientError(
            "x", status=status, retry_after=after, maybe_processed=unsafe
        ),
        st.none() | st.sampled_from([429, 500, 503]),
        st.none() | seconds(0.0, 20.0),
        st.booleans(),
    ),
    st.just(AuthError("no")),
)
STEP = st.one_of(
    st.tuples(st.just("advance")),
    st.tuples(st.just("accepted"), FILES),
    st.tuples(st.just("push_up"), CHANNELS),
    st.tuples(st.just("push_down"), CHANNELS, st.booleans()),
    st.tuples(st.just("push_closed"), CHANNELS),
    st.tuples(st.just("push"), CHANNELS, PUSHES),
    st.tuples(st.just("push_heartbeat"), CHANNELS),
    st.tuples(st.just("poll_sent")),
    st.tuples(st.just("poll_reply"), FILES),
    st.tuples(st.just("poll_error"), ERRORS),
    st.tuples(st.just("start_failed"), ERRORS),
    st.tuples(st.just("cancel")),
)


@attrs.define
class Driver:
    """What a driver may tell the core: one start reply, a poll's reply only after it was sent,
    a channel's messages only while it is connected, connects only when wanted."""

    accepted: bool = False
    in_flight: bool = False
    connected: set[str] = attrs.field(factory=set)

    def allows(self, core: Core, kind: object, args: list[object], now: float) -> bool:
        channel = args[0] if args and isinstance(args[0], Channel) else None
        if kind in ("accepted", "start_failed"):
            return not self.accepted and core.next_start is None
        if kind == "poll_sent":
            return not self.in_flight and core.poll_due(now)
        if kind in ("poll_reply", "poll_error"):
            return self.in_flight
        if kind == "push_up":
            return channel not in self.connected and core.wants(channel)  # type: ignore[arg-type]
        if kind == "push_down":
            return channel in self.connected or core.wants(channel)  # type: ignore[arg-type]
        if kind in ("push_closed", "push", "push_heartbeat"):
            return channel in self.connected
        return True

    def did(self, kind: object, args: list[object]) -> None:
        channel = args[0] if args else None
        if kind == "accepted":
            self.accepted = True
        elif kind == "poll_sent":
            self.in_flight = True
        elif kind in ("poll_reply", "poll_error"):
            self.in_flight = False
        elif kind == "push_up":
            self.connected.add(str(channel))
        elif kind in ("push_down", "push_closed"):
            self.connected.discard(str(channel))


def feed(core: Core, step: tuple[object, ...], now: float) -> Plan:
    kind, *args = step
    if kind == "advance":
        return core.advance(now)
    if kind == "push_down":
        channel, permanent = args
        return core.push_down(channel, "down", now, permanent=permanent)  # type: ignore[arg-type]
    if kind in ("cancel",):
        return core.cancel("by hand", now)
    method = getattr(core, kind)
    return method(*args, now)  # type: ignore[no-any-return]


@settings(max_examples=150, deadline=None)
@given(
    policies(),
    st.lists(st.tuples(seconds(0.0, 30.0), STEP), max_size=40),
    st.floats(0.0, 1.0),
)
def test_the_plans_say_everything_that_changed(
    policy: Policy, steps: list[tuple[float, tuple[object, ...]]], seed: float
) -> None:
    core = Core("g", policy, lambda event: None, 0.0, rand=lambda: seed)
    mirror = Mirror()
    driver = Driver()
    mirror.apply(core.plan())  # the first plan says all of it
    matches(core, mirror)
    assert core.plan() is NOTHING  # and nothing has changed since
    now = 0.0
    for wait, step in steps:
        now += wait
        kind, *args = step
        if not driver.allows(core, kind, args, now):
            continue
        mirror.apply(feed(core, step, now))
        driver.did(kind, args)
        matches(core, mirror)
        if not core.terminal:
            due = min(core.next_timer(), math.inf if core.next_poll is None else core.next_poll)
            if due <= now:  # what a driver does when the plan's moment has come
                mirror.apply(core.advance(now))
                matches(core, mirror)


def test_an_input_from_inside_another_leaves_the_plan_to_the_outer_one() -> None:
    """A subscriber that cancels on the start transition: the outer call's plan ends it."""
    inner: list[Plan] = []
    core: Core

    def cancel_at_start(event: Event) -> None:
        if isinstance(event, Transition) and event.trigger == "start":
            inner.append(core.cancel("a subscriber", 1.0))

    core = Core("g", Policy.default(), cancel_at_start, 0.0)
    core.plan()
    outer = core.accepted(FileStatus("f"), 1.0)
    assert inner == [NOTHING] and outer.ended and core.terminal


def test_a_push_that_moves_nothing_plans_nothing_and_one_that_ends_plans_the_end() -> None:
    core = Core("g", Policy.eager().replace(jitter=0.0), lambda event: None, 0.0)
    core.plan()
    opened = core.accepted(FileStatus("f"), 0.5)
    assert (Channel.SSE, 0.5) in opened.open and opened.wake_at == 2.0  # push_timeout
    assert core.push_up("sse", 0.6) is NOTHING  # connected as planned: nothing to do
    ended = core.push("sse", Push("f", "result", url="u"), 0.7)
    assert ended == Plan(ended=True)
    assert core.push("sse", Push("f", "result", url="u"), 0.8) is NOTHING


def test_a_stream_replays_and_is_dropped_once_its_replay_ends_it() -> None:
    hub = Hub()
    done = Transition("g", State.POLLING, State.DONE, Trigger.POLL_RESULT, 1.0, 1.0)
    ended = hub.stream(4, replay=[done])
    assert not hub  # the replay ended it: the hub keeps no stream
    live = hub.stream(4, replay=[])
    assert hub
    hub.emit(done)
    assert not hub

    async def read(stream: EventStream) -> list[Event]:
        return [event async for event in stream]

    for stream in (ended, live):
        assert trio.run(read, stream) == [done]


@pytest.mark.parametrize("method", ["advance", "poll_sent"])
def test_every_input_returns_a_plan(method: str) -> None:
    core = Core("g", Policy.default(), lambda event: None, 0.0)
    assert isinstance(getattr(core, method)(0.0), Plan)


class CountingTransport(MemoryTransport):
    """Notes how many push connections are open at each poll."""

    def __init__(self, model: ServerModel) -> None:
        super().__init__(model)
        self.open_at_polls: list[int] = []

    async def poll(self, file_id: str) -> FileStatus:
        self.open_at_polls.append(self.open_sockets)
        return await super().poll(file_id)


@pytest.mark.parametrize(("policy", "open_while_polling"), [(Policy.seed(), 0), (EAGER, 1)])
def test_a_plan_that_closes_a_channel_closes_its_connection(
    policy: Policy, open_while_polling: int
) -> None:
    """The seed closes its silent socket as polling begins (the plan closes the channel, the
    driver cancels the connection); a policy that keeps it open keeps listening."""
    transport = CountingTransport(ServerModel(Faults(gen_time=40, ws_mode="silent")))

    async def main() -> None:
        async with Client(transport, policy=policy) as client:
            result = await client.generate("a fox")
        assert result.channel is Channel.POLLING

    run_virtual(main)
    # the first poll goes out in the same instant, before the closed connection's task runs
    assert len(transport.open_at_polls) > 2
    assert set(transport.open_at_polls[1:]) == {open_while_polling}


class HangingSSE(MemoryTransport):
    """A server whose SSE connect never completes (the request sent, no reply head ever)."""

    @contextlib.asynccontextmanager
    async def listen_sse(self, file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        self.calls.append((trio.current_time(), "sse_connect"))
        await trio.sleep_forever()
        yield cast(AsyncIterator[str], None)  # never reached


def test_a_connect_that_never_completes_fails_by_its_bound_not_as_a_closed_channel() -> None:
    """The connect bound (``request_timeout``) and a plan's close share one cancel scope: a
    connect cut by the bound is a failure of the channel (a Retry with its reason, counted in
    push_failures), not a channel the plans closed; polling finishes the job."""
    transport = HangingSSE(ServerModel(Faults(gen_time=30, ws_mode="silent", sse_mode="normal")))
    policy = Policy.default().replace(request_timeout=5.0)
    events: list[Event] = []

    async def main() -> None:
        async with Client(transport, policy=policy) as client:
            client.subscribe(events.append)
            result = await client.generate("a fox")
        assert result.state is State.DONE and result.channel is Channel.POLLING
        assert result.push_failures >= 1

    run_virtual(main)
    retries = [e for e in events if isinstance(e, Retry) and e.what == "sse"]
    assert retries and retries[0].reason == "SSE connect timed out"
    connects = [t for t, what in transport.calls if what == "sse_connect"]
    assert connects[1] - connects[0] >= 5.0  # the bound ran out before the reconnect


def test_the_job_task_waits_for_its_moments_without_a_cancellation_each() -> None:
    """The job task's waits (the push-only wait, every poll interval) return at their moment
    instead of raising ``Cancelled`` (an exception per poll, raised and caught, at thousands of
    generations), and a caller's cancellation still ends a waiting generation as cancelled."""
    created: list[object] = []
    real = trio.Cancelled._create

    def counting(*args: object, **kwargs: object) -> trio.Cancelled:
        created.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    async def main() -> tuple[Client, list[int], State]:
        server = Faults(ws_mode="silent", sse_mode="silent", gen_time=20.0)
        async with Client(MemoryTransport(ServerModel(server, seed=0)), policy=EAGER) as client:
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, "a red fox")
            polls = [gen.result().polls, len(created)]
            async with trio.open_nursery() as nursery:
                cancelled = await nursery.start(client.start, "a red fox")
                await trio.sleep(5.0)  # (virtual time) it waits for its next poll now
                nursery.cancel_scope.cancel()
            return client, polls, cancelled.result().state

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trio.Cancelled, "_create", counting)
        _, (polls, cancellations), state = run_virtual(main)
    assert polls >= 5
    assert cancellations <= 3, (polls, cancellations)
    assert state is State.CANCELLED
