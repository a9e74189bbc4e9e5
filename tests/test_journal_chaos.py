"""Chaos across real processes: signals, a journal locked, full or read-only, rival resumers.

Every client is the installed ``hybridgen`` command in its own process; the server is the embedded
emulator or a ``hybridgen serve`` process; the journal's lock is held by yet another process.
Every wait has a deadline (no sleeps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import sqlite_faults
from cli_support import (
    Running,
    assert_png,
    clean_env,
    emulator_stats,
    is_start,
    json_lines,
    needs_command,
    serve_emulator,
)
from hybridgen.journal import SQLiteJournal

TOKEN = "tok-Journal-Chaos-77Zq"

pytestmark = needs_command


def entries(path: Path) -> dict[str, tuple[str, str | None]]:
    """Each journalled generation's ``(state, delivered_to)``, read by a fresh journal."""
    journal = SQLiteJournal(path)
    try:
        return {e.id: (e.state.value, e.delivered_to) for e in journal.entries()}
    finally:
        journal.close()


def terminal_counts(path: Path) -> dict[str, int]:
    """How many terminal transitions each generation has in the journal."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT generation_id, COUNT(*) FROM transitions "
            "WHERE dest IN ('done', 'failed', 'cancelled') GROUP BY generation_id"
        ).fetchall()
    finally:
        db.close()
    return dict(rows)


def results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "result"]


def fresh_journal(tmp_path: Path) -> Path:
    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    return path


# -- SIGTERM and SIGHUP end a run like Ctrl-C ----------------------------------------------------


def test_sigterm_cancels_generate_prints_the_result_and_marks_the_journal(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    journal = tmp_path / "j.sqlite"
    client = spawn(
        *("generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json"),
        *("--journal", str(journal), "--gen-time", "100"),
    )
    started = client.until(is_start)
    client.proc.send_signal(signal.SIGTERM)
    assert client.finish(timeout=15) == 130
    last = json_lines("".join(client.stdout))[-1]
    assert (last["event"], last["state"]) == ("result", "cancelled")
    assert last["reason"] == "interrupted (SIGTERM)"
    assert entries(journal) == {started["id"]: ("cancelled", None)}
    assert terminal_counts(journal) == {started["id"]: 1}


def test_sighup_cancels_every_item_of_a_batch(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    (tmp_path / "p.txt").write_text("a\nb\n")
    journal = tmp_path / "j.sqlite"
    client = spawn(
        *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out")),
        *("--json", "--concurrency", "2", "--gen-time", "100", "--journal", str(journal)),
    )
    first = client.until(is_start)
    client.until(lambda line: is_start(line) and line["id"] != first["id"])
    client.proc.send_signal(signal.SIGHUP)
    assert client.finish(timeout=15) == 130
    lines = json_lines("".join(client.stdout))
    assert [(r["state"], r["reason"]) for r in results(lines)] == [
        ("cancelled", "interrupted (SIGHUP)")
    ] * 2
    assert (lines[-1]["event"], lines[-1]["cancelled"]) == ("batch", 2)
    assert sorted(state for state, _ in entries(journal).values()) == ["cancelled"] * 2


def test_sigterm_cancels_resume(tmp_path: Path, spawn: Callable[..., Running]) -> None:
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "100")
    journal = tmp_path / "j.sqlite"
    crashed = spawn(
        *("generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json"),
        *("--journal", str(journal)),
        env=env,
    )
    started = crashed.until(is_start)
    crashed.proc.send_signal(signal.SIGKILL)
    assert crashed.finish(timeout=10) == -signal.SIGKILL
    resumer = spawn("resume", "--journal", str(journal), "--json", env=env)
    assert resumer.until(is_start)["id"] == started["id"]
    resumer.proc.send_signal(signal.SIGTERM)
    assert resumer.finish(timeout=15) == 130
    lines = json_lines("".join(resumer.stdout))
    (result,) = results(lines)
    assert (result["state"], result["reason"]) == ("cancelled", "interrupted (SIGTERM)")
    assert lines[-1]["event"] == "batch"
    assert entries(journal) == {started["id"]: ("cancelled", None)}
    assert emulator_stats(url, TOKEN)["start"] == 1


# -- the journal breaks; the generation does not -----------------------------------------------


def test_journal_locked_by_another_process_while_the_job_runs(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """The lock is let go before the run ends: every write waits, none is lost."""
    journal, out = fresh_journal(tmp_path), tmp_path / "fox.png"
    with sqlite_faults.lock_held(journal):
        client = spawn(
            *("generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal)),
            *("--gen-time", "0.5"),
        )
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < 2:  # the job ends done while the journal waits (in either order)
            line = client.until(lambda line: line["event"] in ("journal", "transition"))
            if line["event"] == "journal" or line["to"] == "done":
                seen[line["event"]] = line
        assert (seen["journal"]["lost"], seen["journal"]["operation"]) == (False, "begin")
    assert client.finish(timeout=30) == 0, "".join(client.stderr)
    last = json_lines("".join(client.stdout))[-1]
    assert (last["event"], last["state"], last["path"]) == ("result", "done", str(out))
    assert_png(out)
    assert entries(journal) == {last["id"]: ("done", str(out))}
    assert "not recorded" not in "".join(client.stderr)


def test_journal_locked_for_the_whole_run(tmp_path: Path, spawn: Callable[..., Running]) -> None:
    """The lock outlives the run and its --journal-wait. The job ends done and saved; the
    journal's bounded wait gives up and says so, in the result line and the exit code (4);
    nothing is recorded as failed."""
    journal, out = fresh_journal(tmp_path), tmp_path / "fox.png"
    with sqlite_faults.lock_held(journal):
        client = spawn(
            *("generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal)),
            *("--gen-time", "0.5", "--journal-wait", "0.5"),
        )
        assert client.finish(timeout=60) == 4, "".join(client.stderr)
    lines = json_lines("".join(client.stdout))
    assert (lines[-1]["event"], lines[-1]["state"], lines[-1]["saved"]) == ("result", "done", True)
    assert lines[-1]["journal_lost"] > 0
    assert "waiting up to 0.5 s" in "".join(client.stderr)
    assert_png(out)
    journal_lines = [line for line in lines if line["event"] == "journal"]
    assert journal_lines and not journal_lines[0]["lost"]
    assert "write(s) to" in "".join(client.stderr) and "not recorded" in "".join(client.stderr)
    assert "failed" not in {state for state, _ in entries(journal).values()}


@pytest.mark.parametrize(
    ("kind", "message"),
    [("full", "database or disk is full"), ("readonly", "attempt to write a readonly database")],
)
def test_journal_on_a_broken_disk(
    tmp_path: Path, spawn: Callable[..., Running], kind: str, message: str
) -> None:
    """Every write fails (SQLite's own errors): the job still ends done and saved, exit 0."""
    journal, out = fresh_journal(tmp_path), tmp_path / "fox.png"
    env = sqlite_faults.child_env(clean_env(), kind)
    client = spawn(
        *("generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal)),
        *("--gen-time", "0.5"),
        env=env,
    )
    assert client.finish(timeout=30) == 4, "".join(client.stderr)  # saved; journal incomplete
    lines = json_lines("".join(client.stdout))
    assert (lines[-1]["event"], lines[-1]["state"]) == ("result", "done")
    # every lost write shown as it happened, plus the lease release at the end
    assert lines[-1]["journal_lost"] == 1 + len([ln for ln in lines if ln["event"] == "journal"])
    assert_png(out)
    lost = [line for line in lines if line["event"] == "journal"]
    assert {line["operation"] for line in lost} >= {"begin", "record"}
    assert all(line["lost"] and message in line["reason"] for line in lost)
    assert "not recorded" in "".join(client.stderr)
    assert entries(journal) == {}  # nothing written at all, in particular no failure


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs mounted at ``where`` (skips the test where mounting is not allowed)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False, timeout=30)


def fill(directory: Path) -> None:
    """Write a file in ``directory`` until its file system has no space left."""

    def grow(f: BinaryIO) -> None:
        while True:
            f.write(b"\0" * 4096)
            os.fsync(f.fileno())

    with pytest.raises(OSError, match="No space left"), open(directory / "fill", "wb", 0) as f:
        grow(f)


def test_journal_on_a_file_system_that_fills_up(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """A real full disk (a small tmpfs, filled once the job runs): done, saved, exit 0."""
    out = tmp_path / "fox.png"
    with small_filesystem(tmp_path / "small") as small:
        journal = fresh_journal(small)
        client = spawn(
            *("generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal)),
            *("--gen-time", "3", "--ws-mode", "silent"),
        )
        client.until(is_start)
        fill(small)
        assert client.finish(timeout=60) == 4, "".join(client.stderr)  # the journal is incomplete
        lines = json_lines("".join(client.stdout))
        assert (lines[-1]["event"], lines[-1]["state"]) == ("result", "done")
        assert_png(out)
        lost = [line for line in lines if line["event"] == "journal"]
        assert lost and all(line["lost"] for line in lost)
        assert any("disk is full" in line["reason"] for line in lost)
        assert "not recorded" in "".join(client.stderr)
        assert "failed" not in {state for state, _ in entries(journal).values()}


# -- rival resumers --------------------------------------------------------------------------------


def test_resumers_race_a_live_batch_then_a_killed_one(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """Two resumers beside a live batch take nothing; beside a SIGKILLed one they share its jobs:
    every job downloaded once, one terminal transition each, no new job on the server."""
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "8")
    jobs = 4
    (tmp_path / "p.txt").write_text("".join(f"prompt {n}\n" for n in range(jobs)))

    def batch(journal: Path, out: Path) -> tuple[Running, set[str]]:
        client = spawn(
            *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json"),
            *("--concurrency", str(jobs), "--journal", str(journal)),
            env=env,
        )
        ids: set[str] = set()
        while len(ids) < jobs:
            ids.add(client.until(is_start, timeout=30)["id"])
        return client, ids

    def resumers(journal: Path) -> list[Running]:
        return [spawn("resume", "--journal", str(journal), "--json", env=env) for _ in range(2)]

    # 1. the batch is alive: both resumers skip every entry, the batch finishes them
    live_journal, live_out = tmp_path / "live.sqlite", tmp_path / "live"
    live, ids = batch(live_journal, live_out)
    for rival in resumers(live_journal):
        # everything skipped is not "all saved": exit 4, and the totals count the skipped
        assert rival.finish(timeout=30) == 4, "".join(rival.stderr)
        assert results(json_lines("".join(rival.stdout))) == []
        assert json_lines("".join(rival.stdout))[-1]["skipped"] == jobs
        assert "".join(rival.stderr).count("still run by process") == jobs
    assert live.proc.poll() is None, "the batch ended before the resumers looked"
    assert live.finish(timeout=60) == 0, "".join(live.stderr)
    assert sorted(p.name for p in live_out.iterdir()) == sorted(
        r["path"].rsplit("/", 1)[1] for r in results(json_lines("".join(live.stdout)))
    )
    assert emulator_stats(url, TOKEN)["download"] == jobs
    assert terminal_counts(live_journal) == dict.fromkeys(ids, 1)

    # 2. the batch is killed mid-way: the two resumers share its jobs, each done exactly once
    dead_journal, dead_out = tmp_path / "dead.sqlite", tmp_path / "dead"
    dead, ids = batch(dead_journal, dead_out)
    dead.proc.send_signal(signal.SIGKILL)
    assert dead.finish(timeout=10) == -signal.SIGKILL
    finished: list[str] = []
    for rival in resumers(dead_journal):
        code = rival.finish(timeout=60)
        skipped = json_lines("".join(rival.stdout))[-1]["skipped"]
        assert code == (4 if skipped else 0), "".join(rival.stderr)  # skipped: the other has it
        for result in results(json_lines("".join(rival.stdout))):
            assert result["state"] == "done"
            assert_png(Path(result["path"]))
            finished.append(result["id"])
    assert sorted(finished) == sorted(ids)  # every job once, by one resumer or the other
    counts = emulator_stats(url, TOKEN)
    assert (counts["start"], counts["download"]) == (2 * jobs, 2 * jobs)
    assert terminal_counts(dead_journal) == dict.fromkeys(ids, 1)
    assert {state for state, _ in entries(dead_journal).values()} == {"done"}
    assert all(where is not None for _, where in entries(dead_journal).values())
