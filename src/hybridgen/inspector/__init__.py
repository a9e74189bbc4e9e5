"""A live inspector: watch every generation of a client move through the machine, in a browser.

An :class:`Inspector` receives a client's events (``inspector.watch(client)``) and is an ASGI app
serving one page and one event stream:

- ``/``: the state diagram drawn from the live definition (:mod:`hybridgen.machine`), with the
  number of generations in each state; per generation its own copy of the diagram with its current
  state and last edge highlighted, a timeline of transitions, retries and progress with times, the
  channel that won, the reason on failure and the image when done.
- ``/events``: Server-Sent Events, one JSON object per ``data:`` line, the objects
  ``hybridgen generate --json`` prints (:mod:`hybridgen.jsonevents`). A client that connects late
  first receives what happened so far (the last ``history`` objects), then follows.

Mount it in a Starlette or FastAPI app (``Mount("/inspector", app=inspector)``; it works with
:class:`~hybridgen.aio.AsyncioClient` too) or serve it from trio with
``url = await nursery.start(serve_inspector, client)``. It never sees the API token (events do not
carry it) and cuts any string given as ``secrets`` out of what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets as _secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from functools import partial
from importlib.resources import files
from typing import Any, Final, Protocol, cast

import trio

from ..errors import MissingExtra

try:
    import anyio
    import hypercorn.trio
    import sniffio
    from hypercorn.typing import ASGIFramework
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the inspector", extra="inspector") from None

from .._hypercorn import hypercorn_config, is_loopback
from ..config import Secret
from ..events import Event, Subscriber, Transition
from ..jsonevents import event_json, result_json
from ..machine import State
from ._drawing import machine_svg

__all__ = ["HISTORY", "KEEPALIVE", "Inspector", "Watchable", "serve_inspector"]

log: Final = logging.getLogger("hybridgen.inspector")

HISTORY: Final = 10_000
"""How many JSON objects an inspector keeps by default for pages that connect late."""

KEEPALIVE: Final = 15.0
"""Seconds of silence after which ``/events`` sends a comment line (so dead peers are noticed)."""

_SECURITY: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src http: https: data:"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Watchable(Protocol):
    """Anything whose events an inspector can follow: a client, an asyncio client, a generation."""

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every future event; return a function that unsubscribes."""
        ...


class _Follower:
    """One ``/events`` reader: an event of its own async library, set from any thread."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        if sniffio.current_async_library() == "trio":
            token = trio.lowlevel.current_trio_token()
            self._soon: Callable[[Callable[[], object]], object] = token.run_sync_soon
        else:
            self._soon = asyncio.get_running_loop().call_soon_threadsafe

    def renew(self) -> None:
        self.event = anyio.Event()

    def wake(self) -> None:
        # RuntimeError, RunFinishedError: its loop has ended, there is nothing to wake
        with contextlib.suppress(RuntimeError, trio.RunFinishedError):
            self._soon(lambda: self.event.set())


class Inspector:
    """Keeps the JSON objects of a run and serves them live; an ASGI app (see the module doc).

    ``history`` caps the objects kept for late readers (the oldest go first); ``token``, when set,
    is required as ``?token=`` on every request (:func:`serve_inspector` sets one when it binds
    beyond loopback); ``secrets`` (strings or :class:`~hybridgen.api.Secret`, e.g. a config's
    ``token``; a set that the caller adds to later is read at every publish) are replaced by
    ``***`` in everything sent.
    """

    def __init__(
        self,
        *,
        history: int = HISTORY,
        token: str | None = None,
        secrets: Collection[str | Secret] = (),
        title: str = "hybridgen inspector",
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history!r}")
        self.token = token
        self._secrets = secrets
        self._lock = threading.Lock()
        self._kept: deque[tuple[int, str]] = deque(maxlen=history)
        self._seq = 0
        self._followers: set[_Follower] = set()
        self._closed = False
        self._t0: dict[str, float] = {}
        page = files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        self._page = page.replace("{{title}}", title).replace("{{machine}}", machine_svg())
        self.app: Final = Starlette(
            routes=[Route("/", self._index), Route("/events", self._events)]
        )

    def __repr__(self) -> str:
        return f"<Inspector {self._seq} objects, {len(self._followers)} readers>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- input -------------------------------------------------------------------------------

    def watch(self, source: Watchable) -> Callable[[], None]:
        """Follow ``source``'s events from now on; returns a function that stops following."""
        return source.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        """A subscriber: publish ``event``'s JSON object, and a ``result`` object after the last.

        Times (``at``, ``elapsed``) count from the generation's first event seen here.
        """
        gen_id = event.generation_id or ""  # "": a journal warning about no one generation
        at = event.monotonic - self._t0.setdefault(gen_id, event.monotonic)
        self.publish(event_json(event, at))
        if isinstance(event, Transition) and event.terminal:
            del self._t0[gen_id]
            self.publish(
                result_json(
                    generation_id=gen_id,
                    state=str(event.dest),
                    channel=event.channel,
                    url=event.url,
                    path=None,
                    elapsed=at,
                    reason="" if event.dest is State.DONE else event.detail,
                )
            )

    def publish(self, obj: Mapping[str, Any]) -> None:
        """Send one JSON object to every page (and keep it for later ones). Thread-safe."""
        text = json.dumps(obj)
        for secret in tuple(self._secrets):  # read each time: the caller may add to it
            plain = secret.reveal() if isinstance(secret, Secret) else secret
            if plain:
                text = text.replace(plain, "***")
        with self._lock:
            if self._closed:
                return
            self._seq += 1
            self._kept.append((self._seq, text))
            followers = tuple(self._followers)
        for follower in followers:
            follower.wake()

    def close(self) -> None:
        """The run is over: streams end once their reader has everything (pages keep showing it)."""
        with self._lock:
            self._closed = True
            followers = tuple(self._followers)
        for follower in followers:
            follower.wake()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def published(self) -> int:
        """How many objects were published so far (kept or not)."""
        return self._seq

    def kept(self, after: int = 0) -> list[tuple[int, str]]:
        """The kept objects numbered above ``after``, as ``(number, JSON text)``, oldest first."""
        with self._lock:
            return [(seq, text) for seq, text in self._kept if seq > after]

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, str] | None]:
        """Yield the kept objects above ``after``, then each new one; ``None`` after a quiet
        :data:`KEEPALIVE`; ends once :meth:`close` was called and everything was yielded.

        Works under trio and asyncio (the publisher may run in another thread or loop).
        """
        follower = _Follower()
        with self._lock:
            self._followers.add(follower)
        try:
            while True:
                follower.renew()  # before looking: a publish from now on sets this one
                batch = self.kept(after)
                if batch:
                    for item in batch:
                        yield item
                    after = batch[-1][0]
                    continue
                if self._closed:
                    return
                with anyio.move_on_after(KEEPALIVE):
                    await follower.event.wait()
                if not follower.event.is_set():
                    yield None
        finally:
            with self._lock:
                self._followers.discard(follower)

    # -- HTTP --------------------------------------------------------------------------------

    def _denied(self, request: Request) -> Response | None:
        given = request.query_params.get("token", "")
        if self.token is None or _secrets.compare_digest(given, self.token):
            return None
        return PlainTextResponse(
            "this inspector needs its token: open the URL it printed, with ?token=...", 403
        )

    async def _index(self, request: Request) -> Response:
        return self._denied(request) or HTMLResponse(self._page, headers=_SECURITY)

    async def _events(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            after = int(request.headers.get("last-event-id", "0"))
        except ValueError:
            after = 0
        if after > self._seq:  # numbered by an earlier inspector: start again
            after = 0
        if self._closed and not self.kept(after):
            # 204 tells EventSource not to reconnect: the run is over and it has everything
            return Response(status_code=204, headers=_SECURITY)
        return StreamingResponse(
            self._sse(after), media_type="text/event-stream", headers=_SECURITY
        )

    async def _sse(self, after: int) -> AsyncIterator[str]:
        async for item in self.follow(after):
            if item is None:
                yield ": keepalive\n\n"
            else:
                yield f"id: {item[0]}\ndata: {item[1]}\n\n"


async def serve_inspector(
    source: Inspector | Watchable,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an inspector on ``host:port`` (0: a free port) until cancelled; report its URL.

    ``url = await nursery.start(serve_inspector, client)``. ``source`` is an :class:`Inspector`
    or anything it can :meth:`~Inspector.watch` (then a new inspector follows it while served).
    Loopback by default; bound elsewhere, the inspector gets a random token (unless it has one)
    and the URL carries it as ``?token=``.
    """
    inspector = source if isinstance(source, Inspector) else Inspector()
    stop_watching = None if source is inspector else inspector.watch(cast(Watchable, source))
    if inspector.token is None and not is_loopback(host):
        inspector.token = _secrets.token_urlsafe(16)
    config = hypercorn_config(host, port, "hybridgen.inspector.hypercorn")
    app = cast(ASGIFramework, inspector)
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, app, config))
            url = binds[0].rstrip("/") + "/"
            if inspector.token is not None:
                url += f"?token={inspector.token}"
            log.debug("inspector serving on %s", binds[0])
            task_status.started(url)
    finally:
        if stop_watching is not None:
            stop_watching()
