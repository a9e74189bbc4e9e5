"""How a run is shown, as an interface, and its plainest form: lines on stderr, paths on stdout.

:class:`Reporter` (one generation) and :class:`BatchReporter` (many) are what the commands call;
the JSON (:mod:`._json`) and live (:mod:`._live`) views subclass them. A reporter only shows
events and outcomes: it must not change the run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..events import Event, JournalWarning, Retry, Transition
from ..machine import State
from ._output import say, write_err, write_out

if TYPE_CHECKING:
    from ..driver import Generation
    from ._batch import BatchItem


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

    @property
    def saved(self) -> bool:
        """Whether the image was written (``path`` is where)."""
        return self.path is not None

    @property
    def unsaved(self) -> bool:
        """Done on the server (paid for) but not saved: ``url`` is kept for a later download."""
        return self.state == State.DONE and self.path is None

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
        say(message)

    def event(self, event: Event) -> None:
        """One event of the generation: its transitions and retries, as they happen."""
        if isinstance(event, Transition | Retry):
            write_err(f"{self.at(event):7.2f}s  {event_line(event)}", _INDENT)
        elif isinstance(event, JournalWarning):
            say(journal_line(event))

    def end(self) -> None:
        """Called once after the run, before :meth:`finish` (also on errors)."""

    def finish(self, outcome: Outcome, trace: str | None, journal_lost: int | None = None) -> None:
        """Show the outcome: the saved path on stdout, a failure's reason on stderr
        (``journal_lost``: with a journal, its writes not recorded, said by the caller)."""
        if outcome.path is not None:
            write_out(outcome.path)
        explain(outcome)
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


def event_line(event: Transition | Retry) -> str:
    """A transition (``source -> dest (trigger): detail``) or a retry, in words."""
    if isinstance(event, Retry):
        again = _AGAIN.get(event.what, f"{event.what} again")
        return f"{event.reason}; {again} in {event.delay:.2f}s (retry {event.attempt})"
    detail = f": {event.detail}" if event.detail else ""
    return f"{event.source} -> {event.dest} ({event.trigger}){detail}"


def explain(outcome: Outcome) -> None:
    if outcome.state == State.FAILED:
        say(f"failed: {outcome.reason}")
    elif outcome.state == State.CANCELLED:
        say(f"cancelled: {outcome.reason}")
    elif outcome.path is None:
        say(_unsaved_explanation(outcome))


def _unsaved_explanation(outcome: Outcome) -> str:
    """Why a done result is not on disk, and how to get it without a new job."""
    text = f"done but not saved: {outcome.reason}"
    if outcome.url:
        text += f"; it is still at {outcome.url} (hybridgen download URL --out PATH saves it)"
    return text


def journal_line(event: JournalWarning) -> str:
    """A journal warning in words (the generation goes on either way)."""
    what = "lost a write" if event.lost else "waits"
    about = f" of {event.generation_id}" if event.generation_id else ""
    return f"journal {what} ({event.operation}{about}): {event.reason}"


def item_explanation(outcome: Outcome) -> str:
    if outcome.state == State.FAILED:
        return f"failed: {outcome.reason}"
    if outcome.state == State.CANCELLED:
        return f"cancelled: {outcome.reason}"
    return _unsaved_explanation(outcome)


def count_outcomes(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Items done (and saved), failed, cancelled, and done but not saved (``unsaved``)."""
    done = sum(1 for o in outcomes if o.saved and o.state == State.DONE)
    unsaved = sum(1 for o in outcomes if o.unsaved)
    cancelled = sum(1 for o in outcomes if o.state == State.CANCELLED)
    failed = len(outcomes) - done - unsaved - cancelled
    return {"done": done, "failed": failed, "cancelled": cancelled, "unsaved": unsaved}


def summary_line(
    tally: dict[str, int], elapsed: float, extra: Mapping[str, int] | None = None
) -> str:
    """The totals in words (``not saved``, ``skipped`` and an incomplete journal only when
    there are some)."""
    extra = extra or {}
    unsaved = f", {tally['unsaved']} not saved" if tally.get("unsaved") else ""
    text = (
        f"{tally['done']} done{unsaved}, {tally['failed']} failed, {tally['cancelled']} "
        f"cancelled in {elapsed:.2f}s"
    )
    if extra.get("skipped"):
        text += f"; {extra['skipped']} skipped (another process holds them)"
    if extra.get("journal_lost"):
        text += f"; the journal is incomplete ({extra['journal_lost']} write(s) not recorded)"
    return text


class BatchReporter:
    """Shows the events of many generations, each item's outcome and the totals (plain lines)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.t0: dict[str, float] = {}
        self.index_of: dict[str, int] = {}
        self._expected: set[str] = set()

    def expect(self, index: int, gen_id: str, t0: float) -> None:
        """Item ``index`` is about to run as ``gen_id`` (a resumed entry, whose id is known
        before its first event): its events are tagged with ``index`` and count from ``t0``."""
        self.index_of[gen_id] = index
        self.t0[gen_id] = t0
        self._expected.add(gen_id)

    def started(self, index: int, gen: Generation) -> None:
        """Item ``index`` runs as ``gen`` (times count from its start request unless
        :meth:`expect` said otherwise)."""
        if gen.id not in self._expected:
            self.t0[gen.id] = gen.core.started
        self.index_of[gen.id] = index

    def at(self, event: Event) -> float:
        """Seconds from the item's start request to ``event``."""
        return event.monotonic - self.t0.setdefault(event.generation_id or "", event.monotonic)

    def begin(self) -> None:
        """Called once before the run."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        say(message)

    def event(self, event: Event) -> None:
        """One event of one item: its transitions and retries on stderr."""
        if isinstance(event, Transition | Retry):
            index = self.index_of.get(event.generation_id, "?")
            write_err(f"{self.at(event):7.2f}s  [{index}] {event_line(event)}", _INDENT)
        elif isinstance(event, JournalWarning):
            say(journal_line(event))

    def item(self, item: BatchItem, outcome: Outcome) -> None:
        """One item ended: its saved path on stdout, or why not on stderr."""
        if outcome.path is not None:
            write_out(outcome.path)
        else:
            say(f"[{item.index}] {item_explanation(outcome)}")

    def end(self) -> None:
        """Called once after the run (also on errors)."""

    def summary(
        self, tally: dict[str, int], elapsed: float, extra: Mapping[str, int] | None = None
    ) -> None:
        """The totals, on stderr (``extra``: ``skipped``, ``journal_lost``)."""
        say(summary_line(tally, elapsed, extra))
