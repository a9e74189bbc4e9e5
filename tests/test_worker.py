"""Worker: jobs queued in PostgreSQL or SQLite, run on a real emulator over loopback sockets."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from hybridgen import Client, ImageRequest, Policy, State
from hybridgen.emulator import Emulator
from hybridgen.errors import JournalError
from hybridgen.journal import SQLiteJournal
from hybridgen.journal_pg import PostgresJournal
from hybridgen.transport import SuperDuperTransport
from hybridgen.worker import UNSAFE_START, JobOutcome, Worker
from pg_support import Cluster

POLICY = Policy.default().scaled(0.02)


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        opened: Any = SQLiteJournal(tmp_path / "queue.sqlite", lease=5)
    else:
        postgres: Cluster = request.getfixturevalue("postgres")
        opened = PostgresJournal(postgres.dsn, schema=postgres.schema(), lease=5)
    yield opened
    opened.close(timeout=1.0)


async def test_a_worker_runs_every_queued_job_once(
    journal: PostgresJournal,
    emulator: Emulator,
    real_transport: SuperDuperTransport,
    tmp_path: Path,
) -> None:
    client = Client(real_transport, journal=journal, policy=POLICY)
    ids = [await client.submit(f"fox {i}") for i in range(6)]
    assert emulator.model.counts["start"] == 0  # submitting sends nothing
    outcomes: list[JobOutcome] = []
    worker = Worker(client, out_dir=tmp_path, concurrency=3, exit_when_idle=True,
                    on_outcome=outcomes.append)  # fmt: skip
    with trio.fail_after(30):
        summary = await worker.run()
    assert sorted(o.generation_id for o in outcomes) == sorted(ids)
    assert {o.state for o in outcomes} == {"done"} and summary.outcomes == {"done": 6}
    assert emulator.model.counts["start"] == 6
    assert sorted(Path(o.saved or "").stem for o in outcomes) == sorted(ids)
    counts = await trio.to_thread.run_sync(journal.counts)
    assert counts["done"] == 6 and sum(counts.values()) == 6


async def test_a_start_that_may_have_left_is_not_sent_again(
    journal: PostgresJournal,
    emulator: Emulator,
    real_transport: SuperDuperTransport,
    tmp_path: Path,
) -> None:
    client = Client(real_transport, journal=journal, policy=POLICY)
    gen_id = await client.submit("a fox")
    # a worker leased it and marked it sending, then died before the reply
    await trio.to_thread.run_sync(journal.lease_next)
    assert await trio.to_thread.run_sync(journal.mark_sending, gen_id)
    journal.release(gen_id)
    outcomes: list[JobOutcome] = []
    worker = Worker(client, out_dir=tmp_path, exit_when_idle=True, on_outcome=outcomes.append)
    with trio.fail_after(30):
        await worker.run()
    (outcome,) = outcomes
    assert outcome.state == "failed" and outcome.reason == UNSAFE_START
    assert emulator.model.counts["start"] == 0
    (entry,) = await trio.to_thread.run_sync(journal.entries)
    assert entry.state is State.FAILED and entry.reason == UNSAFE_START


async def test_a_worker_needs_a_queue(tmp_path: Path, real_transport: SuperDuperTransport) -> None:
    from hybridgen.bench.journal import OnTheLoop  # a journal that is not a queue

    path = tmp_path / "j.sqlite"
    SQLiteJournal(path).close()
    client = Client(real_transport, journal=OnTheLoop(path))
    with pytest.raises(JournalError, match="needs a journal that is a queue"):
        Worker(client)
    with pytest.raises(JournalError, match="needs a journal that is a queue"):
        await client.submit(ImageRequest(prompt="x"))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Opens journals on one store, as worker processes would, and runs SQL under them."""
    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "queue.sqlite"

        def open_journal() -> Any:
            opened.append(SQLiteJournal(path, lease=5))
            return opened[-1]

        def execute(sql: str) -> None:
            db = sqlite3.connect(path, isolation_level=None)
            db.execute(sql)
            db.close()
    else:
        postgres: Cluster = request.getfixturevalue("postgres")
        schema = postgres.schema()

        def open_journal() -> Any:
            opened.append(PostgresJournal(postgres.dsn, schema=schema, lease=5))
            return opened[-1]

        def execute(sql: str) -> None:
            import psycopg

            with psycopg.connect(postgres.dsn, autocommit=True) as db:
                db.execute(sql.replace("generations", f"{schema}.generations"))

    yield open_journal, execute
    for journal in opened:
        journal.close(timeout=1.0)


async def test_a_worker_taken_over_before_its_download_neither_downloads_nor_saves(
    store: Any, emulator: Emulator, real_transport: SuperDuperTransport, tmp_path: Path
) -> None:
    open_journal, execute = store
    first_journal, taker_journal = open_journal(), open_journal()
    gen_id = await trio.to_thread.run_sync(
        lambda: first_journal.submit(ImageRequest(prompt="a fox"), POLICY)
    )
    may_download = first_journal.begin_download

    def taken_over_first(job: str) -> bool:
        # done on the server, not downloaded yet: the first worker stalls past its lease here
        # and another takes the job over (and lets it go, so its own worker leases it again)
        assert first_journal.flush()
        execute("UPDATE generations SET lease_expires = 1")
        assert [e.id for e in taker_journal.lease_next()] == [job]
        taker_journal.release(job)
        assert taker_journal.flush()
        return bool(may_download(job))  # the first worker wakes up and asks: refused

    first_journal.begin_download = taken_over_first
    seen: list[JobOutcome] = []
    first = Worker(Client(real_transport, journal=first_journal), out_dir=tmp_path / "first",
                   on_outcome=lambda o: (seen.append(o), first.drain()))  # fmt: skip
    with trio.fail_after(30):
        await first.run()
    (lost,) = seen
    assert lost.generation_id == gen_id
    assert lost.state == "lost" and lost.saved is None  # refused by the fence: not downloaded
    assert emulator.model.counts["start"] == 1 and emulator.model.counts["download"] == 0
    assert not (tmp_path / "first").exists() or list((tmp_path / "first").iterdir()) == []
    taker_seen: list[JobOutcome] = []
    taker = Worker(Client(real_transport, journal=taker_journal), out_dir=tmp_path / "taker",
                   exit_when_idle=True, on_outcome=taker_seen.append)  # fmt: skip
    with trio.fail_after(30):
        await taker.run()
    (done,) = taker_seen
    assert done.state == "done" and Path(done.saved or "").parent == tmp_path / "taker"
    assert emulator.model.counts["start"] == 1  # the done job was not started again
    assert emulator.model.counts["download"] == 1  # exactly one download across the workers
    (entry,) = await trio.to_thread.run_sync(taker_journal.entries)
    assert entry.state is State.DONE and entry.delivered_to == done.saved
