"""Nothing paid for is forgotten: a result done but not saved, a journal held up by another
process past the end of a run, jobs cancelled by Ctrl-C, what ``resume`` prints, ``download``.

The same setting as tests/test_journal_chaos.py: the installed command in real processes against
``hybridgen serve`` or its embedded emulator, no sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_faults
from cli_support import (
    Running,
    assert_png,
    clean_env,
    emulator_stats,
    is_start,
    json_lines,
    needs_command,
    run,
    serve_emulator,
)
from hybridgen import ImageRequest, Policy
from hybridgen.journal import Entry, SQLiteJournal

TOKEN = "tok-Resume-Paid-41Xy"

pytestmark = needs_command


def journal_entries(path: Path) -> dict[str, Entry]:
    journal = SQLiteJournal(path)
    try:
        return {e.id: e for e in journal.entries()}
    finally:
        journal.close()


def results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "result"]


# -- done but not saved ---------------------------------------------------------------------------


def test_a_result_done_but_not_saved_is_distinct_and_resume_downloads_it_again(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """The CDN sends an error page: exit 3, ``"saved": false`` with the URL kept, the journal
    keeps it pending with the URL and why; ``resume`` downloads again and starts no job."""
    url, env = serve_emulator(spawn, TOKEN, "--file-mode", "html", "--gen-time", "0.5")
    out, journal = tmp_path / "fox.png", tmp_path / "j.sqlite"
    proc = run(
        *("generate", "a red fox", "--out", str(out), "--json", "--journal", str(journal)), env=env
    )
    assert proc.returncode == 3, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert (result["state"], result["saved"], result["path"]) == ("done", False, None)
    assert result["url"] and result["journal_lost"] == 0
    assert "done but not saved" in proc.stderr and "hybridgen download" in proc.stderr
    (entry,) = journal_entries(journal).values()
    assert entry.unsaved and entry.url == result["url"] and "not an image" in entry.reason

    again = run("resume", "--journal", str(journal), "--json", env=env)
    assert again.returncode == 3, again.stderr  # the CDN still sends its page
    (retry,) = results(json_lines(again.stdout))
    assert (retry["id"], retry["saved"], retry["url"]) == (entry.id, False, entry.url)
    assert json_lines(again.stdout)[-1]["unsaved"] == 1
    counts = emulator_stats(url, TOKEN)
    assert (counts["start"], counts["download"]) == (1, 2)  # downloaded again, no new job
    assert not out.exists()


def test_download_saves_a_finished_result_by_file_id_or_url(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "0.2")
    made = run("generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json", env=env)
    assert made.returncode == 0, made.stderr
    first = json_lines(made.stdout)[-1]
    file_id = first["url"].rsplit("/", 1)[1].split(".")[0]

    by_id = run("download", file_id, "--out", str(tmp_path / "by-id.png"), "--json", env=env)
    assert by_id.returncode == 0, by_id.stderr
    line = json_lines(by_id.stdout)[-1]
    assert (line["state"], line["saved"], line["url"]) == ("done", True, first["url"])
    assert_png(tmp_path / "by-id.png")
    # a URL needs no server configuration at all (and no token is sent with it)
    by_url = run("download", first["url"], "--out", str(tmp_path / "by-url.png"))
    assert by_url.returncode == 0, by_url.stderr
    assert by_url.stdout.strip() == str(tmp_path / "by-url.png")
    assert_png(tmp_path / "by-url.png")
    assert emulator_stats(url, TOKEN)["start"] == 1
    for text in (by_id.stdout, by_id.stderr, by_url.stdout, by_url.stderr):
        assert TOKEN not in text


def test_download_says_when_the_job_is_not_done_and_what_it_needs(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "100")
    journal = tmp_path / "j.sqlite"
    running = spawn(
        *("generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json"),
        *("--journal", str(journal)),
        env=env,
    )
    started = running.until(is_start)  # its file id is in the journal before this line
    file_id = journal_entries(journal)[started["id"]].file_id
    assert file_id is not None
    early = run("download", file_id, "--out", str(tmp_path / "early.png"), env=env)
    assert early.returncode == 1, early.stderr
    assert f"file {file_id} is not done yet" in early.stderr
    assert not (tmp_path / "early.png").exists()
    unknown = run("download", "no-such-file", "--out", str(tmp_path / "x.png"), env=env)
    assert unknown.returncode == 1 and "404" in unknown.stderr
    # a file id names a job on a server: without SUPERDUPERAI_URL it is bad usage
    alone = run("download", file_id, "--out", str(tmp_path / "x.png"))
    assert alone.returncode == 2 and "SUPERDUPERAI_URL" in alone.stderr
    assert emulator_stats(url, TOKEN)["start"] == 1


# -- the journal never turns a saved result into a restart ----------------------------------------


def test_a_journal_locked_past_the_end_of_a_batch_loses_nothing(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """The issue's measurement: another process holds the journal's lock through a whole batch
    of 3 and past its end. The run waits for its writes (saying so) instead of dropping them;
    once the lock goes every row is there, done and delivered, and resume has nothing to do."""
    journal, out = tmp_path / "j.sqlite", tmp_path / "out"
    SQLiteJournal(journal).close()
    (tmp_path / "p.txt").write_text("a fox\na cat\nan owl\n")
    with sqlite_faults.lock_held(journal):
        batch = spawn(
            *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json"),
            *("--journal", str(journal), "--gen-time", "0.3", "--concurrency", "3"),
        )
        while "waiting up to 30 s for writes" not in batch.err_line(timeout=60):
            pass  # every item is saved by now; the journal's writes still wait
        assert len([p for p in out.iterdir() if p.suffix == ".png"]) == 3
    assert batch.finish(timeout=60) == 0, "".join(batch.stderr)
    last = json_lines("".join(batch.stdout))[-1]
    assert (last["event"], last["done"], last["journal_lost"]) == ("batch", 3, 0)
    saved = {r["id"]: r["path"] for r in results(json_lines("".join(batch.stdout)))}
    entries = journal_entries(journal)
    assert {e.id: (e.state.value, e.delivered_to) for e in entries.values()} == {
        gen_id: ("done", str(Path(path).resolve())) for gen_id, path in saved.items()
    }
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9", SUPERDUPERAI_TOKEN=TOKEN)
    resumed = run("resume", "--journal", str(journal), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing to resume" in resumed.stderr and "start it again" not in resumed.stderr


def test_resume_never_restarts_an_entry_whose_image_was_saved(tmp_path: Path) -> None:
    """An entry the journal left at ``requested`` (no file id) whose image exists, written
    after its start: reported saved, never "start it again" (that would bill it twice)."""
    journal, out = tmp_path / "j.sqlite", tmp_path / "fox.png"
    db = SQLiteJournal(journal)
    db.begin("feedface00000000", ImageRequest(prompt="a fox"), Policy.default(), time.time() - 5,
             {"out": str(out)})  # fmt: skip
    db.close()
    out.write_bytes(b"\x89PNG\r\n\x1a\n")  # the image the journal never heard of
    env = clean_env(SUPERDUPERAI_URL="http://127.0.0.1:9", SUPERDUPERAI_TOKEN=TOKEN)
    proc = run("resume", "--journal", str(journal), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    (result,) = results(json_lines(proc.stdout))
    assert (result["state"], result["path"], result["saved"]) == ("done", str(out), True)
    assert "journal missed the end" in result["reason"]
    assert journal_entries(journal)["feedface00000000"].needs_work is False


# -- Ctrl-C, then resume --------------------------------------------------------------------------


def test_resume_offers_and_finishes_the_jobs_a_ctrl_c_cancelled(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "3")
    (tmp_path / "p.txt").write_text("a fox\na cat\n")
    journal, out = tmp_path / "j.sqlite", tmp_path / "out"
    batch = spawn(
        *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(out), "--json"),
        *("--journal", str(journal), "--concurrency", "2"),
        env=env,
    )
    first = batch.until(is_start)
    batch.until(lambda line: is_start(line) and line["id"] != first["id"])
    batch.proc.send_signal(signal.SIGINT)
    assert batch.finish(timeout=15) == 130

    plain = run("resume", "--journal", str(journal), "--json", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "2 generation(s) were cancelled after the server started them" in plain.stderr
    assert "--include-cancelled" in plain.stderr
    assert results(json_lines(plain.stdout)) == []

    finish = run("resume", "--journal", str(journal), "--include-cancelled", "--json", env=env)
    assert finish.returncode == 0, finish.stderr
    done = results(json_lines(finish.stdout))
    assert sorted((r["state"], r["saved"]) for r in done) == [("done", True)] * 2
    for line in done:
        assert_png(Path(line["path"]))
    counts = emulator_stats(url, TOKEN)
    assert counts["start"] == 2  # no new job: the cancelled ones were followed by file id
    ended = journal_entries(journal).values()
    assert {(e.state.value, e.delivered_to is not None) for e in ended} == {("done", True)}
    again = run("resume", "--journal", str(journal), "--include-cancelled", env=env)
    assert again.returncode == 0 and "nothing to resume" in again.stderr


# -- what resume prints ---------------------------------------------------------------------------


def test_resume_output_tags_every_line_and_agrees_with_its_summary(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    """Issue 26 item 11: no ``[?]`` lines, times counted from the resume (none beyond its
    total), and the paths as the batch printed them (relative to where it ran)."""
    url, env = serve_emulator(spawn, TOKEN, "--gen-time", "4")
    (tmp_path / "p.txt").write_text("a fox\na cat\n")
    batch = spawn(
        *("generate", "--batch", "p.txt", "--out", "imgs", "--json", "--journal", "j.sqlite"),
        env=env,
        cwd=tmp_path,
    )
    first = batch.until(is_start)
    batch.until(lambda line: is_start(line) and line["id"] != first["id"])
    batch.until(lambda line: line.get("trigger") == "ws_timeout")  # 2 s into the jobs
    batch.proc.send_signal(signal.SIGKILL)
    assert batch.finish(timeout=10) == -signal.SIGKILL
    resumer = spawn("resume", "--journal", "j.sqlite", env=env, cwd=tmp_path)
    assert resumer.finish(timeout=30) == 0, "".join(resumer.stderr)
    stderr = "".join(resumer.stderr)
    assert "[?]" not in stderr
    times = [float(t) for t in re.findall(r"^\s*(\d+\.\d+)s  \[\d\] ", stderr, re.MULTILINE)]
    (total,) = re.findall(r"cancelled in (\d+\.\d+)s", stderr)
    assert times and max(times) <= float(total)
    assert sorted("".join(resumer.stdout).split()) == [
        os.path.join("imgs", "001-a-fox.png"),
        os.path.join("imgs", "002-a-cat.png"),
    ]
    assert "following file" in stderr
    assert emulator_stats(url, TOKEN)["start"] == 2
