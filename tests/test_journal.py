"""Resume after restart: the journal records each generation; resume() finishes it by file id."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import sqlite_faults
from hybridgen import Client, ImageRequest, Policy, State
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.errors import JournalError, LeaseHeld
from hybridgen.events import Event, JournalWarning, Transition
from hybridgen.journal import LEASE_LOST, JournalFailure, SQLiteJournal
from hybridgen.machine import Trigger
from hybridgen.testing import MemoryTransport


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def unend(path: Path, gen_id: str) -> None:
    """Make an ended entry look like its process was killed while it ran."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE generations SET state = 'polling' WHERE id = ?", (gen_id,))
    db.execute("DELETE FROM transitions WHERE generation_id = ? AND dest = 'cancelled'", (gen_id,))
    db.close()


class Failures:
    """Collects a journal's failure reports (from its writer thread); waits with a deadline."""

    def __init__(self, journal: SQLiteJournal) -> None:
        self.seen: list[JournalFailure] = []
        self._arrived = threading.Condition()
        journal.watch(self._add)

    def _add(self, failure: JournalFailure) -> None:
        with self._arrived:
            self.seen.append(failure)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[JournalFailure]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.seen) >= count, timeout), self.seen
            return list(self.seen)


def request_row(journal: SQLiteJournal, gen_id: str) -> None:
    journal.begin(gen_id, ImageRequest(prompt="a fox"), Policy.default(), time.time(), {})


def transition(gen_id: str, source: State, dest: State, trigger: Trigger) -> Transition:
    return Transition(gen_id, source, dest, trigger, 0.0, time.time(), "", "https://x/1.png")


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()  # the schema exists before any other process touches it
    return path


async def test_journal_records_request_policy_and_path(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    client = Client(
        MemoryTransport(ServerModel(Faults(ws_mode="silent", gen_time=5))), journal=journal
    )
    policy = Policy.default().replace(deadline=60.0)
    request = ImageRequest(prompt="a red fox", seed=7)
    async with trio.open_nursery() as nursery:
        gen = await nursery.start(
            lambda task_status: client.start(
                request, policy=policy, meta={"out": "fox.png"}, task_status=task_status
            )
        )
    (entry,) = journal.entries()
    assert entry.id == gen.id and entry.request == request and entry.policy == policy
    assert entry.state is State.DONE and entry.channel == "polling" and entry.url
    assert entry.file_id == gen.file_id and entry.meta == {"out": "fox.png"}
    assert entry.needs_work  # done, not yet delivered
    journal.delivered(gen.id, "fox.png")
    assert journal.pending() == []
    assert journal.path_of(gen.id) == [
        ("requested", "start", "awaiting_ws"),
        ("awaiting_ws", "ws_timeout", "polling"),
        ("polling", "poll_result", "done"),
    ]


async def test_resume_finishes_without_a_new_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    model = ServerModel(Faults(ws_mode="silent", gen_time=40))
    path = tmp_path / "j.sqlite"
    # the first client dies 10 s in: its process is gone, the journal stays
    first = Client(MemoryTransport(model), journal=SQLiteJournal(path))
    with trio.move_on_after(10):
        await first.generate("a red fox")
    assert first.journal is not None
    first.journal.close()
    # (trio cancellation recorded 'cancelled'; a SIGKILL records nothing: make it look so)
    (crashed,) = SQLiteJournal(path).entries()
    unend(path, crashed.id)
    journal = SQLiteJournal(path)
    (entry,) = journal.pending()
    assert entry.file_id is not None and entry.state is State.POLLING
    second = Client(MemoryTransport(model), journal=journal)
    result = await second.resume(
        entry.file_id,
        entry.request.project_id,
        elapsed=10.0,
        generation_id=entry.id,
        policy=entry.policy,
    )
    assert result.state is State.DONE and result.file_id == entry.file_id
    assert model.counts["start"] == 1  # no second job on the server
    assert result.elapsed == pytest.approx(40.0, abs=entry.policy.poll_interval * 1.1)
    assert journal.entries()[0].state is State.DONE


async def test_resume_respects_the_original_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = ServerModel(Faults(ws_mode="silent", gen_time=500))
    job = model.create(ImageRequest(prompt="x").to_json())
    client = Client(MemoryTransport(model))
    t0 = trio.current_time()
    result = await client.resume(job.id, job.project_id, elapsed=100.0, policy=Policy())
    assert result.state is State.FAILED and "deadline" in result.reason
    assert trio.current_time() - t0 == pytest.approx(20.0)


# -- failures are contained ------------------------------------------------------------------------


def test_writes_queue_while_another_process_holds_the_lock(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, busy_timeout=0.05)
    failures = Failures(journal)
    try:
        with sqlite_faults.lock_held(journal_path):
            request_row(journal, "g1")  # returns although the write cannot happen now
            (waiting,) = failures.wait_for(1)
            assert not waiting.lost and waiting.operation == "begin"
            assert "lock" in waiting.reason
            assert not journal.flush(timeout=0.2)  # still queued, not lost
        assert journal.flush(timeout=20)
        assert [e.id for e in journal.entries()] == ["g1"] and journal.lost == 0
    finally:
        journal.close()


def test_close_gives_up_on_a_lock_within_its_bound(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, busy_timeout=0.05)
    failures = Failures(journal)
    with sqlite_faults.lock_held(journal_path):
        request_row(journal, "g1")
        assert journal.close(timeout=0.3) == 2  # the begin and the lease release
    lost = [f for f in failures.seen if f.lost]
    assert [f.operation for f in lost] == ["begin", "release"]
    assert SQLiteJournal(journal_path).entries() == []


async def test_a_generation_ends_done_under_a_held_lock(
    journal_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = SQLiteJournal(journal_path, busy_timeout=0.05)
    seen: list[Event] = []
    async with Client(MemoryTransport(ServerModel(Faults(gen_time=5))), journal=journal) as client:
        client.subscribe(seen.append)
        with sqlite_faults.lock_held(journal_path):
            result = await client.generate("a red fox")
            assert result.state is State.DONE
            # the warning comes from the writer thread once its first attempt timed out
            await trio.to_thread.run_sync(journal.flush, 0.5)
        warnings = [e for e in seen if isinstance(e, JournalWarning)]
        assert warnings and not warnings[0].lost and warnings[0].operation == "begin"
    # leaving the client flushed the queue: every write landed once the lock was free
    (entry,) = SQLiteJournal(journal_path).entries()
    assert entry.state is State.DONE and journal.lost == 0
    journal.close()


@pytest.mark.parametrize("kind", ["full", "readonly"])
async def test_a_broken_disk_loses_writes_not_the_generation(
    journal_path: Path, autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    sqlite_faults.install(kind, after=1)  # (read-only fails from the first write)
    try:
        journal = SQLiteJournal(journal_path)
    finally:
        sqlite_faults.uninstall()
    seen: list[Event] = []
    async with Client(MemoryTransport(ServerModel(Faults(gen_time=5))), journal=journal) as client:
        client.subscribe(seen.append)
        result = await client.generate("a red fox")
    assert result.state is State.DONE
    warnings = [e for e in seen if isinstance(e, JournalWarning)]
    assert warnings and all(w.lost and w.generation_id == result.generation_id for w in warnings)
    expected = "disk is full" if kind == "full" else "readonly database"
    assert all(expected in w.reason for w in warnings)
    assert journal.lost == len(warnings)
    journal.close()
    entries = SQLiteJournal(journal_path).entries()
    assert all(e.state is not State.FAILED for e in entries)  # never recorded as failed


class RaisingJournal:
    """A journal whose every write raises (a bug in a custom journal)."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> object:
            if name == "watch":
                return lambda: None
            if name == "flush":
                return True
            raise OSError(f"{name}: broken")

        return fail


async def test_a_journal_that_raises_never_fails_the_generation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: Any = RaisingJournal()
    client = Client(MemoryTransport(ServerModel(Faults(gen_time=5))), journal=journal)
    seen: list[Event] = []
    client.subscribe(seen.append)
    result = await client.generate("a red fox")
    assert result.state is State.DONE
    warnings = [e for e in seen if isinstance(e, JournalWarning)]
    moves = [e for e in seen if isinstance(e, Transition)]
    assert [w.operation for w in warnings] == ["begin"] + ["record"] * len(moves)
    assert all(w.lost and "broken" in w.reason for w in warnings)


def test_writes_beyond_the_queue_are_lost_and_counted(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, busy_timeout=0.05, max_queue=3)
    failures = Failures(journal)
    with sqlite_faults.lock_held(journal_path):
        for n in range(6):
            request_row(journal, f"g{n}")
        # one write is in the thread, three wait in the queue, the rest are lost
        lost = [f for f in failures.wait_for(3) if f.lost]
        assert len(lost) >= 2 and all("queue is full" in f.reason for f in lost)
    journal.close()
    assert len(SQLiteJournal(journal_path).entries()) == 6 - journal.lost


def test_a_heartbeat_held_up_by_a_lock_is_reported_but_loses_nothing(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, busy_timeout=0.05, lease=0.15)  # a beat every 0.05 s
    request_row(journal, "g0")
    assert journal.flush(10)
    failures = Failures(journal)
    with sqlite_faults.lock_held(journal_path):
        (beat, *_) = failures.wait_for(1)
    assert beat.operation == "heartbeat" and not beat.lost
    assert "heartbeat waits" in beat.reason
    assert journal.close() == 0  # no write was lost: a missed beat is not a lost row
    assert [e.id for e in SQLiteJournal(journal_path).entries()] == ["g0"]


def raw_file_id(path: Path, gen_id: str) -> str | None:
    """What the file says now, read past the journal object (which would flush first)."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT file_id FROM generations WHERE id = ?", (gen_id,)).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def test_the_file_id_is_on_disk_before_record_returns(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, durable_wait=60)
    request_row(journal, "g1")
    accepted = transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START)
    journal.record("g1", accepted, "f1")
    assert raw_file_id(journal_path, "g1") == "f1"  # a crash from here on cannot lose it
    journal.close()


def test_the_file_id_wait_is_bounded_under_a_lock(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path, durable_wait=0.2)
    with sqlite_faults.lock_held(journal_path):
        request_row(journal, "g1")
        accepted = transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START)
        journal.record("g1", accepted, "f1")  # returns: the lock is not the caller's problem
        assert raw_file_id(journal_path, "g1") is None
    assert journal.flush(timeout=20) and raw_file_id(journal_path, "g1") == "f1"
    journal.close()


# -- leases and the one terminal transition ------------------------------------------------------


def test_a_live_owner_keeps_its_entry(journal_path: Path) -> None:
    mine, other = SQLiteJournal(journal_path), SQLiteJournal(journal_path)
    request_row(mine, "g1")
    assert mine.flush()
    with pytest.raises(LeaseHeld, match=r"g1 is still run by process \d+"):
        other.claim("g1")
    mine.record("g1", transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START), "f1")
    mine.close()  # releases the lease: the entry is free now
    entry = other.claim("g1")
    assert entry.owner == other.owner and entry.file_id == "f1"
    other.close()


def test_writes_of_a_former_owner_are_refused(journal_path: Path) -> None:
    first = SQLiteJournal(journal_path, lease=3600)
    failures = Failures(first)
    request_row(first, "g1")
    assert first.flush()
    db = sqlite3.connect(journal_path, isolation_level=None)
    db.execute("UPDATE generations SET lease_expires = 1")  # as if its heartbeat had stopped
    second = SQLiteJournal(journal_path)
    second.claim("g1")
    first.record("g1", transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START), "f1")
    done = transition("g1", State.POLLING, State.DONE, Trigger.POLL_RESULT)
    assert first.flush()
    second.record("g1", done, "f1")
    assert second.flush()
    first.record("g1", done, "f1")  # the former owner thinks it ran it too
    assert first.flush()
    refused = [f.reason for f in failures.seen if f.lost]
    assert len(refused) == 2
    assert refused[0].startswith(LEASE_LOST) and "already ended (done)" in refused[1]
    assert second.path_of("g1") == [("polling", "poll_result", "done")]
    # and the database itself refuses a second terminal transition
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO transitions (generation_id, source, dest, trigger, wall, detail) "
            "VALUES ('g1', 'polling', 'failed', 'deadline', 0, '')"
        )
    second.record("g1", transition("g1", State.DONE, State.FAILED, Trigger.DEADLINE), None)
    assert second.flush() and second.lost == 1
    first.close(), second.close()


def test_a_dead_owners_entry_is_claimed_at_once(journal_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    journal = SQLiteJournal(journal_path)
    request_row(journal, "g1")
    assert journal.flush()
    db = sqlite3.connect(journal_path, isolation_level=None)
    db.execute("UPDATE generations SET owner = 'gone', owner_pid = ?", (int(dead.stdout),))
    (entry,) = journal.entries()
    assert entry.owner is not None and entry.owner.gone()
    assert entry.lease_expires > time.time()  # the lease still runs: the pid decides
    assert journal.claim("g1").owner == journal.owner
    with pytest.raises(JournalError, match="not in the journal"):
        journal.claim("nope")
    journal.close()


def test_an_older_journal_gets_the_lease_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE generations (id TEXT PRIMARY KEY, request TEXT NOT NULL, "
        "policy TEXT NOT NULL, meta TEXT NOT NULL, state TEXT NOT NULL, started_wall REAL "
        "NOT NULL, file_id TEXT, url TEXT, channel TEXT, reason TEXT NOT NULL DEFAULT '', "
        "delivered_to TEXT);"
    )
    request = '{"prompt": "a fox"}'
    policy = "{}"
    db.execute(
        "INSERT INTO generations (id, request, policy, meta, state, started_wall, file_id) "
        "VALUES ('g1', ?, ?, '{}', 'polling', 1.0, 'f1')",
        (request, policy),
    )
    journal = SQLiteJournal(path)
    (entry,) = journal.pending()
    assert entry.owner is None and entry.lease_expires == 0
    assert journal.claim("g1").owner == journal.owner
    journal.close()


# -- paid for, not delivered -------------------------------------------------------------------


def test_an_unsaved_result_stays_pending_with_its_url_and_why(journal_path: Path) -> None:
    journal = SQLiteJournal(journal_path)
    request_row(journal, "g1")
    journal.record("g1", transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START), "f1")
    journal.record("g1", transition("g1", State.AWAITING_WS, State.DONE, Trigger.POLL_RESULT), None)
    journal.undelivered("g1", "could not save the image: HTTP 403 from the CDN")
    (entry,) = journal.pending()
    assert entry.unsaved and entry.url == "https://x/1.png" and entry.file_id == "f1"
    assert entry.reason == "could not save the image: HTTP 403 from the CDN"
    journal.delivered("g1", "/tmp/fox.png")
    assert journal.pending() == [] and not journal.entries()[0].unsaved
    journal.undelivered("g1", "too late")  # delivered already: refused, reported
    assert journal.flush() and journal.lost == 1
    journal.close()


def test_a_cancelled_entry_with_a_file_id_is_reopened_only_when_asked(
    journal_path: Path,
) -> None:
    journal = SQLiteJournal(journal_path)
    for gen_id, file_id in (("g1", "f1"), ("g2", None)):
        request_row(journal, gen_id)
        start = transition(gen_id, State.REQUESTED, State.AWAITING_WS, Trigger.START)
        if file_id is not None:
            journal.record(gen_id, start, file_id)
        cancel = State.AWAITING_WS if file_id else State.REQUESTED
        journal.record(gen_id, transition(gen_id, cancel, State.CANCELLED, Trigger.CANCEL), None)
    assert journal.pending() == []
    (entry,) = journal.pending(cancelled=True)  # g2 never got a file id: nothing to follow
    assert entry.id == "g1" and entry.reopenable
    with pytest.raises(JournalError, match="needs no work"):
        journal.claim("g1")
    with pytest.raises(JournalError, match="needs no work"):
        journal.claim("g2", reopen=True)
    reopened = journal.claim("g1", reopen=True)
    assert (reopened.state, reopened.file_id, reopened.reason) == (State.REQUESTED, "f1", "")
    assert [e.id for e in journal.pending()] == ["g1"]
    # the resumed generation records its own end; the cancel stays in the history
    journal.record("g1", transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START), "f1")
    journal.record("g1", transition("g1", State.AWAITING_WS, State.DONE, Trigger.PUSH_RESULT), None)
    assert journal.flush() and journal.lost == 0
    assert journal.entries()[0].state is State.DONE
    assert [dest for _, _, dest in journal.path_of("g1")] == [
        "awaiting_ws", "cancelled", "awaiting_ws", "done"
    ]  # fmt: skip
    journal.close()


def test_a_journal_with_the_old_terminal_index_can_reopen(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE transitions (generation_id TEXT NOT NULL, source TEXT NOT NULL, "
        "dest TEXT NOT NULL, trigger TEXT NOT NULL, wall REAL NOT NULL, detail TEXT NOT NULL);"
        "CREATE UNIQUE INDEX one_terminal_transition ON transitions (generation_id) "
        "WHERE dest IN ('cancelled', 'done', 'failed');"
    )
    db.close()
    journal = SQLiteJournal(path)
    request_row(journal, "g1")
    journal.record("g1", transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START), "f1")
    journal.record("g1", transition("g1", State.AWAITING_WS, State.CANCELLED, Trigger.CANCEL), None)
    assert journal.flush()
    journal.claim("g1", reopen=True)
    journal.record("g1", transition("g1", State.REQUESTED, State.DONE, Trigger.POLL_RESULT), "f1")
    assert journal.flush() and journal.lost == 0 and journal.entries()[0].state is State.DONE
    journal.close()
