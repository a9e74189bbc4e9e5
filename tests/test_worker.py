"""Worker: jobs queued in PostgreSQL or SQLite, run on a real emulator over loopback sockets."""

from __future__ import annotations

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
