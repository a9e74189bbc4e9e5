"""Use hybridgen from an asyncio program, without touching trio.

:class:`AsyncioClient` runs trio in *guest mode* on the running asyncio loop
(``trio.lowlevel.start_guest_run``): one trio run per client, living as long as the client, on the
same thread as asyncio. Generations run as trio tasks inside it; results and events come back to
asyncio through futures and queues. Cancelling the asyncio task cancels the generation (it ends
``cancelled``, its sockets closed).

Example (inside a FastAPI/Starlette app or any ``asyncio.run``)::

    async with AsyncioClient.from_env() as client:
        result = await client.generate("a red fox")
        async for event in client.stream("a lighthouse"):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import outcome
import trio

from .core import Result
from .driver import Client, Generation
from .errors import HybridgenError
from .events import Event, Subscriber
from .files import Media, SavedFile
from .policy import Policy
from .video import StartRequest, VideoOptions

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["AsyncioClient"]

T = TypeVar("T")


class AsyncioClient:
    """A :class:`~hybridgen.driver.Client` for asyncio code (see the module docstring).

    ``transport_factory`` is called on the trio side (transports such as httpx clients must be
    created there); ``policy`` is the default policy of every generation.
    """

    def __init__(
        self, transport_factory: Callable[[], Transport], *, policy: Policy | None = None
    ) -> None:
        self._factory = transport_factory
        self._policy = policy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._client: Client | None = None
        self._finished: asyncio.Future[outcome.Outcome[None]] | None = None
        self._observers: list[tuple[Callable[[Generation], object], list[Callable[[], None]]]] = []
        """Observers given before the client started, with their stops once attached."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, policy: Policy | None = None
    ) -> AsyncioClient:
        """An asyncio client of the real API named by ``SUPERDUPERAI_URL``/``SUPERDUPERAI_TOKEN``.

        As :meth:`Client.from_env <hybridgen.driver.Client.from_env>`: ``env`` (default
        :data:`os.environ`) is read now, so a :class:`~hybridgen.errors.ConfigError` is raised
        here, on the asyncio side; the transport is made on the trio side when the client starts.
        """
        from .config import Config

        config = Config.from_env(env)

        def transport() -> Transport:
            from .transport import SuperDuperTransport

            return SuperDuperTransport(config)

        return cls(transport, policy=policy)

    async def __aenter__(self) -> AsyncioClient:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[None] = loop.create_future()
        finished: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        self._finished = finished

        async def trio_main() -> None:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                async with Client(self._factory(), policy=self._policy) as client:
                    for callback, stops in self._observers:
                        stops.append(client.observe(callback))
                    self._client = client
                    loop.call_soon(_settle, ready, None)
                    await trio.sleep_forever()

        def done(result: outcome.Outcome[None]) -> None:
            if not ready.done():
                error = result.error if isinstance(result, outcome.Error) else None
                ready.set_exception(error or HybridgenError("the trio guest run ended early"))
            finished.set_result(result)

        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done,
            host_uses_signal_set_wakeup_fd=True,
            strict_exception_groups=True,
        )
        await ready
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every running generation, close the transport and end the trio run."""
        if self._finished is None:
            return
        if self._token is not None and self._nursery is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._nursery.cancel_scope.cancel)
        result = await asyncio.shield(self._finished)
        self._finished = None
        result.unwrap()

    def _run(self, fn: Callable[[], Any]) -> None:
        if self._token is None:
            raise HybridgenError(
                "AsyncioClient is not running: use `async with AsyncioClient(...)`"
            )
        self._token.run_sync_soon(fn)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event of every generation started from now on.

        The callback runs on the trio side (on this thread, inside the guest run): keep it short,
        as for :meth:`Client.subscribe`. Returns a function that unsubscribes. An
        :class:`~hybridgen.inspector.Inspector` follows the client this way (``watch``).
        """
        unsubscribe: list[Callable[[], None]] = []

        def attach() -> None:
            assert self._client is not None
            unsubscribe.append(self._client.subscribe(callback))

        self._run(attach)

        def detach() -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the client is closed: nothing to do
                self._run(lambda: [stop() for stop in unsubscribe])

        return detach

    def observe(self, callback: Callable[[Generation], object]) -> Callable[[], None]:
        """Call ``callback(generation)`` with each new generation, as :meth:`Client.observe`.

        It may be called before the client starts (the callback is attached when it does) or
        while it runs; the callback runs on the trio side, as the generation is made, before its
        first event, so it may :meth:`~hybridgen.driver.Generation.subscribe` and miss nothing:
        :meth:`Telemetry.instrument <hybridgen.otel.Telemetry.instrument>` follows an
        ``AsyncioClient`` so. Returns a function that stops the calls.
        """
        if self._client is not None:  # the trio side is idle while asyncio code runs: no race
            return self._client.observe(callback)
        entry: tuple[Callable[[Generation], object], list[Callable[[], None]]] = (callback, [])
        self._observers.append(entry)

        def stop() -> None:
            if entry in self._observers:
                self._observers.remove(entry)
            for stop_attached in entry[1]:
                stop_attached()

        return stop

    @property
    def transport(self) -> Transport | None:
        """The transport of the trio-side client once it has started (``None`` before)."""
        return None if self._client is None else self._client.transport

    async def generate(
        self, request: StartRequest | str, *, policy: Policy | None = None
    ) -> Result:
        """Run one generation; return its :class:`Result` (raises like :meth:`Client.generate`)."""
        return await self._call(lambda client: client.generate(request, policy=policy))

    async def generate_video(
        self, prompt: str, *, policy: Policy | None = None, **options: Unpack[VideoOptions]
    ) -> Result:
        """Make one video; like :meth:`Client.generate_video` (checks first, same errors)."""
        return await self._call(
            lambda client: client.generate_video(prompt, policy=policy, **options)
        )

    async def download(
        self,
        result: Result | str,
        path: str | os.PathLike[str],
        *,
        convert: str | None = None,
        limit: int | None = None,
        policy: Policy | None = None,
        media: Media = "image",
    ) -> SavedFile:
        """Save a result's file to ``path``; like :meth:`Client.download` (same errors)."""
        return await self._call(
            lambda client: client.download(
                result, path, convert=convert, limit=limit, policy=policy, media=media
            )
        )

    async def _call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``fn(client)`` on the trio side; its result or error, here. Cancelling the asyncio
        task cancels it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        async def run() -> None:
            assert self._client is not None
            with scope:
                try:
                    value = await fn(self._client)
                except BaseException as exc:  # handed to asyncio, not lost
                    loop.call_soon(_fail, future, exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    loop.call_soon(_settle, future, value)

        self._run(lambda: self._start_soon(run))
        try:
            return await future
        except asyncio.CancelledError:
            self._run(scope.cancel)
            raise

    async def stream(
        self, request: StartRequest | str, *, policy: Policy | None = None
    ) -> AsyncIterator[Event]:
        """Run one generation and yield its events as they happen, the terminal one last."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        scope = trio.CancelScope()

        async def run() -> None:
            assert self._nursery is not None and self._client is not None
            with scope:
                gen: Generation = await self._nursery.start(self._client.start, request)
                for event in gen.history:
                    loop.call_soon(queue.put_nowait, event)
                gen.subscribe(lambda event: loop.call_soon(queue.put_nowait, event))
                await gen.wait()
            loop.call_soon(queue.put_nowait, None)

        self._run(lambda: self._start_soon(run))
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._run(scope.cancel)

    def _start_soon(self, fn: Callable[[], Any]) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        if isinstance(error, trio.Cancelled):
            future.cancel()
        else:
            future.set_exception(error)
