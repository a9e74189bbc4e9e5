"""``hybridgen generate --batch``, ``--journal`` and ``hybridgen resume``, run as subprocesses.

Real loopback sockets throughout: the embedded emulator or a ``hybridgen serve`` subprocess. Output
is read line by line by threads, and every wait has a deadline (no sleeps).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cli_support import (
    BIN,
    RUN_TIMEOUT,
    Running,
    assert_png,
    clean_env,
    emulator_stats,
    flat,
    is_start,
    json_lines,
    needs_command,
    run,
    run_on_terminal,
    serve_emulator,
)
from hybridgen import cli
from hybridgen.api import ImageRequest
from hybridgen.journal import SQLiteJournal
from hybridgen.policy import Policy

TOKEN = "tok-Bt7BatchSecretQq55"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST2 = ("--time-scale", "0.02", "--concurrency", "2")

pytestmark = needs_command


def serve(spawn: Callable[..., Running], *args: str) -> tuple[str, dict[str, str]]:
    """Start ``hybridgen serve --token TOKEN ARGS``; its URL and a client environment for it."""
    return serve_emulator(spawn, TOKEN, *args)


def stats(url: str) -> dict[str, int]:
    return emulator_stats(url, TOKEN)


def put_faults(url: str, **faults: object) -> None:
    reply = httpx.put(f"{url}/_emulator/faults", json=faults, headers=AUTH, timeout=10)
    reply.raise_for_status()


# -- batches on the embedded emulator ------------------------------------------------------------


def test_batch_of_five_saves_five_pngs(tmp_path: Path) -> None:
    prompts = ["a red fox", "a blue whale", "Ça et là!", "a red fox", "  a cat on a mat  "]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts[:2]) + "\n\n" + "\n".join(prompts[2:]))
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    proc = run(
        "generate",
        "--batch",
        str(tmp_path / "prompts.txt"),
        "--out",
        str(out),
        "--json",
        "--concurrency",
        "2",
        "--time-scale",
        "0.02",
        "--journal",
        str(journal),
    )
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    assert lines[-1]["event"] == "batch"
    assert (lines[-1]["done"], lines[-1]["failed"], lines[-1]["cancelled"]) == (5, 0, 0)
    results = [line for line in lines if line["event"] == "result"]
    assert sorted(r["index"] for r in results) == [1, 2, 3, 4, 5]
    assert all(r["state"] == "done" and r["reason"] is None for r in results)
    by_index = {r["index"]: r for r in results}
    assert [by_index[i]["prompt"] for i in range(1, 6)] == [p.strip() for p in prompts]
    assert Path(by_index[3]["path"]).name == "003-ca-et-la.png"
    assert Path(by_index[5]["path"]).name == "005-a-cat-on-a-mat.png"
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(Path(r["path"]).name for r in results)
    assert all(re.fullmatch(r"00[1-5]-[a-z0-9-]+\.png", name) for name in files)
    for r in results:
        assert_png(Path(r["path"]))
    # every event line names its item, and never more than 2 items run at once
    ids = {r["id"] for r in results}
    running: set[str] = set()
    for line in lines[:-1]:
        assert line["id"] in ids
        if line["event"] == "transition":
            running.add(line["id"])
            assert len(running) <= 2
            if line["to"] in ("done", "failed", "cancelled"):
                running.discard(line["id"])
    # --journal: every item recorded and marked delivered to its file
    db = SQLiteJournal(journal)
    try:
        entries = db.entries()
        assert {e.id for e in entries} == ids
        assert db.pending() == []
        assert {e.meta["out"] for e in entries} == {str(Path(r["path"]).resolve()) for r in results}
    finally:
        db.close()


@pytest.fixture
def in_process() -> Iterator[None]:
    """``cli.main`` sets up logging on the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_an_invalid_line_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a red fox\n\n" + "x" * 4001 + "\na cat\n")
    out = tmp_path / "out"
    proc = run("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json")
    assert proc.returncode == 2, proc.stderr
    assert "line 3" in proc.stderr and "prompt" in proc.stderr and "4000" in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()  # checked before anything ran or was created


@pytest.mark.parametrize("bad", [b"a \x07 bell", b"\xff\xfe", b"a\x1bb"])
@pytest.mark.usefixtures("in_process")
def test_other_invalid_lines_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bytes
) -> None:
    (tmp_path / "p.txt").write_bytes(b"a red fox\r\n  \r\n" + bad + b"\r\na cat\r\n")
    out = tmp_path / "out"
    assert cli.main(["generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "line 3: the prompt " in flat(captured.err) and captured.out == ""
    assert not out.exists()


def test_prompts_from_stdin(tmp_path: Path) -> None:
    assert BIN is not None
    out = tmp_path / "out"
    proc = subprocess.run(
        [BIN, "generate", "--batch", "-", "--out", str(out), "--time-scale", "0.02"],
        input="one fox\ntwo foxes\n",
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == [
        str(out / "001-one-fox.png"),
        str(out / "002-two-foxes.png"),
    ]
    assert "2 done, 0 failed, 0 cancelled" in proc.stderr


def test_live_batch_view_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal: the aggregate view and a line per item; paths still on stdout."""
    assert BIN is not None
    (tmp_path / "p.txt").write_text("a fox\na whale\na cat\n")
    out = tmp_path / "out"
    code, stdout, terminal = run_on_terminal(
        "generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), *FAST2, columns=160
    )
    assert code == 0, terminal
    names = ["001-a-fox.png", "002-a-whale.png", "003-a-cat.png"]
    assert sorted(stdout.split()) == [str(out / name) for name in names]
    for index in (1, 2, 3):
        assert f"[{index}] done via" in terminal
    assert "3 done, 0 failed, 0 cancelled" in terminal
    assert "[green]" not in terminal  # markup is rendered, not shown


@pytest.mark.parametrize(
    "args",
    [
        [],  # neither PROMPT nor --batch
        ["a fox", "--batch", "-"],  # both
        ["a fox", "--concurrency", "2"],  # batch options without --batch
        ["--batch", "-", "--concurrency", "0"],
        ["--batch", "-", "--trace"],
    ],
)
@pytest.mark.usefixtures("in_process")
def test_batch_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert cli.main(["generate", *args, "--out", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- against `hybridgen serve` ---------------------------------------------------------------------


def test_one_failed_item_does_not_stop_the_others(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """Exactly the second of three items fails: jobs take their faults when they are created.

    With ``--concurrency 1`` the items run one after the other. As soon as item 1's job exists
    (its ``start`` transition), the server is switched to failing new jobs (``job_fails``); item 2
    is created only when item 1 ends, 1.5 s later, so it gets the fault; as soon as item 2's job
    exists, the switch goes back, so item 3's job succeeds.
    """
    url, env = serve(spawn, "--time-scale", "0.02", "--gen-time", "1.5")
    gen_time = 1.5 / 0.02  # the control API takes durations before time scaling
    (tmp_path / "p.txt").write_text("first fox\nsecond fox\nthird fox\n")
    out = tmp_path / "out"
    client = spawn(
        "generate",
        *("--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json", "--concurrency", "1"),
        env=env,
    )
    first = client.until(is_start)
    # a PUT replaces every switch: keep today's API (SSE pushing), else items 2 and 3 poll
    put_faults(url, gen_time=gen_time, sse_mode="normal", job_fails=True)
    second = client.until(lambda line: is_start(line) and line["id"] != first["id"])
    put_faults(url, gen_time=gen_time, sse_mode="normal")
    assert client.finish(timeout=30) == 1, "".join(client.stderr)
    lines = json_lines("".join(client.stdout))
    results = {r["index"]: r for r in lines if r["event"] == "result"}
    assert [results[i]["state"] for i in (1, 2, 3)] == ["done", "failed", "done"]
    assert results[2]["id"] == second["id"] and results[2]["path"] is None
    assert "failed" in results[2]["reason"]
    assert lines[-1] | {"elapsed": 0} == {
        "event": "batch",
        "done": 2,
        "failed": 1,
        "cancelled": 0,
        "unsaved": 0,
        "elapsed": 0,
    }
    assert sorted(p.name for p in out.iterdir()) == ["001-first-fox.png", "003-third-fox.png"]
    assert "[2] failed" in "".join(client.stderr)
    assert stats(url)["start"] == 3
    for text in (*client.stdout, *client.stderr):
        assert TOKEN not in text


def test_fail_fast_stops_the_rest(tmp_path: Path, spawn: Callable[..., Running]) -> None:
    url, env = serve(spawn, "--time-scale", "0.02", "--gen-time", "0.5")
    put_faults(url, gen_time=0.5 / 0.02, job_fails=True)
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    proc = run(
        *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out")),
        *("--json", "--concurrency", "1", "--fail-fast"),
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    lines = json_lines(proc.stdout)
    results = {r["index"]: r for r in lines if r["event"] == "result"}
    assert [results[i]["state"] for i in (1, 2, 3)] == ["failed", "cancelled", "cancelled"]
    assert "fail_fast" in results[2]["reason"]
    assert (lines[-1]["done"], lines[-1]["failed"], lines[-1]["cancelled"]) == (0, 1, 2)
    assert stats(url)["start"] == 1  # the others were never sent


def test_sigint_cancels_every_running_item(tmp_path: Path, spawn: Callable[..., Running]) -> None:
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    out = tmp_path / "out"
    client = spawn(
        *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json"),
        *("--concurrency", "2", "--gen-time", "100"),
    )
    first = client.until(is_start)
    client.until(lambda line: is_start(line) and line["id"] != first["id"])
    client.proc.send_signal(signal.SIGINT)
    assert client.finish(timeout=15) == 130
    lines = json_lines("".join(client.stdout))
    results = {r["index"]: r for r in lines if r["event"] == "result"}
    assert [results[i]["state"] for i in (1, 2, 3)] == ["cancelled"] * 3
    assert results[1]["reason"] == results[2]["reason"] == "interrupted (SIGINT)"
    assert results[3]["id"] is None and "not run" in results[3]["reason"]
    assert (lines[-1]["event"], lines[-1]["cancelled"]) == ("batch", 3)
    assert not out.exists() or list(out.iterdir()) == []


# -- resume after a crash --------------------------------------------------------------------------


def test_resume_after_sigkill_delivers_once(tmp_path: Path, spawn: Callable[..., Running]) -> None:
    """The issue's test: kill the client mid-generation; ``resume`` finishes it, no new job."""
    url, env = serve(spawn, "--time-scale", "0.05", "--gen-time", "2")
    out, journal = tmp_path / "fox.png", tmp_path / "j.sqlite"
    client = spawn(
        "generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal), env=env
    )
    started = client.until(is_start)  # the job exists on the server
    client.proc.send_signal(signal.SIGKILL)
    assert client.finish(timeout=10) == -signal.SIGKILL
    assert not out.exists()
    db = SQLiteJournal(journal)
    try:
        (entry,) = db.pending()
        assert entry.id == started["id"] and entry.file_id
        assert entry.state.value == "awaiting_ws"
    finally:
        db.close()

    proc = run("resume", "--journal", str(journal), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc.stdout)
    (result,) = [line for line in lines if line["event"] == "result"]
    assert (result["id"], result["state"], result["index"]) == (entry.id, "done", 1)
    assert result["prompt"] == "a red fox"
    assert result["path"] == str(out.resolve())
    assert (lines[-1]["event"], lines[-1]["done"], lines[-1]["failed"]) == ("batch", 1, 0)
    assert not [line for line in lines if is_start(line) and line["id"] != entry.id]
    assert_png(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("fox")] == ["fox.png"]
    counts = stats(url)
    assert (counts["start"], counts["download"]) == (1, 1)

    again = run("resume", "--journal", str(journal), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert [line["event"] for line in json_lines(again.stdout)] == ["batch"]
    assert json_lines(again.stdout)[-1]["done"] == 0
    assert stats(url)["download"] == 1
    for text in (proc.stdout, proc.stderr, again.stdout, again.stderr):
        assert TOKEN not in text


def test_resume_fails_an_entry_the_server_never_named(tmp_path: Path) -> None:
    """Died during the start request: no file id, so resume must not guess (no new job)."""
    journal = tmp_path / "j.sqlite"
    db = SQLiteJournal(journal)
    db.begin("deadbeef00000000", ImageRequest(prompt="a fox"), Policy.default(), 0.0, {"out": "x"})
    db.close()
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9", SUPERDUPERAI_TOKEN=TOKEN)
    proc = run("resume", "--journal", str(journal), "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    (result, total) = json_lines(proc.stdout)
    assert (result["state"], result["id"]) == ("failed", "deadbeef00000000")
    # never "start it again": the start may have reached the server, which may bill the job
    assert "start it again" not in result["reason"] and "not started again" in result["reason"]
    assert "may exist" in result["reason"] and "'a fox'" in result["reason"]
    assert (total["event"], total["failed"]) == ("batch", 1)
    db = SQLiteJournal(journal)
    try:
        assert db.pending() == []
    finally:
        db.close()


@pytest.mark.usefixtures("in_process")
def test_resume_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPERDUPERAI_URL", raising=False)
    assert cli.main(["resume", "--journal", str(tmp_path / "j.sqlite")]) == 2
    assert "SUPERDUPERAI_URL" in capsys.readouterr().err
    monkeypatch.setenv("SUPERDUPERAI_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPERDUPERAI_TOKEN", TOKEN)
    assert cli.main(["resume", "--journal", str(tmp_path / "missing.sqlite")]) == 2
    assert "--journal" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()
