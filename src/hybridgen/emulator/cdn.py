"""The emulator's second origin: the result files, as a CDN serves them.

``GET /files/{name}`` (and ``/stored/{name}``, where its redirects lead) serves what
:meth:`ServerModel.serve_file <hybridgen.emulator.model.ServerModel.serve_file>` plans: the
rendered image or the sample video at the model's pace, ``Range: bytes=N-`` (HTTP 206), the
file's faults and redirects. :mod:`hybridgen.emulator.server` runs it on its own port and serves
the API origin's file URLs with the same :func:`file_response`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Final, cast

import trio

from ..errors import MissingExtra

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the emulator's server", extra="emulator") from None

from .model import ErrorReply, Redirect, ServerModel, WsDropped
from .png import render_image

__all__ = ["create_files_app", "file_response"]

log: Final = logging.getLogger("hybridgen.emulator")


def create_files_app(model: ServerModel) -> Starlette:
    """The ASGI app of the result files (``GET /files/{name}``, and ``/stored/{name}`` where its
    redirects lead), served on its own origin."""

    async def files(request: Request) -> Response:
        return await file_response(model, "files", request)

    return Starlette(
        routes=[
            Route("/files/{name}", files, methods=["GET"]),
            Route("/stored/{name}", files, methods=["GET"]),
        ]
    )


async def file_response(model: ServerModel, origin: str, request: Request) -> Response:
    """A result file request on ``origin`` (``"files"`` or ``"api"``), as the model says."""
    plan = model.serve_file(origin, request.url.path, request.url.query, authorization(request))
    if isinstance(plan, Redirect):
        return redirect_response(plan)
    if isinstance(plan, ErrorReply):
        return reply_response(plan)
    image = plan.body or b""
    if plan.image_format is not None:
        job = plan.job
        image = await trio.to_thread.run_sync(
            render_image, job.prompt, job.seed, job.width, job.height, plan.image_format
        )
    total = model.file_size(plan, image)
    start = _range_start(request.headers.get("range"))
    headers = {"Accept-Ranges": "bytes", "Content-Type": plan.content_type}
    status = 200
    if start is not None and plan.mode != "html":
        if start >= total:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})
        status = 206
        model.counts["download_range"] += 1
        headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        headers["Content-Length"] = str(total - start)
    else:
        start = 0
        if plan.length is not None:
            headers["Content-Length"] = str(plan.length)
    return cast(Response, _Body(status, headers, model.file_chunks(plan, image, start)))


def _range_start(header: str | None) -> int | None:
    """The first byte of a ``Range: bytes=N-`` request (other forms are ignored: HTTP 200)."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or last or not first.isdigit():
        return None
    return int(first) if len(first) < 19 else None


class _Body:
    """An ASGI response streaming ``chunks``; a cut body (``file_cuts``) ends the connection
    mid-response, as a dropped download does (hypercorn closes an unfinished response)."""

    def __init__(self, status: int, headers: dict[str, str], chunks: AsyncIterator[bytes]):
        self.status = status
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except WsDropped:
            log.debug("files: a download cut off (file_cuts)")
            return
        finally:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def reply_response(reply: ErrorReply) -> Response:
    """The HTTP response of one of the model's error replies (with its ``Retry-After``)."""
    headers = (
        {} if reply.retry_after is None else {"Retry-After": retry_after_text(reply.retry_after)}
    )
    return Response(reply.body, reply.status, headers, media_type=reply.content_type)


def redirect_response(hop: Redirect) -> Response:
    """The HTTP response of one of the model's redirects."""
    return Response(b"", hop.status, {"Location": hop.location})


def authorization(request: Request) -> str | None:
    """The request's ``Authorization`` header, if any."""
    return request.headers.get("authorization")


def retry_after_text(value: float) -> str:
    """``Retry-After`` text: whole seconds as an integer, else a short decimal."""
    if value == math.floor(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")
