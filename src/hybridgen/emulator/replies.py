"""What the emulator answers besides a file object: error replies, redirects, and the exceptions
that carry them from :class:`~hybridgen.emulator.model.ServerModel` to its front ends."""

from __future__ import annotations

import json
from typing import Final

import attrs

__all__ = [
    "GARBAGE_BODY",
    "HTML_ERROR_PAGE",
    "BadRequest",
    "ErrorReply",
    "Forbidden",
    "Redirect",
    "Rejected",
    "SseRefused",
    "WsDropped",
    "WsRefused",
]

HTML_ERROR_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>emulated CDN error page (file_mode html)</p></body></html>"
)


def short_repr(value: object) -> str:
    """A short ``repr`` of a rejected value (a control request may send a huge one)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


@attrs.frozen
class Redirect:
    """A redirect reply: its ``status`` and ``Location`` (relative or absolute)."""

    status: int
    location: str


@attrs.frozen
class ErrorReply:
    """An HTTP error reply as the emulator sends it: status, body and ``Retry-After`` seconds."""

    status: int
    body: bytes
    content_type: str = "application/json"
    retry_after: float | None = None


def detail_reply(status: int, detail: object, retry_after: float | None = None) -> ErrorReply:
    return ErrorReply(status, json.dumps({"detail": detail}).encode(), retry_after=retry_after)


class Rejected(Exception):
    """The start request is answered with an error: :attr:`reply` is the answer."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply


class BadRequest(Rejected, ValueError):
    """The start request's body is invalid; ``field`` names the first bad field.

    Its :attr:`reply` is a FastAPI-style 422:
    ``{"detail": [{"loc": ["body", ...], "msg": ..., "type": ...}]}``.
    """

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        loc = ["body", *field.split(".")] if field != "body" else ["body"]
        super().__init__(detail_reply(422, [{"loc": loc, "msg": message, "type": kind}]))
        self.args = (f"{field}: {message}",)
        self.field = field


GARBAGE_BODY: Final = b"<html><body>502 Bad Gateway (emulated garbage)</body"
"""What a poll with the ``garbage`` fault gets: an HTTP 200 whose body is not JSON."""

CLOUDFLARE_524: Final = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>emulator | 524: A timeout occurred</title>
<meta charset="UTF-8" /><style>body{font-family:sans-serif}</style></head>
<body><div id="cf-wrapper"><h1><span>A timeout occurred</span> <span>Error code 524</span></h1>
<p>The origin web server timed out responding to this request.</p>
<p>Cloudflare Ray ID: 0000000000000000 (emulated)</p></div></body></html>
"""


class WsRefused(Exception):
    """The socket handshake is refused (``ws_mode='refuse'``)."""


class Forbidden(Exception):
    """The project is off limits for this token (``forbidden``): HTTP 403."""


class WsDropped(Exception):
    """The socket is dropped (``ws_mode='drop'``)."""


class SseRefused(Exception):
    """The SSE request fails with HTTP 524 (``sse_mode='refuse'``)."""
