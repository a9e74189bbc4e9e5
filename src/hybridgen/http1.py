"""hybridgen's own HTTP/1.1 client over trio streams, with a pool of idle connections.

The pool writes each request itself (its head checked by h11 once per header set, its target
%-encoded where it is not visible ASCII, as httpx and browsers do: building and writing requests
through h11 was 6 % of the client's CPU at a thousand generations), and reads each reply with
hybridgen's own strict reader (``hybridgen._reply``: the head found with one ``bytes.find``, a
``Content-Length`` body taken as one slice; h11 reading replies was 16 % of it). Where that
reader is stricter than h11 (bare LF line ends, a version other than HTTP/1.x, both
``Content-Length`` and ``Transfer-Encoding``, bytes after a reply's end) its docstring says.

:class:`~hybridgen.transport.SuperDuperTransport` sends its requests through a :class:`Pool`
unless it is given an ``httpx.AsyncClient`` (or the environment names a proxy, which httpx
honours). It does one thing: send a request and stream its reply, on a kept-alive connection when
one is idle. Taking an idle connection is O(1) (httpcore scans every connection of its pool, with
a syscall each, on every request and release: most of hybridgen's CPU at a thousand generations
held open by SSE streams). There are no timeouts here: the driver bounds every call, and a
connection left by a cancelled or failed exchange is closed, never reused.

Every failure is an :class:`HTTPFailure` whose ``sent`` says whether any byte of the request may
have reached the server (a start that was not sent can be sent again safely).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, TypeVar
from urllib.parse import quote, urlsplit

import h11
import trio

from ._reply import MAX_HEAD, ReplyError, ReplyReader

log: Final = logging.getLogger("hybridgen.http")
"""Debug records: connections made or refused, each request's method, path and reply status
(never a header or a query: the token could be in one)."""

__all__ = ["MAX_HEAD", "HTTPFailure", "Pool", "Response", "connect_tcp"]

_READ: Final = 64 * 1024
_POSIX: Final = os.name == "posix"
_BURST: Final = 16

_T = TypeVar("_T")
Origin = tuple[str, str, int]
_Heads = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, bytes]]
"""Request heads checked and written: ``(method, headers)`` to ``(method, header lines)``."""


class HTTPFailure(Exception):
    """An exchange that got no complete reply: the connection failed or the reply broke HTTP.

    ``sent`` is False only when nothing of the request can have reached the server (the
    connection could not be made), so the request is safe to send again; ``timed_out`` says
    that a timeout of the HTTP client (not hybridgen's deadline) ended it. ``unreachable`` says,
    in words, why no connection could be made when nothing answered at all (``"connection
    refused"``, ``"the name ... does not resolve"``), else it is empty.
    """

    def __init__(
        self, message: str, *, sent: bool, timed_out: bool = False, unreachable: str = ""
    ) -> None:
        super().__init__(message)
        self.sent = sent
        self.timed_out = timed_out
        self.unreachable = unreachable


class Response:
    """A reply's status and headers (names in lower case; repeated ones joined by ``", "``),
    and its body as it arrives (:meth:`chunks`, once)."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], conn: _Connection) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn

    def __repr__(self) -> str:
        return f"<Response {self.status}>"

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes, chunk by chunk, until its end; a failure raises ``HTTPFailure``."""
        return _Body(self._conn)


class _Body:
    """A reply's body as an async iterator; a class, not an async generator (trio hooks the
    start and end of every async generator: a cost per request at thousands of requests)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        piece = await conn.read(conn.reader.body)
        if not piece:  # the end (or the body was read already)
            raise StopAsyncIteration
        return piece


class _Connection:
    __slots__ = ("idle_since", "reader", "reads", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # plain TCP: the socket itself, without the stream's per-call bookkeeping
        self.sock = stream.socket if type(stream) is trio.SocketStream else None
        self.reader = ReplyReader()
        self.idle_since = 0.0
        self.reads = 0  # reads in a row that found bytes waiting (no scheduler round trip),
        # or -1 when a request was just sent

    async def send(self, data: bytes) -> None:
        """Send ``data``; on plain TCP without a checkpoint when the kernel takes it all at
        once (the reply's wait, which always follows, is the checkpoint). Nothing is sent from
        a cancelled scope."""
        try:
            if self.sock is None:
                await self.stream.send_all(data)
                return
            await trio.lowlevel.checkpoint_if_cancelled()  # yields only when cancelled
            view = memoryview(data)
            if _POSIX:  # a socket is a file descriptor (not so on Windows)
                with contextlib.suppress(BlockingIOError):  # fd -1 once closed: EBADF, no mix-up
                    view = view[os.write(self.sock.fileno(), view) :]
            while view:
                view = view[await self.sock.send(view) :]
            self.reads = -1  # a request just went out: see _receive
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise HTTPFailure(f"sending failed ({_why(exc)})", sent=True) from None

    async def _receive(self, sock: trio.socket.SocketType) -> bytes:
        """Read what the kernel has, waiting until it has something (POSIX, plain TCP). Bytes
        already there are taken without a scheduler round trip, except every ``_BURST``-th time
        in a row (a fast sender must not keep this task running). The first read after a request
        waits first: its reply cannot be there yet (a read would fail, an exception per request).
        """
        if self.reads < 0:
            self.reads = 0
            await trio.lowlevel.wait_readable(sock)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:  # the descriptor is asked for each time: -1 once closed (EBADF), never reused
                data = os.read(sock.fileno(), _READ)
            except BlockingIOError:
                self.reads = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            self.reads += 1
            if self.reads >= _BURST:
                self.reads = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    def close(self) -> None:
        """Close at once, without a checkpoint (on TLS without the closing handshake)."""
        _socket_of(self.stream).close()  # trio's close tells the tasks waiting on it first

    async def read(self, step: Callable[[], _T | None]) -> _T:
        """What ``step`` (a reader's :meth:`~ReplyReader.head` or :meth:`~ReplyReader.body`)
        gives, reading until it gives something."""
        try:
            out = step()
            while out is None:
                await self.receive()
                out = step()
        except ReplyError as exc:
            raise HTTPFailure(f"the reply breaks HTTP/1.1 ({exc})", sent=True) from None
        return out

    async def receive(self) -> None:
        """Read what comes next into the reply reader (at the end, tell it the end)."""
        try:
            if self.sock is None:
                data = await self.stream.receive_some(_READ)
            elif _POSIX:
                data = await self._receive(self.sock)
            else:
                data = await self.sock.recv(_READ)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise HTTPFailure(f"connection lost ({_why(exc)})", sent=True) from None
        if data:
            self.reader.feed(data)
            return
        if self.reader.waiting:
            raise HTTPFailure("the server closed the connection without a reply", sent=True)
        self.reader.eof()

    def reusable(self) -> bool:
        return self.reader.reusable()

    def stale(self, now: float, keepalive: float) -> bool:
        """Idle too long, or readable while idle (the server closed it, or sent junk)."""
        if now - self.idle_since > keepalive:
            return True
        return bool(_socket_of(self.stream).is_readable())


class Pool:
    """Idle HTTP/1.1 connections by origin, and the requests sent over them.

    ``tls`` is the context for ``https`` (by default the system's, certificates and host names
    checked); at most ``max_idle`` connections per origin are kept, each for ``keepalive``
    seconds. The pool never limits how many requests are in flight (the driver does).
    """

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        *,
        max_idle: int = 64,
        keepalive: float = 30.0,
    ) -> None:
        self._tls = tls
        self.max_idle = max_idle
        self.keepalive = keepalive
        self._idle: dict[Origin, list[_Connection]] = {}
        self._heads: _Heads = {}
        self._closed = False

    def __repr__(self) -> str:
        idle = sum(len(conns) for conns in self._idle.values())
        return f"<Pool {idle} idle connections>"

    def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None = None,
    ) -> AbstractAsyncContextManager[Response]:
        """Send a request and enter with its :class:`Response` (the head read, the body not).

        The connection goes back to the pool if the body was read to its end; otherwise it is
        closed. A request that fails on a kept-alive connection before any byte of a reply came
        back is sent once more on a new connection when the method is ``GET`` (a server may
        close an idle connection just as it is taken).
        """
        origin, target, host = _split(url)
        message = _message(self._heads, method, target, (("Host", host), *headers), body)
        return _Exchange(self, origin, method, message)

    async def aclose(self) -> None:
        """Close every idle connection (requests in flight close theirs when they end)."""
        self._closed = True
        self._heads.clear()
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        await trio.lowlevel.checkpoint()

    async def _exchange(self, conn: _Connection, method: str, message: _Message) -> Response:
        conn.reader.start(method == "HEAD")  # reading a reply needs the request's method only
        await conn.send(message.data)
        status, headers = await conn.read(conn.reader.head)
        log.debug("%s %s: HTTP %d", method, message.path, status)
        return Response(status, headers, conn)

    async def _take(self, origin: Origin) -> tuple[_Connection, bool]:
        """An idle connection to ``origin`` that still looks alive, else a new one."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.stale(now, self.keepalive):
                return conn, True
            conn.close()
        return await self._connect(origin), False

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        try:
            stream: trio.abc.Stream = await connect_tcp(host, port)
        except OSError as exc:
            log.debug("connect to %s:%d failed: %s", host, port, exc)
            raise HTTPFailure(_why(exc), sent=False, unreachable=unreachable(exc, host)) from None
        log.debug("connected to %s:%d", host, port)
        if scheme == "https":
            tls = self._tls or _default_tls()
            ssl_stream = trio.SSLStream(stream, tls, server_hostname=host, https_compatible=True)
            try:
                await ssl_stream.do_handshake()
            except (OSError, trio.BrokenResourceError) as exc:
                await trio.aclose_forcefully(ssl_stream)
                cause = exc.__cause__ or exc
                raise HTTPFailure(f"TLS handshake failed ({_why(cause)})", sent=False) from None
            except BaseException:
                await trio.aclose_forcefully(ssl_stream)
                raise
            stream = ssl_stream
        return _Connection(stream)

    def _give_back(self, origin: Origin, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, [])
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).close()  # the oldest makes room


class _Exchange:
    """One request of a :class:`Pool` as an async context manager; a class, not
    ``contextlib.asynccontextmanager`` (an async generator, hooked by trio, per request)."""

    __slots__ = ("_conn", "_message", "_method", "_origin", "_pool")

    def __init__(self, pool: Pool, origin: Origin, method: str, message: _Message) -> None:
        self._pool = pool
        self._origin = origin
        self._method = method
        self._message = message
        self._conn: _Connection | None = None

    async def __aenter__(self) -> Response:
        pool, origin, method, message = self._pool, self._origin, self._method, self._message
        conn, reused = await pool._take(origin)
        try:
            try:
                response = await pool._exchange(conn, method, message)
            except HTTPFailure:
                if not (reused and method == "GET" and conn.reader.waiting):
                    raise
                conn.close()
                conn = await pool._connect(origin)
                response = await pool._exchange(conn, method, message)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return response

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        conn = self._conn
        assert conn is not None  # entered
        self._conn = None
        if kind is None and conn.reusable() and not self._pool._closed:
            self._pool._give_back(self._origin, conn)
        else:
            conn.close()


class _Message:
    """A request's bytes, as they go on the wire, and its path (for the log)."""

    __slots__ = ("data", "path")

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path


_TARGET: Final = re.compile(r"[\x21-\x7e]+")
"""A request target as sent: visible ASCII only (no space, no control byte: nothing smuggled)."""
_FRAMING: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
)
"""Header names the pool sets itself, or that would change how the reply is read."""
_HEADS: Final = 64
"""Request heads a pool keeps (a transport sends a handful of header sets)."""


def _message(
    heads: _Heads,
    method: str,
    target: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes | None,
) -> _Message:
    """The request's bytes. The head is validated by h11 once per method and header set (kept in
    ``heads``, the pool's own: the token is in them), and a target with anything but visible
    ASCII is %-encoded; a request that cannot be sent fails before a connection is taken, as not
    sent."""
    head = heads.get((method, headers))
    if head is None:
        try:
            head = _head(method, headers)
        except h11.LocalProtocolError as exc:
            raise HTTPFailure(f"the request cannot be sent ({exc})", sent=False) from None
        if len(heads) >= _HEADS:
            heads.clear()
        heads[method, headers] = head
    if not _TARGET.fullmatch(target):  # as a browser or httpx sends it: %-encoded, never raw
        target = quote(target, safe="!$%&'()*+,/:;=?@[]~")
    line = b"%s %s HTTP/1.1\r\n" % (head[0], target.encode("ascii"))
    path = target.partition("?")[0]
    if body is None:
        return _Message(line + head[1] + b"\r\n", path)
    return _Message(line + head[1] + b"Content-Length: %d\r\n\r\n" % len(body) + body, path)


def _head(method: str, headers: tuple[tuple[str, str], ...]) -> tuple[bytes, bytes]:
    """``(method, header lines)`` as bytes, checked by h11 as it checks a request it sends."""
    request = h11.Request(method=method, target="/", headers=list(headers))
    for name, _ in request.headers:  # as h11 reads them: lower case, bytes
        if name in _FRAMING:
            raise h11.LocalProtocolError(f"the {name.decode()} header is the HTTP client's to set")
    lines = b"".join(b"%s: %s\r\n" % pair for pair in request.headers.raw_items())
    return request.method, lines


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    """The TCP socket under a connection (plain or TLS; the pool makes no other kind)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket


async def connect_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host``; an IP address is connected to directly (no resolver call,
    no happy-eyeballs nursery), a name through ``trio.open_tcp_stream``."""
    version = _ip_version(host)
    if version is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET)
    try:
        await sock.connect((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if version == 6 else f"{host}:{port}"
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        failure = OSError(f"connect to {where}: {why}")
        failure.errno = exc.errno  # what failed stays readable (see unreachable)
        raise failure from None
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@functools.lru_cache(maxsize=64)  # parsing an address is slow Python: once per host
def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP address, ``None`` for a name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def unreachable(exc: OSError, host: str) -> str:
    """Why no connection to ``host`` could be made, in words, when nothing answered at all: the
    name does not resolve, or every address refused the connection; else ``""`` (a timeout, an
    unreachable network: a server may still be there)."""
    if isinstance(exc, socket.gaierror):
        return f"the name {host} does not resolve"
    cause = exc.__cause__
    tried = list(cause.exceptions) if isinstance(cause, BaseExceptionGroup) else [exc]
    if tried and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in tried):
        return "connection refused"
    return ""


_ORIGIN: Final = re.compile(r"([^:/?#]+://[^/?#]*)(.*)", re.DOTALL)


def _split(url: str) -> tuple[Origin, str, str]:
    """``(origin, target, Host header)`` of an ``http`` or ``https`` URL."""
    match = _ORIGIN.fullmatch(url)
    if match is None:
        raise HTTPFailure(f"not an http(s) URL: {url[:100]!r}", sent=False)
    origin, host_header = _origin(match[1])
    target = match[2].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target  # empty, or a query alone
    return origin, target, host_header


@functools.lru_cache(maxsize=64)  # a client talks to one or two origins
def _origin(prefix: str) -> tuple[Origin, str]:
    """``(origin, Host header)`` of ``scheme://authority``."""
    if "@" in prefix:  # never cached, never echoed: it holds a password
        raise HTTPFailure("a URL with credentials (user@host) is not supported", sent=False)
    parts = urlsplit(prefix)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise HTTPFailure(f"not an http(s) URL: {prefix[:100]!r}", sent=False)
    default = 443 if scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        why = f"the URL's port is not a number from 0 to 65535: {prefix[:100]!r}"
        raise HTTPFailure(why, sent=False) from None
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default:
        host_header += f":{port}"
    return (scheme, host, port), host_header


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's default TLS settings (certificates and host names checked), built once."""
    return ssl.create_default_context()


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
