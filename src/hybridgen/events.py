"""Events: immutable values describing what happened, and the subscribers who receive them.

Every state change of a generation is one :class:`Transition`. Between transitions a generation
may also report :class:`Progress` (the server said how far the job is) and :class:`Retry` (a poll
failed or the socket dropped, and a new attempt is scheduled). A client with a journal reports
:class:`JournalWarning` when the journal could not record something (the generation goes on).

Subscribers are plain callables or async streams (:meth:`Hub.stream`). A subscriber that raises is
logged and detached; the generation goes on.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Final

import attrs
import trio

from .machine import TERMINAL, Channel, State, Trigger

__all__ = [
    "Event",
    "Hub",
    "JournalWarning",
    "LoggingSubscriber",
    "Progress",
    "Retry",
    "Subscriber",
    "Transition",
    "EventStream",
]

log: Final = logging.getLogger("hybridgen")


@attrs.frozen
class Transition:
    """One generation moved from ``source`` to ``dest`` because of ``trigger``.

    ``monotonic`` is the trio clock (seconds), ``wall`` the Unix time. ``detail`` says why, in
    words. When ``dest`` is ``done``, ``url`` is the result and ``channel`` says who delivered it:
    a :class:`~hybridgen.machine.Channel` (``"sse"``, ``"websocket"`` or ``"polling"``).
    """

    generation_id: str
    source: State
    dest: State
    trigger: Trigger
    monotonic: float
    wall: float
    detail: str = ""
    url: str | None = None
    channel: Channel | None = None

    @property
    def terminal(self) -> bool:
        """True when ``dest`` is a terminal state (nothing follows this event)."""
        return self.dest in TERMINAL


@attrs.frozen
class Progress:
    """The server reported how far the job is: ``fraction`` in ``[0, 1]``, via channel ``via``
    (a :class:`~hybridgen.machine.Channel`: ``"sse"``, ``"websocket"`` or ``"polling"``).

    ``remaining`` estimates the seconds left, from the time the job has taken to get this far
    (``None`` below 1 %, where it would be a guess).
    """

    generation_id: str
    fraction: float
    via: Channel
    monotonic: float
    wall: float
    remaining: float | None = None

    terminal = False


@attrs.frozen
class Retry:
    """A start, poll or download failed or a push channel went down; the next attempt comes in
    ``delay`` seconds.

    ``what`` is ``"start"``, ``"poll"``, ``"download"`` or the push channel that reconnects
    (``"sse"`` or ``"websocket"``, backing off per channel: ``Policy.reconnect_delay``);
    ``attempt`` counts failures of that kind so far; ``reason`` is why it failed; ``status`` is
    the HTTP status of the failure, if it had one.
    """

    generation_id: str
    what: str
    attempt: int
    delay: float
    reason: str
    monotonic: float
    wall: float
    status: int | None = None

    terminal = False


@attrs.frozen
class JournalWarning:
    """The client's journal lost a write (``lost``) or makes one wait for another process's lock.

    ``operation`` names the write (``"begin"``, ``"record"``, ``"delivered"``, ``"heartbeat"``,
    ...), ``reason`` says why. ``generation_id`` is ``None`` for a write about no one generation.
    The generation goes on whatever the journal does; see :mod:`hybridgen.journal`.
    """

    generation_id: str | None
    operation: str
    reason: str
    lost: bool
    monotonic: float
    wall: float

    terminal = False


Event = Transition | Progress | Retry | JournalWarning
"""Anything a subscriber may receive."""

Subscriber = Callable[[Event], object]
"""A plain callback; its return value is ignored."""


class EventStream:
    """An async iterator of events for one subscriber, bounded, never blocking the generation.

    It keeps at most ``max_buffer`` undelivered events. When a slow reader lets it fill up, the
    oldest undelivered :class:`Progress`/:class:`Retry` or non-terminal :class:`Transition` is
    dropped (and counted in :attr:`dropped`), so the newest state is always there and the terminal
    transition is never lost. Iteration ends after the terminal event of every generation the
    stream follows (one, for a generation's own stream) or when :meth:`close` is called.
    """

    def __init__(self, max_buffer: int = 64, *, follows: int | None = 1) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer!r}")
        self._buffer: collections.deque[Event] = collections.deque()
        self._max = max_buffer
        self._lot = trio.lowlevel.ParkingLot()
        self._remaining = follows
        self._closed = False
        self.dropped = 0
        """Events dropped because the reader was too slow."""

    def _put(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._max:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(event)
        if event.terminal and self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self._closed = True
        self._lot.unpark_all()

    def close(self) -> None:
        """Stop the stream: iteration ends once the buffered events are read."""
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        return self._buffer.popleft()


class Hub:
    """Fans events out to subscribers; a subscriber that raises is logged and detached."""

    __slots__ = ("_callbacks", "_streams")

    def __init__(self) -> None:
        self._callbacks: list[Subscriber] = []
        self._streams: list[EventStream] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def stream(
        self, max_buffer: int = 64, *, follows: int | None = 1, replay: Iterable[Event] = ()
    ) -> EventStream:
        """Return an :class:`EventStream` receiving every event from now on, after the events of
        ``replay`` (e.g. a generation's past transitions: a stream they already end is not
        kept)."""
        stream = EventStream(max_buffer, follows=follows)
        for event in replay:
            stream._put(event)
        if not stream._closed:
            self._streams.append(stream)
        return stream

    def __bool__(self) -> bool:
        return bool(self._callbacks or self._streams)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber, in subscription order."""
        for callback in tuple(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r raised; it is detached", callback)
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        if self._streams:
            for stream in self._streams:
                stream._put(event)
            self._streams = [s for s in self._streams if not s._closed]


class LoggingSubscriber:
    """Logs every event through stdlib :mod:`logging` (logger ``hybridgen.events``).

    Transitions log at INFO (failures at WARNING), progress and retries at DEBUG, journal
    warnings at WARNING (INFO when the write only waits).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("hybridgen.events")

    def __call__(self, event: Event) -> None:
        if isinstance(event, Transition):
            level = logging.WARNING if event.dest is State.FAILED else logging.INFO
            self.logger.log(
                level,
                "%s %s -> %s (%s)%s",
                event.generation_id,
                event.source,
                event.dest,
                event.trigger,
                f": {event.detail}" if event.detail else "",
            )
        elif isinstance(event, Progress):
            self.logger.debug(
                "%s progress %.0f%% via %s", event.generation_id, event.fraction * 100, event.via
            )
        elif isinstance(event, JournalWarning):
            self.logger.log(
                logging.WARNING if event.lost else logging.INFO,
                "%s journal %s %s: %s",
                event.generation_id or "-",
                event.operation,
                "lost" if event.lost else "waits",
                event.reason,
            )
        else:
            self.logger.debug(
                "%s %s retry #%d in %.2fs: %s",
                event.generation_id,
                event.what,
                event.attempt,
                event.delay,
                event.reason,
            )
