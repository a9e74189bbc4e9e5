"""Server-Sent Events, read safely: whole events of bounded size, parsed as the standard says.

:func:`sse_messages` turns the bytes of an ``text/event-stream`` body into the ``data`` of each
event. Both transports use it (the real one on the HTTP response, the in-memory one on the bytes
the emulator's model would send), so they read streams the same way. The bytes are cut into whole
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
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

from .errors import OversizedMessage, TransientError
from .http1 import HTTPFailure

__all__ = ["HEARTBEAT", "PUSH_MAX_MESSAGE", "SseMessages", "sse_messages"]

PUSH_MAX_MESSAGE: Final = 4 * 2**20
"""The largest SSE event accepted by default (bytes); a larger one is skipped."""

HEARTBEAT: Final = ""
"""What a push stream yields for a sign of life without a message (an SSE keep-alive comment):
no message carries empty data, so transports and the driver tell it apart by this value."""

_BLANK_LINE: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
"""The end of an event: a line break, then an empty line (any of CR LF, CR, LF)."""
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_BOM: Final = b"\xef\xbb\xbf"


def _data(event: bytes) -> str | None:
    """The ``data`` of one whole event (its bytes up to the blank line), or ``None``."""
    data: list[str] = []
    for line in _LINE_BREAK.split(event.decode("utf-8", "replace")):
        if line.startswith("data"):
            name, _, value = line.partition(":")
            if name != "data":
                continue
            data.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(data) or None  # an empty data field dispatches nothing of use


async def _events(
    chunks: AsyncIterator[bytes], limit: int, heartbeats: bool = False
) -> AsyncGenerator[str | None]:
    """The data of each event that has some; ``None`` in place of an event over ``limit``;
    with ``heartbeats``, :data:`HEARTBEAT` for an event without data but the stream's first."""
    buffer = bytearray()
    skipping = False  # inside an event that is over the limit: drop its bytes
    first = True
    opened = False  # an event has ended: a later one without data is a keep-alive
    async for chunk in chunks:
        searched = max(len(buffer) - 3, 0)
        buffer += chunk
        if first and len(buffer) >= len(_BOM):
            first = False
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
        while True:
            match = _BLANK_LINE.search(buffer, searched)
            if match is None:
                break
            if skipping or match.end() > limit:
                skipping = False
                yield None
            else:
                data = _data(bytes(buffer[: match.start()]))
                if data is not None:
                    yield data
                elif heartbeats and opened:
                    yield HEARTBEAT
            opened = True
            del buffer[: match.end()]
            searched = 0
        if len(buffer) > limit:
            skipping = True
            del buffer[:-3]  # keep a possible line break split across chunks
    # an event cut off by the end of the stream is not dispatched (the SSE standard's rule)


class SseMessages:
    """The ``data`` of each SSE event of one stream (events without data are skipped, or with
    ``heartbeats`` reported as :data:`HEARTBEAT` after the first event).

    Iteration ends when the stream ends; it raises :class:`~hybridgen.errors.TransientError` when
    the connection fails, and :class:`~hybridgen.errors.OversizedMessage` for an event over the
    limit, after which the iteration can go on.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE, heartbeats: bool = False
    ) -> None:
        self._events = _events(chunks, limit, heartbeats)
        self._limit = limit

    def __aiter__(self) -> SseMessages:
        return self

    async def __anext__(self) -> str:
        try:
            data = await self._events.__anext__()
        except (HTTPFailure, OSError) as exc:
            raise TransientError(f"SSE connection lost ({exc})") from None
        if data is None:
            raise OversizedMessage(
                f"an SSE message was over the size limit ({self._limit} bytes); skipped"
            )
        return data

    async def aclose(self) -> None:
        """Stop reading (closes the parser; the caller closes the connection)."""
        await self._events.aclose()


def sse_messages(
    chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE, *, heartbeats: bool = False
) -> SseMessages:
    """The messages of an ``text/event-stream`` body given as byte chunks (see the module)."""
    return SseMessages(chunks, limit, heartbeats)
