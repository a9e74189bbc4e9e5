"""A hostile SuperDuperAI-like server, to test that a client survives what a broken or malicious
server sends: replies that never come, come one byte at a time, are gigabytes long, or nest JSON
100,000 deep.

It is a raw trio TCP server (no HTTP library between it and the socket), so it can do what a
well-behaved server framework would refuse to: announce a 2 GB body and stream it lazily (it costs
the server no memory), hold a connection open without a word, or send a WebSocket frame longer
than any client accepts. Each endpoint of the API gets one :data:`Behaviour`:

- ``start`` (``POST /api/v1/file/generate-image``), ``poll`` (``GET /api/v1/file/{id}``),
  ``push`` (both push channels: the project's WebSocket and the file's Server-Sent Events at
  ``GET /api/v1/events/file.{id}``) and ``download`` (``GET /files/{id}.png``).

``async with hostile(Hostility(poll="huge")) as server:`` runs one on a free loopback port;
``server.url`` is its base URL (any token is accepted), ``server.sent`` counts the body bytes it
managed to write per endpoint (a client that stops reading a 2 GB body early shows a small figure).
The emulator (:mod:`hybridgen.emulator`) plays the API's *documented* faults; this server plays
the undocumented ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final, Literal

import attrs
import trio

__all__ = ["BEHAVIOURS", "ENDPOINTS", "Behaviour", "Endpoint", "Hostile", "Hostility", "hostile"]

Behaviour = Literal["normal", "hang", "garbled", "huge", "trickle", "deep", "bignum"]
BEHAVIOURS: Final = ("normal", "hang", "garbled", "huge", "trickle", "deep", "bignum")
Endpoint = Literal["start", "poll", "push", "download"]
ENDPOINTS: Final = ("start", "poll", "push", "download")

_HEAD_LIMIT: Final = 64 * 1024
_BODY_LIMIT: Final = 2**20
_CHUNK: Final = 64 * 1024
_WS_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_PATH: Final = re.compile(r"/api/v1/ws/project\.(?P<project>[^/?]+)")
_POLL_PATH: Final = re.compile(r"/api/v1/file/(?P<file>[^/?]+)")
_SSE_PATH: Final = re.compile(r"/api/v1/events/file\.(?P<file>[^/?]+)")
_FILE_PATH: Final = re.compile(r"/files/(?P<file>[^/?.]+)\.png")
_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_GARBLE: Final = b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\x00\xff\r\n\r\n"


@attrs.frozen(kw_only=True)
class Hostility:
    """What each endpoint does (see :data:`Behaviour`) and the sizes and pace it uses.

    Behaviours:

    - ``normal``: a correct reply (the job is ready ``ready_after`` seconds after its start; the
      push sends the result then; the download is a real PNG).
    - ``hang``: the connection is accepted and the request read, then nothing is ever sent (for
      the push: no handshake reply).
    - ``garbled``: a reply that is not HTTP at all, then the connection closes (for the push: a
      handshake reply whose ``Sec-WebSocket-Accept`` is wrong).
    - ``huge``: a body (or WebSocket message) of ``huge_bytes``, streamed as it is read (zeros;
      a download's starts with the PNG signature, so only its size gives it away).
    - ``trickle``: a short, valid reply sent one byte every ``trickle_interval`` seconds, forever
      slower than a per-read timeout would notice.
    - ``deep``: valid JSON nested ``depth`` levels deep (for the download: a body that is not an
      image).
    - ``bignum``: a valid reply whose ``progress`` is an integer of ``digits`` digits.

    ``times`` limits an endpoint's behaviour to its first that many requests (later ones are
    answered normally): ``times={"poll": 2}``. An endpoint it does not name keeps its behaviour
    for every request.
    """

    start: Behaviour = "normal"
    poll: Behaviour = "normal"
    push: Behaviour = "normal"
    download: Behaviour = "normal"
    times: Mapping[str, int] = attrs.field(factory=dict)
    ready_after: float = 0.2
    huge_bytes: int = 2 * 2**30
    trickle_interval: float = 1.0
    depth: int = 100_000
    digits: int = 400

    def __attrs_post_init__(self) -> None:
        for endpoint in ENDPOINTS:
            if getattr(self, endpoint) not in BEHAVIOURS:
                raise ValueError(f"{endpoint} must be one of {', '.join(BEHAVIOURS)}")
        for endpoint in self.times:
            if endpoint not in ENDPOINTS:
                raise ValueError(f"times: {endpoint!r} is not one of {', '.join(ENDPOINTS)}")


@attrs.define
class Hostile:
    """A running hostile server: its base URL, its settings and what it did so far."""

    url: str
    hostility: Hostility
    requests: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    """Requests (for ``push``: handshakes) received, per endpoint."""
    sent: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    """Body (or WebSocket payload) bytes written, per endpoint."""
    jobs: dict[str, tuple[str, float]] = attrs.field(factory=dict)
    """Started jobs: file id -> (project id, the trio time its result is ready)."""
    _news: trio.Event = attrs.field(factory=trio.Event)

    def add_job(self, file_id: str, project_id: str) -> None:
        """Record a started job (its result is ready ``ready_after`` seconds from now)."""
        self.jobs[file_id] = (project_id, trio.current_time() + self.hostility.ready_after)
        self._news.set()
        self._news = trio.Event()

    async def job_of(self, project_id: str) -> tuple[str, float]:
        """The project's first job: ``(file id, ready time)``, once it has started."""
        while True:
            for file_id, (project, ready_at) in self.jobs.items():
                if project == project_id:
                    return file_id, ready_at
            await self._news.wait()

    def behaviour(self, endpoint: Endpoint) -> Behaviour:
        """Count one request of ``endpoint`` and say how to answer it."""
        self.requests[endpoint] += 1
        chosen: Behaviour = getattr(self.hostility, endpoint)
        times = self.hostility.times.get(endpoint)
        if times is not None and self.requests[endpoint] > times:
            return "normal"
        return chosen


@attrs.frozen
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Closed(Exception):
    """The client went away before the request was whole."""


async def _read_request(stream: trio.SocketStream) -> _Request:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_LIMIT:
            raise _Closed("request head too long")
        chunk = await stream.receive_some(_CHUNK)
        if not chunk:
            raise _Closed("closed during the request head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, *_ = [*lines[0].split(" "), "", ""]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    declared = headers.get("content-length", "")
    length = min(int(declared), _BODY_LIMIT) if declared.isdigit() else 0
    while len(body) < length:
        chunk = await stream.receive_some(_CHUNK)
        if not chunk:
            raise _Closed("closed during the request body")
        body += chunk
    return _Request(method, path.split("?")[0], headers, body[:length])


def _head(status: int, content_type: str, length: int) -> bytes:
    reason = {200: "OK", 101: "Switching Protocols", 404: "Not Found"}.get(status, "Status")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class _Server:
    def __init__(self, state: Hostile) -> None:
        self.state = state
        self.h = state.hostility

    # -- replies ------------------------------------------------------------------------------

    def file_json(self, file_id: str, behaviour: Behaviour) -> bytes:
        """The file object of a job as it stands now (``bignum``: with a huge ``progress``)."""
        project_id, ready_at = self.state.jobs.get(file_id, ("", math.inf))
        ready = trio.current_time() >= ready_at
        status = "completed" if ready else "in_progress"
        url = f"{self.state.url}/files/{file_id}.png" if ready else None
        head = {
            "id": file_id,
            "url": url,
            "type": "image",
            "project_id": project_id,
            "tasks": [{"type": "image-generation-flow", "status": status, "id": file_id}],
        }
        text = json.dumps(head)
        if behaviour == "bignum":
            text = text[:-1] + ', "progress": ' + "9" * self.h.digits + "}"
        return text.encode()

    async def send_body(
        self, stream: trio.SocketStream, endpoint: Endpoint, behaviour: Behaviour, body: bytes
    ) -> None:
        """Send ``body`` the ``behaviour``'s way (``huge`` sends its own; ``hang`` sends none)."""
        if behaviour == "hang":
            await trio.sleep_forever()
        if behaviour == "garbled":
            await stream.send_all(_GARBLE)
            return
        image = endpoint == "download" and behaviour in ("normal", "trickle", "huge")
        ctype = "image/png" if image else "application/json"
        if behaviour == "huge":
            # a download starts like a PNG, so only its size gives it away
            prefix = _PNG_MAGIC if image else b""
            await stream.send_all(_head(200, ctype, self.h.huge_bytes) + prefix)
            self.state.sent[endpoint] += len(prefix)
            await self.stream_zeros(stream, endpoint, self.h.huge_bytes - len(prefix))
            return
        if behaviour == "deep":
            body = _deep(self.h.depth)
        await stream.send_all(_head(200, ctype, len(body)))
        await self.send_payload(stream, endpoint, behaviour, body)

    async def send_payload(
        self, stream: trio.SocketStream, endpoint: Endpoint, behaviour: Behaviour, data: bytes
    ) -> None:
        """Send ``data`` at once, or one byte per ``trickle_interval`` (``trickle``)."""
        if behaviour != "trickle":
            await stream.send_all(data)
            self.state.sent[endpoint] += len(data)
            return
        for index in range(len(data)):
            await stream.send_all(data[index : index + 1])
            self.state.sent[endpoint] += 1
            await trio.sleep(self.h.trickle_interval)

    async def stream_zeros(self, stream: trio.SocketStream, endpoint: Endpoint, size: int) -> None:
        chunk = b"0" * _CHUNK
        left = size
        while left > 0:
            piece = chunk if left >= _CHUNK else chunk[:left]
            await stream.send_all(piece)
            left -= len(piece)
            self.state.sent[endpoint] += len(piece)

    # -- endpoints ----------------------------------------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            request = await _read_request(stream)
            await self.route(stream, request)
        except* (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: that is its right

    async def route(self, stream: trio.SocketStream, request: _Request) -> None:
        if request.headers.get("upgrade", "").lower() == "websocket":
            match = _WS_PATH.fullmatch(request.path)
            if match:
                await self.push(stream, request, match["project"])
                return
        elif request.method == "POST" and request.path == "/api/v1/file/generate-image":
            await self.start(stream, request)
            return
        elif request.method == "GET" and (match := _POLL_PATH.fullmatch(request.path)):
            behaviour = self.state.behaviour("poll")
            body = self.file_json(match["file"], behaviour)
            await self.send_body(stream, "poll", behaviour, body)
            return
        elif request.method == "GET" and (match := _FILE_PATH.fullmatch(request.path)):
            await self.download(stream, match["file"])
            return
        elif request.method == "GET" and (match := _SSE_PATH.fullmatch(request.path)):
            await self.sse(stream, match["file"])
            return
        await stream.send_all(_head(404, "application/json", 2) + b"{}")

    async def start(self, stream: trio.SocketStream, request: _Request) -> None:
        behaviour = self.state.behaviour("start")
        try:
            project_id = str(json.loads(request.body).get("project_id", ""))
        except (ValueError, AttributeError):
            project_id = ""
        file_id = str(uuid.uuid4())
        self.state.add_job(file_id, project_id)
        body = b"[" + self.file_json(file_id, behaviour) + b"]"
        await self.send_body(stream, "start", behaviour, body)

    async def download(self, stream: trio.SocketStream, file_id: str) -> None:
        behaviour = self.state.behaviour("download")
        body = b"not an image"
        if behaviour in ("normal", "trickle"):
            from ..emulator.png import render_png

            body = await trio.to_thread.run_sync(render_png, file_id, 0, 64, 64)
        await self.send_body(stream, "download", behaviour, body)

    async def push(self, stream: trio.SocketStream, request: _Request, project_id: str) -> None:
        behaviour = self.state.behaviour("push")
        if behaviour == "hang":
            await trio.sleep_forever()
        key = request.headers.get("sec-websocket-key", "")
        if behaviour == "garbled":
            key = key[::-1]
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        await stream.send_all(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        async with trio.open_nursery() as nursery:
            # Whatever the client sends (subscribe, pings, close) is read and ignored.
            nursery.start_soon(_drain, stream, nursery.cancel_scope)
            await self.push_messages(stream, project_id, behaviour)
            await trio.sleep_forever()

    async def push_messages(
        self, stream: trio.SocketStream, project_id: str, behaviour: Behaviour
    ) -> None:
        if behaviour == "huge":
            await stream.send_all(_frame_head(self.h.huge_bytes))
            await self.stream_zeros(stream, "push", self.h.huge_bytes)
            return
        file_id, ready_at = await self.state.job_of(project_id)
        message = await self.push_message(file_id, ready_at, behaviour, "file")
        await stream.send_all(_frame_head(len(message)))
        await self.send_payload(stream, "push", behaviour, message)

    async def push_message(
        self, file_id: str, ready_at: float, behaviour: Behaviour, kind: str
    ) -> bytes:
        """One push message the ``behaviour``'s way; a normal one (of type ``kind``: ``file``
        or ``render_result``) once the result is ready."""
        if behaviour == "deep":
            return b'{"type": "%s", "object": ' % kind.encode() + _deep(self.h.depth) + b"}"
        if behaviour == "bignum":
            head = json.dumps({"type": "render_progress", "object": {"file_id": file_id}})
            return (head[:-2] + ', "progress": ' + "9" * self.h.digits + "}}").encode()
        await trio.sleep_until(ready_at)
        body = json.loads(self.file_json(file_id, "normal"))
        if kind == "render_result":
            body = {"file_id": file_id, "url": body["url"]}
        return json.dumps({"type": kind, "object": body}).encode()

    async def sse(self, stream: trio.SocketStream, file_id: str) -> None:
        """The file's Server-Sent Events (the same ``push`` behaviour as the WebSocket)."""
        behaviour = self.state.behaviour("push")
        if behaviour in ("hang", "garbled"):
            await self.send_body(stream, "push", behaviour, b"")
            return
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Connection: close\r\n\r\n"
        )
        if behaviour == "huge":
            await stream.send_all(b"data: ")
            await self.stream_zeros(stream, "push", self.h.huge_bytes)
            return
        _, ready_at = self.state.jobs.get(file_id, ("", math.inf))
        message = await self.push_message(file_id, ready_at, behaviour, "render_result")
        await self.send_payload(stream, "push", behaviour, b"data: " + message + b"\n\n")
        while await stream.receive_some(_CHUNK):  # open until the client leaves
            pass


def _frame_head(length: int) -> bytes:
    """The head of one unmasked, final WebSocket text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes([0x81, length])
    if length < 2**16:
        return bytes([0x81, 126]) + length.to_bytes(2, "big")
    return bytes([0x81, 127]) + length.to_bytes(8, "big")


async def _drain(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while await stream.receive_some(_CHUNK):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


@asynccontextmanager
async def hostile(hostility: Hostility | None = None) -> AsyncIterator[Hostile]:
    """Run a hostile server on a free loopback port for the duration of an ``async with`` block.

    Every connection is closed when the block ends (the hung and trickling ones included).
    """
    hostility = hostility if hostility is not None else Hostility()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    state = Hostile(f"http://127.0.0.1:{port}", hostility)
    server = _Server(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.handle, listeners)
        try:
            yield state
        finally:
            nursery.cancel_scope.cancel()
