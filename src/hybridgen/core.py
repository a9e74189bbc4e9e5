"""The sans-IO heart of one generation: it decides, the drivers do the I/O.

A :class:`Core` is fed what happened (the server accepted the job, a push message, a poll reply,
an error, the time) and each call returns what changed in the generation's schedule, as a
:class:`Plan`: when the job task wakes next (a poll or a timer), which push channels to open (and
when) or close, whether the generation ended. The core is the schedule's one owner, as h11's
``Connection`` is a protocol's: the driver carries plans out and keeps no schedule of its own.
Between calls, :meth:`Core.poll_due` and :meth:`Core.next_timer` say what is due now.

The core never sleeps, never touches a socket and never reads a clock: every method takes ``now``
(seconds on the caller's monotonic clock). Each state change goes through
:func:`hybridgen.machine.fire` and is reported once, as a :class:`~hybridgen.events.Transition`, to
the ``sink`` callable. Once terminal, every input is ignored, so nothing follows the terminal
event.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
from collections.abc import Callable
from typing import Concatenate, Final, ParamSpec

import attrs

from . import _deprecated
from .errors import PermanentError, TransientError
from .events import Event, Progress, Retry, Transition
from .machine import TERMINAL, Channel, State, Trigger, fire
from .parse import failure_reason
from .policy import Policy
from .wire import FileStatus, Push

__all__ = ["NOTHING", "Core", "Plan", "Probes", "Result", "push_from_file"]

_EARLY_PUSHES = 16  # socket results buffered while the file id is still unknown
_ROUNDING = 0.005  # progress reported in whole percents is up to half a percent behind
_MAY_EXIST = "the job may exist on the server (it may have processed the request)"


@attrs.frozen(slots=True)
class Plan:
    """What one :class:`Core` call changed in its generation's schedule: what the driver does.

    ``wake_at``: the job task's next moment (the next poll or timer; ``None``: unchanged).
    ``open``: ``(channel, at)`` for each push channel wanted now whose connect time changed:
    connect at ``at`` (at once if past; ``inf``: keep it wanted, but connect only when a later
    plan says when). ``close``: the push channels no longer wanted: close them if open, connect
    them no more. ``ended``: the generation is terminal: end every task and close every channel.
    A plan is true when it asks anything.
    """

    wake_at: float | None = None
    open: tuple[tuple[Channel, float], ...] = ()
    close: tuple[Channel, ...] = ()
    ended: bool = False

    def __bool__(self) -> bool:
        return self.wake_at is not None or bool(self.open or self.close) or self.ended


NOTHING: Final = Plan()
"""The plan of a call that changed nothing in the schedule."""
_ENDED: Final = Plan(ended=True)
_P = ParamSpec("_P")


def _planned(
    method: Callable[Concatenate[Core, _P], object],
) -> Callable[Concatenate[Core, _P], Plan]:
    """An input of the core: it returns the :class:`Plan` of what it changed. An input called
    within another (by the core itself, or by a subscriber of its events) returns
    :data:`NOTHING`: the outer one's plan says what both changed."""

    @functools.wraps(method)
    def planned(self: Core, /, *args: _P.args, **kwargs: _P.kwargs) -> Plan:
        if self._inside:
            method(self, *args, **kwargs)
            return NOTHING
        self._inside = True
        try:
            method(self, *args, **kwargs)
        finally:
            self._inside = False
        return self.plan()

    planned.__annotations__ = {**method.__annotations__, "return": "Plan"}
    del planned.__wrapped__  # its signature is the method's, but returning the Plan
    planned.__signature__ = inspect.signature(method).replace(  # type: ignore[attr-defined]
        return_annotation="Plan"
    )
    return planned


def push_from_file(file: FileStatus) -> Push:
    """The push message a file object says (as the seed's WebSocket ``file`` messages carry one):
    its result, its failure, or its progress."""
    if file.ready:
        return Push(file.id, "result", url=file.url)
    if file.failed:
        return Push(file.id, "failed", reason=file.error, status=file.status)
    return Push(file.id, "progress", progress=file.progress)


@attrs.frozen
class Result:
    """How one generation ended.

    ``state`` is terminal; ``url`` and ``channel`` (a :class:`~hybridgen.machine.Channel`:
    ``"sse"``, ``"websocket"`` or ``"polling"``) are set when it is ``done``; ``reason`` says why
    otherwise. ``elapsed`` is seconds from the start request to the terminal state.
    ``push_failures`` counts the push channels' failures (failed connects, drops, ended streams),
    SSE and WebSocket together (was ``ws_failures``, a deprecated alias).
    """

    generation_id: str
    state: State
    file_id: str | None
    url: str | None
    channel: Channel | None
    reason: str
    elapsed: float
    polls: int
    poll_errors: int
    push_failures: int

    ws_failures = _deprecated.alias("ws_failures", "push_failures", "Result")


_deprecated.accept_old_names(Result, {"ws_failures": "push_failures"})


@attrs.define(slots=True, eq=False)
class _Channel:
    """One push channel's connection state within a generation."""

    connect_at: float | None = None
    """When to (re)connect; ``None``: not now."""
    connected: bool = False
    failures: int = 0
    streak: int = 0
    """Failures in a row without news (the exponent of the reconnect backoff)."""
    news: bool = False
    """This connection has brought news (see :meth:`Core._is_news`)."""
    kept: bool = False
    """Connected as the fallback of an earlier channel that failed: it stays open until it
    drops, even once the earlier one is back (no open/close cycle per gap)."""
    unavailable: bool = False
    """Failed so that later channels open beside it (a failed connect, a refusal, a connection
    that ended without news), until it brings news again (``Policy.push_fallback``)."""
    quiet_at: float | None = None
    """When this connection, silent so far, counts as unavailable (``Policy.push_quiet``)."""
    quiet: bool = False
    """Connected, but nothing came within ``Policy.push_quiet``: later channels open too."""
    alive_until: float | None = None
    """Until when this connection shows life (``Policy.push_alive`` after its last sign)."""
    spoke: bool = False
    """A message came on this channel (about any file), on any of its connections."""
    told: float | None = None
    """The connect time the last :class:`Plan` gave (``inf``: wanted, no time; ``None``: not
    wanted)."""

    def not_quiet(self) -> None:
        """It spoke, or it is no longer connected: neither quiet nor waiting to be."""
        self.quiet = False
        self.quiet_at = None


@attrs.define(slots=True, eq=False)
class Probes:
    """A client's memory of the push channels a quiet earlier channel opens
    (:attr:`~hybridgen.policy.Policy.push_quiet`), shared by its generations.

    Until such a channel has spoken on this client, one generation at a time opens it (a probe),
    so that a burst of generations against a server whose channels are all silent does not open
    a socket each that says nothing; once it has spoken, every generation whose earlier channel
    is quiet opens it.
    """

    trying: dict[str, str] = attrs.field(factory=dict)
    """Channel name to the id of the generation that has it open as the probe."""
    heard: set[str] = attrs.field(factory=set)
    """The channels that have sent a message on this client (about any file), and did not stay
    silent since on a generation whose result a poll found."""


@attrs.define(slots=True, eq=False)
class Core:
    """One generation's state and decisions, with no I/O (see the module docstring).

    ``trusted`` is the client's memory of the push channels that have delivered a result: a set
    shared by the client's generations, which this core reads and updates (see
    :attr:`~hybridgen.policy.Policy.trust_live_socket`). ``missed`` is its memory of the channels
    that showed life while a poll found the result (see
    :attr:`~hybridgen.policy.Policy.push_alive`): their life no longer relaxes polling.
    ``probes`` is its memory of the channels a quiet channel opens (:class:`Probes`).
    """

    id: str
    policy: Policy = attrs.field(repr=False)
    sink: Callable[[Event], object] = attrs.field(repr=False)
    started: float
    wall_offset: float = attrs.field(default=0.0, repr=False)
    rand: Callable[[], float] = attrs.field(default=random.random, repr=False)
    state: State = State.REQUESTED
    file_id: str | None = None
    url: str | None = None
    channel: Channel | None = None
    reason: str = ""
    ended: float | None = None
    next_poll: float | None = attrs.field(default=None, repr=False)
    polls: int = 0
    poll_errors: int = attrs.field(default=0, repr=False)
    _error_streak: int = attrs.field(default=0, repr=False)
    _unanswered: int = attrs.field(default=0, repr=False)
    """Polls the server did not answer (what ``Policy.retry_budget`` counts)."""
    _last_poll_error: str = attrs.field(default="", repr=False)
    progress: float | None = attrs.field(default=None, repr=False)
    expected: float | None = attrs.field(default=None, repr=False)
    """Seconds after the start when the result is expected (adaptive polling), if known."""
    trusted: set[str] = attrs.field(factory=set, repr=False)
    missed: set[str] = attrs.field(factory=set, repr=False)
    probes: Probes = attrs.field(factory=Probes, repr=False)
    _probing: tuple[str, ...] = attrs.field(default=(), repr=False)
    """The channels this generation holds as the client's probe (see :class:`Probes`)."""
    _estimated: bool = attrs.field(default=False, repr=False)
    """``expected`` comes from the job's own progress reports (not from history)."""
    _poll_now: bool = attrs.field(default=False, repr=False)
    """A push said the job completed while a poll was in flight: poll again at its reply."""
    _channels: dict[str, _Channel] = attrs.field(factory=dict, repr=False)
    _early: dict[str, tuple[str, Channel]] | None = attrs.field(default=None, repr=False)
    next_start: float | None = attrs.field(default=None, repr=False)
    """When to send the start request again after a failure (``None``: do not)."""
    start_errors: int = attrs.field(default=0, repr=False)
    _poll_ref: float | None = attrs.field(default=None, repr=False)
    """When the pending poll's wait began (the last reply, or polling's start); ``None`` when the
    push's life must not move it (a push said the job completed: poll at once)."""
    _poll_floor: float = attrs.field(default=-math.inf, repr=False)
    """The earliest the pending poll may come (a failed poll's interval or ``Retry-After``)."""
    _accepted_at: float | None = attrs.field(default=None, repr=False)
    """When the start reply came (what the client's history of durations counts from)."""
    _asked_at: float | None = attrs.field(default=None, repr=False)
    """When the server was last asked about the job (the start reply, the last poll sent)."""
    _unsure: bool = attrs.field(default=False, repr=False)
    """The result was found by a poll sent more than one interval after the one before."""
    _told_wake: float | None = attrs.field(default=None, repr=False)
    """The job task's wake time the last :class:`Plan` gave (``None``: none given yet)."""
    _told_ended: bool = attrs.field(default=False, repr=False)
    _inside: bool = attrs.field(default=False, repr=False)
    """An input method is running (see :func:`_planned`)."""

    def __attrs_post_init__(self) -> None:
        for name in self.policy.push:
            # the socket is per project (open it at once); SSE is per file (after the start reply)
            self._channels[name] = _Channel(self.started if name is Channel.WEBSOCKET else None)

    # -- what the driver asks -------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        """True once the generation is ``done``, ``failed`` or ``cancelled``."""
        return self.state in TERMINAL

    @property
    def deadline_at(self) -> float:
        """When the generation fails if it has no result (clock of ``started``)."""
        return self.started + self.policy.deadline

    @property
    def push_timeout_at(self) -> float:
        """When the push-only phase ends and polling begins."""
        return self.started + self.policy.push_timeout

    def wants(self, channel: Channel | str) -> bool:
        """Whether push ``channel`` (``"sse"`` or ``"websocket"``) should be open now."""
        if channel not in self._channels or (channel == Channel.SSE and self.file_id is None):
            return False
        if (
            self.policy.push_fallback
            and not self._preferred_by_trust(channel)
            and not (self._channels[channel].kept and self._channels[channel].connected)
            and not (self._earlier_unavailable(channel) and self._may_open(channel))
        ):
            return False
        if self.state is State.POLLING:
            return self.policy.keep_push_open
        return self.state is State.REQUESTED or self.state is State.AWAITING_WS

    def connect_at(self, channel: Channel | str) -> float | None:
        """When push ``channel`` should (re)connect (``None``: not now)."""
        state = self._channels.get(channel)
        return None if state is None else state.connect_at

    @property
    def wants_ws(self) -> bool:
        """Deprecated: ``wants("websocket")`` (warns; goes in the next release)."""
        _deprecated.warn("wants_ws", 'wants("websocket")', "Core")
        return self.wants(Channel.WEBSOCKET)

    @property
    def ws_connect_at(self) -> float | None:
        """Deprecated: ``connect_at("websocket")`` (warns; goes in the next release)."""
        _deprecated.warn("ws_connect_at", 'connect_at("websocket")', "Core")
        return self.connect_at(Channel.WEBSOCKET)

    ws_timeout_at = _deprecated.alias("ws_timeout_at", "push_timeout_at", "Core")

    @property
    def push_failures(self) -> int:
        """How often a push channel failed to connect or dropped, all channels together."""
        return sum(state.failures for state in self._channels.values())

    def next_timer(self) -> float:
        """The next moment :meth:`advance` has something to do (``inf`` once terminal)."""
        if self.terminal:
            return math.inf
        due = self.deadline_at
        if self.state is State.AWAITING_WS:
            due = min(due, self.push_timeout_at)
        if self.policy.push_quiet is not None:
            for state in self._channels.values():
                if state.quiet_at is not None and state.quiet_at < due:
                    due = state.quiet_at
        next_poll = self.next_poll
        if next_poll is not None and self._poll_ref is not None:
            # a channel going quiet brings a far-off poll forward
            for state in self._channels.values():
                alive = state.alive_until
                if alive is not None and alive < due and alive < next_poll:
                    due = alive
        return due

    def wake_at(self) -> float:
        """When the job task has something to do: the next poll or timer (``inf`` once
        terminal)."""
        due = self.next_timer()
        next_poll = self.next_poll
        return next_poll if next_poll is not None and next_poll < due else due

    def plan(self) -> Plan:
        """What changed in the schedule since the last plan (all of it, the first time).

        Every input method returns this; the driver calls it itself only to begin.
        """
        if self.terminal:
            if self._told_ended:
                return NOTHING
            self._told_ended = True
            self._release_probes()
            return _ENDED
        if self._probing or self._any_quiet():
            self._claim_probes()
        wake: float | None = self.wake_at()
        if wake == self._told_wake:
            wake = None
        else:
            self._told_wake = wake
        opens: tuple[tuple[Channel, float], ...] = ()
        closes: tuple[Channel, ...] = ()
        channels = self._channels
        for name in self.policy.push:
            state = channels[name]
            if self.wants(name):
                at = math.inf if state.connect_at is None else state.connect_at
                if state.told != at:
                    state.told = at
                    opens += ((name, at),)
            elif state.told is not None:
                state.told = None
                closes += (name,)
        if wake is None and not opens and not closes:
            return NOTHING
        return Plan(wake, opens, closes)

    def poll_due(self, now: float) -> bool:
        """Whether a poll should be sent now."""
        return self.state is State.POLLING and self.next_poll is not None and now >= self.next_poll

    def result(self) -> Result:
        """The :class:`Result` so far (meaningful once :attr:`terminal`)."""
        end = self.ended if self.ended is not None else self.started
        return Result(
            generation_id=self.id,
            state=self.state,
            file_id=self.file_id,
            url=self.url,
            channel=self.channel,
            reason=self.reason,
            elapsed=end - self.started,
            polls=self.polls,
            poll_errors=self.poll_errors,
            push_failures=self.push_failures,
        )

    @property
    def ready_after(self) -> tuple[float, bool] | None:
        """For a ``done`` generation, what the client's history of durations records
        (:class:`hybridgen.driver.Durations`): about how many seconds after the start reply its
        result was ready (the server's time, not a wait for the client's turn to send the start;
        from the start itself when no start reply was recorded), and whether it may have been
        ready well before (``None`` unless done).

        The moment it was learned, unless a poll found it more than one (jittered)
        ``poll_interval`` after the previous poll (the quiet wait of
        :attr:`~hybridgen.policy.Policy.history_wait`): then half an interval earlier, and
        unsure. So a job faster than history pulls the expected moment down, where the end of
        the quiet wait would otherwise hold it there.
        """
        if self.state is not State.DONE or self.ended is None:
            return None
        since = self.started if self._accepted_at is None else self._accepted_at
        seen = self.ended - since
        if not (self._unsure and self.channel is Channel.POLLING):
            return seen, False
        return max(0.0, seen - self.policy.poll_interval / 2), True

    # -- what the driver tells ------------------------------------------------------------

    @_planned
    def accepted(self, file: FileStatus, now: float, history: float | None = None) -> None:
        """The start request returned ``file``: the job exists on the server.

        ``history``: how long this client's recent jobs of the same kind took from their start
        reply to their result (:class:`hybridgen.driver.Durations`): the result is then
        expected that long after ``now``, unless the job's own progress has said when."""
        self.next_start = None
        if self.terminal:
            return
        self.file_id = file.id
        self._asked_at = self._accepted_at = now
        if history is not None and not self._estimated:
            self.expected = now - self.started + history
        self._go(Trigger.START, now, f"file {file.id}")
        sse = self._channels.get(Channel.SSE)
        if sse is not None:
            sse.connect_at = now
        early, self._early = self._early, None
        if file.ready:  # the start reply itself carries the result
            self._done(Trigger.POLL_RESULT, now, file.url or "", Channel.POLLING)
        elif file.failed:  # the start reply says the job failed already (a refused prompt)
            self._fail(now, failure_reason(file.status, file.error))
        elif early and file.id in early:
            url, channel = early[file.id]
            self._done(Trigger.PUSH_RESULT, now, url, channel)
        elif self._channels and self._all_down():
            self._go(Trigger.WS_FAILED, now, "the push channel failed before the job was accepted")
            self._enter_polling(now)
        else:
            self.advance(now)
        if self.next_poll is not None and not self._poll_now:
            # the start reply has just said "not ready": a poll now would only say it again (the
            # start may have waited its turn past the push-only wait, on a busy client)
            self.next_poll = max(self.next_poll, now + self._jitter(self.policy.poll_interval))
            self._poll_ref = now

    @_planned
    def advance(self, now: float) -> None:
        """Fire the time-driven triggers (end of the push-only wait, deadline) due at ``now``."""
        if self.terminal:
            return
        if now >= self.deadline_at:
            self.next_poll = None
            reason = f"no result within the {self.policy.deadline:g} s deadline"
            if self._error_streak:
                polls = "poll" if self._error_streak == 1 else f"{self._error_streak} polls"
                reason += f"; the last {polls} failed ({self._last_poll_error})"
            self._go(Trigger.DEADLINE, now, reason)
        elif self.state is State.AWAITING_WS and now >= self.push_timeout_at:
            waited = f"no result by push after {self.policy.push_timeout:g} s"
            listening = " and ".join(n for n, c in self._channels.items() if c.connected)
            if not self.policy.keep_push_open:
                closed = f"{listening} closed" if listening else "push closed"
                self._go(Trigger.WS_TIMEOUT, now, f"{waited}; polling instead, {closed}")
            elif listening:
                self._go(
                    Trigger.WS_TIMEOUT,
                    now,
                    f"{waited}; polling too, still listening on {listening}",
                )
            else:
                self._go(Trigger.WS_TIMEOUT, now, f"{waited}; polling too, push not connected yet")
            self._enter_polling(now)
            if self._trusted_listening() or self._lively(now):
                # the safety net starts one sparse interval (or the job's expected end) later
                self.next_poll = now + self._poll_delay(now)
        went_quiet = False
        for state in self._channels.values():
            if state.quiet_at is not None and now >= state.quiet_at:
                state.quiet_at = None
                state.quiet = True
            if state.alive_until is not None and now >= state.alive_until:
                state.alive_until = None  # silent for push_alive: it shows no life any more
                went_quiet = True
        if went_quiet:
            self._life_lost(now)

    @_planned
    def push_up(self, channel: Channel | str, now: float) -> None:
        """Push ``channel`` is connected (and subscribed)."""
        state = self._channels.get(channel)
        if state is not None:
            state.connected = True
            state.news = False
            state.kept = self._earlier_failed(channel)
            state.not_quiet()
            quiet = self.policy.push_quiet
            if quiet is not None and self.policy.push_fallback and channel != self.policy.push[-1]:
                state.quiet_at = now + quiet  # only a channel with another after it can be quiet

    @_planned
    def push_closed(self, channel: Channel | str, now: float | None = None) -> None:
        """Push ``channel`` was closed because it is not wanted now (not a failure).

        With ``now``, a poll the channel's life had put off comes within one ``poll_interval``.
        """
        state = self._channels.get(channel)
        if state is not None:
            was_alive = state.alive_until is not None
            state.connected = False
            state.alive_until = None
            state.not_quiet()
            if was_alive and now is not None and not self.terminal:
                self._life_lost(now)

    @_planned
    def push_down(
        self, channel: Channel | str, reason: str, now: float, *, permanent: bool = False
    ) -> None:
        """Push ``channel`` failed to connect, dropped, or its stream ended.

        ``permanent``: the server refused it for good (e.g. HTTP 404: no such channel), so it is
        not reconnected for this generation.
        """
        state = self._channels.get(channel)
        if state is None:
            return
        was_up = state.connected
        was_trusted = was_up and channel in self.trusted
        was_alive = state.alive_until is not None
        state.connected = False
        state.alive_until = None
        state.not_quiet()
        if self.terminal:
            return
        state.failures += 1
        state.streak += 1
        if permanent or not was_up or not state.news:
            state.unavailable = True  # a short gap after news is not: it reconnects soon
        if self.state is State.AWAITING_WS and self._all_down():
            # no other channel can deliver now (one that listens or has yet to try still can)
            self._go(Trigger.WS_FAILED, now, reason)
            self._enter_polling(now)
        elif was_trusted and self.next_poll is not None:
            # the sparse cadence relied on this channel: back to the full one
            self.next_poll = min(self.next_poll, now + self._jitter(self.policy.poll_interval))
        elif was_alive:
            self._life_lost(now)
        if self.wants(channel) and self.policy.push_reconnect and not permanent:
            delay = self._reconnect_delay(state.streak)
            state.connect_at = now + delay
            self._emit_retry(channel, state.failures, delay, reason, now)
        else:
            state.connect_at = None

    @_planned
    def push(self, channel: Channel | str, message: Push, now: float) -> None:
        """A push ``message`` arrived on ``channel``: a result, a failure, progress or "done"."""
        if self.terminal:
            return
        if channel.__class__ is not Channel:
            channel = Channel(channel)
        state = self._channels.get(channel)
        if state is not None:  # it speaks (a message about any file counts)
            state.not_quiet()
            state.spoke = True
            self.probes.heard.add(channel)
            self._alive(state, now)
        if self.file_id is None:
            if message.kind == "result" and message.url:
                if self._early is None:
                    self._early = {}
                if len(self._early) < _EARLY_PUSHES:
                    self._early[message.file_id] = (message.url, channel)
            return
        if message.file_id != self.file_id:
            return
        if state is not None and self._is_news(message):
            state.streak = 0  # this connection is worth having: its backoff starts again
            state.unavailable = False
            state.news = True
        if message.kind == "result" and message.url:
            self.trusted.add(channel)
            self.missed.discard(channel)
            self._done(Trigger.PUSH_RESULT, now, message.url, channel)
        elif message.kind == "failed":
            self._fail(now, failure_reason(message.status, message.reason))
        elif message.kind == "progress" and message.progress is not None:
            self._progress(message.progress, channel, now)
            self._relax(now)
        elif message.kind in ("completed", "result"):  # done, but no URL came with it
            self._completed(channel, now)
        else:
            self._relax(now)

    @_planned
    def push_heartbeat(self, channel: Channel | str, now: float) -> None:
        """Push ``channel`` showed life without a message (an SSE keep-alive comment).

        The plan is empty unless the poll schedule moved: a heartbeat that only extends the
        channel's life moves nothing.
        """
        state = self._channels.get(channel)
        if state is None or self.terminal or not state.connected:
            return
        was = self._lively(now)
        if self._alive(state, now) and not was:
            self._relax(now)

    def ws_up(self, now: float) -> Plan:
        """Deprecated: ``push_up("websocket", now)`` (warns; goes in the next release)."""
        _deprecated.warn("ws_up", 'push_up("websocket", now)', "Core")
        return self.push_up(Channel.WEBSOCKET, now)

    def ws_down(self, reason: str, now: float) -> Plan:
        """Deprecated: ``push_down("websocket", reason, now)`` (warns; goes in the next
        release)."""
        _deprecated.warn("ws_down", 'push_down("websocket", reason, now)', "Core")
        return self.push_down(Channel.WEBSOCKET, reason, now)

    def ws_message(self, file: FileStatus, now: float) -> Plan:
        """Deprecated: a WebSocket message about ``file`` (a result, a failure or progress); use
        ``push("websocket", message, now)`` (warns; goes in the next release)."""
        _deprecated.warn("ws_message", 'push("websocket", push_from_file(file), now)', "Core")
        return self.push(Channel.WEBSOCKET, push_from_file(file), now)

    @_planned
    def poll_sent(self, now: float) -> None:
        """A poll request is on its way (no new poll is due until its reply)."""
        self.next_poll = None
        self.polls += 1
        asked, self._asked_at = self._asked_at, now
        policy = self.policy
        self._unsure = asked is not None and now - asked > policy.poll_interval * (
            1 + policy.jitter
        )

    @_planned
    def poll_reply(self, file: FileStatus, now: float) -> None:
        """A poll returned ``file``."""
        if self.terminal or self.state is not State.POLLING:
            return
        self._error_streak = 0
        if file.ready:
            self._done(Trigger.POLL_RESULT, now, file.url or "", Channel.POLLING)
        elif file.failed:
            self._fail(now, failure_reason(file.status, file.error))
        else:
            if file.progress is not None:
                self._progress(file.progress, Channel.POLLING, now)
            delay = 0.0 if self._poll_now else self._poll_delay(now)
            self._poll_ref = None if self._poll_now else now
            self._poll_now = False
            self.next_poll = now + delay
            self._poll_floor = -math.inf

    @_planned
    def poll_error(self, error: TransientError | PermanentError, now: float) -> None:
        """A poll failed with ``error``: retry within the policy's budget, or fail."""
        if self.terminal or self.state is not State.POLLING:
            return
        if isinstance(error, PermanentError):
            self._fail(now, str(error))
            return
        self.poll_errors += 1
        self._error_streak += 1
        self._last_poll_error = str(error)
        policy = self.policy
        answered = error.status is not None
        if not answered:  # refused, reset, timed out, not the API's reply: the server is away
            self._unanswered += 1
            budget = policy.retry_budget
            if budget is not None and self._unanswered > budget:
                self._fail(
                    now, f"gave up after {self._unanswered} polls without an answer; last: {error}"
                )
                return
            delay = self._delay(policy.poll_interval, self._error_streak)
        else:
            # It answered (503, 429, 5xx): a fixed poller would poll again one interval later,
            # and a longer backoff would only make the result later.
            delay = self._jitter(policy.poll_interval)
        listening = self._lively(now) or self._trusted_listening()  # a push may deliver
        quiet = None if listening else self._quiet_next(now)
        if error.retry_after is not None and policy.honour_retry_after:
            wait, cap = error.retry_after, policy.poll_retry_after_cap
            dense = self._dense_at()
            if listening or cap is None or wait <= cap:
                delay = max(delay, wait)  # the server's word
            elif quiet is not None and dense is not None and now + wait <= dense:
                delay = max(delay, wait)  # the result is not expected before it ends: no loss
            elif cap > policy.poll_interval:
                delay = max(delay, cap)
            # else capped within one interval: the next poll comes as a fixed poller's would
        self._poll_floor = now + delay
        if listening:
            delay = max(delay, self._poll_delay(now))  # a push listens: polls stay a safety net
        elif quiet is not None:
            delay = max(delay, quiet - now)  # not expected yet: the quiet schedule holds
        self.next_poll = now + delay
        self._poll_ref = now
        self._emit_retry("poll", self.poll_errors, delay, str(error), now)

    @_planned
    def start_failed(self, error: Exception, now: float) -> None:
        """The start request failed with ``error``: send it again at :attr:`next_start`, or fail.

        Only a start the server certainly did not process is sent again (a
        :class:`~hybridgen.errors.TransientError` whose ``maybe_processed`` is False), unless the
        policy's ``retry_unsafe_starts`` says otherwise: one that may have created a job fails
        with a reason saying so, as a second start could create and bill a second job.
        """
        self.next_start = None
        if self.terminal:
            return
        reason = f"the start request failed: {str(error).removeprefix('start request: ')}"
        policy = self.policy
        if not isinstance(error, TransientError):
            self._fail(now, reason)
            return
        if error.maybe_processed and not policy.retry_unsafe_starts:
            self._fail(now, f"{reason}; {_MAY_EXIST} (not sent again: Policy.retry_unsafe_starts)")
            return
        self.start_errors += 1
        may_exist = f"; {_MAY_EXIST}" if error.maybe_processed else ""
        if policy.start_retries is not None and self.start_errors > policy.start_retries:
            attempts = f"{self.start_errors} attempt{'s' if self.start_errors > 1 else ''}"
            self._fail(now, f"{reason} (after {attempts}){may_exist}")
            return
        if error.retry_after is not None and policy.honour_retry_after:
            delay = error.retry_after  # the server's word
        else:
            delay = self._delay(policy.poll_interval, self.start_errors - 1)
        if now + delay >= self.deadline_at:
            self._fail(
                now, f"{reason}; no time left to send it again before the deadline{may_exist}"
            )
            return
        self.next_start = now + delay
        self._emit_retry("start", self.start_errors, delay, str(error), now)

    @_planned
    def fail(self, reason: str, now: float) -> None:
        """Fail with ``reason`` (the ``error`` trigger); ignored once terminal."""
        self._fail(now, reason)

    @_planned
    def cancel(self, reason: str, now: float) -> None:
        """Cancel (the ``cancel`` trigger); ignored once terminal."""
        if not self.terminal:
            self.reason = reason
            self._go(Trigger.CANCEL, now, reason)

    # -- inside -----------------------------------------------------------------------------

    def _delay(self, base: float, streak: int) -> float:
        policy = self.policy
        return self._jitter(min(base * policy.backoff_factor**streak, policy.backoff_cap))

    def _jitter(self, delay: float) -> float:
        if self.policy.jitter:
            delay *= 1 + self.policy.jitter * (2 * self.rand() - 1)
        return delay

    def _poll_delay(self, now: float) -> float:
        """The wait before the next poll after a pending reply."""
        policy = self.policy
        sparse = max(policy.sparse_interval, policy.poll_interval)
        trusted = self._trusted_listening()  # a channel that delivered before listens
        lively = self._lively(now)
        if lively and self.expected is not None and self._estimated:
            # the push should deliver at the job's expected end: poll one interval after it
            longest = self._jitter(max(policy.lively_interval, policy.poll_interval))
            after_end = self.started + self.expected + policy.poll_interval - now
            wait = min(longest, max(self._jitter(policy.poll_interval), after_end))
            return max(wait, self._jitter(sparse)) if trusted else wait
        if trusted or lively:
            return self._jitter(sparse)  # a safety net
        quiet = self._quiet_next(now)
        if quiet is not None:
            return quiet - now
        if self.expected is not None and policy.adaptive:
            # halve the distance to the expected moment; never denser than poll_interval
            half_way = (self.started + self.expected - now) / 2
            return self._jitter(min(sparse, max(policy.poll_interval, half_way)))
        return self._jitter(policy.poll_interval)

    def _dense_at(self) -> float | None:
        """With ``Policy.history_wait``: when the result is expected from history (the job's
        own progress gives no estimate), so polls turn dense; ``None``: no quiet phase."""
        expected = self.expected
        if self.policy.history_wait is None or expected is None or self._estimated:
            return None
        return self.started + expected

    def _quiet_next(self, now: float) -> float | None:
        """The next poll while the result is not expected yet (``Policy.history_wait``), or
        ``None`` (no quiet phase, or the expected moment is within one interval).

        Safety polls evenly spaced from polling's start to the expected moment, then that moment
        give or take half an interval (a random phase, as a fixed poller's is to the moment a
        result is ready); never more than ``history_wait`` after ``now``.
        """
        dense = self._dense_at()
        policy = self.policy
        interval = policy.poll_interval
        if dense is None or dense - now <= interval:
            return None
        first = self.push_timeout_at
        wait = max(policy.history_wait or interval, interval)
        parts = math.ceil((dense - first) / wait - 1e-9)
        if parts > 1:
            step = (dense - first) / parts
            done = math.floor((now - first) / step + 0.5)  # safety polls already due
            if done < parts - 1:
                return min(now + wait, max(now, first + step * done + self._jitter(step)))
        return min(now + wait, dense + interval * (self.rand() - 0.5))

    def _earlier_unavailable(self, channel: str) -> bool:
        """Every channel before ``channel`` in the policy's order is unavailable after failures
        (see :attr:`_Channel.unavailable`), or connected but quiet (``Policy.push_quiet``)."""
        for name in self.policy.push:
            if name == channel:
                return True
            state = self._channels[name]
            if not (state.quiet or state.unavailable):
                return False
        return True

    def _earlier_failed(self, channel: str) -> bool:
        """A channel before ``channel`` in the policy's order is unavailable after failures."""
        for name in self.policy.push:
            if name == channel:
                return False
            if self._channels[name].unavailable:
                return True
        return False

    def _may_open(self, channel: str) -> bool:
        """A channel whose earlier ones are all unavailable or quiet may open: at once after a
        failure of one of them; after quietness alone once it has spoken on this client, or
        while this generation is the client's probe of it (:class:`Probes`)."""
        return (
            channel == self.policy.push[0]
            or self._earlier_failed(channel)
            or channel in self.probes.heard
            or self.probes.trying.get(channel) == self.id
        )

    def _any_quiet(self) -> bool:
        return any(state.quiet for state in self._channels.values())

    def _claim_probes(self) -> None:
        """Take the client's probe of each channel this generation's quiet channels would open
        (when no other generation has it), and give back those it no longer wants."""
        probes, held = self.probes, self._probing
        for name in self.policy.push[1:]:
            holds = name in held
            wanted = (
                self._earlier_unavailable(name)
                and not self._earlier_failed(name)
                and name not in probes.heard
            )
            if wanted and not holds and name not in probes.trying:
                probes.trying[name] = self.id
                held += (name,)
            elif holds and not wanted:
                if probes.trying.get(name) == self.id:
                    del probes.trying[name]
                held = tuple(n for n in held if n != name)
        self._probing = held

    def _release_probes(self) -> None:
        trying = self.probes.trying
        for name in self._probing:
            if trying.get(name) == self.id:
                del trying[name]
        self._probing = ()

    def _is_news(self, message: Push) -> bool:
        """Whether a push about this generation's file tells something new: a result, a failure,
        a completed job, or progress beyond what is known (not a repeat, not a keep-alive)."""
        if message.kind != "progress":
            return True
        known = self.progress
        return message.progress is not None and (known is None or message.progress > known)

    def _reconnect_delay(self, streak: int) -> float:
        """The wait before a push channel's next connect after ``streak`` failures in a row
        without news: exponential from ``reconnect_delay`` up to ``reconnect_cap``, shortened by
        up to ``reconnect_jitter``."""
        policy = self.policy
        growth = policy.backoff_factor ** min(max(streak - 1, 0), 64)
        delay = min(policy.reconnect_delay * growth, policy.reconnect_cap)
        return delay * (1 - policy.reconnect_jitter * self.rand())

    def _preferred_by_trust(self, channel: str) -> bool:
        """``channel`` has delivered results on this client and no channel before it has: a
        fallback channel that has earned trust opens from the start, beside the first."""
        if channel not in self.trusted:
            return False
        for name in self.policy.push:
            if name == channel:
                return True
            if name in self.trusted:
                return False
        return True

    def _all_down(self) -> bool:
        """Every push channel has failed and none is connected."""
        return all(not state.connected and state.failures for state in self._channels.values())

    def _alive(self, state: _Channel, now: float) -> bool:
        """``state`` showed a sign of life at ``now``; whether its life counts for polling."""
        alive = self.policy.push_alive
        if alive is None or not self.policy.trust_live_socket or not state.connected:
            return False
        state.alive_until = now + alive
        return True

    def _lively(self, now: float) -> bool:
        """A connected channel shows life now and has not missed a result on this client."""
        policy = self.policy
        if policy.push_alive is None or not policy.trust_live_socket or policy.adaptive:
            return False
        for name, state in self._channels.items():
            alive = state.alive_until
            if alive is not None and now < alive and state.connected and name not in self.missed:
                return True
        return False

    def _relax(self, now: float) -> bool:
        """While a channel shows life, set the pending poll by the relaxed cadence (from when
        its wait began); returns whether it moved."""
        ref = self._poll_ref
        if ref is None or self.next_poll is None or not self._lively(now):
            return False
        due = max(self._poll_floor, ref + self._poll_delay(ref))
        if due == self.next_poll:
            return False
        self.next_poll = due
        return True

    def _life_lost(self, now: float) -> None:
        """No channel may show life any more: a poll it put off comes within one interval."""
        if self.next_poll is None or self._poll_ref is None or self._lively(now):
            return
        policy = self.policy
        wait = max(policy.sparse_interval, policy.poll_interval)  # the trusted cadence
        soon = now + self._jitter(wait if self._trusted_listening() else policy.poll_interval)
        soon = min(self.next_poll, soon)
        self.next_poll = max(self._poll_floor, soon)

    def _trusted_listening(self) -> bool:
        """A channel that delivered a result on this client before is connected now."""
        return self.policy.trust_live_socket and any(
            state.connected and name in self.trusted for name, state in self._channels.items()
        )

    def _enter_polling(self, now: float) -> None:
        quiet = self._quiet_next(now)
        self.next_poll = now if quiet is None else quiet
        self._poll_ref = now
        self._poll_floor = -math.inf
        if not self.policy.keep_push_open:
            for state in self._channels.values():
                state.connect_at = None

    def _completed(self, channel: Channel, now: float) -> None:
        """A push said the job is done without its URL: poll at once."""
        self._poll_ref = None  # no life puts this poll off
        if self.state is State.AWAITING_WS:
            self._go(Trigger.PUSH_COMPLETED, now, f"{channel} says the job completed")
            self._enter_polling(now)
            self.next_poll = now
            self._poll_ref = None
        elif self.next_poll is not None:
            self.next_poll = min(self.next_poll, now)
        else:
            self._poll_now = True  # a poll is in flight; poll again at its reply

    def _progress(self, fraction: float, via: Channel, now: float) -> None:
        if fraction != self.progress:
            self.progress = fraction
            if fraction >= 0.05:  # the job's own estimate beats the history of others
                # Reports are often whole percents: assume the job is as far as the rounding
                # allows, so the predicted end is never later than the true one.
                self.expected = (now - self.started) / min(1.0, fraction + _ROUNDING)
                self._estimated = True
            taken = now - self.started
            remaining = taken / fraction - taken if fraction >= 0.01 else None
            self.sink(Progress(self.id, fraction, via, now, now + self.wall_offset, remaining))

    def _emit_retry(self, what: str, attempt: int, delay: float, reason: str, now: float) -> None:
        self.sink(Retry(self.id, what, attempt, delay, reason, now, now + self.wall_offset))

    def _done(self, trigger: Trigger, now: float, url: str, channel: Channel) -> None:
        if trigger is Trigger.POLL_RESULT and self.state is State.POLLING:
            # a trusted channel that was listening missed the result: trust it no more; one
            # that showed life: its life relaxes polls no more
            connected = [name for name, state in self._channels.items() if state.connected]
            self.trusted.difference_update(connected)
            self.probes.heard.difference_update(
                name for name in connected if not self._channels[name].spoke
            )
            self.missed.update(
                name for name in connected if self._channels[name].alive_until is not None
            )
        self.url, self.channel = url, channel
        self._go(trigger, now, f"result via {channel}", url=url, channel=channel)

    def _fail(self, now: float, reason: str) -> None:
        if not self.terminal:
            self.reason = reason
            self._go(Trigger.ERROR, now, reason)

    def _go(
        self,
        trigger: Trigger,
        now: float,
        detail: str,
        *,
        url: str | None = None,
        channel: Channel | None = None,
    ) -> None:
        source = self.state
        dest = fire(source, trigger)
        self.state = dest
        if dest in TERMINAL:
            self.ended = now
            self.next_poll = None
            for state in self._channels.values():
                state.connect_at = None
            if dest is State.FAILED and not self.reason:
                self.reason = detail
        self.sink(
            Transition(
                self.id, source, dest, trigger, now, now + self.wall_offset, detail, url, channel
            )
        )
