"""What the command says: which channel listens and which delivered, lines that fit in 80
columns in plain mode, and one emulator default for the legacy WebSocket."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from cli_support import Running, clean_env, needs_command, run, unwrap
from hybridgen.cli._live import RichReporter
from hybridgen.cli._output import WIDTH
from hybridgen.events import Progress, Retry, Transition
from hybridgen.machine import State, Trigger


def shown(view: RichReporter) -> str:
    view.console = Console(record=True, width=100, file=io.StringIO(), force_terminal=True)
    view.console.print(view)
    return view.console.export_text()


def test_the_live_line_names_the_channel_listening_then_the_one_that_delivered() -> None:
    view = RichReporter(["sse", "websocket"])
    view.event(Transition("g", State.REQUESTED, State.AWAITING_WS, Trigger.START, 1.0, 0.0))
    line = shown(view)
    assert "listening sse" in line and "websocket" not in line  # the socket stands by
    view.event(Transition("g", State.AWAITING_WS, State.POLLING, Trigger.WS_TIMEOUT, 3.0, 2.0))
    assert "polling, listening sse" in shown(view)
    view.event(Progress("g", 0.4, "sse", 3.5, 2.5))
    assert "heard sse" in shown(view)
    done = Transition(
        "g", State.POLLING, State.DONE, Trigger.PUSH_RESULT, 4.0, 3.0, channel="sse", url="u"
    )
    view.event(done)
    assert "via sse" in shown(view)
    assert "channel websocket" not in shown(view)


def test_the_live_view_prints_retries_as_they_happen() -> None:
    view = RichReporter(["sse"])
    view.console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
    view.event(Transition("g", State.REQUESTED, State.AWAITING_WS, Trigger.START, 1.0, 0.0))
    view.event(Retry("g", "poll", 1, 0.5, "poll: HTTP 503 from the server", 2.0, 1.0))
    text = view.console.export_text()
    assert "poll: HTTP 503 from the server; polled again in 0.50s (retry 1)" in text


@needs_command
def test_help_names_both_push_channels() -> None:
    text = " ".join(run("--help").stdout.split())
    assert "by WebSocket push and polling" not in text
    assert "push (Server-Sent Events, or the legacy WebSocket) and polling" in text


@needs_command
def test_serve_and_the_embedded_emulator_share_the_silent_websocket_default(
    spawn: Callable[..., Running],
) -> None:
    for command in ("serve", "generate"):
        helped = " ".join(run(command, "--help").stdout.split())
        assert "legacy WebSocket behaviour (default silent, as today's API" in helped, command
    server = spawn("serve", "--port", "0")
    server.line(timeout=15)
    banner = ""
    while "Ctrl-C stops it" not in banner:
        banner += " " + server.err_line(timeout=15).strip()
    assert "ws-mode silent, sse-mode normal" in banner


def fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= WIDTH, line


@needs_command
def test_plain_mode_lines_fit_in_80_columns(tmp_path: Path) -> None:
    """A run that prints the long lines of the issue: the emulator banner, ``file <uuid>``, the
    fall back to polling, a retry; then long errors."""
    out = tmp_path / "fox.png"
    proc = run(
        *("generate", "a red fox", "--out", str(out), "--time-scale", "0.02"),
        *("--sse-mode", "progress", "--ws-mode", "silent"),  # the poll delivers: every line shows
        env=clean_env(COLUMNS="200"),
    )
    assert proc.returncode == 0, proc.stderr
    fits(proc.stderr)
    lines = unwrap(proc.stderr)
    assert any("(start): file " in line for line in lines)
    # the SSE stream may not be connected yet at 0.04 s on a loaded machine: either is right
    assert any(
        re.search(r"polling too, (still listening on sse|push not connected yet)", line)
        for line in lines
    )
    for args in (
        ("models", "--type", "bogus"),
        ("generate", "a fox", "--out", str(tmp_path / "x.txt")),
        ("generate", "a fox", "--out", str(out), "--model", "comfyui/flux-kontext"),
    ):
        proc = run(*args)
        assert proc.returncode == 2, proc.stderr
        fits(proc.stderr)


@needs_command
@pytest.mark.parametrize("fault", ["503"])
def test_plain_mode_prints_retries_as_they_happen(
    tmp_path: Path, spawn: Callable[..., Running], fault: str
) -> None:
    server = spawn(
        *("serve", "--port", "0", "--time-scale", "0.02"),
        *("--poll-fault", fault, "--poll-faults", "1", "--sse-mode", "silent"),
    )
    url = server.line(timeout=15)
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN="tok-Words-1234")
    proc = run(
        *("generate", "a fox", "--out", str(tmp_path / "fox.png")),
        *("--ws-timeout", "0.05", "--poll-interval", "0.05"),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in unwrap(proc.stderr) if "(retry 1)" in line]
    assert len(retries) == 1 and "poll: HTTP 503 from the server" in retries[0], proc.stderr
    assert "polled again in" in retries[0]
    fits(proc.stderr)
