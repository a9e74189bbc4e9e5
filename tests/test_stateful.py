"""A stateful property test: many generations, one server, faults flipped and cancels at random.

Hypothesis drives a :class:`~hypothesis.stateful.RuleBasedStateMachine` whose rules start
generations, flip the server's faults (for the whole server, one project, or one running job),
revoke the token, cancel generations (through the handle or trio cancellation) and let time pass.
After every step the invariants are checked for every generation.

It runs on trio's virtual clock with :class:`MemoryTransport` over one shared
:class:`ServerModel` (the emulator's behaviour without sockets; the real-socket side of the same
model is covered by the fault matrix and the contract tests). Hypothesis rules are synchronous, so
trio runs in a worker thread on a ``MockClock`` that moves only when the ``wait`` rule says: time
advances from timer to timer up to the wanted moment, exactly as the autojumping clock would, so
every timer fires at its own time. A run of a few hundred steps of simulated minutes takes a
fraction of a second.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import event as note
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from hybridgen.api import ImageRequest
from hybridgen.driver import Client, Generation
from hybridgen.emulator import Faults, ServerModel
from hybridgen.events import Event, Retry, Transition
from hybridgen.machine import INITIAL, TABLE, State, Trigger
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport
from hybridgen.testing.harness import ANSWERED
from hybridgen.testing.strategies import faults, policies, seconds

T = TypeVar("T")

TOKEN = "tok-stateful-0001"
PROJECTS = [
    "6f1c0c2e-0000-4000-8000-000000000001",
    "6f1c0c2e-0000-4000-8000-000000000002",
    "6f1c0c2e-0000-4000-8000-000000000003",
]
TASKS_PER_GENERATION = 5
"""An upper bound: the generation's own task and the tasks of its nursery (a listener per push
channel, the job task)."""
SOCKETS_PER_GENERATION = 2
"""At most one connection per push channel (WebSocket, SSE)."""
EPSILON = 1e-9


class TrioThread:
    """``trio.run`` in a worker thread, on a :class:`trio.testing.MockClock` moved only by hand."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()  # autojump off: time stands still until jumped
        self._up = threading.Event()
        self._error: BaseException | None = None
        self.nursery: trio.Nursery
        self.token: trio.lowlevel.TrioToken
        self._stop: trio.Event
        self._thread = threading.Thread(target=self._main, name="trio-stateful", daemon=True)
        self._thread.start()
        if not self._up.wait(10):
            raise RuntimeError("the trio thread did not start")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self.clock)
        except BaseException as exc:
            self._error = exc
            self._up.set()

    async def _serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._up.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in the trio thread and return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        """Stop the run (cancelling whatever still runs) and join the thread."""
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the trio thread did not stop"
        if self._error is not None:
            raise self._error

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, stopping at every timer on the way."""
        target = trio.current_time() + seconds
        for _ in range(100_000):
            await trio.testing.wait_all_tasks_blocked()
            now = trio.current_time()
            left = trio.lowlevel.current_statistics().seconds_to_next_deadline
            if now + left > target:
                self.clock.jump(max(0.0, target - now))
                await trio.testing.wait_all_tasks_blocked()
                return
            self.clock.jump(max(0.0, left))
        raise AssertionError("time did not move on: a timer keeps firing at the same moment")


async def settle() -> None:
    """Let every task run until all wait (no virtual time passes)."""
    await trio.testing.wait_all_tasks_blocked()


@attrs.define(eq=False)
class Tracked:
    """One generation the machine started, and what the test did to it."""

    gen: Generation
    scope: trio.CancelScope
    cancelled_at: float | None = None
    live_when_cancelled: bool = False

    def __repr__(self) -> str:
        return f"<Tracked {self.gen.id} {self.gen.state}>"


def server_faults() -> st.SearchStrategy[Faults]:
    """Any server behaviour, with the switches the shared strategy does not draw."""
    return st.builds(
        lambda f, noise, empty, forbidden: f.replace(
            ws_noise=noise, empty_url_polls=empty, forbidden=forbidden
        ),
        faults(max_gen_time=60.0),
        st.sampled_from([None, None, None, "junk", "oversized"]),
        st.sampled_from([0, 0, 0, 1, 3]),
        st.sampled_from([False] * 9 + [True]),
    )


POLICIES = st.sampled_from([Policy.default(), Policy.seed()]) | policies(max_deadline=90.0)


def job_faults() -> st.SearchStrategy[dict[str, Any]]:
    """Changes to a running job's poll behaviour (its timeline and outcome stay)."""
    return st.fixed_dictionaries(
        {
            "poll_fault": st.none() | st.sampled_from(["500", "503", "429", "reset", "garbage"]),
            "poll_faults": st.none() | st.integers(0, 4),
            "poll_fault_rate": st.sampled_from([1.0, 0.5]),
            "retry_after": st.none() | seconds(0.0, 10.0),
            "poll_delay": st.sampled_from([0.0, 0.0, 1.0, 30.0]),
        }
    )


class ManyGenerations(RuleBasedStateMachine):
    """Generations on one shared server, with faults and cancels at random moments."""

    generations = Bundle("generations")

    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.model = ServerModel(token=TOKEN, seed=1)
        self.transport = MemoryTransport(self.model, token=TOKEN)
        self.client = Client(self.transport)
        self.events: dict[str, list[Event]] = {}
        self.tracked: list[Tracked] = []
        self.client.subscribe(self._record)
        self.baseline = self.trio.run(self._tasks_living)

    async def _tasks_living(self) -> int:
        await settle()
        return trio.lowlevel.current_statistics().tasks_living

    def _record(self, event: Event) -> None:
        self.events.setdefault(event.generation_id, []).append(event)

    # -- rules ------------------------------------------------------------------------------

    @initialize(server=server_faults())
    def configure(self, server: Faults) -> None:
        self.model.faults = server

    @rule(target=generations, project=st.sampled_from(PROJECTS), policy=POLICIES)
    def start(self, project: str, policy: Policy) -> Tracked:
        (tracked,) = self._start([(project, policy)])
        return tracked

    @rule(
        target=generations,
        starts=st.lists(st.tuples(st.sampled_from(PROJECTS), POLICIES), min_size=2, max_size=6),
    )
    def start_several(self, starts: list[tuple[str, Policy]]) -> object:
        return multiple(*self._start(starts))

    def _start(self, starts: list[tuple[str, Policy]]) -> list[Tracked]:
        async def begin(project: str, policy: Policy) -> Tracked:
            scope = trio.CancelScope()

            async def run(task_status: trio.TaskStatus[Generation]) -> None:
                with scope:
                    request = ImageRequest(prompt="a red fox", project_id=project)
                    await self.client.start(request, policy=policy, task_status=task_status)

            gen: Generation = await self.trio.nursery.start(run)
            return Tracked(gen, scope)

        async def begin_all() -> list[Tracked]:
            started = [await begin(project, policy) for project, policy in starts]
            await settle()
            return started

        started = self.trio.run(begin_all)
        self.tracked += started
        return started

    @rule(seconds=seconds(0.001, 2.0))
    def wait_a_little(self, seconds: float) -> None:
        self.trio.run(self.trio.advance, seconds)

    @rule(seconds=seconds(1.0, 60.0))
    def wait(self, seconds: float) -> None:
        self.trio.run(self.trio.advance, seconds)

    @rule(server=server_faults())
    def flip_server(self, server: Faults) -> None:
        self.model.faults = server

    @rule(project=st.sampled_from(PROJECTS), server=st.none() | server_faults())
    def flip_project(self, project: str, server: Faults | None) -> None:
        if server is None:
            self.model.project_faults.pop(project, None)
        else:
            self.model.project_faults[project] = server

    @rule(tracked=generations, changes=job_faults())
    def flip_job(self, tracked: Tracked, changes: dict[str, Any]) -> None:
        job = self.model.jobs.get(tracked.gen.file_id or "")
        if job is not None:
            job.faults = job.faults.replace(**changes)

    @rule(revoked=st.sampled_from([False, False, False, True]))
    def revoke_token(self, revoked: bool) -> None:
        self.model.token = "tok-someone-else" if revoked else TOKEN

    @rule(tracked=generations, how=st.sampled_from(["handle", "scope"]))
    def cancel(self, tracked: Tracked, how: str) -> None:
        async def go() -> None:
            live = not tracked.gen.core.terminal
            if tracked.cancelled_at is None:
                tracked.cancelled_at = trio.current_time()
                tracked.live_when_cancelled = live
            if how == "handle":
                tracked.gen.cancel("cancelled by the test")
            else:
                tracked.scope.cancel()
            await settle()

        self.trio.run(go)
        if tracked.live_when_cancelled:
            assert tracked.gen.state is State.CANCELLED

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def every_generation_keeps_its_promises(self) -> None:
        self.trio.run(self._check)

    @precondition(lambda self: bool(self.tracked))
    @invariant()
    def nothing_runs_or_stays_open_without_a_live_generation(self) -> None:
        live = sum(1 for t in self.tracked if not t.gen.core.terminal)
        tasks = self.trio.run(self._tasks_living) - self.baseline
        assert tasks <= TASKS_PER_GENERATION * live, f"{tasks} tasks for {live} live generations"
        assert self.transport.open_sockets <= SOCKETS_PER_GENERATION * live
        if live == 0:
            assert tasks == 0 and self.transport.open_sockets == 0

    async def _check(self) -> None:
        now = trio.current_time()
        for tracked in self.tracked:
            self._check_one(tracked, now)

    def _check_one(self, tracked: Tracked, now: float) -> None:
        gen, core = tracked.gen, tracked.gen.core
        events = self.events.get(gen.id, [])
        # the path follows the definition's edges, and nothing follows the terminal event
        state = INITIAL
        for event in events:
            if isinstance(event, Transition):
                assert event.source is state, (event, state)
                assert TABLE.get((event.source, event.trigger)) is event.dest, event
                state = event.dest
        assert state is core.state
        terminal = [i for i, e in enumerate(events) if e.terminal]
        assert len(terminal) <= 1, events
        assert not terminal or terminal[0] == len(events) - 1, events
        assert core.terminal == bool(terminal)
        # terminal by the deadline, exactly on the virtual clock
        if now >= core.deadline_at - EPSILON:
            assert core.terminal, f"{gen!r} still live at {now} past its deadline"
        if core.terminal:
            assert core.ended is not None and core.ended <= core.deadline_at + EPSILON
        budget = core.policy.retry_budget
        retries = sum(
            1
            for e in events
            if isinstance(e, Retry) and e.what == "poll" and not ANSWERED.search(e.reason)
        )
        if budget is not None:  # polls the server answered (429, 5xx) do not spend it
            assert retries <= budget
        result = gen.result()
        assert not result.reason.startswith("internal error"), result.reason
        if result.state is State.DONE:
            job = self.model.jobs[result.file_id or ""]
            assert result.url == self.model.url_of(job), result
            assert not job.faults.job_fails
            assert job.ready_at <= core.ended + EPSILON  # type: ignore[operator]
            assert tracked.cancelled_at is None or not tracked.live_when_cancelled
        elif result.state is State.CANCELLED:
            assert tracked.cancelled_at is not None and tracked.live_when_cancelled
            assert core.ended == tracked.cancelled_at
        elif result.state is State.FAILED:
            last = events[-1]
            assert isinstance(last, Transition)
            if last.trigger is Trigger.DEADLINE:
                assert math.isclose(last.monotonic, core.deadline_at, abs_tol=1e-6)
            elif "job failed" in result.reason:
                job = self.model.jobs[result.file_id or ""]
                assert job.faults.job_fails and job.ready_at <= last.monotonic + EPSILON
            else:
                known = ("HTTP 40", "SUPERDUPERAI_TOKEN", "gave up after", "start request failed")
                assert any(k in result.reason for k in known), result.reason

    def teardown(self) -> None:
        try:

            async def end_all() -> int:
                for tracked in self.tracked:
                    tracked.scope.cancel()
                await settle()
                return trio.lowlevel.current_statistics().tasks_living

            ended = [str(t.gen.state) for t in self.tracked]  # before the teardown's own cancels
            tasks = self.trio.run(end_all)
            assert all(t.gen.core.terminal for t in self.tracked)
            note(f"generations started: {len(self.tracked) // 10 * 10}+")
            for state in sorted(set(ended)):
                note(f"some generation ended {state}")
            assert tasks == self.baseline, f"{tasks - self.baseline} tasks left"
            assert self.transport.open_sockets == 0
        finally:
            self.trio.close()


ManyGenerations.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestManyGenerations = ManyGenerations.TestCase
