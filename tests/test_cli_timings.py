"""First contact with the command's timings: one emulator job length, an honest ``--time-scale``
against a real server, and remarks that describe normal progress as normal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cli_support import Running, clean_env, json_lines, needs_command, run, unwrap
from hybridgen.cli import policy_from_options
from hybridgen.emulator.model import Faults
from hybridgen.machine import Trigger
from hybridgen.policy import Policy
from hybridgen.testing import Scenario, run_scenario

SCALE = 0.02
TOKEN = "tok-TimingsSecret-4242"


def test_keep_bounds_scales_the_waits_but_not_the_deadline() -> None:
    preset = Policy.default()
    kept = policy_from_options("default", time_scale=0.1, keep_bounds=True)
    assert kept.deadline == preset.deadline
    assert kept.request_timeout == preset.request_timeout
    assert kept.push_timeout == pytest.approx(preset.push_timeout * 0.1)
    assert kept.poll_interval == pytest.approx(preset.poll_interval * 0.1)
    scaled = policy_from_options("default", time_scale=0.1)
    assert scaled.deadline == pytest.approx(preset.deadline * 0.1)
    explicit = policy_from_options("default", time_scale=0.1, deadline=7.0, keep_bounds=True)
    assert explicit.deadline == 7.0
    bounded = policy_from_options("default", time_scale=0.1, request_timeout=0.5, keep_bounds=True)
    assert bounded.request_timeout == 0.5 and bounded.deadline == preset.deadline


@needs_command
def test_serve_and_the_embedded_emulator_share_one_job_length(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    gen_help = run("generate", "--help").stdout
    serve_help = run("serve", "--help").stdout
    job = Faults().gen_time  # the model's default: about a real job's length
    assert f"default {job:g} s, scaled" in " ".join(gen_help.split())
    assert f"default {job:g} s, scaled" in " ".join(serve_help.split())

    server = spawn("serve", "--port", "0", "--time-scale", str(SCALE))
    server.line(timeout=15)
    server.proc.terminate()
    server.finish(timeout=10)
    assert f"generation {job * SCALE:g} s" in "".join(server.stderr)

    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--json", "--time-scale", str(SCALE))
    assert proc.returncode == 0, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert result["state"] == "done"
    assert result["elapsed"] >= job * SCALE  # the job was not ready before its scaled length


@needs_command
def test_time_scale_against_a_server_says_what_it_scaled(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    server = spawn("serve", "--port", "0", "--token", TOKEN, "--time-scale", str(SCALE))
    url = server.line(timeout=15)
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=TOKEN)
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--json", "--time-scale", "0.1", env=env)
    assert proc.returncode == 0, proc.stderr
    preset = Policy.default()
    note = " ".join(proc.stderr.split())
    assert f"push_timeout {preset.push_timeout * 0.1:g} s" in note
    assert f"deadline {preset.deadline:g} s and request_timeout" in note
    assert "not scaled" in note and "--deadline" in note
    # without --time-scale there is nothing to explain
    plain = run("generate", "a fox", "--out", str(out), "--json", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "--time-scale" not in plain.stderr


@needs_command
def test_the_fallback_to_polling_reads_as_progress(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    proc = run(
        *("generate", "a fox", "--out", str(out), "--ws-mode", "silent"),
        # 1.2 s, not the scaled 0.04 s: time for the SSE stream to connect on a loaded machine
        # (0.3 s was not always), before the job (1.8 s, given unscaled) is ready
        *("--time-scale", str(SCALE), "--push-timeout", "1.2", "--gen-time", "1.8"),
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in unwrap(proc.stderr) if "(ws_timeout)" in line)
    assert line.endswith("no result by push after 1.2 s; polling too, still listening on sse")


def test_the_seed_fallback_says_the_socket_closed() -> None:
    trace = run_scenario(Scenario(faults=Faults(ws_mode="silent"), policy=Policy.seed()))
    (fallback,) = [t for t in trace.transitions if t.trigger is Trigger.WS_TIMEOUT]
    assert fallback.detail == "no result by push after 30 s; polling instead, websocket closed"
