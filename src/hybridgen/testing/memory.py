"""An in-memory transport over the emulator's :class:`~hybridgen.emulator.model.ServerModel`.

It behaves as the real server does over sockets (same jobs, timelines and faults) but without
sockets, so a 2-minute scenario runs on trio's virtual clock in milliseconds. It passes the same
contract tests as :class:`~hybridgen.transport.SuperDuperTransport` against the real emulator.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote, urlsplit

import trio

from ..emulator.model import (
    GARBAGE_BODY,
    ErrorReply,
    FilePlan,
    Forbidden,
    Job,
    Redirect,
    Rejected,
    ServerModel,
    SseRefused,
    WsDropped,
    WsRefused,
    sse_frame,
)
from ..errors import DownloadError, TransientError, TransportError
from ..parse import error_reason, parse_generation_configs, parse_poll_reply, parse_start_reply
from ..sse import PUSH_MAX_MESSAGE, sse_messages
from ..transport import (
    REDIRECT_STATUSES,
    WS_MAX_MESSAGE,
    error_for_status,
    redirect_target,
    same_origin,
)
from ..video import StartRequest, VideoRequest, parse_upload_reply
from ..wire import FileStatus, ModelInfo

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """A :class:`~hybridgen.transport.Transport` talking to a :class:`ServerModel` in memory.

    ``token`` is what it sends as bearer token (checked when the model has one). ``calls`` records
    ``(trio time, what)`` for every request, so tests can check when polls happened.
    """

    def __init__(
        self,
        model: ServerModel | None = None,
        *,
        token: str | None = None,
        max_push_message: int = PUSH_MAX_MESSAGE,
    ) -> None:
        self.model = model if model is not None else ServerModel()
        self.token = token
        self.max_push_message = max_push_message
        self.calls: list[tuple[float, str]] = []
        self.open_sockets = 0

    def _check_auth(self, what: str) -> None:
        header = None if self.token is None else f"Bearer {self.token}"
        if not self.model.authorized(header):
            raise error_for_status(what, 401)

    async def start(self, request: StartRequest) -> FileStatus:
        """Create a job on the model (a video's reply is one object, an image's a list)."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "start"))
        self._check_auth("start request")
        video = isinstance(request, VideoRequest)
        try:
            if video:
                job = self.model.create_video(request.to_json())
            else:
                job = self.model.create(request.to_json())
        except Forbidden:
            raise error_for_status("start request", 403) from None
        except Rejected as exc:
            raise _error("start request", exc.reply) from None
        reply = self.model.file_json(job)
        return parse_start_reply(json.dumps(reply if video else [reply]).encode())

    async def upload(self, data: bytes, *, filename: str, content_type: str) -> str:
        """Store a file on the model; its id."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "upload"))
        self._check_auth("upload")
        reply = self.model.upload(data, filename, content_type)
        return parse_upload_reply(json.dumps(reply).encode())

    async def models(self, types: Sequence[str] = ()) -> list[ModelInfo]:
        """The model's generation configs (of ``types`` when given)."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "models"))
        self._check_auth("model list")
        return parse_generation_configs(self.model.generation_configs(",".join(types) or None))

    async def poll(self, file_id: str) -> FileStatus:
        """Read one file's status, through the model's poll redirects and faults."""
        self.calls.append((trio.current_time(), "poll"))
        self._check_auth("poll")
        job = self.model.jobs.get(file_id)
        if job is None:
            await trio.lowlevel.checkpoint()
            raise error_for_status("poll", 404, detail=f": file {file_id} not found")
        try:
            self.model.check_access(job.project_id)
        except Forbidden:
            await trio.lowlevel.checkpoint()
            raise error_for_status("poll", 403) from None
        url = f"{self.model.api_base}/api/v1/file/{quote(file_id, safe='')}"
        chain = [url]
        while True:  # the model's redirects stay on the API's origin: the token goes along
            parts = urlsplit(url)
            hop = self.model.poll_redirect(job, parts.path, parts.query, self._authorization(url))
            if hop is None:
                break
            url = redirect_target("poll", chain, hop.status, hop.location)
            chain.append(url)
        fault = self.model.poll_fault(job)
        delay = self.model.poll_delay(job)
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        if fault is None:
            return parse_poll_reply(json.dumps(self.model.file_json(job)).encode())
        if fault == "reset":
            raise TransientError("poll: connection reset by the server")
        if fault == "garbage":
            return parse_poll_reply(GARBAGE_BODY)  # raises what the real transport raises
        status = int(fault)
        detail = f": file {file_id} not found" if status == 404 else ""
        retry_after = self.model.retry_after(job) if status in (429, 503) else None
        raise error_for_status("poll", status, retry_after=retry_after, detail=detail)

    def _authorization(self, url: str) -> str | None:
        """What goes as ``Authorization`` to ``url``: the token, to the API's origin only."""
        if self.token is None or not same_origin(url, self.model.api_base):
            return None
        return f"Bearer {self.token}"

    @contextlib.asynccontextmanager
    async def fetch(
        self, url: str, *, limit: int, start: int = 0
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a result file on the model, following its redirects as the real transport does
        (the token only to the API's origin: result files are public, as on the CDN);
        ``start`` > 0: from that byte on, as a range request gets it."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "download"))
        what = "download"
        chain = [url]
        while True:
            authorization = self._authorization(url)
            answer = self._file(url, authorization)
            if not isinstance(answer, Redirect) or answer.status not in REDIRECT_STATUSES:
                break
            url = redirect_target(what, chain, answer.status, answer.location)
            chain.append(url)
        if not isinstance(answer, FilePlan):
            reply = answer if isinstance(answer, ErrorReply) else ErrorReply(answer.status, b"")
            where = "the server" if same_origin(url, self.model.api_base) else urlsplit(url).netloc
            raise _error(what, reply, where, authorization is not None)
        plan = answer
        if plan.length is not None and plan.length > limit:
            raise DownloadError(
                f"download of {url}: the file is over the size limit ({limit} bytes; "
                f"the server announced {plan.length})",
                url=url,
                kind="too_large",
            )
        image = plan.body or b""
        if plan.image_format is not None:
            from ..emulator.png import render_image  # Pillow, only when a file is fetched

            job = plan.job
            image = render_image(job.prompt, job.seed, job.width, job.height, plan.image_format)
        if start:
            self.model.counts["download_range"] += 1
            if start >= self.model.file_size(plan, image):
                raise error_for_status("download", 416)
        chunks = _cut(self.model.file_chunks(plan, image, start))
        try:
            yield chunks
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    def _file(self, url: str, authorization: str | None) -> FilePlan | Redirect | ErrorReply:
        """The model's answer to a request for ``url`` (a 404 off its two origins)."""
        parts = urlsplit(url)
        for origin, base in (("files", self.model.file_base), ("api", self.model.api_base)):
            if same_origin(url, base):
                return self.model.serve_file(origin, parts.path, parts.query, authorization)
        return ErrorReply(404, json.dumps({"detail": f"{url} not found"}).encode())

    @contextlib.asynccontextmanager
    async def listen(self, project_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """Open the project's socket on the model."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "ws_connect"))
        self._check_auth("WebSocket handshake")
        try:
            self.model.ws_accept(project_id)
        except Forbidden:
            raise error_for_status("WebSocket handshake", 403) from None
        except WsRefused as exc:
            raise TransientError(f"WebSocket handshake refused: {exc}") from None
        self.open_sockets += 1
        messages = _messages(self.model, project_id)
        try:
            yield messages
        finally:
            self.open_sockets -= 1
            await messages.aclose()  # type: ignore[attr-defined]

    @contextlib.asynccontextmanager
    async def listen_sse(self, file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """Open the file's SSE stream on the model: its bytes go through the same reader as the
        real transport's (:func:`hybridgen.sse.sse_messages`)."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "sse_connect"))
        what = "SSE connect"
        self._check_auth(what)
        try:
            job = self.model.sse_accept(file_id)
        except KeyError:
            raise error_for_status(what, 404, detail=f": file {file_id} not found") from None
        except Forbidden:
            raise error_for_status(what, 403) from None
        except SseRefused:
            raise error_for_status(what, 524, detail=": a timeout occurred (Cloudflare)") from None
        self.open_sockets += 1
        chunks = _sse_bytes(self.model, job)
        messages = sse_messages(chunks, self.max_push_message, heartbeats=True)
        try:
            yield messages
        finally:
            self.open_sockets -= 1
            await messages.aclose()
            await chunks.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


def _error(
    what: str, reply: ErrorReply, source: str = "the server", token_sent: bool = True
) -> TransportError:
    """The error the real transport raises for ``reply``: same classification, same reason."""
    reason = error_reason(reply.body, reply.content_type)
    detail = f": {reason}" if reason else ""
    return error_for_status(
        what,
        reply.status,
        retry_after=reply.retry_after,
        detail=detail,
        source=source,
        token_sent=token_sent,
    )


async def _cut(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A body whose cut (``file_cuts``) raises what the real transport raises on a drop."""
    try:
        async for chunk in chunks:
            yield chunk
    except WsDropped:
        raise TransientError("download: connection failed (the server closed it)") from None
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _messages(model: ServerModel, project_id: str) -> AsyncIterator[str]:
    feed = model.ws_feed(project_id)
    try:
        async for text in feed:
            if len(text) > WS_MAX_MESSAGE:  # as the real socket does: close it (1009)
                raise TransientError(
                    "WebSocket closed: a message was over the size limit (code 1009)"
                )
            yield text
    except WsDropped as exc:
        raise TransientError(f"WebSocket dropped: {exc}") from None
    finally:
        await feed.aclose()  # type: ignore[attr-defined]


async def _sse_bytes(model: ServerModel, job: Job) -> AsyncIterator[bytes]:
    yield b": connected\n\n"  # as the emulator's server opens every stream
    feed = model.sse_feed(job)
    try:
        async for text in feed:
            yield sse_frame(text)
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
