"""Load: many concurrent generations against one server, 10% of polls failing and the socket
dropping for half of them. Every generation must end ``done`` and no result may be lost: the
number of ``done`` generations equals the number of jobs the server finished, job by job.

- 1,000 generations on trio's virtual clock through :class:`MemoryTransport` (the emulator's
  model in memory): the full timeline (35 s jobs, 2 s polls) in a few seconds of CPU.
- 200 generations over real loopback sockets against the emulator, client and server in this
  one process, arriving over half a second. Measured on the 2-core machine (busy with other
  work): 1,000 real-socket generations started at once all end ``done`` with none lost, but take
  about 55 s even with the emulator in its own process (the connection burst saturates a Python
  thread); 200 take 10-20 s in one process. So the 1,000 run on the virtual clock here.
"""

from __future__ import annotations

import collections
import resource
import uuid

import attrs
import trio

from hybridgen.api import Config, ImageRequest
from hybridgen.driver import Client, Result
from hybridgen.emulator import Faults, ServerModel, running
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport, run_virtual
from hybridgen.testing.sockets import client_side_fds, port_of
from hybridgen.transport import SuperDuperTransport

TOKEN = "tok-load-0123456789"
FAULTS = Faults(gen_time=35.0, poll_fault="503", poll_fault_rate=0.1)
"""10% of all polls fail with HTTP 503; jobs take 35 s (before time scaling)."""
DROPPING = FAULTS.replace(ws_mode="drop", ws_drops=10**9, ws_drop_after=1.0)
"""Every socket of these projects drops a second after it opened."""


def projects(model: ServerModel, n: int) -> list[str]:
    """``n`` project ids; the socket drops for every second one."""
    ids = [str(uuid.UUID(int=k + 1, version=4)) for k in range(n)]
    for project in ids[::2]:
        model.project_faults[project] = DROPPING
    return ids


@attrs.define
class Run:
    """The results of a load run, and how many generations were in flight at most."""

    results: list[Result] = attrs.field(factory=list)
    live: int = 0
    peak: int = 0


async def run_all(client: Client, ids: list[str], spacing: float = 0.0) -> Run:
    """Start a generation per project, ``spacing`` seconds apart; wait for all of them."""
    run = Run()

    async def one(project: str) -> None:
        run.live += 1
        run.peak = max(run.peak, run.live)
        request = ImageRequest(prompt="a red fox", project_id=project)
        run.results.append(await client.start(request))
        run.live -= 1

    async with trio.open_nursery() as nursery:
        for project in ids:
            nursery.start_soon(one, project)
            if spacing:
                await trio.sleep(spacing)  # a ramp of arrivals, not a wait for a condition
    return run


def check_none_lost(model: ServerModel, results: list[Result], n: int) -> collections.Counter[str]:
    """All done, and done job by job exactly the jobs the server finished (call it in trio)."""
    states = collections.Counter(str(r.state) for r in results)
    assert states == {"done": n}, (states, {r.reason for r in results if r.state is not State.DONE})
    assert model.finished() == n == len(model.jobs)
    done_jobs = {r.file_id for r in results}
    assert done_jobs == set(model.jobs)  # every finished job reached its caller, once
    for r in results:
        assert r.url == model.url_of(model.jobs[r.file_id or ""])
    # the faults really happened
    assert sum(r.poll_errors for r in results) > 0
    assert model.counts["ws_drop"] >= n // 2
    return collections.Counter(r.channel or "" for r in results)


def test_a_thousand_generations_on_the_virtual_clock() -> None:
    n = 1000

    async def main() -> tuple[Run, collections.Counter[str], MemoryTransport]:
        model = ServerModel(FAULTS, token=TOKEN, seed=3)
        transport = MemoryTransport(model, token=TOKEN)
        async with Client(transport, policy=Policy.default()) as client:
            with trio.fail_after(Policy.default().deadline + 1):  # virtual seconds
                run = await run_all(client, projects(model, n))
        return run, check_none_lost(model, run.results, n), transport

    run, channels, transport = run_virtual(main)
    assert run.peak == n  # all of them in flight at once
    assert channels["websocket"] > 0 and channels["polling"] > 0
    assert transport.open_sockets == 0


async def test_two_hundred_generations_over_real_sockets() -> None:
    n = 200
    scale = 0.05  # a 35 s job takes 1.75 s; a socket drops 0.05 s after it opened
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= 4 * n + 100, f"ulimit -n is {soft}: too low for {n} generations"
    # Half the policy's timings (polls every second): 200 generations polling every 0.1 s would
    # ask one Python thread (serving both ends) for 2,000 requests a second, an overload, not a
    # load. The start request may take long while 200 generations open their WebSocket and SSE
    # connections at once on a loaded machine: it gets 30 s (the deadline is 60 s). Both push
    # channels from the start (eager): the most connections per generation.
    policy = Policy.eager().scaled(0.5).replace(request_timeout=30.0)
    async with running(FAULTS, time_scale=scale, token=TOKEN) as emulator:
        model = emulator.model
        ids = projects(model, n)
        config = Config(url=emulator.url, token=TOKEN)
        async with Client(SuperDuperTransport(config), policy=policy) as client:
            with trio.fail_after(60):
                # 200 arrivals over half a second: the generations overlap (each lasts more than
                # 1.75 s), without one 200-connection burst on a thread serving both ends
                run = await run_all(client, ids, spacing=0.5 / n)
        assert client_side_fds(port_of(emulator.url)) == 0
        channels = check_none_lost(model, run.results, n)
    assert run.peak >= n // 2
    assert channels["websocket"] > 0 and channels["polling"] > 0
