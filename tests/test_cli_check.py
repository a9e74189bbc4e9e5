"""``hybridgen check``: each step of a generation's path fails on its own, with its verdict and fix.

Every case breaks one thing of a real loopback set-up (``hybridgen serve``, or an address where
nothing listens) and asserts which step fails, what it says to do, and that no job was started.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from cli_support import (
    Running,
    clean_env,
    emulator_stats,
    json_lines,
    needs_command,
    run,
    run_on_terminal,
    unwrap,
)

pytestmark = needs_command

TOKEN = "tok-CheckSecret-5151"
WRONG = "tok-CheckWrong-0000"
STEPS = ["configuration", "dns", "tcp", "tls", "token", "websocket", "sse"]


def serve(spawn: Callable[..., Running], *args: str) -> str:
    server = spawn("serve", "--port", "0", "--token", TOKEN, "--time-scale", "0.02", *args)
    return server.line(timeout=15)


def check(url: str, token: str = TOKEN) -> tuple[int, list[dict[str, Any]], str]:
    proc = run("check", "--json", env=clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=token))
    steps = json_lines(proc.stdout)
    for step in steps:
        assert set(step) == {"step", "verdict", "seconds", "detail", "fix"}
        assert (step["fix"] != "") == (step["verdict"] in ("failed", "warning")), step
    assert TOKEN not in proc.stdout + proc.stderr and WRONG not in proc.stdout + proc.stderr
    return proc.returncode, steps, proc.stderr


def verdicts(steps: list[dict[str, Any]]) -> dict[str, str]:
    return {s["step"]: s["verdict"] for s in steps}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def test_everything_works_against_the_embedded_emulator() -> None:
    proc = run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = unwrap(proc.stdout)
    assert [line.split()[1] for line in lines] == STEPS
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "skipped", "ok", "ok", "ok"]
    assert "embedded emulator" in proc.stderr


def test_a_working_server_passes_and_no_job_starts(spawn: Callable[..., Running]) -> None:
    url = serve(spawn)
    code, steps, _ = check(url)
    assert code == 0
    assert [s["step"] for s in steps] == STEPS
    assert verdicts(steps)["websocket"] == "ok"
    assert all(s["seconds"] >= 0 for s in steps)
    counts = emulator_stats(url, TOKEN)
    assert counts["start"] == 0 and counts["poll"] == 0 and counts["models"] == 1


def test_a_rejected_token_fails_the_token_step(spawn: Callable[..., Running]) -> None:
    url = serve(spawn)
    code, steps, _ = check(url, WRONG)
    assert code == 1
    assert verdicts(steps) == {
        "configuration": "ok",
        "dns": "ok",
        "tcp": "ok",
        "tls": "skipped",
        "token": "failed",
    }
    assert "SUPERDUPERAI_TOKEN" in steps[-1]["fix"]


@pytest.mark.parametrize(
    ("mode", "words"), [("refuse", "block WebSockets"), ("drop", "right after the subscribe")]
)
def test_a_broken_push_is_a_warning_polling_still_works(
    spawn: Callable[..., Running], mode: str, words: str
) -> None:
    url = serve(spawn, "--ws-mode", mode)
    code, steps, _ = check(url)
    assert code == 0  # a generation still works: by polling
    assert verdicts(steps)["websocket"] == "warning"
    ws = next(s for s in steps if s["step"] == "websocket")
    assert words in ws["fix"] and "polling" in ws["fix"]


def test_a_refused_sse_stream_is_a_warning_with_a_hint(spawn: Callable[..., Running]) -> None:
    url = serve(spawn, "--sse-mode", "refuse")
    code, steps, _ = check(url)
    assert code == 0  # polling still delivers
    assert verdicts(steps)["sse"] == "warning" and verdicts(steps)["websocket"] == "ok"
    assert "HTTP 524" in steps[-1]["detail"]
    assert "524" in steps[-1]["fix"] and "polling" in steps[-1]["fix"]
    counts = emulator_stats(url, TOKEN)
    assert counts["start"] == 0 and counts["sse_connect"] == 1


def test_check_generate_reports_each_way_against_the_embedded_emulator() -> None:
    proc = run("check", "--generate", "--json", "--time-scale", "0.05", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ways = {s["step"]: s for s in json_lines(proc.stdout) if "channel" in s}
    assert set(ways) == {"polling", "websocket only", "sse only", "hybrid"}  # as each ends
    assert list(ways)[-1] == "websocket only"  # the push-only wait makes it end last
    assert {n: (w["verdict"], w["channel"]) for n, w in ways.items() if n != "hybrid"} == {
        "polling": ("ok", "polling"),
        "websocket only": ("warning", "polling"),  # today's socket is silent
        "sse only": ("ok", "sse"),
    }
    # hybrid: SSE and a poll both see the job at its ready moment; either may win the tie
    assert ways["hybrid"]["verdict"] == "ok" and ways["hybrid"]["channel"] in ("sse", "polling")
    assert "websocket delivered nothing" in ways["websocket only"]["detail"]
    for way in ways.values():
        assert way["seconds"] > 0 and way["after_ready"] is not None
        assert 0 <= way["after_ready"] < way["seconds"]
    # the push waits most of the deadline: polling caught it long after the job was ready
    assert ways["websocket only"]["after_ready"] > ways["sse only"]["after_ready"]


def test_check_generate_prints_a_summary_line() -> None:
    proc = run("check", "--generate", "--time-scale", "0.05", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last == "ways that deliver: polling, sse only, hybrid; not: websocket only"


def test_nothing_listening_fails_the_tcp_step() -> None:
    code, steps, _ = check(f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert verdicts(steps) == {"configuration": "ok", "dns": "ok", "tcp": "failed"}
    assert "firewall" in steps[-1]["fix"]


def test_https_to_a_plain_http_server_fails_the_tls_step(spawn: Callable[..., Running]) -> None:
    url = serve(spawn).replace("http://", "https://")
    code, steps, _ = check(url)
    assert code == 1
    assert verdicts(steps)["tls"] == "failed" and "token" not in verdicts(steps)
    assert "proxy" in steps[-1]["fix"]


def test_an_unknown_host_fails_the_dns_step() -> None:
    code, steps, _ = check("https://no-such-host.invalid")  # .invalid never resolves (RFC 2606)
    assert code == 1
    assert verdicts(steps) == {"configuration": "ok", "dns": "failed"}
    assert "SUPERDUPERAI_URL" in steps[-1]["fix"]


def test_a_bad_url_fails_the_configuration_step() -> None:
    code, steps, _ = check("https://example.com/api")
    assert code == 1
    assert [s["verdict"] for s in steps] == ["failed"]
    assert "SUPERDUPERAI_URL" in steps[0]["detail"] and "SUPERDUPERAI_URL" in steps[0]["fix"]


def test_check_prints_each_step_as_it_finishes() -> None:
    """The steps and the first ways are out while the slowest way still runs (it waits most of
    the deadline for a push that never comes)."""
    process = Running("check", "--generate", "--time-scale", "0.05", env=clean_env())
    try:
        seen = [process.line(timeout=30) for _ in range(STEPS.index("sse") + 1)]
        assert [line.split()[1] for line in unwrap("\n".join(seen))][:3] == STEPS[:3]
        while "sse only" not in (line := process.line(timeout=30)):
            pass
        assert line.split()[0] == "ok"
        assert process.proc.poll() is None  # "websocket only" has not ended yet
        assert process.finish(timeout=60) == 0
    finally:
        process.kill()
    assert "websocket only" in "".join(process.stdout).split("sse only", 1)[1]


def test_check_shows_a_live_line_while_the_ways_run() -> None:
    code, _, terminal = run_on_terminal("check", "--generate", "--time-scale", "0.05", columns=100)
    assert code == 0, terminal
    assert "generating" in terminal
    assert "websocket only: awaiting_ws" in terminal  # its state, shown while it runs
    assert "warning  websocket only" in terminal  # the outcome, above the live line


@pytest.mark.parametrize("columns", ["100", "200"])
def test_check_lines_fit_in_80_columns(columns: str) -> None:
    proc = run("check", env=clean_env(COLUMNS=columns))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in (proc.stdout + proc.stderr).splitlines():
        assert len(line) <= 80, line
