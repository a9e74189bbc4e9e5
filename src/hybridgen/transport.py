"""Transports: how hybridgen talks to a generation server.

:class:`Transport` is the interface the trio driver uses. :class:`SuperDuperTransport` speaks the
SuperDuperAI editor API over real sockets (:mod:`hybridgen.http1` or httpx for HTTP,
trio-websocket for the legacy socket);
:class:`hybridgen.testing.MemoryTransport` is the in-memory twin used on trio's virtual clock. Both
pass the same contract tests (``tests/test_transport_contract.py``).

Errors are typed: :class:`~hybridgen.errors.TransientError` (retry), :class:`~hybridgen.errors.
PermanentError` (do not), :class:`~hybridgen.errors.AuthError` (check the token). The driver bounds
every call with its own deadline, so a transport need not time out by itself.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import json
import logging
import math
import ssl
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, NoReturn, Protocol, runtime_checkable
from urllib.parse import quote, urlencode, urljoin, urlsplit

import h11
import httpx
import trio
import trio_websocket
import wsproto.utilities

from . import http1
from .config import USER_AGENT, Config
from .errors import (
    AuthError,
    DownloadError,
    PermanentError,
    RedirectError,
    TransientError,
    TransportError,
    Unreachable,
)
from .parse import (
    error_reason,
    load_json,
    parse_generation_configs,
    parse_poll_reply,
    parse_start_reply,
    status_phrase,
)
from .sse import PUSH_MAX_MESSAGE, SseMessages, sse_messages
from .video import (
    GENERATE_VIDEO,
    UPLOAD,
    StartRequest,
    VideoRequest,
    multipart_body,
    parse_upload_reply,
)
from .wire import (
    GENERATE_IMAGE,
    GENERATION_CONFIGS,
    FileStatus,
    ModelInfo,
    file_path,
    sse_path,
    subscribe_message,
    ws_path,
)

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "SuperDuperTransport",
    "Transport",
    "error_for_status",
    "parse_retry_after",
    "redirect_target",
    "same_origin",
]


@runtime_checkable
class Transport(Protocol):
    """What the driver needs from a server connection."""

    async def start(self, request: StartRequest) -> FileStatus:
        """Send the start request (an image's or a video's); return the new file (its ``id``
        names the job)."""
        ...

    async def poll(self, file_id: str) -> FileStatus:
        """Fetch one file's status."""
        ...

    def fetch(self, url: str, *, limit: int) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open a result file at ``url``; iterate over its body's chunks.

        Entering raises a :class:`~hybridgen.errors.TransportError` for an error status or a
        failed connection, and may raise a :class:`~hybridgen.errors.DownloadError` when the file
        is known to be over ``limit`` bytes; iteration raises ``TransientError`` on a drop.
        """
        ...

    def listen(self, project_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Open and subscribe the project's socket; iterate over its raw text messages.

        Entering raises a :class:`~hybridgen.errors.TransportError` if the socket cannot open.
        Iteration ends when the server closes the socket, or raises ``TransientError`` when the
        connection drops.
        """
        ...

    def listen_sse(self, file_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Open the file's Server-Sent Events stream; iterate over each event's ``data``.

        Entering raises a :class:`~hybridgen.errors.TransportError` if the stream cannot open
        (e.g. HTTP 524). Iteration ends when the server ends the stream, raises
        ``TransientError`` when the connection drops, and raises
        :class:`~hybridgen.errors.OversizedMessage` for an event over the size limit (skipped;
        the iteration can go on). It may yield :data:`~hybridgen.sse.HEARTBEAT` (an empty string)
        for a keep-alive without a message: the stream shows life
        (:attr:`~hybridgen.policy.Policy.push_alive`).
        """
        ...

    async def aclose(self) -> None:
        """Release connections (pools, sockets)."""
        ...


log: Final = logging.getLogger("hybridgen.transport")

_POOL_LIMITS: Final = httpx.Limits(
    max_connections=None, max_keepalive_connections=64, keepalive_expiry=30.0
)
"""Connection pool of the httpx client made for a proxy. No cap here: requests queued in
httpcore's pool cost O(queued x connections) on every request (a 1,000-request burst over a 512
cap took 98 s on loopback instead of 3 s), so the queue is the driver's (32 requests in flight by
default), not httpcore's."""

_WS_DISCONNECT_TIMEOUT: Final = 2.0
WS_MAX_MESSAGE: Final = 2**20
"""The longest socket message accepted (characters); a longer one closes the socket (1009)."""
_NORMAL_CLOSE: Final = (1000, 1001)
_DETAIL_CHARS: Final = 300
_ERROR_BODY_BYTES: Final = 64 * 1024
"""How much of an error reply is read for its reason (the rest is never read)."""
_NOT_PROCESSED: Final = (408, 425, 429, 503)
"""Statuses by which a server says it did not act on the request (safe to send again)."""
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""httpx errors raised before any byte of the request left: the server cannot have acted."""
MAX_REDIRECTS: Final = 5
"""The most redirects a download or a poll follows; one more is a
:class:`~hybridgen.errors.RedirectError`."""
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses followed as redirects (of a ``GET``: downloads and polls; never of a start)."""


class SuperDuperTransport:
    """The SuperDuperAI editor API over real sockets: HTTP (starts, polls, SSE, downloads) and the
    legacy WebSocket (trio-websocket).

    By default HTTP goes through hybridgen's own HTTP/1.1 client (:class:`hybridgen.http1.Pool`:
    kept-alive connections taken in O(1), no timeouts of its own, as the driver bounds every
    call). ``http`` is an ``httpx.AsyncClient`` to use instead (not closed by :meth:`aclose`);
    the transport makes one itself when the environment names a proxy for the API (httpx
    honours ``HTTPS_PROXY``, ``NO_PROXY`` and the like). Errors
    are mapped to :class:`~hybridgen.errors.AuthError` (401/403),
    :class:`~hybridgen.errors.PermanentError` (400/404/405/422 and other 4xx) and
    :class:`~hybridgen.errors.TransientError` (408/425/429, 5xx, timeouts, connection errors,
    malformed replies). A start or model list sent before the server ever replied, to a name that
    does not resolve or an address that refuses the connection, raises
    :class:`~hybridgen.errors.Unreachable` (hybridgen's own HTTP client only; through httpx it is
    a ``TransientError``): nothing answers there, and no job can exist. No message ever holds the
    token.
    """

    def __init__(
        self,
        config: Config,
        *,
        http: httpx.AsyncClient | None = None,
        max_push_message: int = PUSH_MAX_MESSAGE,
    ) -> None:
        self.config = config
        self.max_push_message = max_push_message
        self.http = http
        """The caller's ``httpx.AsyncClient``, if one was given (it is not closed here)."""
        self._answered = False  # the API server has replied (any status) at least once
        self._http: _HTTP
        if http is not None:
            self._http = _Httpx(http, owned=False)
        elif _proxied(config.url):
            # httpx honours the proxy variables (and NO_PROXY); hybridgen's own client does not
            self._http = _Httpx(httpx.AsyncClient(timeout=None, limits=_POOL_LIMITS), owned=True)
        else:
            self._http = http1.Pool(_tls_context() if config.url.startswith("https") else None)

    def __repr__(self) -> str:
        return f"<SuperDuperTransport {self.config.url}>"

    async def start(self, request: StartRequest) -> FileStatus:
        """``POST /api/v1/file/generate-image`` (``generate-video`` for a
        :class:`~hybridgen.video.VideoRequest`); the reply's file (the first of an image's list;
        a video's reply is one object)."""
        body = json.dumps(request.to_json()).encode()
        path = GENERATE_VIDEO if isinstance(request, VideoRequest) else GENERATE_IMAGE
        url = self.config.api_url(path)
        raw = await self._exchange("start request", "POST", url, body, first_contact=True)
        return parse_start_reply(raw)

    async def upload(self, data: bytes, *, filename: str, content_type: str) -> str:
        """``POST /api/v1/file/upload`` (multipart, field ``payload``); the new file's id."""
        body, kind = multipart_body(data, filename, content_type)
        url = self.config.api_url(UPLOAD)
        raw = await self._exchange("upload", "POST", url, body, content_type=kind)
        return parse_upload_reply(raw)

    async def poll(self, file_id: str) -> FileStatus:
        """``GET /api/v1/file/{file_id}``."""
        url = self.config.api_url(file_path(quote(file_id, safe="")))
        raw = await self._exchange("poll", "GET", url)
        return parse_poll_reply(raw)

    async def models(self, types: Sequence[str] = ()) -> list[ModelInfo]:
        """``GET /api/v1/generation-config`` (``?type=a,b`` when ``types`` are given)."""
        url = self.config.api_url(GENERATION_CONFIGS)
        if types:
            url += "?" + urlencode({"type": ",".join(types)})
        raw = await self._exchange("model list", "GET", url, first_contact=True)
        return parse_generation_configs(load_json("model list", raw))

    @contextlib.asynccontextmanager
    async def fetch(
        self, url: str, *, limit: int, start: int = 0
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``GET`` a result file; iterate over its body's chunks as they arrive.

        Redirects are followed (:func:`redirect_target`: at most :data:`MAX_REDIRECTS`, never
        from https to http). The token is sent only to the API's own origin (scheme, host and
        port), never to a CDN, also after a redirect; an error status names the file's host, and
        a 401/403 from a host that got no token is a
        :class:`~hybridgen.errors.PermanentError`, not an ``AuthError``. A declared
        ``Content-Length`` over ``limit`` bytes fails at once with a
        :class:`~hybridgen.errors.DownloadError`; the caller counts what it reads. The body is
        never decompressed (images are compressed already; ``Accept-Encoding: identity``).
        ``start`` > 0 resumes a broken download: ``Range: bytes=start-``; the body then begins
        at byte ``start`` (a server that ignores the range sends the whole file, whose first
        ``start`` bytes are skipped here; a range that begins elsewhere is a
        :class:`~hybridgen.errors.TransientError`).
        """
        what = "download"
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "image/*, video/*",
            "Accept-Encoding": "identity",
        }
        if start:
            headers["Range"] = f"bytes={start}-"
        body_error: BaseException | None = None
        try:
            async with self._get(what, url, headers) as (response, at, token_sent):
                if not 200 <= response.status < 300:
                    content = await _read_body(response, _ERROR_BODY_BYTES, what, cut=True)
                    raise self._status_error(
                        what, response.status, response.headers, content, at, token_sent
                    )
                skip = _skipped(url, start, response.status, response.headers)
                length = response.headers.get("content-length", "")
                whole = int(length) + start - skip if length.isdigit() else 0
                if whole > limit:
                    raise DownloadError(
                        f"download of {url}: the file is over the size limit ({limit} bytes; "
                        f"the server announced {whole})",
                        url=url,
                        kind="too_large",
                    )
                try:
                    yield _Chunks(response.chunks(), self._redact, skip)
                except BaseException as exc:
                    body_error = exc
                    raise
        except http1.HTTPFailure as exc:
            if exc is body_error:
                raise
            raise self._connection_error(what, exc) from None

    @contextlib.asynccontextmanager
    async def listen(self, project_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """Open the project's socket, send the subscribe message, iterate over its texts."""
        url = self.config.ws_url(ws_path(project_id))
        headers = [
            (b"Authorization", f"Bearer {self.config.token.reveal()}".encode()),
            (b"User-Agent", USER_AGENT.encode()),
        ]
        body_error: BaseException | None = None
        try:
            async with _open_websocket(url, headers) as ws:
                try:
                    await ws.send_message(subscribe_message(project_id))
                except trio_websocket.ConnectionClosed as exc:
                    raise _closed_error(exc) from None
                try:
                    yield _Messages(ws)
                except BaseException as exc:
                    body_error = exc
                    raise
        except (
            trio_websocket.HandshakeError,
            trio_websocket.ConnectionClosed,
            OSError,
            trio.BrokenResourceError,
            # a reply that breaks the handshake (e.g. a wrong Sec-WebSocket-Accept)
            h11.ProtocolError,
            wsproto.utilities.ProtocolError,
        ) as exc:
            if exc is body_error:
                raise
            raise self._ws_error(exc) from None

    def listen_sse(self, file_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """``GET /api/v1/events/file.{file_id}`` as ``text/event-stream``; iterate over the data
        of its events (each at most ``max_push_message`` bytes)."""
        return _Sse(self, file_id)

    def _sse_failure(self, exc: http1.HTTPFailure) -> TransientError:
        if exc.timed_out:
            return TransientError(f"{_SSE}: timed out")
        return TransientError(f"{_SSE}: connection failed ({self._redact(exc)})")

    async def aclose(self) -> None:
        """Close the connections this transport made (never a caller's ``httpx.AsyncClient``)."""
        await self._http.aclose()

    # -- helpers ----------------------------------------------------------------------------

    async def _exchange(
        self,
        what: str,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        content_type: str | None = None,
        first_contact: bool = False,
    ) -> bytes:
        """Send one API request; its reply body, read up to ``Config.max_reply_bytes``.

        A ``GET`` follows redirects (:meth:`_get`); a ``POST`` never does (a start sent again
        elsewhere could make a second, billed job): its redirect is an error status.

        With ``first_contact`` (a request that creates nothing yet), a server that never answered
        and cannot be reached (the name does not resolve, the connection is refused) raises
        :class:`~hybridgen.errors.Unreachable` at once.
        """
        headers = {**self.config.headers(), "Accept-Encoding": "gzip, deflate"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            if method == "GET":
                del headers["Authorization"]  # _get adds it for the API's origin only
                async with self._get(what, url, headers) as (response, at, token_sent):
                    return await self._reply_body(what, response, at, token_sent)
            async with self._http.request(method, url, headers.items(), body) as response:
                return await self._reply_body(what, response, url, True)
        except http1.HTTPFailure as exc:
            if first_contact and exc.unreachable and not self._answered:
                fix = (
                    "check the spelling of SUPERDUPERAI_URL, then your network (DNS, VPN)"
                    if exc.unreachable.endswith("does not resolve")
                    else "is the server running? check SUPERDUPERAI_URL"
                )
                raise Unreachable(
                    f"cannot connect to {self.config.url} ({exc.unreachable}): {fix}"
                ) from None
            raise self._connection_error(what, exc) from None

    async def _reply_body(self, what: str, response: _Reply, url: str, token_sent: bool) -> bytes:
        self._answered = True
        if not 200 <= response.status < 300:
            content = await _read_body(response, _ERROR_BODY_BYTES, what, cut=True)
            raise self._status_error(
                what, response.status, response.headers, content, url, token_sent
            )
        return await _read_body(response, self.config.max_reply_bytes, what)

    def _get(self, what: str, url: str, headers: Mapping[str, str]) -> _Get:
        """``GET url``, following redirects; enter with the last reply (not a redirect), its
        URL, and whether the token went with it.

        ``Authorization`` goes with each request to the API's own origin only (scheme, host and
        port); a redirect's body is read (at most 64 KiB, to keep the connection) and dropped.
        Raises :class:`~hybridgen.errors.RedirectError` for a redirect not followed.
        """
        return _Get(self, what, url, headers)

    def _connection_error(self, what: str, exc: http1.HTTPFailure) -> TransientError:
        """The error for a request that got no status: says whether it may have been processed."""
        if not exc.sent:
            return TransientError(
                f"{what}: could not connect ({self._redact(exc)}); the request was not sent",
                maybe_processed=False,
            )
        if exc.timed_out:
            return TransientError(f"{what}: timed out after the request was sent")
        return TransientError(f"{what}: connection failed ({self._redact(exc)})")

    def _status_error(
        self,
        what: str,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        url: str | None = None,
        token_sent: bool = True,
    ) -> TransportError:
        """The error for an error reply; from another origin than the API's it names the
        host (``url``'s)."""
        reason = error_reason(content, headers.get("content-type"))
        source = "the server"
        if url is not None and not same_origin(url, self.config.url):
            source = _host(url)
        return error_for_status(
            what,
            status,
            retry_after=parse_retry_after(headers.get("retry-after")),
            detail=f": {self._redact(reason)}" if reason else "",
            source=source,
            token_sent=token_sent,
        )

    def _ws_error(self, exc: BaseException) -> TransportError:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in exc.headers}
            return self._status_error(
                "WebSocket handshake", exc.status_code, headers, exc.body or b""
            )
        if isinstance(exc, trio_websocket.ConnectionClosed):
            return _closed_error(exc)
        if isinstance(exc, trio_websocket.ConnectionTimeout):
            return TransientError("WebSocket connect: timed out")
        if isinstance(exc, h11.ProtocolError | wsproto.utilities.ProtocolError):
            return TransientError(
                f"WebSocket handshake: the server's reply breaks the protocol ({self._redact(exc)})"
            )
        cause = exc.__cause__ or exc.__context__ or exc
        return TransientError(f"WebSocket connect: connection failed ({self._redact(cause)})")

    def _redact(self, value: object) -> str:
        text = str(value) or type(value).__name__
        token = self.config.token.reveal()
        return text.replace(token, "***") if token else text


class _Get:
    """:meth:`SuperDuperTransport._get` as a class, not ``contextlib.asynccontextmanager``
    (an async generator, hooked by trio, for every poll)."""

    __slots__ = ("_exchange", "_headers", "_transport", "_url", "_what")

    def __init__(
        self, transport: SuperDuperTransport, what: str, url: str, headers: Mapping[str, str]
    ) -> None:
        self._transport = transport
        self._what = what
        self._url = url
        self._headers = headers
        self._exchange: AbstractAsyncContextManager[_Reply] | None = None

    async def __aenter__(self) -> tuple[_Reply, str, bool]:
        transport, what, url, headers = self._transport, self._what, self._url, self._headers
        config = transport.config
        base = config.api_url("")  # the API's own URLs: no parsing per request
        api = None
        token = {"Authorization": f"Bearer {config.token.reveal()}"}
        chain = [url]
        while True:
            if url.startswith(base):
                token_sent = True
            else:
                api = api or _origin(config.url)
                token_sent = _origin(url) == api
            sent = {**headers, **token} if token_sent else headers
            exchange = transport._http.request("GET", url, sent.items())
            response = await exchange.__aenter__()
            try:
                if response.status not in REDIRECT_STATUSES:
                    self._exchange = exchange
                    return response, url, token_sent
                location = response.headers.get("location")
                url = redirect_target(what, chain, response.status, location)
                await _discard(response)
            except BaseException as exc:
                await exchange.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            await exchange.__aexit__(None, None, None)
            log.debug("%s: HTTP %d redirect to %s", what, response.status, _shown(url))
            chain.append(url)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        exchange = self._exchange
        assert exchange is not None  # entered
        self._exchange = None
        await exchange.__aexit__(kind, exc, tb)


_SSE: Final = "SSE connect"


class _Sse:
    """:meth:`SuperDuperTransport.listen_sse` as a class, not ``contextlib.asynccontextmanager``
    (an async generator, hooked by trio, per stream, and at its end thrown the Cancelled that
    stops the stream)."""

    __slots__ = ("_exchange", "_file_id", "_messages", "_transport")

    def __init__(self, transport: SuperDuperTransport, file_id: str) -> None:
        self._transport = transport
        self._file_id = file_id
        self._exchange: AbstractAsyncContextManager[_Reply] | None = None
        self._messages: SseMessages | None = None

    async def __aenter__(self) -> AsyncIterator[str]:
        transport = self._transport
        url = transport.config.api_url(sse_path(quote(self._file_id, safe="")))
        headers = {
            "Authorization": transport.config.headers()["Authorization"],
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "User-Agent": USER_AGENT,
        }
        try:
            exchange = transport._http.request("GET", url, headers.items())
            response = await exchange.__aenter__()
        except http1.HTTPFailure as exc:
            raise transport._sse_failure(exc) from None
        try:
            transport._answered = True
            if not 200 <= response.status < 300:
                body = await _read_body(response, 4096, _SSE, cut=True)
                raise transport._status_error(_SSE, response.status, response.headers, body)
            kind = response.headers.get("content-type", "").partition(";")[0].strip()
            if kind != "text/event-stream":
                raise TransientError(
                    f"{_SSE}: the server answered {kind or 'no content type'}, not an event stream",
                    status=response.status,
                )
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", ""):
                raise TransientError(
                    f"{_SSE}: the stream is compressed ({encoding!r}), which was not asked"
                )
        except BaseException as exc:
            await self._leave(exchange, type(exc), exc, exc.__traceback__)
            if isinstance(exc, http1.HTTPFailure):
                raise transport._sse_failure(exc) from None
            raise
        messages = sse_messages(response.chunks(), transport.max_push_message, heartbeats=True)
        self._exchange, self._messages = exchange, messages
        return messages

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        exchange, messages = self._exchange, self._messages
        assert exchange is not None and messages is not None  # entered
        self._exchange = self._messages = None
        await messages.aclose()
        await self._leave(exchange, kind, exc, tb)  # closes the connection unless read to its end
        if isinstance(exc, http1.HTTPFailure):
            raise self._transport._sse_failure(exc) from None

    async def _leave(
        self,
        exchange: AbstractAsyncContextManager[_Reply],
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await exchange.__aexit__(kind, exc, tb)
        except http1.HTTPFailure as failure:
            raise self._transport._sse_failure(failure) from None


def _skipped(url: str, start: int, status: int, headers: Mapping[str, str]) -> int:
    """How many bytes of a resumed download's body to skip: 0 for the range asked (HTTP 206
    from ``start``), ``start`` for the whole file again (HTTP 200)."""
    if not start or status != 206:
        return start if start and status == 200 else 0
    unit, _, spec = headers.get("content-range", "").strip().partition(" ")
    first = spec.partition("-")[0]
    if unit.lower() != "bytes" or first != str(start):
        raise TransientError(
            f"download of {url}: asked for the bytes from {start} on, the server sent the range "
            f"{spec[:60] or 'of no Content-Range'}"
        )
    return 0


class _Chunks:
    """A streamed body's chunks, the first ``skip`` bytes left out; a dropped connection
    becomes a ``TransientError``."""

    def __init__(
        self, raw: AsyncIterator[bytes], redact: Callable[[object], str], skip: int = 0
    ) -> None:
        self._raw = raw
        self._redact = redact
        self._skip = skip

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                chunk = await self._raw.__anext__()
            except http1.HTTPFailure as exc:
                raise TransientError(f"download: connection failed ({self._redact(exc)})") from None
            if self._skip <= 0:
                return chunk
            if len(chunk) > self._skip:
                chunk, self._skip = chunk[self._skip :], 0
                return chunk
            self._skip -= len(chunk)


class _Reply(Protocol):
    """A reply of either HTTP client: status, headers (looked up by lower-case name), body."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class _HTTP(Protocol):
    """What the transport needs of an HTTP client: :class:`hybridgen.http1.Pool`, or httpx."""

    def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None = None,
    ) -> AbstractAsyncContextManager[_Reply]: ...

    async def aclose(self) -> None: ...


class _HttpxReply:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        if response.is_stream_consumed:  # built in memory (httpx.MockTransport): decoded
            self.headers = {k: v for k, v in response.headers.items() if k != "content-encoding"}

    async def chunks(self) -> AsyncIterator[bytes]:
        response = self._response
        if response.is_stream_consumed:
            yield response.content
            return
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except (httpx.RequestError, OSError) as exc:
            raise _failure(exc) from None


class _Httpx:
    """The transport's exchanges through an ``httpx.AsyncClient`` (the caller's, or one made
    for a proxy); its errors become :class:`~hybridgen.http1.HTTPFailure`."""

    def __init__(self, client: httpx.AsyncClient, *, owned: bool) -> None:
        self.client = client
        self._owned = owned

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None = None,
    ) -> AsyncIterator[_Reply]:
        body_error: BaseException | None = None
        try:
            # a caller's client may follow redirects itself: the transport follows them, by its
            # rules (Authorization to the API's origin only, no https -> http)
            async with self.client.stream(
                method, url, headers=list(headers), content=body, follow_redirects=False
            ) as response:
                try:
                    yield _HttpxReply(response)
                except BaseException as exc:  # the caller's own (e.g. a full disk): as it is
                    body_error = exc
                    raise
        except (httpx.RequestError, OSError) as exc:
            if exc is body_error:
                raise
            raise _failure(exc) from None
        except httpx.InvalidURL as exc:  # a server's URL that cannot be requested: never sent
            raise http1.HTTPFailure(str(exc), sent=False) from None

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()


def _failure(exc: httpx.RequestError | OSError) -> http1.HTTPFailure:
    timed_out = isinstance(exc, httpx.TimeoutException)
    why = "timed out" if timed_out else str(exc) or type(exc).__name__
    return http1.HTTPFailure(why, sent=not isinstance(exc, _NOT_SENT), timed_out=timed_out)


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class _Messages:
    """The text messages of one open socket; ends on a normal close, raises on a drop."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> str:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            if reason is not None and reason.code in _NORMAL_CLOSE:
                raise StopAsyncIteration from None
            raise _closed_error(exc) from None
        if isinstance(message, bytes):
            return message.decode("utf-8", "replace")
        return str(message)


@contextlib.asynccontextmanager
async def _open_websocket(
    url: str, headers: list[tuple[bytes, bytes]]
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """``trio_websocket.open_websocket_url``, but the TCP stream is ours and closed on every exit.

    trio-websocket 0.12 leaves its stream open (until the garbage collector finds it) when the
    handshake is rejected or cancelled, so a refusing server or a cancelled connect would leak one
    socket per attempt.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port not in (80, 443):
        host_header = f"{host_header}:{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=_tls_context(), https_compatible=True
        )
    else:
        stream = await http1.connect_tcp(host, port)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                host_header,
                resource,
                extra_headers=headers,
                max_message_size=WS_MAX_MESSAGE,
            )
            try:
                yield ws
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                try:
                    with trio.move_on_after(_WS_DISCONNECT_TIMEOUT):
                        await ws.aclose()
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _reraise(_pick(group, body_error))
    finally:
        await trio.aclose_forcefully(stream)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's default TLS settings (certificates and host names checked), built once."""
    return ssl.create_default_context()


def _pick(
    group: BaseExceptionGroup[BaseException], preferred: BaseException | None
) -> BaseException:
    """The one exception to raise from a nursery's group: the body's own, else a real error."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if preferred is not None and any(exc is preferred for exc in leaves):
        return preferred
    return next((exc for exc in leaves if not isinstance(exc, trio.Cancelled)), leaves[0])


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it was, without chaining it to the group that held it."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def error_for_status(
    what: str,
    status: int,
    *,
    retry_after: float | None = None,
    detail: str = "",
    source: str = "the server",
    token_sent: bool = True,
) -> TransportError:
    """The typed error for an HTTP error ``status``: the one classification every transport uses.

    401/403 are :class:`~hybridgen.errors.AuthError` when the token was sent (``token_sent``);
    from a host that got no token (a CDN) they are a plain
    :class:`~hybridgen.errors.PermanentError` naming that host (``source``); 408, 425, 429 and
    5xx are
    :class:`~hybridgen.errors.TransientError` (with ``retry_after``; ``maybe_processed`` is False
    for 408, 425, 429 and 503, by which the server says it did not act); any other status is a
    :class:`~hybridgen.errors.PermanentError`. The message names the status
    (``HTTP 524 from the server (Cloudflare origin timeout)``); ``detail`` (``": ..."``) ends it.
    """
    if status in (401, 403) and token_sent:
        return AuthError(
            f"{what}: the server rejected the token (HTTP {status}); check SUPERDUPERAI_TOKEN",
            status=status,
        )
    phrase = status_phrase(status)
    message = f"{what}: HTTP {status} from {source}{f' ({phrase})' if phrase else ''}{detail}"
    if status in (401, 403):
        return PermanentError(f"{message} (no token is sent to that host)", status=status)
    if status in (408, 425, 429) or status >= 500:
        return TransientError(
            message,
            status=status,
            retry_after=retry_after,
            maybe_processed=status not in _NOT_PROCESSED,
        )
    return PermanentError(message, status=status)


def _size(limit: int) -> str:
    return f"{limit / 2**20:g} MiB" if limit % 2**16 == 0 else f"{limit} bytes"


async def _read_body(response: _Reply, limit: int, what: str, *, cut: bool = False) -> bytes:
    """The decoded body, up to ``limit`` bytes; a longer one is cut (``cut``) or an error.

    Never holds more than ``limit`` plus one network chunk: the body is read chunk by chunk and
    decompressed with a bounded output, so neither a huge reply nor a compression bomb can take
    the memory.
    """

    def over() -> TransientError:
        return TransientError(
            f"{what}: the server's reply is over the {_size(limit)} limit "
            "(Config.max_reply_bytes); it was not read"
        )

    length = response.headers.get("content-length", "").strip()
    if not cut and length.isdigit() and int(length) > limit:
        raise over()
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflate: Any = None
    if encoding in ("gzip", "deflate", "x-gzip"):
        inflate = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
    elif encoding not in ("identity", ""):
        raise TransientError(f"{what}: the reply uses an unsupported content encoding {encoding!r}")
    body = bytearray()
    async for chunk in response.chunks():
        room = limit + 1 - len(body)
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, room)
            except zlib.error:
                raise TransientError(f"{what}: the reply cannot be decompressed") from None
        body += chunk[:room]
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise over()
    return bytes(body)


def _closed_error(exc: Any) -> TransientError:
    reason = getattr(exc, "reason", None)
    code = getattr(reason, "code", None)
    why = getattr(reason, "reason", None)
    if code in (None, 1006):
        text = "WebSocket connection lost (closed without a close frame, code 1006)"
    elif code == 1009:
        text = "WebSocket closed: a message was over the size limit (code 1009)"
    else:
        text = f"WebSocket closed by the server (code {code}{f': {why}' if why else ''})"
    return TransientError(text[:_DETAIL_CHARS])


def redirect_target(what: str, chain: Sequence[str], status: int, location: str | None) -> str:
    """Where a redirect sends the next ``GET``: ``location`` resolved against the last URL of
    ``chain`` (the URLs requested so far, the first the original); sans-IO, for every transport.

    Raises :class:`~hybridgen.errors.RedirectError` (naming the hops) for a redirect without a
    usable ``Location`` (none, not http(s), with credentials), an https -> http downgrade, a URL
    already requested (a loop), or one hop more than :data:`MAX_REDIRECTS`.
    """
    here = chain[-1]
    hops = len(chain) - 1

    def refuse(why: str, text: str) -> RedirectError:
        return RedirectError(f"{what}: {text}", why=why, hops=hops, status=status)

    if location is None or not location.strip():
        raise refuse(
            "no_location", f"HTTP {status} redirect from {_shown(here)} without a Location"
        )
    target = urljoin(here, location.strip()).partition("#")[0]
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise refuse(
            "no_location",
            f"HTTP {status} redirect from {_shown(here)} to a URL that cannot be requested "
            f"({_shown(target)})",
        )
    if urlsplit(here).scheme == "https" and parts.scheme == "http":
        raise refuse(
            "downgrade",
            f"refused the redirect from {_shown(here)} to {_shown(target)}: an https -> http "
            "downgrade (the reply would travel unencrypted)",
        )
    if target in chain:
        raise refuse(
            "loop",
            f"a redirect loop after {hops + 1} redirect{'s' if hops else ''}: {_shown(here)} "
            f"sends back to {_shown(target)}",
        )
    if hops >= MAX_REDIRECTS:
        raise refuse(
            "too_many",
            f"more than {MAX_REDIRECTS} redirects (the {hops + 1}th, from {_shown(here)} to "
            f"{_shown(target)}, was not followed)",
        )
    return target


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs have the same origin: scheme, host and port (the default one if unsaid)."""
    return _origin(a) == _origin(b)


def _shown(url: str) -> str:
    """A URL for a message: scheme, host, port and path, never its query (a presigned URL's
    signature is in it), at most 200 characters."""
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return text if len(text) <= 200 else text[:197] + "..."


def _host(url: str) -> str:
    """``host`` or ``host:port`` of a URL, for a message."""
    return urlsplit(url).netloc.rpartition("@")[2] or "the file's host"


async def _discard(response: _Reply) -> None:
    """Read and drop a redirect's body (at most 64 KiB): a connection read to its end is kept."""
    read = 0
    with contextlib.suppress(http1.HTTPFailure):
        async for chunk in response.chunks():
            read += len(chunk)
            if read > _ERROR_BODY_BYTES:
                return  # the connection is closed, not reused


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # not a port: no origin of ours (the HTTP client refuses the URL)
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date; else ``None``."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        return max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
