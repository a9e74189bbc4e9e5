"""Server-Sent Events, read safely: whole events of bounded size, parsed by ``httpx-sse``.

:func:`sse_messages` turns the bytes of an ``text/event-stream`` body into the ``data`` of each
event. Both transports use it (the real one on the HTTP response, the in-memory one on the bytes
the emulator's model would send), so they read streams the same way. The bytes are cut into whole
events (up to a blank line) before ``httpx_sse`` parses them, so no event larger than ``limit``
bytes is ever held in memory: such an event is skipped and reported as
:class:`~hybridgen.errors.OversizedMessage` (the stream goes on).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final

import httpx
import httpx_sse

from .errors import OversizedMessage, TransientError

__all__ = ["PUSH_MAX_MESSAGE", "SseMessages", "sse_messages"]

PUSH_MAX_MESSAGE: Final = 4 * 2**20
"""The largest SSE event accepted by default (bytes); a larger one is skipped."""

_BLANK_LINE: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
"""The end of an event: a line break, then an empty line (any of CR LF, CR, LF)."""
_OVERSIZED: Final = "hybridgen-oversized"
_MARKER_EVENT: Final = f"event: {_OVERSIZED}\n\n".encode()


class _Framed(httpx.AsyncByteStream):
    """Whole events of at most ``limit`` bytes; in place of a larger one, a marker event."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        skipping = False  # inside an event that is over the limit: drop its bytes
        async for chunk in self._chunks:
            searched = max(len(buffer) - 3, 0)
            buffer += chunk
            while True:
                match = _BLANK_LINE.search(buffer, searched)
                if match is None:
                    break
                if skipping or match.end() > self._limit:
                    skipping = False
                    yield _MARKER_EVENT
                else:
                    yield bytes(buffer[: match.end()])
                del buffer[: match.end()]
                searched = 0
            if len(buffer) > self._limit:
                skipping = True
                del buffer[:-3]  # keep a possible line break split across chunks
        # an event cut off by the end of the stream is not dispatched (the SSE standard's rule)


class SseMessages:
    """The ``data`` of each SSE event of one stream (events without data are skipped).

    Iteration ends when the stream ends; it raises :class:`~hybridgen.errors.TransientError` when
    the connection fails, and :class:`~hybridgen.errors.OversizedMessage` for an event over the
    limit, after which the iteration can go on.
    """

    def __init__(self, chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE) -> None:
        framed = httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Framed(chunks, limit)
        )
        self._events = httpx_sse.EventSource(framed).aiter_sse()
        self._limit = limit

    def __aiter__(self) -> SseMessages:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                event = await self._events.__anext__()
            except (httpx.HTTPError, OSError) as exc:
                raise TransientError(f"SSE connection lost ({type(exc).__name__})") from None
            if event.event == _OVERSIZED:
                raise OversizedMessage(
                    f"an SSE message was over the size limit ({self._limit} bytes); skipped"
                )
            if event.data:
                return event.data

    async def aclose(self) -> None:
        """Stop reading (closes the parser; the caller closes the connection)."""
        await self._events.aclose()


def sse_messages(chunks: AsyncIterator[bytes], limit: int = PUSH_MAX_MESSAGE) -> SseMessages:
    """The messages of an ``text/event-stream`` body given as byte chunks (see the module)."""
    return SseMessages(chunks, limit)
