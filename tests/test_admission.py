"""Admission control: a client bounds its HTTP requests in flight, and a request waiting its turn
locally is bounded by its generation's deadline, never by the request timeout (which measures the
server). On trio's virtual clock, through :class:`MemoryTransport` with slow requests.
"""

from __future__ import annotations

import collections

import pytest
import trio

from hybridgen.api import FileStatus, ImageRequest
from hybridgen.driver import Client, Result
from hybridgen.emulator import Faults, ServerModel
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport, run_virtual


class SlowServer(MemoryTransport):
    """The in-memory server, its start request taking ``start_time`` seconds and its poll
    ``poll_time``; counts in flight."""

    def __init__(self, model: ServerModel, start_time: float, poll_time: float = 0.0) -> None:
        super().__init__(model)
        self.start_time = start_time
        self.poll_time = poll_time
        self.starts = self.requests = 0
        self.peak_starts = self.peak_requests = 0
        self.sent_at: list[float] = []
        self.start_sent: trio.Event | None = None  # set when the next start is sent

    async def _counted(self, start: bool) -> None:
        self.requests += 1
        self.starts += start
        self.peak_requests = max(self.peak_requests, self.requests)
        self.peak_starts = max(self.peak_starts, self.starts)
        if start:
            self.sent_at.append(trio.current_time())
            if self.start_sent is not None:
                self.start_sent.set()

    def _done(self, start: bool) -> None:
        self.requests -= 1
        self.starts -= start

    async def start(self, request: ImageRequest) -> FileStatus:
        await self._counted(True)
        try:
            await trio.sleep(self.start_time)
            return await super().start(request)
        finally:
            self._done(True)

    async def poll(self, file_id: str) -> FileStatus:
        await self._counted(False)
        try:
            await trio.sleep(self.poll_time)
            return await super().poll(file_id)
        finally:
            self._done(False)


async def start_all(client: Client, n: int, policy: Policy | None = None) -> list[Result]:
    results: list[Result] = []

    async def one() -> None:
        results.append(await client.start(ImageRequest(prompt="a red fox"), policy=policy))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return results


def test_5000_starts_through_a_small_bound_all_done() -> None:
    # 5,000 starts of 0.05 s each, 4 at a time: the last waits ~62 s locally, far beyond the 10 s
    # request timeout and within the 120 s deadline. None may fail for waiting its turn. (Sockets
    # refused: the in-memory model wakes every open socket on each job's news, O(N^2) at 5,000.)
    n, max_starts, max_requests = 5000, 4, 8
    model = ServerModel(Faults(gen_time=1.0, ws_mode="refuse"))
    server = SlowServer(model, start_time=0.05)

    async def main() -> list[Result]:
        async with Client(server, max_requests=max_requests, max_starts=max_starts) as client:
            return await start_all(client, n)

    results = run_virtual(main)
    states = collections.Counter(str(r.state) for r in results)
    assert states == {"done": n}, {r.reason for r in results if r.state is not State.DONE}
    assert server.peak_starts == max_starts
    assert server.peak_requests <= max_requests
    policy = Policy.default()
    assert server.sent_at[-1] - server.sent_at[0] > 5 * policy.request_timeout  # really queued
    assert server.sent_at[-1] < policy.deadline


def test_request_timeout_does_not_include_local_queue_time() -> None:
    # One request at a time, each start taking 6 s of a 10 s request timeout: the third waits 12 s
    # for its turn, then is sent and answered in 6 s. It is done, not timed out.
    server = SlowServer(ServerModel(Faults(gen_time=1.0)), start_time=6.0)

    async def main() -> list[Result]:
        async with Client(server, max_requests=1) as client:
            return await start_all(client, 3)

    results = run_virtual(main)
    assert [str(r.state) for r in results] == ["done"] * 3
    assert server.sent_at[2] - server.sent_at[0] == pytest.approx(12.0, abs=0.1)


def test_request_timeout_still_measures_the_server() -> None:
    server = SlowServer(ServerModel(Faults(gen_time=1.0)), start_time=11.0)

    async def main() -> list[Result]:
        async with Client(server) as client:
            return await start_all(client, 1)

    (result,) = run_virtual(main)
    assert result.state is State.FAILED
    assert "start request timed out" in result.reason


def test_a_turn_never_comes_after_the_deadline() -> None:
    # One start at a time, 9 s each, a 30 s deadline: starts are sent at 0, 9, 18 and 27 s; the
    # fourth is cut at the deadline, the fifth's turn would come at 36 s and is never taken.
    server = SlowServer(ServerModel(Faults(gen_time=1.0)), start_time=9.0)
    policy = Policy.default().replace(deadline=30.0)

    async def main() -> tuple[list[Result], float]:
        async with Client(server, max_starts=1) as client:
            t0 = trio.current_time()
            results = await start_all(client, 5, policy)
            return results, trio.current_time() - t0

    results, took = run_virtual(main)
    assert [str(r.state) for r in results] == ["done"] * 3 + ["failed"] * 2
    assert all("30 s deadline" in r.reason for r in results[3:])
    assert server.sent_at == pytest.approx([0.0, 9.0, 18.0, 27.0])
    assert took == pytest.approx(30.0)


def test_a_start_goes_before_the_polls_waiting() -> None:
    # 2 request slots, polls taking 1 s each, 20 generations polling every 2 s (both channels
    # refused): polls queue up at the client. A start requested at 30 s takes the first slot given
    # back (within a poll's 1 s); first come first served would make it wait ~7 s behind them.
    server = SlowServer(
        ServerModel(Faults(gen_time=1000.0, ws_mode="refuse", sse_mode="refuse")),
        start_time=0.0,
        poll_time=1.0,
    )

    async def main() -> tuple[float, float, int]:
        request = ImageRequest(prompt="a red fox")
        async with (
            Client(server, max_requests=2, max_starts=1) as client,
            trio.open_nursery() as nursery,
        ):
            gens = [await nursery.start(client.start, request) for _ in range(20)]
            await trio.sleep(30.0)
            polling = sum(g.state is State.POLLING for g in gens)
            server.start_sent = sent = trio.Event()
            asked = trio.current_time()
            gens.append(await nursery.start(client.start, request))
            await sent.wait()
            for gen in gens:
                gen.cancel()
        return asked, server.sent_at[20], polling

    asked, sent, polling = run_virtual(main)
    assert sent - asked <= 1.0, (asked, sent)
    assert polling == 20
    assert server.peak_requests == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bounds_must_be_whole_numbers(bad: object) -> None:
    for name in ("max_requests", "max_starts"):
        with pytest.raises(ValueError, match=name):
            Client(MemoryTransport(), **{name: bad})  # type: ignore[arg-type]
