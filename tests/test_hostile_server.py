"""A hostile server of our own over real sockets: huge, deep and compressed-bomb replies.

A small trio TCP server answers the start request and the polls with whatever a test asks for.
The client must come out with a typed outcome (a bad poll is retried, a bad start fails clearly)
and with bounded memory (tracemalloc's peak stays far below the size of the body sent).
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio

from hybridgen.api import MAX_REPLY_BYTES, Config
from hybridgen.driver import Client, Result
from hybridgen.errors import TransientError
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.transport import SuperDuperTransport

TOKEN = "hostile-test-token"
LIMIT = 20.0
HUGE = 50 * 2**20
CHUNK = b"0" * 2**16
MEMORY_BOUND = 3 * MAX_REPLY_BYTES
"""Peak traced memory allowed while a 50 MB reply is refused (the limit is 4 MiB)."""
FILE = {"id": "f1", "url": None, "tasks": [{"status": "in_progress", "id": 1}]}
DONE = {"id": "f1", "url": "http://cdn.example/f1.webp", "tasks": []}
POLICY = Policy.default().scaled(0.05).replace(deadline=10.0, request_timeout=5.0)

Body = Callable[[], Iterator[bytes]]
"""The chunks of one reply body."""


def small(obj: object) -> Body:
    return lambda: iter([json.dumps(obj).encode()])


def zeros(total: int = HUGE) -> Body:
    return lambda: (CHUNK for _ in range(total // len(CHUNK)))


def deep(depth: int = 100_000) -> Body:
    return lambda: iter([b"[" * depth + b"]" * depth])


@asynccontextmanager
async def hostile(
    start: Body, polls: list[Body], *, length: bool = True, gzipped: bool = False
) -> AsyncIterator[tuple[str, list[str]]]:
    """Serve ``start`` to the start request and ``polls[i]`` to the i-th poll (the last repeats).

    ``length``: send Content-Length (else the body ends when the connection closes).
    ``gzipped``: the bodies are gzip data (sent with ``Content-Encoding: gzip``).
    Yields the base URL and the request lines seen.
    """
    seen: list[str] = []

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        with trio.move_on_after(LIMIT):
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
        line = head.split(b"\r\n", 1)[0].decode()
        if "/ws/" in line or "/events/" in line:  # no push here: refused, the client polls
            await trio.aclose_forcefully(stream)
            return
        seen.append(line)
        if line.startswith("POST"):
            body = start
        else:
            body = polls[min(len([s for s in seen if s.startswith("GET")]) - 1, len(polls) - 1)]
        chunks = list(body()) if length else None
        headers = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"Connection: close"]
        if gzipped:
            headers.append(b"Content-Encoding: gzip")
        if chunks is not None:
            headers.append(b"Content-Length: %d" % sum(len(c) for c in chunks))
        try:
            await stream.send_all(b"\r\n".join(headers) + b"\r\n\r\n")
            for chunk in chunks if chunks is not None else body():
                await stream.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client stopped reading: exactly what it should do
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", seen
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """50 MB of zeros, gzipped (about 50 KB), built before any tracing starts."""
    return gzip.compress(b"0" * HUGE, 9)


@pytest.fixture
def traced() -> Iterator[Callable[[], int]]:
    """Trace allocations during the test; call the result for the peak so far (bytes)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def transport_for(url: str) -> SuperDuperTransport:
    return SuperDuperTransport(Config(url=url, token=TOKEN))


async def generate(
    start: Body, polls: list[Body], policy: Policy, *, length: bool = True
) -> tuple[Result, list[str]]:
    """One whole generation against the hostile server; its result and the requests seen."""
    async with (
        hostile(start, polls, length=length) as (url, seen),
        Client(transport_for(url), policy=policy) as client,
    ):
        with trio.fail_after(LIMIT):
            result = await client.start("a red fox")
    return result, seen


async def poll_error(
    poll: Body, *, length: bool = True, gzipped: bool = False
) -> tuple[str, list[str]]:
    """The error one poll of the hostile server raises, and the requests seen."""
    async with hostile(small([FILE]), [poll], length=length, gzipped=gzipped) as (url, seen):
        transport = transport_for(url)
        try:
            with trio.fail_after(LIMIT), pytest.raises(TransientError) as info:
                await transport.poll("f1")
        finally:
            await transport.aclose()
    return str(info.value), seen


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
async def test_a_50_mb_poll_reply_is_refused_with_bounded_memory(
    traced: Callable[[], int], length: bool
) -> None:
    error, seen = await poll_error(zeros(), length=length)
    assert "over the 4 MiB limit" in error and "max_reply_bytes" in error
    assert seen == ["GET /api/v1/file/f1 HTTP/1.1"]
    assert traced() < MEMORY_BOUND


async def test_a_compression_bomb_is_refused_with_bounded_memory(
    bomb: bytes, traced: Callable[[], int]
) -> None:
    assert len(bomb) < 2**20
    error, _ = await poll_error(lambda: iter([bomb]), gzipped=True)
    assert "over the 4 MiB limit" in error
    assert traced() < MEMORY_BOUND


async def test_a_50_mb_start_reply_fails_saying_the_job_may_exist(
    traced: Callable[[], int],
) -> None:
    result, seen = await generate(zeros(), [small(DONE)], POLICY, length=False)
    assert result.state is State.FAILED
    assert "over the 4 MiB limit" in result.reason and "the job may exist" in result.reason
    assert [s.split()[0] for s in seen] == ["POST"]  # never sent twice
    assert traced() < MEMORY_BOUND


@pytest.mark.parametrize(
    ("bad", "errors"),
    [
        (deep(), 1),
        (small({"id": "f1", "progress": 10**400}), 0),  # ignored progress: a good reply
        (zeros(), 1),
        (lambda: iter([b'{"id": "f1", "url": null, "tasks": "' + b"x" * 2**20 + b'"}']), 0),
        (lambda: iter([b'{"id": "f1", "url": "' + b"x" * 2**20 + b'"}']), 1),
    ],
    ids=["100000-deep", "400-digit-progress", "50-mb", "1-mib-string", "1-mib-url"],
)
async def test_one_bad_poll_reply_never_fails_a_healthy_generation(bad: Body, errors: int) -> None:
    result, seen = await generate(small([FILE]), [bad, small(DONE)], POLICY)
    assert result.state is State.DONE and result.url == DONE["url"], result.reason
    assert result.channel == "polling"
    assert result.poll_errors == errors and result.polls == 2
    assert len([s for s in seen if s.startswith("GET")]) == 2


async def test_a_deep_reply_every_time_ends_by_the_deadline_not_as_internal_error() -> None:
    result, _ = await generate(small([FILE]), [deep()], POLICY.replace(deadline=1.0))
    assert result.state is State.FAILED
    assert "deadline" in result.reason and "internal error" not in result.reason
    assert result.poll_errors >= 1


async def test_a_refused_first_connection_fails_at_once_and_never_said_to_maybe_exist() -> None:
    with trio.socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = POLICY.replace(start_retries=2)
    async with Client(transport_for(f"http://127.0.0.1:{port}"), policy=policy) as client:
        with trio.fail_after(LIMIT):
            result = await client.start("a red fox")
    assert result.state is State.FAILED
    assert "cannot connect to" in result.reason and "connection refused" in result.reason
    assert "attempts" not in result.reason  # first contact, never answered: not sent again
    assert "may exist" not in result.reason


async def _peaks(length: bool) -> tuple[int, int]:
    """Peak traced memory of one 50 MB poll reply: read whole by httpx (as the transport did
    before bounded reads) and by :class:`SuperDuperTransport` (refused at the limit)."""
    async with hostile(small([FILE]), [zeros()], length=length) as (url, _):
        tracemalloc.start()
        async with httpx.AsyncClient() as http:
            whole = await http.get(f"{url}/api/v1/file/f1")
            assert len(whole.content) == HUGE
            del whole
        baseline = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tracemalloc.start()
        transport = transport_for(url)
        try:
            with pytest.raises(TransientError):
                await transport.poll("f1")
        finally:
            await transport.aclose()
        bounded = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return baseline, bounded


if __name__ == "__main__":  # python tests/test_hostile_server.py: the memory figures
    for with_length in (True, False):
        before, after = trio.run(_peaks, with_length)
        print(
            f"50 MB poll reply ({'Content-Length' if with_length else 'no length'}), peak traced "
            f"memory: whole read {before / 2**20:.1f} MiB, bounded read {after / 2**20:.1f} MiB "
            f"(ratio {after / before:.3f})"
        )
