"""How a run is shown, as an interface, and its plainest form: lines on stderr, paths on stdout.

:class:`Reporter` (one generation) and :class:`_BatchReporter` (many) are what the commands call;
the JSON (:mod:`._json`) and live (:mod:`._live`) views subclass them. A reporter only shows
events and outcomes: it must not change the run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..events import Event, JournalWarning, Retry, Transition
from ..machine import State
from ._output import _err, _out, _say

if TYPE_CHECKING:
    from ..driver import Generation
    from ._batch import _Item


@attrs.define
class Outcome:
    """How ``generate`` ended, as reported in its last line."""

    state: str
    generation_id: str | None = None
    channel: str | None = None
    url: str | None = None
    path: str | None = None
    elapsed: float = 0.0
    reason: str = ""
    history: list[Transition] = attrs.field(factory=list)
    started: float | None = None

    @classmethod
    def of(
        cls, gen: Generation, path: str | None, problem: str, *, keep_path: bool = False
    ) -> Outcome:
        """The outcome of ``gen``, saved at ``path``; ``problem`` is the reason when the result has
        none. ``keep_path`` keeps the path taken and its start (for ``--trace``)."""
        result = gen.result()
        return cls(
            state=str(result.state),
            generation_id=result.generation_id,
            channel=result.channel,
            url=result.url,
            path=path,
            elapsed=result.elapsed,
            reason=result.reason or problem,
            history=list(gen.history) if keep_path else [],
            started=gen.core.started if keep_path else None,
        )


class Reporter:
    """Shows one generation's events and its outcome (base: plain lines on stderr)."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def at(self, event: Event) -> float:
        """Seconds from the start request to ``event``."""
        if self.t0 is None:
            self.t0 = event.monotonic
        return event.monotonic - self.t0

    def begin(self) -> None:
        """Called once before the run."""

    def note(self, message: str) -> None:
        """A side remark (e.g. the embedded emulator's URL), on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """One event of the generation: its transitions and retries, as they happen."""
        if isinstance(event, Transition | Retry):
            _err(f"{self.at(event):7.2f}s  {_event_line(event)}", _INDENT)
        elif isinstance(event, JournalWarning):
            _say(_journal_line(event))

    def end(self) -> None:
        """Called once after the run, before :meth:`finish` (also on errors)."""

    def finish(self, outcome: Outcome, trace: str | None) -> None:
        """Show the outcome: the saved path on stdout, a failure's reason on stderr."""
        if outcome.path is not None:
            _out(outcome.path)
        _explain(outcome)
        if trace is not None:
            sys.stdout.write(trace)
            sys.stdout.flush()


_INDENT: Final = " " * 10
"""Continuation lines of an event line start under its text (after ``"   1.23s  "``)."""


_AGAIN: Final = {
    "start": "sent again",
    "poll": "polled again",
    "sse": "SSE reconnects",
    "websocket": "WebSocket reconnects",
}


def _event_line(event: Transition | Retry) -> str:
    """A transition (``source -> dest (trigger): detail``) or a retry, in words."""
    if isinstance(event, Retry):
        again = _AGAIN.get(event.what, f"{event.what} again")
        return f"{event.reason}; {again} in {event.delay:.2f}s (retry {event.attempt})"
    detail = f": {event.detail}" if event.detail else ""
    return f"{event.source} -> {event.dest} ({event.trigger}){detail}"


def _explain(outcome: Outcome) -> None:
    if outcome.state == State.FAILED:
        _say(f"failed: {outcome.reason}")
    elif outcome.state == State.CANCELLED:
        _say(f"cancelled: {outcome.reason}")
    elif outcome.path is None:
        _say(f"the result was not saved: {outcome.reason}")


def _journal_line(event: JournalWarning) -> str:
    """A journal warning in words (the generation goes on either way)."""
    what = "lost a write" if event.lost else "waits"
    about = f" of {event.generation_id}" if event.generation_id else ""
    return f"journal {what} ({event.operation}{about}): {event.reason}"


def _item_explanation(outcome: Outcome) -> str:
    if outcome.state == State.FAILED:
        return f"failed: {outcome.reason}"
    if outcome.state == State.CANCELLED:
        return f"cancelled: {outcome.reason}"
    return f"the result was not saved: {outcome.reason}"


def _tally(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Items done (and saved), failed (or done but not saved) and cancelled."""
    done = sum(1 for o in outcomes if o.state == State.DONE and o.path is not None)
    cancelled = sum(1 for o in outcomes if o.state == State.CANCELLED)
    return {"done": done, "failed": len(outcomes) - done - cancelled, "cancelled": cancelled}


class _BatchReporter:
    """Shows the events of many generations, each item's outcome and the totals (plain lines)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.t0: dict[str, float] = {}
        self.index_of: dict[str, int] = {}

    def started(self, index: int, gen: Generation) -> None:
        """Item ``index`` runs as ``gen``."""
        self.t0[gen.id] = gen.core.started
        self.index_of[gen.id] = index

    def at(self, event: Event) -> float:
        """Seconds from the item's start request to ``event``."""
        return event.monotonic - self.t0.setdefault(event.generation_id or "", event.monotonic)

    def begin(self) -> None:
        """Called once before the run."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """One event of one item: its transitions and retries on stderr."""
        if isinstance(event, Transition | Retry):
            index = self.index_of.get(event.generation_id, "?")
            _err(f"{self.at(event):7.2f}s  [{index}] {_event_line(event)}", _INDENT)
        elif isinstance(event, JournalWarning):
            _say(_journal_line(event))

    def item(self, item: _Item, outcome: Outcome) -> None:
        """One item ended: its saved path on stdout, or why not on stderr."""
        if outcome.path is not None:
            _out(outcome.path)
        else:
            _say(f"[{item.index}] {_item_explanation(outcome)}")

    def end(self) -> None:
        """Called once after the run (also on errors)."""

    def summary(self, tally: dict[str, int], elapsed: float) -> None:
        """The totals, on stderr."""
        _say(
            f"{tally['done']} done, {tally['failed']} failed, {tally['cancelled']} cancelled "
            f"in {elapsed:.2f}s"
        )
