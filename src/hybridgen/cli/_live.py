"""The rich live views on a terminal (stderr): one generation's status line, a batch's totals.

Used only when stderr is a terminal; rich is imported lazily. The views redraw from their state;
they must not print anything to stdout but a saved path when stdout is not a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import MissingExtra
from ..events import Event, JournalWarning, Progress, Retry, Transition
from ..machine import State
from ._output import redact, write_out
from ._report import (
    BatchReporter,
    Outcome,
    Reporter,
    count_outcomes,
    event_line,
    explain,
    item_explanation,
    journal_line,
    summary_line,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from ._batch import BatchItem


def _one_line(console: Console, *cells: RenderableType) -> RenderableType:
    """``cells`` side by side on one line of the console, never wrapped.

    A text cell that does not fit is cut short (…), and the cells after it are left out. Strings
    are shown as they are, never parsed as markup: a ``console.print(markup=False)`` during the
    live display renders the view with that option too, so styles go in ``Text``.
    """
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    room = console.width
    kept: list[tuple[RenderableType, int]] = []
    for cell in cells:
        shown = Text(cell) if isinstance(cell, str) else cell
        width = Measurement.get(console, console.options, shown).maximum
        if width > room:
            if isinstance(shown, Text) and room >= 2:
                shown = shown.copy()
                shown.truncate(room, overflow="ellipsis")
                kept.append((shown, room))
            break
        kept.append((shown, width))
        room -= width + 1  # the space between cells
    grid = Table.grid(padding=(0, 1))
    for _, width in kept:
        grid.add_column(no_wrap=True, width=width)
    grid.add_row(*(shown for shown, _ in kept))
    return grid


class _LiveView:
    """A rich live view on stderr, redrawn from ``__rich__``; remarks print above it."""

    def _init_live(self) -> None:
        try:
            from rich.console import Console
        except ModuleNotFoundError as exc:
            raise MissingExtra.of(exc, "the live view on a terminal", extra="cli") from None

        self.console: Console = Console(stderr=True)
        self.live: Live | None = None
        self.clock0 = time.monotonic()

    def __rich__(self) -> RenderableType:
        raise NotImplementedError

    def begin(self) -> None:
        """Start the live display."""
        from rich.live import Live

        self.clock0 = time.monotonic()
        # stdout is left alone: saved paths go there when it is not a terminal
        self.live = Live(
            self,
            console=self.console,
            refresh_per_second=10,
            transient=True,
            redirect_stdout=False,
        )
        self.live.start()

    def note(self, message: str) -> None:
        """A dim remark above the live view."""
        text = redact(f"hybridgen: {message}")
        self.console.print(text, style="dim", markup=False, highlight=False)

    def _journal(self, event: JournalWarning) -> None:
        """A journal warning above the live view (yellow: the generation goes on)."""
        text = redact(journal_line(event))
        self.console.print(text, style="yellow", markup=False, highlight=False)

    def end(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.stop()
            self.live = None


class RichReporter(_LiveView, Reporter):
    """A live status line on the terminal (stderr): state, the channels listening (or the one
    that delivered), elapsed, progress, retries.

    ``push`` names the push channels the policy listens on, first the one opened first (the
    others stand by while it works, with ``Policy.push_fallback``).
    """

    def __init__(self, push: Sequence[str] = ()) -> None:
        super().__init__()
        self._init_live()
        self.push = tuple(push)
        self.state = str(State.REQUESTED)
        self.fraction: float | None = None
        self.heard: str | None = None
        self.delivered: str | None = None
        self.retries = 0
        self.stopped: float | None = None
        self.left: tuple[float, float] | None = None
        """The server's progress as ``(seconds left, when it said so)`` (``time.monotonic``)."""

    def channels(self) -> str:
        """Who is listening now, or who delivered: ``listening sse``, ``heard sse``, ``via sse``."""
        if self.delivered is not None:
            return f"via {self.delivered}"
        if self.heard is not None:
            return f"heard {self.heard}"
        if self.state == State.REQUESTED:
            return "starting"
        listening = f"listening {self.push[0]}" if self.push else "push off"
        return f"polling, {listening}" if self.state == State.POLLING else listening

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.text import Text

        percent = "  ?%" if self.fraction is None else f"{self.fraction * 100:3.0f}%"
        now = time.monotonic() if self.stopped is None else self.stopped
        return _one_line(
            self.console,
            Spinner("dots", style="cyan"),
            Text(f"{self.state:<11}", style="bold"),
            Text(f"{self.channels():<20}", style="cyan"),
            f"{now - self.clock0:6.1f}s",
            ProgressBar(
                total=None if self.fraction is None else 1.0,
                completed=self.fraction or 0.0,
                width=20,
            ),
            percent,
            f"retries {self.retries}",
            *self._left(now),
        )

    def _left(self, now: float) -> tuple[str, ...]:
        """``~4m10s left`` while the server's progress gives an estimate (nothing otherwise)."""
        if self.left is None or self.stopped is not None:
            return ()
        seconds = max(0.0, self.left[0] - (now - self.left[1]))
        minutes, rest = divmod(round(seconds), 60)
        return (f"~{minutes}m{rest:02d}s left" if minutes else f"~{rest}s left",)

    def event(self, event: Event) -> None:
        """Update the live line; print transitions above it."""
        if isinstance(event, Transition):
            self.state = str(event.dest)
            if event.channel is not None:
                self.delivered = event.channel
            if event.terminal:
                self.stopped = time.monotonic()
                if event.dest is State.DONE:
                    self.fraction = 1.0
        elif isinstance(event, Progress):
            self.fraction = event.fraction
            if event.via != "polling":
                self.heard = event.via
            if event.remaining is not None:
                self.left = (event.remaining, time.monotonic())
        elif isinstance(event, Retry):
            self.retries += 1
        if isinstance(event, Transition | Retry):
            self.console.print(
                redact(f"{self.at(event):7.2f}s  {event_line(event)}"),
                markup=False,
                highlight=False,
            )
        elif isinstance(event, JournalWarning):
            self._journal(event)

    def finish(self, outcome: Outcome, trace: str | None, journal_lost: int | None = None) -> None:
        """A final line naming the saved path (and the path on stdout when it is not a terminal)."""
        if outcome.path is not None:
            self.console.print(
                f"[green]done[/] via {outcome.channel} in {outcome.elapsed:.2f}s; "
                f"saved [bold]{redact(outcome.path)}[/]",
                highlight=False,
            )
            if not sys.stdout.isatty():
                write_out(outcome.path)
        else:
            explain(outcome)
        if trace is not None:
            sys.stdout.write(trace)
            sys.stdout.flush()


class RichBatchReporter(_LiveView, BatchReporter):
    """On a terminal: a live aggregate view (items per state, progress, retries) on stderr."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self._init_live()
        self.states: dict[str, str] = {}
        self.ended: list[Outcome] = []
        self.retries = 0

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.text import Text

        running: dict[str, int] = {}
        for state in self.states.values():
            if state not in (State.DONE, State.FAILED, State.CANCELLED):
                running[state] = running.get(state, 0) + 1
        tally = count_outcomes(self.ended)
        queued = self.total - len(self.states) - sum(1 for o in self.ended if not o.generation_id)
        live = " ".join(f"{state} {n}" for state, n in sorted(running.items())) or "-"
        return _one_line(
            self.console,
            Spinner("dots", style="cyan"),
            f"{len(self.ended)}/{self.total}",
            ProgressBar(total=self.total, completed=len(self.ended), width=10),
            Text.assemble(
                (f"done {tally['done']}", "green"),
                " ",
                (f"failed {tally['failed']}", "red"),
                f" cancelled {tally['cancelled']}",
            ),
            f"queued {max(queued, 0)}",
            f"retries {self.retries}",
            f"{time.monotonic() - self.clock0:6.1f}s",
            f"running: {live}",  # last: the one cell cut short (…) on a narrow terminal
        )

    def event(self, event: Event) -> None:
        """Update the counts."""
        if isinstance(event, Transition):
            self.states[event.generation_id] = str(event.dest)
        elif isinstance(event, Retry):
            self.retries += 1
        elif isinstance(event, JournalWarning):
            self._journal(event)

    def item(self, item: BatchItem, outcome: Outcome) -> None:
        """One line above the live view (and the path on stdout when it is not a terminal)."""
        self.ended.append(outcome)
        if outcome.path is not None:
            text = (
                f"[{item.index}] done via {outcome.channel} in {outcome.elapsed:.2f}s; "
                f"saved {outcome.path}"
            )
            self.console.print(redact(text), style="green", markup=False, highlight=False)
            if not sys.stdout.isatty():
                write_out(outcome.path)
        else:
            text = f"[{item.index}] {item_explanation(outcome)}"
            self.console.print(redact(text), style="red", markup=False, highlight=False)

    def summary(
        self, tally: dict[str, int], elapsed: float, extra: Mapping[str, int] | None = None
    ) -> None:
        """The totals."""
        self.console.print(
            summary_line(tally, elapsed, extra),
            markup=False,
            highlight=False,
        )


class LiveWays(_LiveView):
    """``check --generate`` on a terminal: one live line of every way's state while they run;
    each way's outcome line prints above it as the way ends."""

    def __init__(self, names: Sequence[str]) -> None:
        self._init_live()
        self.states = dict.fromkeys(names, str(State.REQUESTED))
        self.fractions: dict[str, float] = {}

    def __rich__(self) -> RenderableType:
        from rich.spinner import Spinner

        cells = []
        for name, state in self.states.items():
            fraction = self.fractions.get(name)
            percent = "" if fraction is None or state == State.DONE else f" {fraction:.0%}"
            cells.append(f"{name}: {state}{percent}")
        return _one_line(
            self.console,
            Spinner("dots", style="cyan"),
            f"generating {time.monotonic() - self.clock0:5.1f}s",
            "; ".join(cells),  # last: the one cell cut short (…) on a narrow terminal
        )

    def event(self, name: str, event: Event) -> None:
        """One event of way ``name``'s generation: its state and progress."""
        if isinstance(event, Transition):
            self.states[name] = str(event.dest)
        elif isinstance(event, Progress):
            self.fractions[name] = event.fraction

    def print(self, text: str) -> None:
        """A finished way's lines above the live line (and on stdout when it is not a terminal)."""
        self.console.print(text, markup=False, highlight=False)
        if not sys.stdout.isatty():
            write_out(text)
