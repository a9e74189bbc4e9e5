"""Reading replies: hybridgen's own reader (:mod:`hybridgen._reply`) beside h11, on the same bytes.

Three replies recorded from ``hybridgen serve`` (hypercorn), as :class:`hybridgen.http1.Pool`
reads them: the start's (``Content-Length``, one read), a poll's (``Content-Length``, one read)
and an SSE stream's (chunked: its head and first comment in one read, then an event per read,
then the last chunk). The baseline is what the pool did before: an ``h11.Connection`` told the
request's method, fed the same reads, its events turned into the same status, header dictionary
and body bytes; both reuse one connection object from reply to reply. Each figure is the best of
five runs (microseconds per reply)::

    python -m hybridgen.bench replies [--smoke]
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import h11

from .._reply import MAX_HEAD, ReplyReader
from ._report import Figure, figure

__all__ = ["REPLIES", "read_h11", "read_ours", "run"]

_DATE = b"date: Thu, 03 Dec 2026 15:34:59 GMT\r\nserver: hypercorn-h11\r\n"
_START_BODY = (
    b'[{"id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9","url":null,"thumbnail_url":null,'
    b'"type":"image","image_generation_id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9",'
    b'"image_generation":{"id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9","prompt":"a cat",'
    b'"seed":1,"width":1024,"height":1024,"generation_config_name":"local/flux"},'
    b'"video_generation_id":null,"video_generation":null,"audio_generation_id":null,'
    b'"audio_generation":null,"duration":null,"tasks":[{"type":"image-generation-flow",'
    b'"status":"in_progress","id":1,"file_id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9",'
    b'"project_id":null}]}]'
)
_POLL_BODY = (
    b'{"id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9","url":"http://127.0.0.1:45909/files/'
    b'a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9.webp","thumbnail_url":"http://127.0.0.1:45909/'
    b'files/a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9.webp?thumbnail=1","type":"image",'
    b'"image_generation_id":"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9","image_generation":{"id":'
    b'"a8d1d4c4-c5e5-48d0-a93f-a0570464f1f9","prompt":"a cat","seed":1,"width":1024,'
    b'"height":1024,"generation_config_name":"local/flux"},"video_generation_id":null,'
    b'"video_generation":null,"audio_generation_id":null,"audio_generation":null,'
    b'"duration":null,"tasks":[]}'
)


def _json(body: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 \r\ncontent-length: %d\r\ncontent-type: application/json\r\n" % len(body)
    return [head + _DATE + b"\r\n" + body]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_SSE_HEAD = (
    b"HTTP/1.1 200 \r\ncache-control: no-store\r\nx-accel-buffering: no\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    + _DATE
    + b"Transfer-Encoding: chunked\r\n\r\n"
)
_EVENT = b'data: {"type":"file","object":{"id":"a8d1d4c4","tasks":[{"status":"in_progress"}]}}\n\n'
REPLIES: dict[str, tuple[str, list[bytes]]] = {
    "start": ("POST", _json(_START_BODY)),
    "poll": ("GET", _json(_POLL_BODY)),
    "sse": (
        "GET",
        [_SSE_HEAD + _chunk(b": connected\n\n"), _chunk(_EVENT), _chunk(_EVENT), b"0\r\n\r\n"],
    ),
}
"""Each reply's request method and the reads it comes in."""


def read_ours(reader: ReplyReader, method: str, reads: Sequence[bytes]) -> tuple[int, int]:
    """Status and body length of one reply read as ``http1.Pool`` reads it now."""
    pieces = iter(reads)
    reader.start(method == "HEAD")
    reader.feed(next(pieces))
    head = reader.head()
    while head is None:
        reader.feed(next(pieces))
        head = reader.head()
    status, _headers = head
    size = 0
    while True:
        piece = reader.body()
        while piece is None:
            reader.feed(next(pieces))
            piece = reader.body()
        if not piece:
            break
        size += len(piece)
    if not reader.reusable():
        raise RuntimeError("the reply did not leave its connection reusable")
    return status, size


_END = h11.EndOfMessage()
_SENT = {m: h11.Request(method=m, target="/", headers=[("Host", "-")]) for m in ("GET", "POST")}
"""What h11 was told was sent (the pool kept one per method: only the method matters)."""


def read_h11(conn: h11.Connection, method: str, reads: Sequence[bytes]) -> tuple[int, int]:
    """Status and body length of one reply read as ``http1.Pool`` read it with h11."""
    pieces = iter(reads)
    conn.send(_SENT[method])
    conn.send(_END)

    def event() -> object:
        while True:
            e = conn.next_event()
            if e is not h11.NEED_DATA:
                return e
            conn.receive_data(next(pieces))

    while True:
        e = event()
        if isinstance(e, h11.Response):
            headers: dict[str, str] = {}
            for name, value in e.headers:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            status = e.status_code
            break
    size = 0
    while isinstance(e := event(), h11.Data):
        size += len(bytes(e.data))
    if not (conn.our_state is h11.DONE and conn.their_state is h11.DONE):
        raise RuntimeError("h11 did not end the reply")
    conn.start_next_cycle()
    return status, size


def _per_reply(read: Callable[[], tuple[int, int]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        read()
    return (time.perf_counter() - start) / n * 1e6


def run(smoke: bool = False, n: int | None = None) -> list[Figure]:
    """Microseconds per reply of each recorded reply, ours beside h11 (best of five runs)."""
    n = n or (200 if smoke else 20000)
    repeats = 1 if smoke else 5
    figures = []
    for name, (method, reads) in REPLIES.items():
        reader = ReplyReader()
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        if read_ours(reader, method, reads) != read_h11(conn, method, reads):
            raise RuntimeError(f"{name}: the two readers disagree")
        mine = functools.partial(read_ours, reader, method, reads)
        theirs = functools.partial(read_h11, conn, method, reads)
        ours = min(_per_reply(mine, n) for _ in range(repeats))
        base = min(_per_reply(theirs, n) for _ in range(repeats))
        figures.append(figure(f"replies.{name}.read", ours, "µs/reply", base))
    return figures
