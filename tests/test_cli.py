"""The installed ``hybridgen`` command, run in subprocesses (real sockets on loopback).

Every wait has a deadline: output is read line by line by threads, and tests wait for the line they
need rather than sleeping.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import (
    RUN_TIMEOUT,
    Running,
    assert_png,
    clean_env,
    flat,
    json_lines,
    needs_command,
    run,
    run_on_terminal,
    serving,
)

FAST = ("--time-scale", "0.02")

pytestmark = needs_command


# -- generate against the embedded emulator ----------------------------------------------------


def test_generate_json_embedded_saves_a_png(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    # Polling only after 2 s (an explicit, unscaled timing): the push (at 0.5 s) must win. The
    # embedded emulator plays today's API: a silent legacy socket, pushes on SSE (which opens
    # once the start reply names the file, so the job must not be ready before that).
    proc = run(
        "generate",
        "a red fox",
        "--out",
        str(out),
        "--json",
        "--ws-timeout",
        "2",
        "--gen-time",
        "0.5",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    result = lines[-1]
    assert result["event"] == "result"
    assert result["state"] == "done"
    assert result["channel"] == "sse"
    assert result["path"] == str(out)
    assert result["url"].startswith("http://127.0.0.1:")
    assert result["elapsed"] > 0
    assert {line["event"] for line in lines[:-1]} <= {"transition", "progress", "retry"}
    transitions = [line for line in lines if line["event"] == "transition"]
    assert transitions[0]["from"] == "requested"
    assert transitions[-1]["to"] == "done"
    assert all(t["from"] == u["to"] for t, u in zip(transitions[1:], transitions, strict=False))
    ats = [line["at"] for line in lines[:-1]]
    assert ats == sorted(ats)
    notes = [line for line in proc.stderr.splitlines() if "embedded emulator" in line]
    assert len(notes) == 1 and "http://127.0.0.1:" in notes[0]
    assert_png(out)


def test_generate_silent_socket_falls_back_to_polling(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--json", "--sse-mode", "silent", *FAST)
    assert proc.returncode == 0, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert (result["state"], result["channel"]) == ("done", "polling")
    assert_png(out)


@pytest.mark.parametrize(
    ("options", "channel"),
    [
        (("--ws-mode", "normal", "--sse-mode", "silent"), "websocket"),
        (("--ws-mode", "normal", "--sse-mode", "silent", "--push", "sse"), "polling"),
        (("--push", "none"), "polling"),
    ],
)
def test_push_channels_and_emulator_modes_from_the_command_line(
    tmp_path: Path, options: tuple[str, ...], channel: str
) -> None:
    out = tmp_path / "fox.png"
    proc = run(
        "generate", "a fox", "--out", str(out), "--json", "--ws-timeout", "2", *options, *FAST
    )
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["channel"] == channel


def test_seed_policy_waits_its_scaled_ws_timeout(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    proc = run(
        "generate",
        "a fox",
        "--out",
        str(out),
        "--json",
        "--ws-mode",
        "silent",
        "--policy",
        "seed",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    result = lines[-1]
    assert (result["state"], result["channel"]) == ("done", "polling")
    assert result["elapsed"] >= 30 * 0.02
    fallback = [t for t in lines if t.get("to") == "polling"]
    assert fallback[0]["trigger"] == "ws_timeout"
    assert fallback[0]["at"] >= 30 * 0.02


def test_plain_output_and_trace(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--trace", *FAST)
    assert proc.returncode == 0, proc.stderr
    stdout = proc.stdout.splitlines()
    assert stdout[0] == str(out)
    assert stdout[1] == "stateDiagram-v2"
    assert any(line.strip().startswith("requested --> awaiting_ws: start") for line in stdout)
    assert stdout[-1].strip() == "done --> [*]"
    assert "requested -> awaiting_ws (start)" in proc.stderr
    assert "-> done" in proc.stderr
    assert_png(out)


def test_live_progress_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal, rich shows the progress there; the path still goes to stdout."""
    out = tmp_path / "fox.png"
    code, stdout, terminal = run_on_terminal("generate", "a fox", "--out", str(out), *FAST)
    assert code == 0, terminal
    assert stdout.strip() == str(out)
    assert "saved" in terminal and "done" in terminal
    assert_png(out)


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["a fox", "--policy", "nope"], "argument --policy: invalid choice"),
        (["a fox", "--deadline", "-1"], "--deadline must be"),
        (["a fox", "--deadline", "1", "--ws-timeout", "2"], "--deadline must be longer than --ws"),
        (["a fox", "--poll-interval", "0"], "--poll-interval must be"),
        (["a fox", "--time-scale", "-2"], "--time-scale must be"),
        (["a fox", "--gen-time", "-1"], "--gen-time must be"),
        (["   "], "the prompt is empty"),
        ([""], "the prompt is empty"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(tmp_path: Path, args: list[str], named: str) -> None:
    """Each error is a sentence naming what the user typed (the flag), not a library field."""
    out = tmp_path / "never.png"
    proc = run("generate", *args, "--out", str(out), "--json")
    assert proc.returncode == 2, proc.stderr
    assert named in " ".join(proc.stderr.split())
    fields = r"\b(push_timeout|ws_timeout|poll_interval|time_scale|gen_time|prompt):"
    assert not re.search(fields, proc.stderr)
    assert proc.stdout == ""
    assert not out.exists()


def test_an_unset_token_reads_as_a_sentence(tmp_path: Path) -> None:
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9")
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "error: SUPERDUPERAI_TOKEN is not set; set it to" in proc.stderr


def test_emulator_options_need_the_embedded_emulator(tmp_path: Path) -> None:
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9", SUPERDUPERAI_TOKEN="x" * 12)
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), "--gen-time", "1", env=env)
    assert proc.returncode == 2
    assert "--gen-time" in proc.stderr


def test_missing_token_is_a_config_error(tmp_path: Path) -> None:
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9")
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), "--json", env=env)
    assert proc.returncode == 2
    assert "SUPERDUPERAI_TOKEN" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://editor.example.com/api", "without a path (/api)"),
        ("http://editor.example.com", "set HYBRIDGEN_ALLOW_INSECURE=1"),
    ],
)
def test_bad_url_is_refused_before_any_request(tmp_path: Path, url: str, words: str) -> None:
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN="x" * 12)
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), "--json", env=env)
    assert proc.returncode == 2
    assert "SUPERDUPERAI_URL" in proc.stderr and words in flat(proc.stderr)
    assert "allow_insecure=True" not in proc.stderr
    assert proc.stdout == ""


# -- against `hybridgen serve` ---------------------------------------------------------------

SERVER_TOKEN = "tok-Qx7ServerSecretZz91"
WRONG_TOKEN = "tok-Qx7WrongSecretYy42"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Running, str]]:
    with serving("--token", SERVER_TOKEN, *FAST) as (process, url):
        yield process, url


def test_wrong_token_fails_fast_without_showing_it(
    tmp_path: Path, server: tuple[Running, str]
) -> None:
    _, url = server
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=WRONG_TOKEN, HYBRIDGEN_LOG="DEBUG")
    t0 = time.monotonic()
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), "--json", env=env)
    assert proc.returncode == 2, proc.stderr  # bad configuration, as --help says
    assert time.monotonic() - t0 < 10
    assert "SUPERDUPERAI_TOKEN" in proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert result["reason"].count("start request") == 1, result["reason"]
    assert (result["state"], result["path"]) == ("failed", None)
    for text in (proc.stdout, proc.stderr):
        assert WRONG_TOKEN not in text
        assert SERVER_TOKEN not in text
    assert "embedded emulator" not in proc.stderr


def test_right_token_succeeds_without_showing_it(
    tmp_path: Path, server: tuple[Running, str]
) -> None:
    process, url = server
    out = tmp_path / "f.png"
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=SERVER_TOKEN)
    proc = run("generate", "a fox", "--out", str(out), "--json", "-v", *FAST, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" in proc.stderr  # -v did turn debug logging on
    result = json_lines(proc.stdout)[-1]
    assert result["state"] == "done"
    assert result["url"].startswith("http://127.0.0.1:") and not result["url"].startswith(url)
    assert_png(out)
    for text in (proc.stdout, proc.stderr, "".join(process.stderr), "".join(process.stdout)):
        assert SERVER_TOKEN not in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_its_url_first_and_stops_cleanly(spawn: Any, signum: int) -> None:
    process: Running = spawn("serve", "--port", "0", *FAST)
    url = process.line(timeout=15)
    assert url.startswith("http://127.0.0.1:")
    assert int(url.rsplit(":", 1)[1]) > 0
    process.proc.send_signal(signum)
    assert process.finish(timeout=10) == 0


# -- Ctrl-C, --version, diagram ------------------------------------------------------------------


def test_sigint_cancels_the_generation(tmp_path: Path, spawn: Any) -> None:
    out = tmp_path / "f.png"
    process: Running = spawn("generate", "a fox", "--out", str(out), "--json", "--gen-time", "100")
    first = json.loads(process.line(timeout=15))
    assert (first["event"], first["to"]) == ("transition", "awaiting_ws")
    process.proc.send_signal(signal.SIGINT)
    assert process.finish(timeout=10) == 130
    lines = json_lines("".join(process.stdout))
    result = lines[-1]
    assert result["event"] == "result"
    assert result["state"] == "cancelled"
    assert result["path"] is None
    assert lines[-2]["event"] == "transition"
    assert (lines[-2]["to"], lines[-2]["trigger"]) == ("cancelled", "cancel")
    assert not out.exists()


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("hybridgen ")
    module = subprocess.run(
        [sys.executable, "-m", "hybridgen", "--version"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert module.returncode == 0
    assert module.stdout == proc.stdout


def test_diagram(tmp_path: Path) -> None:
    proc = run("diagram", "--format", "mermaid")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("stateDiagram-v2")
    target = tmp_path / "machine.dot"
    proc = run("diagram", "--format", "dot", "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text().startswith("digraph")
    assert run("diagram", "--format", "png").returncode == 2


def test_start_faults_from_serve_and_the_start_options(tmp_path: Path, spawn: Any) -> None:
    """`serve --start-fault 429` once: generate waits Retry-After, sends it again, is done
    (in the seed-era body form); with 524 it fails saying the job may exist, unless opted in."""
    token = "tok-start-faults-123"
    process: Running = spawn(
        "serve", "--token", token, "--start-fault", "429", "--start-faults", "1",
        "--retry-after", "0.2", *FAST,
    )  # fmt: skip
    url = process.line(timeout=15)
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=token)
    out = tmp_path / "f.png"
    args = ["--out", str(out), "--json", *FAST]
    proc = run("generate", "a fox", "--body-form", "legacy", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    retries = [line for line in lines if line["event"] == "retry"]
    assert [(r["what"], r["delay"]) for r in retries[:1]] == [("start", 0.2)]
    assert lines[-1]["state"] == "done"
    assert_png(out)

    put = {"gen_time": 0.1, "start_fault": "524", "start_faults": 1}
    auth = {"Authorization": f"Bearer {token}"}
    httpx.put(f"{url}/_emulator/faults", json=put, headers=auth, timeout=10).raise_for_status()
    proc = run("generate", "a fox", *args, env=env)
    assert proc.returncode == 1
    assert "(Cloudflare origin timeout); the job may exist" in json_lines(proc.stdout)[-1]["reason"]
    assert "<html" not in proc.stdout + proc.stderr

    httpx.put(f"{url}/_emulator/faults", json=put, headers=auth, timeout=10).raise_for_status()
    proc = run("generate", "a fox", "--retry-unsafe-starts", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    stats = httpx.get(f"{url}/_emulator/stats", headers=auth, timeout=10).json()
    assert stats["start_fault"] == 3
