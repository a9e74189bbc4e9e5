"""One contract, two backends: SQLiteJournal and PostgresJournal keep the same promises."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hybridgen import Client, ImageRequest, Policy, State
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.errors import JournalError, LeaseHeld
from hybridgen.events import Transition
from hybridgen.journal import LEASE_LOST, SQLiteJournal
from hybridgen.machine import Trigger
from hybridgen.testing import MemoryTransport
from hybridgen.video import VideoRequest
from pg_support import Cluster
from test_journal import Failures


class Backend:
    """Opens journals on one store (as separate processes would) and reaches under them."""

    name = ""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    def open(self, **options: Any) -> Any:
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        raise NotImplementedError

    def track(self, journal: Any) -> Any:
        self.opened.append(journal)
        return journal

    def close_all(self) -> None:
        for journal in self.opened:
            journal.close(timeout=1.0)


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def open(self, **options: Any) -> Any:
        return self.track(SQLiteJournal(self.path, **options))

    def execute(self, sql: str) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute(sql)
        db.close()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster
        self.schema = cluster.schema()

    def open(self, **options: Any) -> Any:
        from hybridgen.journal_pg import PostgresJournal

        return self.track(PostgresJournal(self.cluster.dsn, schema=self.schema, **options))

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.cluster.dsn, autocommit=True) as db:
            db.execute(sql.replace("generations", f"{self.schema}.generations"))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made: Backend = SQLiteBackend(tmp_path / "j.sqlite")
    else:
        made = PostgresBackend(request.getfixturevalue("postgres"))
    made.open().close()  # the schema exists before anyone else touches it
    yield made
    made.close_all()


def begin(journal: Any, gen_id: str) -> None:
    journal.begin(gen_id, ImageRequest(prompt="a fox"), Policy.default(), time.time(), {})


def step(gen_id: str, source: State, dest: State, trigger: Trigger) -> Transition:
    return Transition(gen_id, source, dest, trigger, 0.0, time.time(), "", "https://x/1.png")


START: Callable[[str], Transition] = lambda g: step(  # noqa: E731
    g, State.REQUESTED, State.AWAITING_WS, Trigger.START
)
DONE: Callable[[str], Transition] = lambda g: step(  # noqa: E731
    g, State.POLLING, State.DONE, Trigger.POLL_RESULT
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_client_run_is_recorded_and_delivered(
    backend: Backend, autojump_clock: trio.testing.MockClock
) -> None:
    journal = backend.open()
    model = ServerModel(Faults(ws_mode="silent", gen_time=5))
    request = ImageRequest(prompt="a red fox", seed=7)
    policy = Policy.default().replace(deadline=60.0)
    async with Client(MemoryTransport(model), journal=journal) as client, trio.open_nursery() as n:
        gen = await n.start(
            lambda task_status: client.start(
                request, policy=policy, meta={"out": "fox.png"}, task_status=task_status
            )
        )
    (entry,) = await trio.to_thread.run_sync(journal.entries)
    assert entry.id == gen.id and entry.request == request and entry.policy == policy
    assert entry.state is State.DONE and entry.file_id == gen.file_id and entry.url
    assert entry.meta == {"out": "fox.png"} and entry.needs_work and not entry.queued
    journal.delivered(gen.id, "fox.png")
    assert journal.pending() == []
    assert journal.path_of(gen.id) == [
        ("requested", "start", "awaiting_ws"),
        ("awaiting_ws", "ws_timeout", "polling"),
        ("polling", "poll_result", "done"),
    ]
    assert journal.lost == 0


def test_a_video_is_recorded_as_a_video(backend: Backend) -> None:
    journal = backend.open()
    request = VideoRequest(prompt="waves", model="comfyui/ltx", duration=10, image="file-1")
    journal.begin("v1", request, Policy.video(), time.time(), {"out": "waves.mp4"})
    journal.record("v1", START("v1"), "f1")
    assert journal.flush(5)
    (entry,) = journal.pending()
    assert isinstance(entry.request, VideoRequest) and entry.request == request
    assert entry.policy == Policy.video() and entry.file_id == "f1"


def test_a_live_owner_keeps_its_entry(backend: Backend) -> None:
    mine, other = backend.open(), backend.open()
    begin(mine, "g1")
    assert mine.flush()
    with pytest.raises(LeaseHeld, match=r"g1 is still run by process \d+"):
        other.claim("g1")
    mine.record("g1", START("g1"), "f1")
    mine.close()  # releases the lease: the entry is free now
    entry = other.claim("g1")
    assert entry.owner == other.owner and entry.file_id == "f1"
    assert entry.state is State.AWAITING_WS


def test_writes_of_a_former_owner_are_refused(backend: Backend) -> None:
    first = backend.open(lease=3600)
    failures = Failures(first)
    begin(first, "g1")
    assert first.flush()
    backend.execute("UPDATE generations SET lease_expires = 1")  # its heartbeat stopped
    second = backend.open()
    second.claim("g1")
    first.record("g1", START("g1"), "f1")
    assert first.flush()
    second.record("g1", DONE("g1"), "f1")
    assert second.flush()
    first.record("g1", DONE("g1"), "f1")  # the former owner thinks it ran it too
    if backend.name == "postgres":  # fenced; SQLite accepts a delivery from anyone
        first.delivered("g1", "elsewhere.png")
    assert first.flush()
    assert [f for f in failures.seen if f.lost], "the former owner's writes were not refused"
    assert second.path_of("g1") == [("polling", "poll_result", "done")]
    (entry,) = second.entries()
    assert entry.state is State.DONE and entry.file_id == "f1" and entry.delivered_to is None


def test_one_terminal_transition(backend: Backend) -> None:
    journal = backend.open()
    begin(journal, "g1")
    journal.record("g1", DONE("g1"), "f1")
    journal.record("g1", step("g1", State.DONE, State.FAILED, Trigger.DEADLINE), None)
    assert journal.flush() and journal.lost == 1
    assert journal.path_of("g1") == [("polling", "poll_result", "done")]
    journal.delivered("g1", "a.png")
    journal.delivered("g1", "b.png")  # the first delivery counts
    assert journal.flush()
    (entry,) = journal.entries()
    assert entry.delivered_to == "a.png" and not entry.needs_work


def test_claim_refuses_what_needs_no_work_or_is_missing(backend: Backend) -> None:
    journal = backend.open()
    begin(journal, "g1")
    journal.record("g1", DONE("g1"), "f1")
    journal.delivered("g1", "a.png")
    assert journal.flush()
    with pytest.raises(JournalError, match="needs no work"):
        backend.open().claim("g1")
    with pytest.raises(JournalError, match="not in the journal"):
        journal.claim("nope")


def test_fail_marks_an_owned_entry_failed(backend: Backend) -> None:
    journal = backend.open()
    begin(journal, "g1")
    journal.fail("g1", "cannot be resumed")
    assert journal.flush() and journal.lost == 0
    (entry,) = journal.entries()
    assert entry.state is State.FAILED and entry.reason == "cannot be resumed"
    assert journal.pending() == []


def test_an_unsaved_result_stays_pending_with_its_url_and_why(backend: Backend) -> None:
    journal = backend.open()
    begin(journal, "g1")
    journal.record("g1", START("g1"), "f1")
    journal.record("g1", step("g1", State.AWAITING_WS, State.DONE, Trigger.POLL_RESULT), None)
    journal.undelivered("g1", "could not save the image: HTTP 403 from the CDN")
    (entry,) = journal.pending()
    assert entry.unsaved and entry.url == "https://x/1.png" and entry.file_id == "f1"
    assert entry.reason == "could not save the image: HTTP 403 from the CDN"
    journal.delivered("g1", "/tmp/fox.png")
    assert journal.pending() == [] and not journal.entries()[0].unsaved
    journal.undelivered("g1", "too late")  # delivered already: refused, reported
    assert journal.flush() and journal.lost == 1


def test_a_cancelled_entry_is_reopened_and_ends_again(backend: Backend) -> None:
    journal = backend.open()
    begin(journal, "g1")
    journal.record("g1", START("g1"), "f1")
    journal.record("g1", step("g1", State.AWAITING_WS, State.CANCELLED, Trigger.CANCEL), None)
    assert journal.pending() == [] and [e.id for e in journal.pending(cancelled=True)] == ["g1"]
    journal.close()
    with pytest.raises(JournalError, match="needs no work"):
        backend.open().claim("g1")
    reopened = backend.open().claim("g1", reopen=True)
    assert (reopened.state, reopened.file_id, reopened.reason) == (State.REQUESTED, "f1", "")
    other = backend.opened[-1]
    other.record("g1", step("g1", State.REQUESTED, State.DONE, Trigger.POLL_RESULT), "f1")
    assert other.flush() and other.lost == 0
    assert [d for _, _, d in other.path_of("g1")] == ["awaiting_ws", "cancelled", "done"]


# -- the queue: workers share the journal (PostgreSQL: many machines; SQLite: one) -----------------


def submit(journal: Any, count: int) -> list[str]:
    return [journal.submit(ImageRequest(prompt=f"fox {i}"), Policy.default()) for i in range(count)]


def test_submitted_jobs_are_leased_once_each_and_counted(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    ids = submit(a, 5)
    assert a.counts()["queued"] == 5 and a.leases() == []
    first = a.lease_next(2)
    second = b.lease_next(10)
    assert [e.id for e in first] == ids[:2] and [e.id for e in second] == ids[2:]
    assert all(e.queued and e.state is State.REQUESTED for e in first + second)
    assert a.lease_next(10) == [] and b.lease_next(10) == []
    counts = b.counts()
    assert counts["running"] == 5 and counts["queued"] == 0 and sum(counts.values()) == 5
    leases = a.leases()
    assert [lease.generation_id for lease in leases] == ids
    assert [lease.owner for lease in leases] == [a.owner] * 2 + [b.owner] * 3
    assert all(0 < lease.remaining <= a.lease and lease.state == "requested" for lease in leases)
    a.release(ids[0])
    assert a.flush()
    (again,) = b.lease_next(10)  # released: free at once
    assert again.id == ids[0] and again.owner == b.owner


def test_a_start_is_marked_sending_once_per_lease(backend: Backend) -> None:
    journal = backend.open()
    (gen_id,) = submit(journal, 1)
    assert not journal.mark_sending(gen_id)  # not leased: must not be sent
    journal.lease_next()
    assert journal.mark_sending(gen_id) and journal.mark_sending(gen_id)
    journal.release(gen_id)
    assert journal.flush()
    (again,) = backend.open().lease_next()
    assert again.id == gen_id and not again.queued  # its start may have reached the server
    assert not journal.mark_sending(gen_id)


def test_a_stalled_workers_writes_and_download_are_refused(backend: Backend) -> None:
    stalled = backend.open(lease=3600)
    failures = Failures(stalled)
    lost: list[str] = []
    stalled.on_lease_lost(lost.append)
    (gen_id,) = submit(stalled, 1)
    stalled.lease_next()
    assert stalled.mark_sending(gen_id)
    stalled.record(gen_id, START(gen_id), "f1")
    assert stalled.flush()
    backend.execute("UPDATE generations SET lease_expires = 1")  # it stalled past its lease
    taker = backend.open()
    (taken,) = taker.lease_next()
    assert taken.file_id == "f1" and not taken.queued and taken.state is State.AWAITING_WS
    taker.record(gen_id, DONE(gen_id), None)
    assert taker.flush()
    # the stalled one wakes up: it can neither record, nor download, nor deliver
    stalled.record(gen_id, DONE(gen_id), None)
    assert stalled.flush()
    assert lost == [gen_id] and failures.seen[-1].reason.startswith(LEASE_LOST)
    assert not stalled.begin_download(gen_id) and not stalled.holds(gen_id)
    stalled.delivered(gen_id, "stalled.png")
    assert stalled.flush()
    assert taker.begin_download(gen_id)
    taker.delivered(gen_id, "taker.png")
    assert taker.flush()
    (entry,) = taker.entries()
    assert entry.delivered_to == "taker.png"
    assert taker.path_of(gen_id) == [
        ("requested", "start", "awaiting_ws"),
        ("polling", "poll_result", "done"),
    ]
