"""The emulator's real HTTP + WebSocket server: a :class:`ServerModel` on two loopback ports.

A Starlette app served by hypercorn's trio worker. Every decision (when a job is ready, which fault
a poll hits, what the socket sends, when it drops) is the model's; this module only translates it
to HTTP and WebSocket. Endpoints:

- ``POST /api/v1/file/generate-image``: start a job (bearer token checked, body validated: 422;
  the model's start faults answered as the real API does).
- ``POST /api/v1/file/generate-video``: start a video job; the reply is one file object (an
  image's is a list), as the real API's.
- ``POST /api/v1/file/upload``: store a file (multipart, field ``payload``); its file object.
- ``GET /api/v1/file/{file_id}``: poll a job, through the model's poll faults.
- ``GET /files/{file_id}.webp`` (``.mp4`` for a video): the result, once ready, served from a
  second origin (its own port, like the real CDN; no token needed) as the model's ``file_mode``
  says; ``Range: bytes=N-`` gets the rest from byte N (HTTP 206), and ``file_cuts`` breaks
  downloads off halfway. Its ``file_fault`` and ``file_redirect`` switches apply first
  (redirects lead to ``/stored/...``; with ``file_redirect_to='origin'`` the result URL is on
  the API's origin, which redirects).
- ``WS /api/v1/ws/project.{project_id}``: after the client's ``subscribe`` message, the project's
  messages. A refused handshake gets HTTP 503 (401 for a bad token, 403 for a ``forbidden``
  project); a drop closes with 1011.
- ``GET /api/v1/events/file.{file_id}``: the file's Server-Sent Events (``data:`` lines of JSON),
  as today's API pushes; ``sse_mode='refuse'`` answers HTTP 524 with a Cloudflare-like HTML page,
  ``drop`` ends the stream.
- ``GET /_emulator/stats``, ``PUT /_emulator/faults``,
  ``PUT /_emulator/projects/{project_id}/faults``: counters and fault switches, for tests and
  users. With a token, they need it like the API does.

Safe on a network: with a token, every route but the result files checks it (in constant time);
request bodies are read up to a limit (:data:`CONTROL_BODY_LIMIT`, :data:`START_BODY_LIMIT`) and a
longer one gets HTTP 413 without being read further; fault switches are range-checked (HTTP 422
naming the switch); :func:`serve` logs a warning when it binds to an address that is not loopback.

The ``reset`` poll fault cannot be a TCP reset through ASGI (no server exposes the socket), so the
emulator sends the status line and headers of a response with a body that never comes, then closes
the connection: clients see the connection closed mid-response (``httpx.RemoteProtocolError``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, cast

import attrs
import trio

from ..errors import MissingExtra

try:
    import hypercorn.trio
    from hypercorn.typing import ASGIFramework
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket, WebSocketDisconnect
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the emulator's server", extra="emulator") from None

from .._hypercorn import hypercorn_config, is_loopback
from .cdn import (
    authorization,
    create_files_app,
    file_response,
    redirect_response,
    reply_response,
    retry_after_text,
)
from .model import (
    GARBAGE_BODY,
    UPLOAD_BODY_LIMIT,
    BadRequest,
    Faults,
    Forbidden,
    Job,
    Rejected,
    ServerModel,
    SseRefused,
    WsDropped,
    WsRefused,
    parse_upload,
    sse_frame,
)

__all__ = [
    "CONTROL_BODY_LIMIT",
    "START_BODY_LIMIT",
    "SUBSCRIBE_TIMEOUT",
    "Emulator",
    "create_app",
    "create_files_app",
    "is_loopback",
    "running",
    "serve",
]

log: Final = logging.getLogger("hybridgen.emulator")

BACKLOG: Final = 2048
"""Pending connections the listening socket holds (the kernel may cap it: ``somaxconn``)."""

SUBSCRIBE_TIMEOUT: Final = 10.0
"""Seconds a new socket may take to send its ``subscribe`` message before it is closed."""

CONTROL_BODY_LIMIT: Final = 64 * 1024
"""The largest body (bytes) a fault-control request may send; a longer one gets HTTP 413."""

START_BODY_LIMIT: Final = 2**20
"""The largest body (bytes) a start request may send; a longer one gets HTTP 413."""


@attrs.frozen
class Emulator:
    """A running emulator: its API's base URL (``http://127.0.0.1:PORT``), the model it serves
    and the base URL of its result files (another port, like the real CDN)."""

    url: str
    model: ServerModel
    files_url: str = ""


_Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _unauthorized() -> JSONResponse:
    return _error(401, "Invalid or missing bearer token", {"WWW-Authenticate": "Bearer"})


def _forbidden(exc: Forbidden) -> JSONResponse:
    return _error(403, f"Not enough permissions: {exc}")


def _invalid(exc: BadRequest) -> Response:
    """HTTP 422 in FastAPI's shape, naming the bad field."""
    return reply_response(exc.reply)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"the request body is over this endpoint's {limit} byte limit")


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or ``None`` as soon as it is known to be over ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading; otherwise reading
    stops at the first chunk past it, so a huge body is never held in memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _Reset:
    """An ASGI response that breaks off: headers promising a body, then the connection closes.

    Hypercorn closes a connection whose response was started but not finished when the app
    returns, so the client gets a connection-level error, never a status it could act on.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )


async def _disconnected_within(request: Request, delay: float) -> bool:
    """Wait ``delay`` seconds; True if the client went away meanwhile."""
    with trio.move_on_after(delay):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True
    return False


def create_app(model: ServerModel) -> Starlette:
    """The ASGI app serving ``model`` (see the module docstring for its endpoints)."""

    async def start(request: Request, video: bool) -> Response:
        if not model.authorized(request.headers.get("authorization")):
            log.debug("start: unauthorized")
            return _unauthorized()
        raw = await _read_body(request, START_BODY_LIMIT)
        if raw is None:
            log.debug("start: body too large")
            return _too_large(START_BODY_LIMIT)
        try:
            body: object = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        try:
            job = model.create_video(body) if video else model.create(body)
        except Forbidden as exc:
            log.debug("start: forbidden")
            return _forbidden(exc)
        except Rejected as exc:
            log.debug("start: rejected with HTTP %s", exc.reply.status)
            return reply_response(exc.reply)
        log.debug("start: %s job %s for project %s", job.kind, job.id, job.project_id)
        # a video's reply is one file object, an image's a list of them (as the real API's)
        return JSONResponse(model.file_json(job) if video else [model.file_json(job)])

    async def generate_image(request: Request) -> Response:
        return await start(request, video=False)

    async def generate_video(request: Request) -> Response:
        return await start(request, video=True)

    async def upload(request: Request) -> Response:
        if not model.authorized(request.headers.get("authorization")):
            log.debug("upload: unauthorized")
            return _unauthorized()
        raw = await _read_body(request, UPLOAD_BODY_LIMIT)
        if raw is None:
            return _too_large(UPLOAD_BODY_LIMIT)
        try:
            data, name, kind = parse_upload(raw, request.headers.get("content-type", ""))
        except BadRequest as exc:
            return _invalid(exc)
        return JSONResponse(model.upload(data, name, kind))

    async def get_file(request: Request) -> Response:
        if not model.authorized(request.headers.get("authorization")):
            log.debug("poll: unauthorized")
            return _unauthorized()
        file_id = request.path_params["file_id"]
        job = model.jobs.get(file_id)
        if job is None:
            return _error(404, f"File {file_id} not found")
        try:
            model.check_access(job.project_id)
        except Forbidden as exc:
            log.debug("poll of %s: forbidden", file_id)
            return _forbidden(exc)
        hop = model.poll_redirect(job, request.url.path, request.url.query, authorization(request))
        if hop is not None:
            log.debug("poll of %s: HTTP %d redirect", file_id, hop.status)
            return redirect_response(hop)
        fault = model.poll_fault(job)
        delay = model.poll_delay(job)
        if delay and await _disconnected_within(request, delay):
            log.debug("poll of %s: the client left during the delay", file_id)
            return Response(status_code=499)
        if fault is None:
            return JSONResponse(model.file_json(job))
        log.debug("poll of %s: fault %s", file_id, fault)
        if fault == "reset":
            return cast(Response, _Reset())
        if fault == "garbage":
            return Response(GARBAGE_BODY, media_type="text/html")
        status = int(fault)
        headers: dict[str, str] = {}
        retry_after = model.retry_after(job)
        if status in (429, 503) and retry_after is not None:
            headers["Retry-After"] = retry_after_text(retry_after)
        detail = f"File {file_id} not found" if status == 404 else f"emulated HTTP {status}"
        return _error(status, detail, headers)

    async def generation_configs(request: Request) -> Response:
        if not model.authorized(request.headers.get("authorization")):
            log.debug("generation-config: unauthorized")
            return _unauthorized()
        return JSONResponse(model.generation_configs(request.query_params.get("type")))

    async def project_socket(websocket: WebSocket) -> None:
        project_id = websocket.path_params["project_id"]
        if not model.authorized(websocket.headers.get("authorization")):
            log.debug("socket of project %s: unauthorized", project_id)
            await websocket.send_denial_response(_unauthorized())
            return
        try:
            model.ws_accept(project_id)
        except Forbidden as exc:
            log.debug("socket of project %s: forbidden", project_id)
            await websocket.send_denial_response(_forbidden(exc))
            return
        except WsRefused as exc:
            log.debug("socket of project %s: refused", project_id)
            await websocket.send_denial_response(_error(503, str(exc)))
            return
        await websocket.accept()
        try:
            await _serve_socket(model, websocket, project_id)
        except WebSocketDisconnect:
            log.debug("socket of project %s: the client left", project_id)

    async def file_events(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if not model.authorized(request.headers.get("authorization")):
            log.debug("events of %s: unauthorized", file_id)
            return _unauthorized()
        try:
            job = model.sse_accept(file_id)
        except KeyError:
            return _error(404, f"File {file_id} not found")
        except Forbidden as exc:
            return _forbidden(exc)
        except SseRefused:
            log.debug("events of %s: 524 (fault)", file_id)
            return HTMLResponse(_CLOUDFLARE_524, status_code=524)
        return StreamingResponse(
            _sse_stream(model, job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def api_file(request: Request) -> Response:
        return await file_response(model, "api", request)

    async def stats(request: Request) -> Response:
        return JSONResponse(model.stats())

    async def put_faults(request: Request) -> Response:
        faults = await _read_faults(request)
        if isinstance(faults, Response):
            return faults
        model.faults = faults
        return JSONResponse(attrs.asdict(faults))

    async def put_project_faults(request: Request) -> Response:
        faults = await _read_faults(request)
        if isinstance(faults, Response):
            return faults
        model.project_faults[request.path_params["project_id"]] = faults
        return JSONResponse(attrs.asdict(faults))

    def control(endpoint: _Endpoint) -> _Endpoint:
        """The fault-control ``endpoint``, behind the same token check as the API."""

        async def checked(request: Request) -> Response:
            if not model.authorized(request.headers.get("authorization")):
                log.debug("control %s: unauthorized", request.url.path)
                return _unauthorized()
            return await endpoint(request)

        return checked

    return Starlette(
        routes=[
            Route("/api/v1/file/generate-image", generate_image, methods=["POST"]),
            Route("/api/v1/file/generate-video", generate_video, methods=["POST"]),
            Route("/api/v1/file/upload", upload, methods=["POST"]),
            Route("/api/v1/file/{file_id}", get_file, methods=["GET"]),
            Route("/api/v1/generation-config", generation_configs, methods=["GET"]),
            WebSocketRoute("/api/v1/ws/project.{project_id}", project_socket),
            Route("/api/v1/events/file.{file_id}", file_events, methods=["GET"]),
            # result URLs on the API's origin (file_redirect_to='origin') redirect to the files
            Route("/files/{name}", api_file, methods=["GET"]),
            Route("/_emulator/stats", control(stats), methods=["GET"]),
            Route("/_emulator/faults", control(put_faults), methods=["PUT"]),
            Route(
                "/_emulator/projects/{project_id}/faults",
                control(put_project_faults),
                methods=["PUT"],
            ),
        ]
    )


_FAULT_FIELDS: Final = frozenset(field.name for field in attrs.fields(Faults))


_CLOUDFLARE_524: Final = (
    "<!DOCTYPE html><html><head><title>editor.superduperai.co | 524: A timeout occurred</title>"
    "</head><body><h1>A timeout occurred</h1><p>Error code 524</p>"
    "<p>The origin web server timed out responding to this request.</p></body></html>"
)
"""What Cloudflare sends when the origin takes too long (the emulator's refused SSE)."""


async def _sse_stream(model: ServerModel, job: Job) -> AsyncIterator[bytes]:
    yield b": connected\n\n"  # headers and a first byte at once: the stream is open
    feed = cast(AsyncGenerator[str, None], model.sse_feed(job))
    try:
        async for text in feed:
            yield sse_frame(text)
    finally:
        await feed.aclose()
    log.debug("events of %s: the stream ends", job.id)


async def _read_faults(request: Request) -> Faults | Response:
    """The :class:`Faults` a control request's body sets, or the error response."""
    raw = await _read_body(request, CONTROL_BODY_LIMIT)
    if raw is None:
        log.debug("control %s: body too large", request.url.path)
        return _too_large(CONTROL_BODY_LIMIT)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise BadRequest("body", "must be a JSON object of Faults switches")
        unknown = sorted(set(data) - _FAULT_FIELDS)
        if unknown:
            raise BadRequest(unknown[0][:40], "is not a fault switch")
        return Faults(**data)
    except BadRequest as exc:
        return _invalid(exc)
    except (ValueError, RecursionError):
        return _invalid(BadRequest("body", "is not valid JSON"))


def _is_subscribe(text: object, project_id: str) -> bool:
    if not isinstance(text, str):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and data.get("type") == "subscribe"
        and data.get("projectId") == f"project.{project_id}"
    )


async def _serve_socket(model: ServerModel, websocket: WebSocket, project_id: str) -> None:
    subscribed = False
    with trio.move_on_after(SUBSCRIBE_TIMEOUT):
        while not subscribed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            subscribed = _is_subscribe(message.get("text"), project_id)
    if not subscribed:
        log.debug("socket of project %s: no subscribe message in time", project_id)
        await websocket.close(1008, "no subscribe message")
        return
    log.debug("socket of project %s: subscribed", project_id)
    async with trio.open_nursery() as nursery:
        # The client may leave at any time: stop feeding then (a silent feed never ends).
        nursery.start_soon(_until_disconnect, websocket, nursery.cancel_scope)
        await _feed(model, websocket, project_id)
        nursery.cancel_scope.cancel()


async def _feed(model: ServerModel, websocket: WebSocket, project_id: str) -> None:
    feed = cast(AsyncGenerator[str, None], model.ws_feed(project_id))
    try:
        async for text in feed:
            await websocket.send_text(text)
    except WsDropped:
        log.debug("socket of project %s: dropped (fault)", project_id)
        await websocket.close(1011, "dropped by the emulator")
    except (WebSocketDisconnect, OSError, RuntimeError):
        log.debug("socket of project %s: the client left", project_id)
    finally:
        await feed.aclose()


async def _until_disconnect(websocket: WebSocket, scope: trio.CancelScope) -> None:
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError):
        pass
    scope.cancel()


async def serve(
    model: ServerModel,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[Emulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``model`` on ``host:port`` (0: any free port) until cancelled.

    The result files get a second listener on ``host`` (any free port), like the real CDN; sets
    ``model.file_base`` to its URL, then reports an :class:`Emulator` through ``task_status``
    (use ``await nursery.start(serve, model)``). Cancelling it closes both listening sockets and
    every connection. A ``host`` that is not loopback logs a warning (stderr, unless logging is
    configured otherwise): other machines can then reach the emulator.
    """
    if not is_loopback(host):
        guard = "with its token" if model.token else "with no token: anyone can use it"
        log.warning(
            "the emulator binds %s, which is not loopback: other machines can reach it and its "
            "fault-control API (%s)",
            host,
            guard,
        )
    async with trio.open_nursery() as nursery:
        files_url = await nursery.start(_listen, create_files_app(model), host, 0)
        model.file_base = files_url
        url = await nursery.start(_listen, create_app(model), host, port)
        model.api_base = url
        log.debug("emulator serving on %s (files on %s)", url, files_url)
        task_status.started(Emulator(url, model, files_url))


async def _listen(
    app: Starlette, host: str, port: int, *, task_status: trio.TaskStatus[str]
) -> None:
    """Serve one ASGI app on ``host:port`` with hypercorn's trio worker; report its URL."""
    # Hypercorn's default backlog (100) resets connections when many clients start at once.
    config = hypercorn_config(host, port, "hybridgen.emulator.hypercorn", backlog=BACKLOG)
    # Starlette's ASGI types are looser than hypercorn's; the app is a plain ASGI 3 app.
    asgi = cast(ASGIFramework, app)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, asgi, config))
        task_status.started(binds[0].rstrip("/"))


@asynccontextmanager
async def running(
    faults: Faults | None = None,
    *,
    time_scale: float = 1.0,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[Emulator]:
    """Run an emulator for the duration of an ``async with`` block.

    ``async with running(Faults(ws_mode="silent"), time_scale=0.05) as emulator:`` gives an
    :class:`Emulator` whose ``url`` takes requests until the block ends.
    """
    model = ServerModel(faults, time_scale=time_scale, token=token)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            emulator: Emulator = await nursery.start(partial(serve, model, host=host, port=port))
            try:
                yield emulator
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Give the block's own error back as it was raised, not wrapped by our nursery.
        if body_error is not None and list(group.exceptions) == [body_error]:
            raise body_error from None
        raise
