"""Server-Sent Events, read safely: whole events of bounded size, parsed as the standard says.

:func:`sse_messages` turns the bytes of an ``text/event-stream`` body into the ``data`` of each
event. Both transports use it (the real one on the HTTP response, the in-memory one on the bytes
the emulator's model would send), so they read streams the same way; :class:`SseParser` is the
reading itself, without I/O, fed the bytes in any chunks. The bytes are cut into whole
events (up to a blank line) before an event is parsed, so no event larger than ``limit`` bytes is
ever held in memory: such an event is skipped and reported as
:class:`~hybridgen.errors.OversizedMessage` (the stream goes on).

Parsing follows the WHATWG rules for the fields hybridgen reads: lines end with CR LF, LF or CR;
a line starting with ``:`` is a comment; ``data`` lines are joined with line feeds; one space
after the colon is dropped; an event without data is not dispatched; a leading byte-order mark is
ignored; the bytes are UTF-8 (invalid sequences replaced).

With ``heartbeats=True`` an event without data (a keep-alive comment such as ``: ping``) is
reported as :data:`HEARTBEAT` (an empty string) instead of being skipped, so the reader knows the
stream is alive; the first event of a stream is not reported when it has no data (a server
flushing its headers with a comment says only that the stream opened).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

from .errors import OversizedMessage, TransientError
from .http1 import HTTPFailure

__all__ = ["HEARTBEAT", "PUSH_MAX_MESSAGE", "SseMessages", "SseParser", "sse_messages"]

PUSH_MAX_MESSAGE: Final = 4 * 2**20
"""The largest SSE event accepted by default (bytes); a larger one is skipped."""

HEARTBEAT: Final = ""
"""What a push stream yields for a sign of life without a message (an SSE keep-alive comment):
no message carries empty data, so transports and the driver tell it apart by this value."""

_BLANK_LINE: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
"""The end of an event: a line break, then an empty line (any of CR LF, CR, LF)."""
_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_BOM: Final = b"\xef\xbb\xbf"
_CR: Final = 13
_LF: Final = 10


def _data(event: bytes | bytearray) -> str | None:
    """The ``data`` of one whole event (its bytes up to the blank line), or ``None``.

    The fields are found in the bytes and only the data is decoded: line breaks, ``:`` and the
    space are ASCII, which UTF-8 never uses inside a character, and an invalid sequence is
    replaced without taking the ASCII byte after it, so this is the decoded event's reading.
    """
    if event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event:
        return event[6:].decode("utf-8", "replace") or None  # the usual event: one data line
    lines = _LINE_BREAK.split(event) if b"\r" in event else event.split(b"\n")
    data: list[bytes | bytearray] = []
    for line in lines:
        if line.startswith(b"data"):
            name, _, value = line.partition(b":")
            if name != b"data":
                continue
            data.append(value[1:] if value.startswith(b" ") else value)
    # an empty data field dispatches nothing of use
    return b"\n".join(data).decode("utf-8", "replace") or None


class SseParser:
    """The SSE reading of :func:`sse_messages` without I/O: :meth:`feed` it the stream's bytes
    as they come, in any chunks, then call :meth:`close` at the stream's end.

    Each call returns the events its bytes completed, in order: the ``data`` of an event that
    has some, ``None`` in place of an event over ``limit`` bytes (counted with its line breaks,
    however the bytes are split), and with ``heartbeats`` :data:`HEARTBEAT` for an event without
    data but the stream's first. The events are those of the whole stream read at once: a CR
    that ends a chunk is a line break whatever follows, and an LF that follows it in the next
    chunk is the same line break (CR LF), not an empty line.
    """

    __slots__ = ("_buffer", "_cr", "_head", "_heartbeats", "_limit", "_opened", "_skipping")

    def __init__(self, limit: int = PUSH_MAX_MESSAGE, heartbeats: bool = False) -> None:
        self._limit = limit
        self._heartbeats = heartbeats
        self._buffer = bytearray()  # the bytes of the event being read
        self._head = True  # the stream's first bytes, a prefix of a byte-order mark so far
        self._skipping = False  # inside an event that is over the limit: drop its bytes
        self._opened = False  # an event has ended: a later one without data is a keep-alive
        self._cr = False  # the last event ended with a CR that ended a chunk: an LF next is its

    def feed(self, chunk: bytes) -> list[str | None]:
        """The events that ``chunk``, the stream's next bytes, completes."""
        if not chunk:
            return []
        if self._cr:
            self._cr = False
            if chunk[0] == _LF:  # the rest of the CR LF that ended the last event
                chunk = chunk[1:]
                if not chunk:
                    return []
        buffer = self._buffer
        if self._head:
            buffer += chunk
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                return []  # a byte-order mark may be coming: no line break yet either
            self._head = False
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
            return self._scan(0, False)
        if b"\r" not in chunk:
            if not buffer:
                return self._lines(chunk, b"\n\n")
            if b"\r" not in buffer[-3:]:
                return self._joined(chunk)
        elif not buffer and chunk.count(b"\r") == chunk.count(b"\n") == chunk.count(b"\r\n"):
            return self._lines(chunk, b"\r\n\r\n")  # every line break a CR LF
        searched = max(len(buffer) - 3, 0)  # a blank line is at most 4 bytes
        buffer += chunk
        return self._scan(searched, False)

    def close(self) -> list[str | None]:
        """The events that the stream's end completes (one that ended with a CR it held back);
        an event cut off by the end is not dispatched (the SSE standard's rule)."""
        if self._head:
            return []
        return self._scan(0, True)

    def _lines(self, chunk: bytes, blank: bytes) -> list[str | None]:
        """:meth:`feed` for a chunk that starts an event (the buffer empty) and whose every line
        break is the same, LF or CR LF: ``blank`` (two of them) ends each event."""
        events: list[str | None] = []
        *whole, rest = chunk.split(blank)
        limit, extra = self._limit, len(blank)
        for event in whole:
            if self._skipping or len(event) + extra > limit:
                self._skipping = False
                events.append(None)
            else:
                data = _data(event)
                if data is not None:
                    events.append(data)
                elif self._heartbeats and self._opened:
                    events.append(HEARTBEAT)
            self._opened = True
        if rest:
            if len(rest) > limit:
                self._skipping = True
                rest = rest[-3:]  # keep a possible line break split across chunks
            self._buffer += rest
        return events

    def _joined(self, chunk: bytes) -> list[str | None]:
        """:meth:`feed` for a chunk without CR after bytes of an event whose last three have
        none: the event ends at the first LF LF, across the two or in the chunk."""
        buffer = self._buffer
        if buffer[-1] == _LF and chunk[0] == _LF:
            at = -1  # the blank line is the buffer's last byte and the chunk's first
        else:
            at = chunk.find(b"\n\n")
            if at < 0:
                buffer += chunk
                if len(buffer) > self._limit:
                    self._skipping = True
                    del buffer[:-3]  # keep a possible line break split across chunks
                return []
        if self._skipping or len(buffer) + at + 2 > self._limit:
            self._skipping = False
            events: list[str | None] = [None]
        else:
            data = _data(buffer[:-1] if at < 0 else buffer + chunk[:at])
            events = [data] if data is not None else []
            if data is None and self._heartbeats and self._opened:
                events.append(HEARTBEAT)
        self._opened = True
        buffer.clear()
        rest = chunk[at + 2 :]
        if rest:
            events += self._lines(rest, b"\n\n")
        return events

    def _scan(self, searched: int, final: bool) -> list[str | None]:
        """The events that end in the buffer (blank lines from ``searched`` on); the buffer
        keeps the rest. Unless ``final``, a blank line ending with the buffer's last byte, a CR,
        may take an LF still to come: then ``_cr``, or when the event's size would be at the
        limit, it waits for that byte."""
        events: list[str | None] = []
        buffer, limit = self._buffer, self._limit
        start = 0
        while True:
            match = _BLANK_LINE.search(buffer, searched)
            if match is None:
                break
            end = match.end()
            if not final and end == len(buffer) and buffer[-1] == _CR:
                if end - start == limit and not self._skipping:
                    break  # over the limit if an LF comes next: wait for it
                self._cr = True
            if self._skipping or end - start > limit:
                self._skipping = False
                events.append(None)
            else:
                data = _data(buffer[start : match.start()])
                if data is not None:
                    events.append(data)
                elif self._heartbeats and self._opened:
                    events.append(HEARTBEAT)
            self._opened = True
            start = searched = end
        if start:
            del buffer[:start]
        if len(buffer) > limit:
            self._skipping = True
            del buffer[:-3]  # keep a possible line break split across chunks
        return events


class SseMessages:
    """The ``data`` of each SSE event of one stream (events without data are skipped, or with
    ``heartbeats`` reported as :data:`HEARTBEAT` after the first event).

    Iteration ends when the stream ends; it raises :class:`~hybridgen.errors.TransientError` when
    the connection fails, and :class:`~hybridgen.errors.OversizedMessage` for an event over the
    limit, after which the iteration can go on. Events that came in one chunk are handed out
    without reading again. A plain class, not an async generator (trio hooks the start and end
    of every async generator, a cost per stream, and a generator adds a frame to every event).
    """

    __slots__ = ("_chunks", "_done", "_events", "_limit", "_parser")

    def __init__(
        self, chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE, heartbeats: bool = False
    ) -> None:
        self._chunks = chunks.__aiter__()
        self._parser = SseParser(limit, heartbeats)
        self._events: deque[str | None] = deque()  # parsed, not handed out yet
        self._limit = limit
        self._done = False  # the chunks ended or failed, or aclose: nothing more to read

    def __aiter__(self) -> SseMessages:
        return self

    async def __anext__(self) -> str:
        events = self._events
        while not events:
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                events.extend(self._parser.close())
                continue
            except (HTTPFailure, OSError) as exc:
                self._done = True
                raise TransientError(f"SSE connection lost ({exc})") from None
            except BaseException:
                self._done = True  # e.g. cancelled: the reading is over, as a generator's
                raise
            events.extend(self._parser.feed(chunk))
        data = events.popleft()
        if data is None:
            raise OversizedMessage(
                f"an SSE message was over the size limit ({self._limit} bytes); skipped"
            )
        return data

    async def aclose(self) -> None:
        """Stop reading (the events not handed out are dropped; the caller closes the
        connection)."""
        self._done = True
        self._events.clear()


def sse_messages(
    chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE, *, heartbeats: bool = False
) -> SseMessages:
    """The messages of an ``text/event-stream`` body given as byte chunks (see the module)."""
    return SseMessages(chunks, limit, heartbeats)
