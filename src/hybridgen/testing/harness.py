"""Run scenarios on trio's virtual clock and check the machine's guarantees on what happened."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio
import trio.testing

from ..core import Result
from ..driver import Client, Generation
from ..emulator.model import ServerModel
from ..events import Event, Retry, Transition
from ..machine import INITIAL, TABLE, TERMINAL, State, Trigger
from .memory import MemoryTransport
from .scenario import Scenario

__all__ = [
    "DEADLINE_SLACK",
    "Trace",
    "check_invariants",
    "run_scenario",
    "run_virtual",
]

T = TypeVar("T")

DEADLINE_SLACK = 0.0
"""How late after its deadline a generation may end on the virtual clock: not at all."""

EPSILON = 1e-6

ANSWERED = re.compile(r"\bHTTP \d{3}\b")
"""A retry's reason that names an HTTP status: the server answered that poll (429, 5xx), so it
does not spend ``Policy.retry_budget``."""
ANSWERED_FAULTS = frozenset(("500", "502", "503", "504", "429"))
"""The emulator's poll faults that are answers (an HTTP error status), not a missing reply."""


def run_virtual(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` under ``trio.run`` on a fresh ``MockClock`` that jumps over every sleep."""
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


@attrs.frozen
class Trace:
    """What happened in one scenario run (times are seconds after the start request)."""

    scenario: Scenario
    events: tuple[Event, ...]
    calls: tuple[tuple[float, str], ...]
    result: Result
    ready_at: float | None
    """When the server's result became ready (``None``: the job was never created)."""
    ended_at: float
    """When the caller got control back."""
    tasks_left: int
    """Tasks alive after the generation's task returned, beyond the runner's own."""
    sockets_left: int

    @property
    def transitions(self) -> list[Transition]:
        """The :class:`Transition` events, in order."""
        return [e for e in self.events if isinstance(e, Transition)]

    @property
    def polls(self) -> list[float]:
        """When each poll request was sent."""
        return [t for t, what in self.calls if what == "poll"]

    def entered(self, state: State) -> float | None:
        """When the generation entered ``state`` (``None`` if it never did)."""
        return next((t.monotonic for t in self.transitions if t.dest is state), None)


def run_scenario(scenario: Scenario) -> Trace:
    """Run one generation of ``scenario`` on the virtual clock and return its :class:`Trace`."""
    return run_virtual(lambda: _run(scenario))


async def _run(scenario: Scenario) -> Trace:
    model = ServerModel(scenario.faults, token=scenario.server_token, seed=0)  # reproducible
    transport = MemoryTransport(model, token=scenario.token)
    client = Client(transport, policy=scenario.policy)
    events: list[Event] = []
    client.subscribe(events.append)
    t0 = trio.current_time()
    baseline = trio.lowlevel.current_statistics().tasks_living
    gen_scope = trio.CancelScope()

    async def generation(task_status: trio.TaskStatus[Generation]) -> None:
        with gen_scope:
            await client.start("a red fox", task_status=task_status)

    async with trio.open_nursery() as nursery:
        gen: Generation = await nursery.start(generation)
        canceller = trio.CancelScope()
        if scenario.cancel_at is not None:
            nursery.start_soon(
                _cancel_later,
                t0 + scenario.cancel_at,
                gen_scope,
                gen,
                scenario.cancel_by,
                canceller,
            )
        await gen.wait()
        canceller.cancel()
    result = gen.result()
    ended = trio.current_time() - t0
    tasks_left = trio.lowlevel.current_statistics().tasks_living - baseline
    job = next(iter(model.jobs.values()), None)
    shifted = tuple(_shift(e, t0) for e in events)
    return Trace(
        scenario=scenario,
        events=shifted,
        calls=tuple((t - t0, what) for t, what in transport.calls),
        result=result,
        ready_at=None if job is None else job.ready_at - t0,
        ended_at=ended,
        tasks_left=tasks_left,
        sockets_left=transport.open_sockets,
    )


async def _cancel_later(
    at: float, scope: trio.CancelScope, gen: Generation, how: str, canceller: trio.CancelScope
) -> None:
    with canceller:
        await trio.sleep_until(at)
        if how == "scope":
            scope.cancel()
        else:
            gen.cancel("cancelled by the test")


def _shift(event: Event, t0: float) -> Event:
    return attrs.evolve(event, monotonic=event.monotonic - t0)


# -- invariants -------------------------------------------------------------------------------


def check_one_terminal(trace: Trace) -> None:
    """Exactly one terminal event, and it is the last event."""
    terminal = [i for i, e in enumerate(trace.events) if e.terminal]
    assert len(terminal) == 1, f"expected one terminal event, got {len(terminal)}: {trace.events}"
    assert terminal[0] == len(trace.events) - 1, f"events after the terminal one: {trace.events}"
    assert trace.result.state in TERMINAL


def check_edges(trace: Trace) -> None:
    """Every transition is an edge of the definition, and they chain from the initial state."""
    state = INITIAL
    for t in trace.transitions:
        assert t.source is state, f"transition from {t.source} while in {state}"
        assert TABLE.get((t.source, t.trigger)) is t.dest, f"not an edge: {t}"
        state = t.dest
    assert state is trace.result.state


def check_deadline(trace: Trace, slack: float = DEADLINE_SLACK) -> None:
    """The terminal state comes by the deadline (+ slack), and so does the caller's return."""
    limit = trace.scenario.policy.deadline + slack + EPSILON
    last = trace.transitions[-1]
    assert last.monotonic <= limit, f"terminal at {last.monotonic} > deadline {limit}"
    assert trace.ended_at <= limit, f"returned at {trace.ended_at} > deadline {limit}"
    if trace.result.state is State.FAILED and last.trigger is Trigger.DEADLINE:
        assert math.isclose(last.monotonic, trace.scenario.policy.deadline, abs_tol=1e-6)


def check_polls(trace: Trace) -> None:
    """No poll before polling began; consecutive polls at least one (jittered) interval apart."""
    policy = trace.scenario.policy
    polling_at = trace.entered(State.POLLING)
    polls = trace.polls
    if polling_at is None:
        assert not polls, f"polled without entering polling: {polls}"
        return
    gap = policy.poll_interval * (1 - policy.jitter)
    # a poll's reply (or its timeout) comes this long after it was sent
    delay = min(trace.scenario.faults.poll_delay, policy.request_timeout)
    previous = None
    for t in polls:
        assert t >= polling_at - EPSILON, f"poll at {t} before polling began at {polling_at}"
        if previous is not None:
            assert t - previous >= delay + gap - EPSILON, (
                f"polls at {previous} and {t}: closer than {delay + gap}"
            )
        previous = t


def check_done_iff_learnable(trace: Trace) -> None:
    """``done`` iff the result was ready before the deadline and some channel could deliver it.

    Checked where it is decidable: a ``done`` result must have been ready when learned; a job that
    fails or is never ready before the deadline must not be ``done``; a result a clean channel
    surely delivers well before the deadline must be ``done``.
    """
    s = trace.scenario
    f, policy = s.faults, s.policy
    done = trace.result.state is State.DONE
    if s.cancel_at is not None and trace.result.state is State.CANCELLED:
        return
    if trace.ready_at is None or f.job_fails or s.token != s.server_token:
        assert not done, "done without a job that could succeed"
        return
    ready = trace.ready_at
    if done:
        learned = trace.transitions[-1].monotonic
        assert learned >= ready - EPSILON, (
            f"done at {learned} before the result was ready at {ready}"
        )
        assert learned <= policy.deadline + EPSILON
        return
    if ready >= policy.deadline:
        return
    # When is the result surely learned? Failing polls may spend the retry budget (and fail the
    # generation) before a push arrives, so the push is sure only when polls cannot fail.
    clean_polls = (
        f.poll_fault is None or f.poll_faults == 0 or f.poll_fault_rate == 0
    ) and f.poll_delay < policy.request_timeout
    sure = math.inf
    answered = f.poll_fault in ANSWERED_FAULTS and f.poll_delay < policy.request_timeout
    polls_cannot_kill = (
        clean_polls or answered or (policy.retry_budget is None and f.poll_fault != "404")
    )
    # with push_fallback only the first channel surely opens (a later one waits for it to fail)
    opened = policy.push[:1] if policy.push_fallback else policy.push
    for channel, mode in (("websocket", f.ws_mode), ("sse", f.sse_mode)):
        if polls_cannot_kill and channel in opened and mode in ("normal", "late"):
            push = ready + (f.late_by if mode == "late" else 0.0)
            if policy.keep_push_open or push < policy.push_timeout - EPSILON:
                sure = min(sure, push)
    if clean_polls:
        start = max(ready, policy.push_timeout)
        relaxed = policy.adaptive or policy.trust_live_socket
        longest = (
            max(policy.sparse_interval, policy.poll_interval) if relaxed else policy.poll_interval
        )
        if policy.trust_live_socket and policy.push_alive is not None:
            longest = max(longest, policy.lively_interval)  # a lively push spaces polls out
        sure = min(sure, start + longest * (1 + policy.jitter) + f.poll_delay)
    if sure < policy.deadline - 1e-3:
        raise AssertionError(
            f"{trace.result.state} ({trace.result.reason}) though the result was ready at {ready} "
            f"and surely learnable by {sure} < deadline {policy.deadline}"
        )


def check_cancel(trace: Trace) -> None:
    """A cancel before the natural end gives ``cancelled``; nothing is left running or open."""
    assert trace.tasks_left == 0, f"{trace.tasks_left} tasks left running"
    assert trace.sockets_left == 0, f"{trace.sockets_left} sockets left open"
    s = trace.scenario
    if s.cancel_at is None:
        assert trace.result.state is not State.CANCELLED
        return
    end = trace.transitions[-1]
    if trace.result.state is State.CANCELLED:
        assert math.isclose(end.monotonic, s.cancel_at, abs_tol=1e-6), (
            f"cancelled at {end.monotonic}, asked at {s.cancel_at}"
        )
    else:
        assert end.monotonic <= s.cancel_at + EPSILON, (
            f"{trace.result.state} at {end.monotonic} after a cancel at {s.cancel_at}"
        )


def check_retries_bounded(trace: Trace) -> None:
    """Failed polls without an answer stay within the retry budget (one more fails the
    generation); polls the server answered with an error (429, 5xx) never spend it, so they
    never end a generation before its deadline."""
    budget = trace.scenario.policy.retry_budget
    retries = [e for e in trace.events if isinstance(e, Retry) and e.what == "poll"]
    unanswered = [e for e in retries if not ANSWERED.search(e.reason)]
    if budget is not None:
        assert len(unanswered) <= budget, f"{len(unanswered)} poll retries > budget {budget}"
    if len(retries) > len(unanswered) and not unanswered:
        assert "gave up" not in trace.result.reason, trace.result.reason


def check_no_internal_error(trace: Trace) -> None:
    """No generation ends by an internal error (a bug in a task, a transport or the core)."""
    assert not trace.result.reason.startswith("internal error"), trace.result.reason


INVARIANTS = (
    check_no_internal_error,
    check_one_terminal,
    check_edges,
    check_deadline,
    check_polls,
    check_done_iff_learnable,
    check_cancel,
    check_retries_bounded,
)
"""Every invariant that holds for any scenario."""


def check_invariants(trace: Trace) -> None:
    """Check every invariant in :data:`INVARIANTS`; raise ``AssertionError`` at the first broken."""
    for check in INVARIANTS:
        check(trace)
