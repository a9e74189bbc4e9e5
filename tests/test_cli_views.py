"""What the command's live views look like on a terminal: rendered text, not markup, on one line.

The views are rendered by rich into a recording console of a given width (what a terminal of that
many columns shows), through the same paths the live display uses: a plain render, and a render
while a ``console.print(markup=False)`` line is written above the view.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from cli_support import needs_command, run_on_terminal
from hybridgen.cli._live import RichBatchReporter, RichReporter
from hybridgen.cli._report import Outcome
from hybridgen.events import Progress, Retry, Transition
from hybridgen.machine import State, Trigger

MARKUP = ("[bold]", "[/]", "[cyan]", "[green]", "[red]")


def recording(width: int) -> Console:
    return Console(record=True, width=width, file=io.StringIO(), force_terminal=True)


def frames(view: RichReporter | RichBatchReporter, width: int) -> list[str]:
    """The view rendered as the live display renders it: with and without markup parsing."""
    view.console = recording(width)
    view.console.print(view)
    view.console.print(view, markup=False)
    return view.console.export_text().splitlines()


def single(state: State = State.POLLING) -> RichReporter:
    view = RichReporter()
    view.event(Transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START, 1.0, 0.0))
    if state is State.POLLING:
        view.event(Transition("g1", State.AWAITING_WS, state, Trigger.WS_TIMEOUT, 3.0, 2.0))
    view.event(Progress("g1", 0.42, "polling", 3.5, 2.5))
    view.event(Retry("g1", "poll", 1, 0.5, "HTTP 503", 4.0, 3.0))
    return view


def batch() -> RichBatchReporter:
    view = RichBatchReporter(12)
    for n, state in enumerate([State.AWAITING_WS, State.POLLING, State.POLLING, State.DONE]):
        view.event(Transition(f"g{n}", State.REQUESTED, state, Trigger.START, 1.0, 0.0))
    view.ended.append(Outcome(str(State.DONE), "g3", path="/tmp/x.png"))
    return view


@pytest.mark.parametrize("width", [80, 100, 60])
def test_the_status_line_is_one_line_of_plain_text(width: int) -> None:
    shown = frames(single(), width)
    assert len(shown) == 2, shown  # one line per render: nothing wrapped
    for line in shown:
        assert not any(tag in line for tag in MARKUP), line
        assert len(line) <= width
    if width >= 80:
        for line in shown:
            assert "polling" in line and " 42%" in line and "retries 1" in line


@pytest.mark.parametrize("width", [80, 120, 50])
def test_the_batch_line_is_one_line_of_plain_text(width: int) -> None:
    shown = frames(batch(), width)
    assert len(shown) == 2, shown
    for line in shown:
        assert not any(tag in line for tag in MARKUP), line
        assert len(line) <= width
        assert line.startswith(("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"))
        assert "1/12" in line
    if width >= 80:
        assert all("done 1 failed 0 cancelled 0" in line for line in shown)
    if width >= 120:
        assert all("running: awaiting_ws 1 polling 2" in line for line in shown)


def test_transitions_printed_above_the_live_view_leave_no_markup() -> None:
    """The issue's case: each transition line (printed without markup) redraws the view."""
    view = RichReporter()
    view.console = recording(80)
    view.begin()
    try:
        view.event(Transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START, 1.0, 0.0))
        view.event(Transition("g1", State.AWAITING_WS, State.POLLING, Trigger.WS_TIMEOUT, 3.0, 2.0))
    finally:
        view.end()
    text = view.console.export_text()
    assert "requested -> awaiting_ws (start)" in text
    assert "awaiting_ws -> polling (ws_timeout)" in text
    assert not any(tag in text for tag in MARKUP), text


@needs_command
def test_no_markup_on_an_80_column_terminal(tmp_path: Path) -> None:
    out = f"{tmp_path}/fox.png"
    code, stdout, terminal = run_on_terminal(
        "generate", "a fox", "--out", out, "--time-scale", "0.02", columns=80
    )
    assert code == 0, terminal
    assert stdout.strip() == out
    assert "requested -> awaiting_ws (start)" in terminal
    assert not any(tag in terminal for tag in MARKUP), terminal
