"""PostgresJournal's queue: leases taken with SKIP LOCKED, fences, the schema, a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from hybridgen import ImageRequest, Policy, State
from hybridgen.errors import ConfigError, JournalError
from hybridgen.journal import JournalFailure
from hybridgen.journal_pg import SCHEMA_VERSION, PostgresJournal
from hybridgen.machine import Trigger
from pg_support import Cluster, eventually
from test_journal_contract import DONE, START, step


@pytest.fixture
def opener(postgres: Cluster) -> Iterator[Any]:
    schema = postgres.schema()
    opened: list[PostgresJournal] = []

    def open_journal(**options: Any) -> PostgresJournal:
        journal = PostgresJournal(postgres.dsn, schema=schema, **options)
        opened.append(journal)
        return journal

    open_journal.schema = schema  # type: ignore[attr-defined]
    yield open_journal
    for journal in opened:
        journal.close(timeout=1.0)


def submit(journal: PostgresJournal, count: int) -> list[str]:
    return [journal.submit(ImageRequest(prompt=f"fox {i}"), Policy.default()) for i in range(count)]


def test_skip_locked_workers_never_wait_for_each_other(opener: Any, postgres: Cluster) -> None:
    journal = opener()
    ids = submit(journal, 2)
    with psycopg.connect(postgres.dsn) as other:  # a transaction holding the first row's lock
        other.execute(
            f"SELECT 1 FROM {opener.schema}.generations WHERE id = %s FOR UPDATE", (ids[0],)
        )
        (leased,) = journal.lease_next(5)
        assert leased.id == ids[1]


def test_the_heartbeat_renews_and_finds_a_lost_lease(opener: Any, postgres: Cluster) -> None:
    journal = opener(lease=60)
    lost: list[str] = []
    journal.on_lease_lost(lost.append)
    (gen_id,) = submit(journal, 1)
    (job,) = journal.lease_next()
    journal._heartbeat()  # what the writer thread does every third of the lease
    (renewed,) = journal.entries()
    assert renewed.lease_expires > job.lease_expires and lost == []
    with psycopg.connect(postgres.dsn, autocommit=True) as db:  # taken over meanwhile
        db.execute(f"UPDATE {opener.schema}.generations SET fence = fence + 1000")
    journal._heartbeat()
    assert lost == [gen_id] and not journal.holds(gen_id)


def test_the_schema_is_versioned_and_a_newer_one_refused(opener: Any, postgres: Cluster) -> None:
    opener()
    with psycopg.connect(postgres.dsn, autocommit=True) as db:
        (version,) = db.execute(
            f"SELECT max(version) FROM {opener.schema}.schema_version"
        ).fetchone() or (0,)
        assert version == SCHEMA_VERSION
        db.execute(f"INSERT INTO {opener.schema}.schema_version VALUES (99)")
    with pytest.raises(JournalError, match="version 99, written by a newer hybridgen"):
        opener()
    with pytest.raises(ConfigError, match="schema"):
        PostgresJournal(postgres.dsn, schema="Robert'); DROP")


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path: Any) -> None:
    dsn = f"postgresql://u:sekrit@/db?host={tmp_path}"
    with pytest.raises(JournalError, match="cannot open the postgresql database db") as info:
        PostgresJournal(dsn, connect_timeout=1)
    assert "sekrit" not in str(info.value)


def test_writes_survive_a_server_restart(own_postgres: Cluster) -> None:
    postgres = own_postgres  # a server of its own to restart
    journal = PostgresJournal(postgres.dsn, schema=postgres.schema())
    failures: list[JournalFailure] = []
    journal.watch(failures.append)
    (gen_id,) = submit(journal, 1)
    journal.lease_next()
    assert journal.mark_sending(gen_id)
    postgres.restart()
    journal.record(gen_id, START(gen_id), "f1")  # the pool's connections are all broken now
    journal.record(gen_id, step(gen_id, State.AWAITING_WS, State.POLLING, Trigger.WS_TIMEOUT), None)
    journal.record(gen_id, DONE(gen_id), None)
    assert journal.flush(30)
    assert journal.lost == 0, failures
    (entry,) = journal.entries()
    assert entry.state is State.DONE and entry.file_id == "f1"
    assert len(journal.path_of(gen_id)) == 3
    journal.close(timeout=1.0)


def test_claim_after_release_takes_a_new_fence(opener: Any) -> None:
    first, second = opener(), opener()
    first.begin(gen_id := "g1", ImageRequest(prompt="x"), Policy.default(), time.time(), {})
    first.release(gen_id)
    assert first.flush()
    entry = second.claim(gen_id)
    assert entry.owner == second.owner and second.holds(gen_id) and not first.holds(gen_id)


def test_a_transaction_left_open_by_a_stopped_process_does_not_hide_its_rows(
    opener: Any,
) -> None:
    stopped, other = opener(lease=1), opener()
    (gen_id,) = submit(stopped, 1)
    with stopped._pool.connection() as conn:  # as if SIGSTOPped inside a heartbeat
        conn.execute("BEGIN")
        conn.execute(
            f"SELECT 1 FROM {opener.schema}.generations WHERE id = %s FOR UPDATE", (gen_id,)
        )
        assert other.lease_next() == []  # skipped while the lock is held
        leased: list[Any] = []
        eventually(lambda: leased.extend(other.lease_next()) or leased, 10, "the row freed")
        assert [e.id for e in leased] == [gen_id]
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            conn.execute("SELECT 1")  # the server ended the idle transaction's session
