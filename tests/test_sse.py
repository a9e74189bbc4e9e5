"""The SSE reader: whole events of bounded size, however the bytes are cut into chunks."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridgen.api import Config
from hybridgen.errors import OversizedMessage, TransientError, TransportError
from hybridgen.http1 import HTTPFailure
from hybridgen.sse import HEARTBEAT, SseParser, sse_messages
from hybridgen.transport import SuperDuperTransport

STREAM = (
    b": connected\r\n\r\n"
    b"data: one\r\n\r\n"
    b"event: x\ndata: two\ndata: lines\n\n"
    b"id: 3\rdata: three\r\r"
    b"data: " + b"x" * 300 + b"\n\n"
    b"data: four\n\n"
    b"data: cut off at the end"
)
EXPECTED = ["one", "two\nlines", "three", "<oversized>", "four"]


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        await trio.lowlevel.checkpoint()
        if cut > previous:
            yield data[previous:cut]
            previous = cut


async def _read(data: bytes, cuts: list[int], limit: int, heartbeats: bool = False) -> list[str]:
    got: list[str] = []
    messages = sse_messages(_chunks(data, cuts), limit, heartbeats=heartbeats)
    while True:
        try:
            got.append(await messages.__anext__())
        except StopAsyncIteration:
            return got
        except OversizedMessage:
            got.append("<oversized>")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_events_are_the_same_however_the_stream_is_chunked(cuts: list[int]) -> None:
    assert trio.run(_read, STREAM, cuts, 200) == EXPECTED


def test_a_dropped_connection_is_a_transient_error() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        raise HTTPFailure("connection lost (peer reset)", sent=True)

    async def main() -> tuple[str, str]:
        messages = sse_messages(broken())
        first = await messages.__anext__()
        try:
            await messages.__anext__()
        except TransientError as exc:
            return first, str(exc)
        raise AssertionError("no error")

    first, error = trio.run(main)
    assert first == "one" and "SSE connection lost" in error


RULES = (
    b"\xef\xbb\xbfdata:no space\n\n"  # a byte-order mark first; no space after the colon
    b"data\n\n"  # a data field without a value: nothing to dispatch
    b"dataX: not data\nevent: only\n\n"  # another field, and an event without data
    b": a comment\ndata:  two spaces\n\n"  # only the first space is dropped
    b"data: caf\xc3\xa9 \xff\n\n"  # UTF-8, and an invalid byte replaced
    b"data: a\r\ndata:\r\ndata: b\r\n\r\n"  # an empty data line keeps its line
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(RULES)), max_size=8))
def test_the_standards_field_rules_hold_however_the_stream_is_chunked(cuts: list[int]) -> None:
    got = trio.run(_read, RULES, cuts, 200)
    assert got == ["no space", " two spaces", "café \ufffd", "a\n\nb"]


# -- the parser against a reading of the whole stream at once ----------------------------------

_LINE = re.compile(rb"([^\r\n]*)(\r\n|\r|\n)")


def _reference(stream: bytes, limit: int, heartbeats: bool) -> list[str | None]:
    """The events of the whole stream read at once, line by line (as the standard reads it):
    an event is its lines up to an empty line, its first line kept even when empty (a blank
    line right after an event starts the next one); its size counts every line break."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    events: list[str | None] = []
    lines: list[bytes] = []
    size = 0
    opened = False
    for match in _LINE.finditer(stream):  # a last line without its line break is cut off
        line, ending = match.groups()
        size += len(line) + len(ending)
        if line or not lines:
            lines.append(line)
            continue
        if size > limit:
            events.append(None)
        else:
            data = []
            for text in (line.decode("utf-8", "replace") for line in lines):
                name, _, value = text.partition(":")
                if name == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
            if "\n".join(data):
                events.append("\n".join(data))
            elif heartbeats and opened:
                events.append(HEARTBEAT)
        opened = True
        lines, size = [], 0
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut for cut in cuts if cut <= len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]  # empty ones too


def _parse(data: bytes, cuts: list[int], limit: int, heartbeats: bool) -> list[str | None]:
    parser = SseParser(limit, heartbeats)
    events = [event for chunk in _split(data, cuts) for event in parser.feed(chunk)]
    return events + parser.close()


_PIECES = [
    *(b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r"),  # line breaks of every kind
    *(b"data", b"data: ", b":", b" ", b"x", b"event: e", b": ping", b"dat"),  # fields, comments
    *(b"\xef\xbb\xbf", b"\xef", b"\xc3", b"\xa9", b"\xff"),  # byte-order marks, UTF-8 pieces
]
_ENDS = [b"", b"\n\n", b"\r\n\r\n", b"\r\r", b"\n", b"\r"]


@st.composite
def _cut_streams(draw: st.DrawFn, max_parts: int = 6) -> tuple[bytes, list[int]]:
    """A stream (maybe a byte-order mark, then parts: pieces, then maybe the end of an event),
    and where to cut it: in its first bytes, after some of its parts (a chunk that starts an
    event), and anywhere."""
    # the usual streams: only LF line breaks, or only CR LF; else any mix
    breaks = draw(st.sampled_from([b"\n", b"\r\n", None]))
    pieces, ends = st.sampled_from(_PIECES), st.sampled_from(_ENDS)
    if breaks is not None:
        fields = [piece for piece in _PIECES if b"\r" not in piece and b"\n" not in piece]
        pieces = st.sampled_from([*fields, breaks, breaks * 2])
        ends = st.sampled_from([b"", breaks, breaks * 2])
    stream, cuts = draw(st.sampled_from([b"", b"\xef\xbb\xbf"])), [draw(st.integers(0, 3))]
    for _ in range(draw(st.integers(0, max_parts))):
        stream += b"".join(draw(st.lists(pieces, max_size=8))) + draw(ends)
        if draw(st.booleans()):
            cuts.append(len(stream))
    cuts += draw(st.lists(st.integers(0, len(stream)), max_size=6))
    return stream, cuts


@settings(max_examples=1000, deadline=None)
@given(_cut_streams(), st.integers(1, 40), st.booleans())
# a CR ending a chunk, then its LF: one line break (no empty line after an event, no byte more)
@example((b"data: a\n\r\n\ndata: b\n\n", [9]), 100, True)
@example((b"data: a\r\r\ndata: b\n\n", [9]), 9, False)  # the LF makes "a" 10 bytes: over
@example((b"data: a\r\r", [9]), 9, False)  # a CR at the end of the stream: "a" is whole
@example((b"\n\n\xef\xbb\xbfdata: b\n\n", [2]), 100, False)  # a BOM only at the start
@example((b"\xef\xbb\xbfdata: a\n\n", [1, 2]), 100, False)  # a BOM split across chunks
def test_the_parser_reads_any_split_as_the_whole_stream_at_once(
    cut_stream: tuple[bytes, list[int]], limit: int, heartbeats: bool
) -> None:
    stream, cuts = cut_stream
    assert _parse(stream, cuts, limit, heartbeats) == _reference(stream, limit, heartbeats)


@settings(max_examples=150, deadline=None)
@given(_cut_streams(), st.integers(1, 40), st.booleans())
def test_messages_are_the_parsers_events(
    cut_stream: tuple[bytes, list[int]], limit: int, heartbeats: bool
) -> None:
    stream, cuts = cut_stream
    expected = _reference(stream, limit, heartbeats)
    got = trio.run(_read, stream, cuts, limit, heartbeats)
    assert got == ["<oversized>" if event is None else event for event in expected]


def test_events_of_one_chunk_are_handed_out_without_reading_again() -> None:
    reads: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        reads.append(1)
        yield b"data: one\n\ndata: two\r\n\r\n: ping\n\ndata: three\n\ndata: fo"
        reads.append(2)
        yield b"ur\n\n"
        reads.append(3)

    async def main() -> list[tuple[str, int]]:
        messages = sse_messages(chunks(), heartbeats=True)
        return [(text, len(reads)) async for text in messages]

    got = trio.run(main)
    assert got == [("one", 1), ("two", 1), (HEARTBEAT, 1), ("three", 1), ("four", 2)]
    assert reads == [1, 2, 3]


def test_after_aclose_the_messages_end() -> None:
    async def main() -> list[str]:
        messages = sse_messages(_chunks(b"data: one\n\ndata: two\n\n", []))
        first = await messages.__anext__()
        await messages.aclose()
        return [first, *[text async for text in messages]]

    assert trio.run(main) == ["one"]


# -- SuperDuperTransport.listen_sse over a raw loopback server, on every path ---------------------

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Server:
    """Answers the n-th request with ``replies[n]``: its bytes, then ``"keep"`` the connection
    (read the next request) or ``"close"`` it. Counts connections; ``ended`` is set once one has
    ended, ``closed_by_client`` counts those the client closed."""

    def __init__(self, replies: list[tuple[bytes, str]]) -> None:
        self.replies = replies
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = 0
        self.ended = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        self.closed_by_client += 1
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(head)
                reply, then = self.replies[len(self.requests) - 1]
                await stream.send_all(reply)
                if then == "close":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed_by_client += 1
        finally:
            await trio.aclose_forcefully(stream)
            self.ended.set()


async def _listen(
    replies: list[tuple[bytes, str]], body: Callable[[SuperDuperTransport], Awaitable[object]]
) -> tuple[object, _Server]:
    server = _Server(replies)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        transport = SuperDuperTransport(
            Config(url=f"http://127.0.0.1:{server.port}", token="t0ken-123")
        )
        with trio.fail_after(5):
            try:
                got: object = await body(transport)
            except TransportError as exc:
                got = exc
            await transport.aclose()
            await server.ended.wait()
        nursery.cancel_scope.cancel()
    return got, server


async def _first_two(transport: SuperDuperTransport) -> list[str]:
    async with transport.listen_sse("f 1") as messages:
        return [await messages.__anext__(), await messages.__anext__()]


async def _all(transport: SuperDuperTransport) -> list[str]:
    async with transport.listen_sse("f1") as messages:
        return [text async for text in messages]


def test_listen_sse_hands_out_the_events_and_closes_a_stream_left_open() -> None:
    stream = SSE_HEAD + _chunk(b": hi\n\ndata: one\n\ndata: two\n\ndata: three\n\n")
    got, server = trio.run(_listen, [(stream, "keep")], _first_two)
    assert got == ["one", "two"]
    assert server.closed_by_client == 1
    assert server.requests[0].startswith(b"GET /api/v1/events/file.f%201 HTTP/1.1\r\n")
    assert b"\r\nAccept: text/event-stream\r\n" in server.requests[0]


def test_listen_sse_gives_a_stream_read_to_its_end_back_to_the_pool() -> None:
    stream = SSE_HEAD + _chunk(b"data: one\n\n") + _chunk(b": ping\n\ndata: two\n\n") + b"0\r\n\r\n"

    async def twice(transport: SuperDuperTransport) -> list[list[str]]:
        return [await _all(transport), await _all(transport)]

    got, server = trio.run(_listen, [(stream, "keep"), (stream, "keep")], twice)
    assert got == [["one", HEARTBEAT, "two"]] * 2
    assert server.connections == 1 and len(server.requests) == 2


@pytest.mark.parametrize(
    ("reply", "then", "error", "status"),
    [
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b'Content-Length: 17\r\n\r\n{"detail":"busy"}',
            "keep",
            "busy",
            503,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi",
            "keep",
            "SSE connect: the server answered text/html, not an event stream",
            200,
        ),
        (
            SSE_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n"),
            "keep",
            "SSE connect: the stream is compressed ('gzip'), which was not asked",
            None,
        ),
        (b"", "close", "SSE connect: connection failed", None),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "close", "SSE connect: connection failed", None),
    ],
    ids=["503", "html", "gzip", "no reply", "cut head"],
)
def test_listen_sse_refuses_what_is_not_a_plain_event_stream(
    reply: bytes, then: str, error: str, status: int | None
) -> None:
    got, server = trio.run(_listen, [(reply, then)], _all)
    assert isinstance(got, TransientError), got
    assert error in str(got) and got.status == status
    assert server.closed_by_client == (then == "keep")  # the client closed its connection


def test_listen_sse_reports_a_connection_lost_mid_stream_as_transient() -> None:
    got, _ = trio.run(_listen, [(SSE_HEAD + _chunk(b"data: one\n\n"), "close")], _all)
    assert isinstance(got, TransientError) and "SSE connection lost" in str(got)


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.ReadTimeout, "SSE connect: timed out"),
        (httpx.ConnectError, "SSE connect: connection failed (no route)"),
    ],
)
def test_listen_sse_through_httpx_maps_its_failures(
    failure: type[httpx.TransportError], error: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure("no route", request=request)

    async def main() -> TransientError:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            transport = SuperDuperTransport(
                Config(url="http://127.0.0.1:9", token="t0ken-123"), http=http
            )
            with pytest.raises(TransientError) as info:
                await _all(transport)
            return info.value

    assert str(trio.run(main)) == error


def test_listen_sse_cancelled_while_reading_closes_its_connection() -> None:
    async def cancelled(transport: SuperDuperTransport) -> list[str]:
        got = []
        with trio.CancelScope() as scope:
            async with transport.listen_sse("f1") as messages:
                got.append(await messages.__anext__())
                scope.cancel()
                got.append(await messages.__anext__())  # in one chunk with the first: no wait
                await messages.__anext__()
        assert scope.cancelled_caught
        return got

    stream = SSE_HEAD + _chunk(b"data: one\n\ndata: two\n\n")
    got, server = trio.run(_listen, [(stream, "keep")], cancelled)
    assert got == ["one", "two"] and server.closed_by_client == 1
