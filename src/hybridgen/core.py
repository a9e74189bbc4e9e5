"""The sans-IO heart of one generation: it decides, the drivers do the I/O.

A :class:`Core` is fed what happened (the server accepted the job, a socket message, a poll reply,
an error, the time) and says what to do next (:attr:`Core.wants_ws`, :attr:`Core.ws_connect_at`,
:meth:`Core.poll_due`, :meth:`Core.next_timer`). It never sleeps, never touches a socket and never
reads a clock: every method takes ``now`` (seconds on the caller's monotonic clock). Each state
change goes through :func:`hybridgen.machine.fire` and is reported once, as a
:class:`~hybridgen.events.Transition`, to the ``sink`` callable. Once terminal, every input is
ignored, so nothing follows the terminal event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs

from .api import FileStatus
from .errors import PermanentError, TransientError
from .events import Event, Progress, Retry, Transition
from .machine import TERMINAL, State, Trigger, fire
from .policy import Policy

__all__ = ["Core", "Result"]

_EARLY_PUSHES = 16  # socket results buffered while the file id is still unknown
_MAY_EXIST = "the job may exist on the server (it may have processed the request)"


def _job_failed(file: FileStatus) -> str:
    reason = "the server reports the job failed"
    return f"{reason}: {file.error}" if file.error else reason


@attrs.frozen
class Result:
    """How one generation ended.

    ``state`` is terminal; ``url`` and ``channel`` (``"websocket"`` or ``"polling"``) are set when
    it is ``done``; ``reason`` says why otherwise. ``elapsed`` is seconds from the start request to
    the terminal state.
    """

    generation_id: str
    state: State
    file_id: str | None
    url: str | None
    channel: str | None
    reason: str
    elapsed: float
    polls: int
    poll_errors: int
    ws_failures: int


@attrs.define(slots=True, eq=False)
class Core:
    """One generation's state and decisions, with no I/O (see the module docstring)."""

    id: str
    policy: Policy = attrs.field(repr=False)
    sink: Callable[[Event], object] = attrs.field(repr=False)
    started: float
    wall_offset: float = attrs.field(default=0.0, repr=False)
    rand: Callable[[], float] = attrs.field(default=random.random, repr=False)
    state: State = State.REQUESTED
    file_id: str | None = None
    url: str | None = None
    channel: str | None = None
    reason: str = ""
    ended: float | None = None
    next_poll: float | None = attrs.field(default=None, repr=False)
    polls: int = 0
    poll_errors: int = attrs.field(default=0, repr=False)
    _error_streak: int = attrs.field(default=0, repr=False)
    ws_connected: bool = attrs.field(default=False, repr=False)
    ws_alive: bool = attrs.field(default=False, repr=False)
    """The socket has delivered a message about this job since it (re)connected."""
    ws_failures: int = attrs.field(default=0, repr=False)
    _ws_streak: int = attrs.field(default=0, repr=False)
    ws_connect_at: float | None = attrs.field(default=None, repr=False)
    progress: float | None = attrs.field(default=None, repr=False)
    expected: float | None = attrs.field(default=None, repr=False)
    """Seconds after the start when the result is expected (adaptive polling), if known."""
    _early: dict[str, str] | None = attrs.field(default=None, repr=False)
    next_start: float | None = attrs.field(default=None, repr=False)
    """When to send the start request again after a failure (``None``: do not)."""
    start_errors: int = attrs.field(default=0, repr=False)

    def __attrs_post_init__(self) -> None:
        self.ws_connect_at = self.started

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
    def ws_timeout_at(self) -> float:
        """When the WebSocket-only phase ends and polling begins."""
        return self.started + self.policy.ws_timeout

    @property
    def wants_ws(self) -> bool:
        """Whether the socket should be open (or reopened) now."""
        if self.state is State.POLLING:
            return self.policy.keep_ws_open
        return self.state is State.REQUESTED or self.state is State.AWAITING_WS

    def next_timer(self) -> float:
        """The next moment :meth:`advance` has something to do (``inf`` once terminal)."""
        if self.terminal:
            return math.inf
        if self.state is State.AWAITING_WS:
            return min(self.ws_timeout_at, self.deadline_at)
        return self.deadline_at

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
            ws_failures=self.ws_failures,
        )

    # -- what the driver tells ------------------------------------------------------------

    def accepted(self, file: FileStatus, now: float) -> None:
        """The start request returned ``file``: the job exists on the server."""
        self.next_start = None
        if self.terminal:
            return
        self.file_id = file.id
        self._go(Trigger.START, now, f"file {file.id}")
        early, self._early = self._early, None
        if file.ready:  # the start reply itself carries the result
            self._done(Trigger.POLL_RESULT, now, file.url or "", "polling")
        elif early and file.id in early:
            self._done(Trigger.PUSH_RESULT, now, early[file.id], "websocket")
        elif not self.ws_connected and self.ws_failures:
            self._go(Trigger.WS_FAILED, now, "the WebSocket failed before the job was accepted")
            self._enter_polling(now)
        else:
            self.advance(now)

    def advance(self, now: float) -> None:
        """Fire the time-driven triggers (WebSocket timeout, deadline) that are due at ``now``."""
        if self.terminal:
            return
        if now >= self.deadline_at:
            self.next_poll = None
            self._go(
                Trigger.DEADLINE, now, f"no result within the {self.policy.deadline:g} s deadline"
            )
        elif self.state is State.AWAITING_WS and now >= self.ws_timeout_at:
            waited = f"no push yet after {self.policy.ws_timeout:g} s"
            if not self.policy.keep_ws_open:
                self._go(Trigger.WS_TIMEOUT, now, f"{waited}; polling instead, socket closed")
            else:
                self._go(Trigger.WS_TIMEOUT, now, f"{waited}; polling too, still listening")
            self._enter_polling(now)

    def ws_up(self, now: float) -> None:
        """The socket is connected and subscribed."""
        self.ws_connected = True
        self.ws_alive = False  # a new connection has proven nothing yet
        self._ws_streak = 0

    def ws_down(self, reason: str, now: float) -> None:
        """The socket failed to connect or closed."""
        self.ws_connected = self.ws_alive = False
        if self.terminal:
            return
        self.ws_failures += 1
        self._ws_streak += 1
        if self.state is State.AWAITING_WS:
            self._go(Trigger.WS_FAILED, now, reason)
            self._enter_polling(now)
        if self.wants_ws and self.policy.ws_reconnect:
            delay = self._delay(self.policy.poll_interval, self._ws_streak - 1)
            self.ws_connect_at = now + delay
            self._emit_retry("websocket", self.ws_failures, delay, reason, now)
        else:
            self.ws_connect_at = None

    def ws_message(self, file: FileStatus, now: float) -> None:
        """A socket message about ``file`` (a result, a failure or progress)."""
        if self.terminal:
            return
        if self.file_id is None:
            if file.ready:
                if self._early is None:
                    self._early = {}
                if len(self._early) < _EARLY_PUSHES:
                    self._early[file.id] = file.url or ""
            return
        if file.id != self.file_id:
            return
        self.ws_alive = True
        if file.ready:
            self._done(Trigger.PUSH_RESULT, now, file.url or "", "websocket")
        elif file.failed:
            self._fail(now, _job_failed(file))
        elif file.progress is not None:
            self._progress(file.progress, "websocket", now)

    def poll_sent(self, now: float) -> None:
        """A poll request is on its way (no new poll is due until its reply)."""
        self.next_poll = None
        self.polls += 1

    def poll_reply(self, file: FileStatus, now: float) -> None:
        """A poll returned ``file``."""
        if self.terminal or self.state is not State.POLLING:
            return
        self._error_streak = 0
        if file.ready:
            self._done(Trigger.POLL_RESULT, now, file.url or "", "polling")
        elif file.failed:
            self._fail(now, _job_failed(file))
        else:
            if file.progress is not None:
                self._progress(file.progress, "polling", now)
            self.next_poll = now + self._poll_delay(now)

    def poll_error(self, error: TransientError | PermanentError, now: float) -> None:
        """A poll failed with ``error``: retry within the policy's budget, or fail."""
        if self.terminal or self.state is not State.POLLING:
            return
        if isinstance(error, PermanentError):
            self._fail(now, str(error))
            return
        self.poll_errors += 1
        self._error_streak += 1
        budget = self.policy.retry_budget
        if budget is not None and self.poll_errors > budget:
            self._fail(now, f"gave up after {self.poll_errors} failed polls; last: {error}")
            return
        if error.retry_after is not None and self.policy.honour_retry_after:
            delay = max(self.policy.poll_interval, error.retry_after)  # the server's word
        else:
            delay = self._delay(self.policy.poll_interval, self._error_streak)
        self.next_poll = now + delay
        self._emit_retry("poll", self.poll_errors, delay, str(error), now)

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
        reason = f"the start request failed: {error}"
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

    def fail(self, reason: str, now: float) -> None:
        """Fail with ``reason`` (the ``error`` trigger); ignored once terminal."""
        self._fail(now, reason)

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
        if policy.adaptive and self.expected is not None:
            # halve the distance to the expected moment; never denser than poll_interval
            half_way = (self.started + self.expected - now) / 2
            return self._jitter(min(sparse, max(policy.poll_interval, half_way)))
        if self.ws_alive and policy.trust_live_socket and self.wants_ws:
            return self._jitter(sparse)  # the push works: polls are a safety net
        return self._jitter(policy.poll_interval)

    def _enter_polling(self, now: float) -> None:
        self.next_poll = now
        if not self.policy.keep_ws_open:
            self.ws_connect_at = None

    def _progress(self, fraction: float, via: str, now: float) -> None:
        if fraction != self.progress:
            self.progress = fraction
            if fraction >= 0.05:  # the job's own estimate beats the history of others
                self.expected = (now - self.started) / fraction
            self.sink(Progress(self.id, fraction, via, now, now + self.wall_offset))

    def _emit_retry(self, what: str, attempt: int, delay: float, reason: str, now: float) -> None:
        self.sink(Retry(self.id, what, attempt, delay, reason, now, now + self.wall_offset))

    def _done(self, trigger: Trigger, now: float, url: str, channel: str) -> None:
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
        channel: str | None = None,
    ) -> None:
        source = self.state
        dest = fire(source, trigger)
        self.state = dest
        if dest in TERMINAL:
            self.ended = now
            self.next_poll = None
            self.ws_connect_at = None
            if dest is State.FAILED and not self.reason:
                self.reason = detail
        self.sink(
            Transition(
                self.id, source, dest, trigger, now, now + self.wall_offset, detail, url, channel
            )
        )
