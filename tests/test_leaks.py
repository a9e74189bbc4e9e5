"""Cancellation at any moment leaves nothing behind, over real sockets against the emulator.

Each test runs its own emulator inside the test, so that once it has stopped every task and file
descriptor must be back to what it was before: a leak of the client cannot hide behind the server.
The moments: before the start request, while waiting on the WebSocket, while a poll is held by the
server, while sleeping before a retry, and at seeded random moments of a faulty server's timeline.
Each by both ways of cancelling: the handle's ``cancel()`` and trio cancellation of the caller.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from hybridgen.api import Config, ImageRequest
from hybridgen.driver import Client, Generation
from hybridgen.emulator import Emulator, Faults, ServerModel, running
from hybridgen.emulator.model import Job
from hybridgen.events import Event, Retry, Transition
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing.sockets import client_side_fds, port_of
from hybridgen.transport import SuperDuperTransport

TOKEN = "tok-leaks-0123456789"
SCALE = 0.02
SEED = Policy.seed().scaled(SCALE)  # 0.6 s socket wait, then polls every 0.04 s
DEFAULT = Policy.default().scaled(SCALE)
LIMIT = 8.0
LONG = 30.0 / SCALE
"""A nominal duration longer than any test: 30 s of real time."""


@attrs.define
class Hooks:
    """Events the emulator and the generation set at the moments a test waits for."""

    socket_open: trio.Event = attrs.field(factory=trio.Event)
    poll_held: trio.Event = attrs.field(factory=trio.Event)
    retry: trio.Event = attrs.field(factory=trio.Event)

    def install(self, emulator: Emulator) -> None:
        model = emulator.model
        ws_accept, poll_fault = model.ws_accept, model.poll_fault

        def on_ws_accept(project_id: str) -> None:
            ws_accept(project_id)
            self.socket_open.set()

        def on_poll_fault(job: Job) -> str | None:
            fault = poll_fault(job)
            if model.poll_delay(job):
                self.poll_held.set()
            return fault

        model.ws_accept = on_ws_accept  # type: ignore[method-assign]
        model.poll_fault = on_poll_fault  # type: ignore[method-assign]

    def on_event(self, event: Event) -> None:
        if isinstance(event, Retry) and event.what == "poll":
            self.retry.set()


Moment = Callable[[Generation, Hooks], Awaitable[None]]


async def before_start(gen: Generation, hooks: Hooks) -> None:
    assert gen.state is State.REQUESTED and gen.file_id is None


async def during_ws_wait(gen: Generation, hooks: Hooks) -> None:
    await hooks.socket_open.wait()
    assert gen.state in (State.REQUESTED, State.AWAITING_WS)


async def during_held_poll(gen: Generation, hooks: Hooks) -> None:
    await hooks.poll_held.wait()
    assert gen.state is State.POLLING and gen.core.next_poll is None  # the poll is in flight


async def during_retry_sleep(gen: Generation, hooks: Hooks) -> None:
    await hooks.retry.wait()
    assert gen.state is State.POLLING
    assert gen.core.next_poll is not None and gen.core.next_poll > trio.current_time()


MOMENTS: dict[str, tuple[Moment, Faults, Policy]] = {
    "before the start request": (before_start, Faults(gen_time=LONG), DEFAULT),
    "during the WebSocket wait": (during_ws_wait, Faults(ws_mode="silent", gen_time=LONG), SEED),
    "during a poll held by the server": (
        during_held_poll,
        Faults(ws_mode="silent", gen_time=LONG, poll_delay=LONG),
        DEFAULT,
    ),
    "during a retry sleep": (
        during_retry_sleep,
        Faults(ws_mode="silent", gen_time=LONG, poll_fault="503", retry_after=LONG),
        DEFAULT,
    ),
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks_living() -> int:
    return trio.lowlevel.current_statistics().tasks_living


async def cancel_and_check(
    faults: Faults, policy: Policy, moment: Moment, how: str
) -> tuple[Generation, ServerModel]:
    """Run one generation, cancel it at ``moment`` by ``how``; check that nothing is left."""
    await trio.testing.wait_all_tasks_blocked()
    fds_before, tasks_before = open_fds(), tasks_living()
    events: list[Event] = []
    hooks = Hooks()
    async with running(faults, time_scale=SCALE, token=TOKEN) as emulator:
        hooks.install(emulator)
        port = port_of(emulator.url)
        client = Client(SuperDuperTransport(Config(url=emulator.url, token=TOKEN)), policy=policy)
        async with client:
            client.subscribe(events.append)
            client.subscribe(hooks.on_event)
            scope = trio.CancelScope()
            with trio.fail_after(LIMIT):
                async with trio.open_nursery() as nursery:

                    async def run(task_status: trio.TaskStatus[Generation]) -> None:
                        with scope:
                            await client.start(
                                ImageRequest(prompt="a red fox"), task_status=task_status
                            )

                    gen: Generation = await nursery.start(run)
                    await moment(gen, hooks)
                    if how == "handle":
                        gen.cancel()
                        assert gen.state is State.CANCELLED  # at once, not when the tasks end
                    else:
                        scope.cancel()
                    await gen.wait()
                # leaving the nursery (within LIMIT) proves the generation's tasks all ended
        # the client is closed: none of its connections to the emulator is left
        assert client_side_fds(port) == 0
    assert gen.state is State.CANCELLED
    terminal = [e for e in events if e.terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0]
    assert isinstance(terminal[0], Transition) and terminal[0].dest is State.CANCELLED
    # the emulator has stopped too: every task and descriptor is back to what it was
    assert tasks_living() == tasks_before
    assert open_fds() <= fds_before
    return gen, emulator.model


@pytest.mark.parametrize("how", ["handle", "scope"])
@pytest.mark.parametrize("moment", list(MOMENTS))
async def test_cancel_at_a_moment_leaves_nothing(moment: str, how: str) -> None:
    wait_for, faults, policy = MOMENTS[moment]
    _, model = await cancel_and_check(faults, policy, wait_for, how)
    if wait_for is before_start:
        # cancelled before its tasks ran: nothing was sent, no job is left on the server
        assert model.counts["start"] == 0 and model.counts["ws_connect"] == 0


RANDOM = random.Random(6)
CHAOS = Faults(
    ws_mode="drop",
    ws_drops=3,
    ws_drop_after=0.1 / SCALE,
    poll_fault="503",
    poll_fault_rate=0.5,
    poll_delay=0.03 / SCALE,
    gen_time=LONG,
)
"""A server that drops sockets, fails half the polls and answers slowly: much is in flight."""


@pytest.mark.parametrize(
    ("delay", "how", "preset"),
    [
        (round(RANDOM.uniform(0.0, 0.9), 3), RANDOM.choice(["handle", "scope"]), preset)
        for preset in ("seed", "default")
        for _ in range(4)
    ],
)
async def test_cancel_at_a_random_moment_leaves_nothing(
    delay: float, how: str, preset: str
) -> None:
    async def after_delay(gen: Generation, hooks: Hooks) -> None:
        await trio.sleep(delay)  # picks the moment; nothing waits for a condition here

    policy = SEED if preset == "seed" else DEFAULT
    await cancel_and_check(CHAOS, policy, after_delay, how)
