"""A journal and job queue in PostgreSQL, shared by many processes on many machines.

:class:`PostgresJournal` is the :class:`~hybridgen.journal.Journal` of
:class:`~hybridgen.journal.SQLiteJournal` on a PostgreSQL server (psycopg 3 and its connection
pool; install ``hybridgen[postgres]``), plus a queue: :meth:`~PostgresJournal.submit` adds a job
that no one has started, :meth:`~PostgresJournal.lease_next` hands the oldest job that needs work
and that no live worker holds to one worker (``SELECT ... FOR UPDATE SKIP LOCKED``), and
:class:`~hybridgen.worker.Worker` runs what it leased.

**Leases with fencing.** Each lease taken (:meth:`~PostgresJournal.begin`,
:meth:`~PostgresJournal.claim`, :meth:`~PostgresJournal.lease_next`) draws a new number from one
sequence, the *fence*, stored in the row. Every later write about the job is conditional on the
row still carrying that fence, so a process that stalled past its lease (SIGSTOP, a partition)
and wakes after another took the job over has every write refused, and is told so: its journal
forgets the job and reports a :class:`~hybridgen.journal.JournalFailure` whose reason begins with
:data:`LEASE_LOST`. Leases expire by the database's clock (``clock_timestamp()``), not the
workers'; the writer thread renews the leases it holds every third of :attr:`lease`.

**Never billed twice.** :meth:`~PostgresJournal.mark_sending` records, before a queued job's start
request leaves, that it may reach the server; a job taken over in that state without a file id is
not sent again unless its policy's ``retry_unsafe_starts`` says so. A download begins only
through :meth:`~PostgresJournal.begin_download`, a fenced write that also renews the lease.

**Failures are contained** as in :class:`~hybridgen.journal.SQLiteJournal`: ``begin``,
``record``, ``delivered``, ``fail`` and ``release`` are queued to a writer thread and never
block the event loop; a write that finds the server gone is retried (the pool reconnects) for
``retry_for`` seconds, then lost, counted and reported. The calls that answer (``submit``,
``claim``, ``lease_next``, ``mark_sending``, ``begin_download``, reads) block their caller: under
trio run them in a worker thread (``trio.to_thread.run_sync``), as the client and the worker do.

**Schema.** hybridgen creates and migrates its tables itself, in the PostgreSQL schema named by
``schema`` (``hybridgen`` by default), under an advisory lock; the table ``schema_version`` says
which version is there (see docs/postgres.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import re
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from .errors import ConfigError, JournalError, LeaseHeld, MissingExtra
from .events import Transition
from .journal import LEASE_LOST as LEASE_LOST
from .journal import (
    QUEUE_KINDS,
    Entry,
    FailureCallback,
    JournalFailure,
    Lease,
    Owner,
    _queued_row,
    _Write,
    _Writer,
)
from .machine import TERMINAL, State
from .policy import Policy
from .video import StartRequest, request_from_record, request_record

try:
    import psycopg
    import psycopg_pool
    from psycopg import conninfo
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the PostgreSQL journal", extra="postgres") from None

__all__ = ["LEASE_LOST", "SCHEMA_VERSION", "PostgresJournal", "is_postgres_url"]

log: Final = logging.getLogger("hybridgen.journal")

SCHEMA_VERSION: Final = 1
"""The schema version this hybridgen writes (``schema_version`` table)."""

_ENDED: Final = tuple(sorted(str(state) for state in TERMINAL))
_ENDED_SQL: Final = f"({', '.join(repr(s) for s in _ENDED)})"
_NOT_ENDED: Final = f"state NOT IN {_ENDED_SQL}"
_NEEDS_WORK: Final = f"({_NOT_ENDED} OR (state = 'done' AND delivered_to IS NULL))"
_NOW: Final = "extract(epoch FROM clock_timestamp())"
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SESSION_LOST: Final[tuple[type[Exception], ...]] = (
    psycopg.OperationalError,
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg_pool.PoolTimeout,
)
"""The server or the connection went away (a restart, a stop past the idle timeout): retry."""

_MIGRATIONS: Final = (
    # version 1
    """
    CREATE SEQUENCE {s}.fence;
    CREATE TABLE {s}.generations (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY,
        request jsonb NOT NULL,
        policy jsonb NOT NULL,
        meta jsonb NOT NULL,
        state text NOT NULL,
        started_wall double precision NOT NULL,
        file_id text,
        url text,
        channel text,
        reason text NOT NULL DEFAULT '',
        delivered_to text,
        sending_fence bigint,
        download_fence bigint,
        owner text,
        owner_pid integer,
        owner_host text,
        fence bigint NOT NULL DEFAULT 0,
        lease_expires double precision NOT NULL DEFAULT 0
    );
    CREATE INDEX generations_work ON {s}.generations (seq)
        WHERE state NOT IN {ended} OR (state = 'done' AND delivered_to IS NULL);
    CREATE TABLE {s}.transitions (
        generation_id text NOT NULL REFERENCES {s}.generations (id),
        source text NOT NULL,
        dest text NOT NULL,
        trigger text NOT NULL,
        wall double precision NOT NULL,
        detail text NOT NULL,
        fence bigint NOT NULL,
        superseded boolean NOT NULL DEFAULT false
    );
    CREATE INDEX transitions_of ON {s}.transitions (generation_id);
    CREATE UNIQUE INDEX one_live_terminal_transition ON {s}.transitions (generation_id)
        WHERE dest IN {ended} AND NOT superseded;
    """,
)

_COLUMNS: Final = (
    "id, request, policy, meta, state, started_wall, file_id, url, channel, reason, "
    "delivered_to, owner, owner_pid, owner_host, lease_expires, sending_fence, fence"
)


def is_postgres_url(value: str) -> bool:
    """True when ``value`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return value.startswith(("postgresql://", "postgres://"))


def _safe_dsn(dsn: str) -> str:
    """``dsn`` without its password (for messages and logs)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<an unreadable PostgreSQL address>"
    parts.pop("password", None)
    where = parts.get("host") or "localhost"
    return f"postgresql database {parts.get('dbname') or parts.get('user') or '?'} at {where}"


class PostgresJournal:
    """A :class:`~hybridgen.journal.Journal` and job queue in PostgreSQL (see the module doc).

    ``dsn`` is a ``postgresql://`` URL or a libpq connection string. ``lease`` is how long a job
    stays this journal's after its last renewal; ``retry_for`` how long a write (or an answering
    call) keeps retrying while the server is unreachable; ``max_queue`` how many writes may wait;
    ``flush_timeout`` how long :meth:`flush` and :meth:`close` wait by default; ``connect_timeout``
    how long opening waits for the server (a :class:`~hybridgen.errors.JournalError` then).

    As in :class:`~hybridgen.journal.SQLiteJournal`, one write is waited for: the transition
    that first records a job's file id, up to ``durable_wait`` seconds (not at all while an
    earlier wait timed out), so that a worker killed just after its start leaves a job that
    another worker follows by file id instead of failing it.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "hybridgen",
        lease: float = 30.0,
        retry_for: float = 30.0,
        max_queue: int = 10_000,
        flush_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        pool_size: int = 4,
        durable_wait: float = 0.25,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError("schema", f"must be a lower-case SQL name, got {schema!r}")
        if not (isinstance(lease, int | float) and math.isfinite(lease) and lease > 0):
            raise ConfigError("lease", f"must be a positive number of seconds, got {lease!r}")
        self.where = _safe_dsn(dsn)
        """Which database this is, without its password."""
        self.schema = schema
        self.lease = float(lease)
        self.retry_for = retry_for
        self.flush_timeout = flush_timeout
        self.durable_wait = durable_wait
        self.owner = Owner.here()
        """This journal object's identity in the jobs it holds."""
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            # no check per checkout (a round trip per transaction): a connection found broken
            # is retried on another (_retrying), and the pool drops it when it comes back
            configure=self._configure,
            timeout=connect_timeout,
            name="hybridgen-journal",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._migrate()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._pool.close()
            raise JournalError(f"cannot open the {self.where} as a journal: {exc}") from None
        self._writer = _PgWriter(self, max_queue)
        self._leases = self._writer.leases
        self._closed = False
        self._writer.thread.start()
        self._finalizer = weakref.finalize(self, PostgresJournal._stop_writer, self._writer.queue)

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # A process stopped inside a transaction (SIGSTOP) would keep its rows locked, and the
        # workers' SKIP LOCKED would skip them for ever: the server ends such a session instead.
        idle = max(500, round(self.lease * 500))
        conn.execute(f"SET idle_in_transaction_session_timeout = {idle}")

    def __repr__(self) -> str:
        return f"<PostgresJournal {self.where} schema={self.schema}>"

    # -- schema ------------------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text.replace("{s}", self.schema).replace("{ended}", _ENDED_SQL)

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"hybridgen:{self.schema}",))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.schema_version (version int)")
            row = cur.execute(f"SELECT max(version) FROM {self.schema}.schema_version").fetchone()
            version = row[0] if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal's schema {self.schema} is version {version}, written by a newer "
                    f"hybridgen (this one knows {SCHEMA_VERSION}): upgrade hybridgen"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                cur.execute(self._sql(_MIGRATIONS[number - 1]))
                cur.execute(f"INSERT INTO {self.schema}.schema_version VALUES (%s)", (number,))
                log.info("journal %s: schema %s now version %d", self.where, self.schema, number)

    # -- the writer thread -------------------------------------------------------------------------

    @staticmethod
    def _stop_writer(q: queue.Queue[_Write | None]) -> None:
        with contextlib.suppress(queue.Full):
            q.put_nowait(None)

    @property
    def lost(self) -> int:
        """How many writes failed or were given up since this journal was opened."""
        return self._writer.lost

    def watch(self, callback: FailureCallback) -> Callable[[], None]:
        """Report each :class:`~hybridgen.journal.JournalFailure` to ``callback`` (from the
        writer thread, or the thread that called)."""
        return self._writer.watch(callback)

    def on_lease_lost(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(generation_id)`` when another process took a job of this journal's
        over (from the writer thread); returns an unwatcher."""
        return self._leases.watch(callback)

    def _apply(self, write: _Write) -> None:
        try:
            refused = self._retrying(write.operation, write.generation_id, write.run)
        except JournalError as exc:
            self._writer.lose(write, str(exc))
            return
        except Exception as exc:  # a bug: report, never kill the thread
            log.exception("journal write %s failed", write.operation)
            self._writer.lose(write, repr(exc))
            return
        if refused is not None:
            self._writer.lose(write, refused)

    def _retrying(
        self,
        operation: str,
        gen_id: str | None,
        run: Callable[[psycopg.Cursor[Any], bool], Any],
    ) -> Any:
        """``run(cursor, retrying)`` in one transaction, again while the server is unreachable
        (within :attr:`retry_for`); :class:`~hybridgen.errors.JournalError` when it cannot."""
        give_up = min(time.monotonic() + self.retry_for, self._writer.give_up_at)
        delay, attempt, told = 0.05, 0, False
        while True:
            try:
                with self._pool.connection() as conn, conn.transaction():
                    result = run(conn.cursor(), attempt > 0)
                self._writer.behind = False
                return result
            except _SESSION_LOST as exc:
                if time.monotonic() + delay >= give_up:
                    raise JournalError(f"the {self.where} is unreachable: {exc}") from None
                if not told:
                    told = True
                    reason = f"the {self.where} is unreachable; retrying ({exc})".strip()
                    self._writer.report(JournalFailure(operation, reason, gen_id, lost=False))
            except psycopg.Error as exc:
                raise JournalError(f"{type(exc).__name__}: {exc}") from None
            time.sleep(delay)
            delay, attempt = min(1.0, delay * 2), attempt + 1

    def _heartbeat(self) -> None:
        held = self._leases.held()
        if not held:
            return

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> set[str]:
            cur.execute(
                f"UPDATE {self.schema}.generations SET lease_expires = {_NOW} + %s "
                "WHERE (id, fence) IN (SELECT * FROM unnest(%s::text[], %s::bigint[])) "
                "RETURNING id",
                (self.lease, list(held), list(held.values())),
            )
            return {row[0] for row in cur.fetchall()}

        try:
            renewed = self._retrying("heartbeat", None, run)
        except Exception as exc:
            self._writer.report(JournalFailure("heartbeat", str(exc), None, lost=False))
            return
        for gen_id, fence in held.items():
            if gen_id not in renewed and self._leases.fence(gen_id) == fence:
                self._leases.lost(gen_id, "heartbeat")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is done (at most ``timeout``, default
        :attr:`flush_timeout`); return whether they all are."""
        return self._writer.flush(self.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> int:
        """Finish queued writes (within ``timeout``, default :attr:`flush_timeout`), release this
        journal's leases, close the pool; return how many writes were lost since it opened."""
        if self._closed:
            return self._writer.lost
        self._closed = True
        self._finalizer.detach()
        for gen_id in self._leases.held():
            self.release(gen_id)
        self._writer.stop(self.flush_timeout if timeout is None else timeout, grace=1.0)
        self._pool.close(timeout=1.0)
        return self._writer.lost

    def __enter__(self) -> PostgresJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the fences this journal holds -------------------------------------------------------------

    def holds(self, gen_id: str) -> bool:
        """Whether this journal holds ``gen_id``'s lease (as far as it knows)."""
        return self._leases.fence(gen_id) is not None

    def _fenced(
        self,
        operation: str,
        gen_id: str,
        body: Callable[[psycopg.Cursor[Any], int, bool], str | None],
    ) -> _Write:
        """Queue ``body(cursor, fence, retrying)``; a refusal because the fence moved on is a
        lost lease; a job this journal does not hold is dropped (it was released)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> str | None:
            fence = self._leases.fence(gen_id)
            if fence is None:
                log.debug("journal %s %s: not held (released); dropped", operation, gen_id)
                return None
            refused = body(cur, fence, retrying)
            if refused is None:
                return None
            row = cur.execute(
                f"SELECT fence, state FROM {self.schema}.generations WHERE id = %s", (gen_id,)
            ).fetchone()
            if row is not None and row[0] != fence:
                self._leases.lost(gen_id, operation)
                return None  # reported as the lost lease
            return refused

        write = _Write(operation, gen_id, run)
        self._writer.submit(write)
        return write

    # -- the Journal protocol ----------------------------------------------------------------------

    def _mine(self) -> tuple[str, int, str, float]:
        return self.owner.id, self.owner.pid, self.owner.host, self.lease

    def begin(
        self,
        gen_id: str,
        request: StartRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """Queue a new generation in state ``requested`` whose start is being sent, its lease
        held by this journal."""
        values = (
            gen_id,
            request_record(request),
            json.dumps(attrs.asdict(policy)),
            json.dumps(dict(meta)),
            str(State.REQUESTED),
            started_wall,
            *self._mine(),
        )

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> str | None:
            row = cur.execute(
                f"INSERT INTO {self.schema}.generations (id, request, policy, meta, state, "
                "started_wall, owner, owner_pid, owner_host, lease_expires, fence, sending_fence) "
                f"SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW} + %s, f, f "
                f"FROM nextval('{self.schema}.fence') AS f "
                "ON CONFLICT (id) DO NOTHING RETURNING fence",
                values,
            ).fetchone()
            if row is None and retrying:  # the first attempt may have landed
                row = cur.execute(
                    f"SELECT fence FROM {self.schema}.generations WHERE id = %s AND owner = %s",
                    (gen_id, self.owner.id),
                ).fetchone()
            if row is None:
                return f"not recorded (begin): {gen_id} is already in the journal"
            self._leases.hold(gen_id, row[0])
            return None

        self._writer.submit(_Write("begin", gen_id, run))

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """Queue one transition and the generation's new state (refused unless this journal
        holds the generation's lease and it has not ended)."""
        dest = str(event.dest)
        transition = (str(event.source), dest, str(event.trigger), event.wall, event.detail)

        def body(cur: psycopg.Cursor[Any], fence: int, retrying: bool) -> str | None:
            if (
                retrying
                and cur.execute(
                    f"SELECT 1 FROM {self.schema}.transitions WHERE generation_id = %s "
                    "AND dest = %s AND wall = %s AND fence = %s",
                    (gen_id, dest, event.wall, fence),
                ).fetchone()
            ):
                return None  # the first attempt landed
            cur.execute(
                f"UPDATE {self.schema}.generations SET state = %s, "
                "file_id = COALESCE(%s, file_id), url = COALESCE(%s, url), "
                "channel = COALESCE(%s, channel), "
                "reason = CASE WHEN %s = 'done' THEN reason ELSE %s END "
                f"WHERE id = %s AND fence = %s AND {_NOT_ENDED}",
                (
                    dest,
                    file_id,
                    event.url,
                    event.channel,
                    dest,
                    event.detail if event.terminal else "",
                    gen_id,
                    fence,
                ),
            )
            if cur.rowcount != 1:
                return self._refusal(cur, gen_id, f"{event.source} -> {event.dest}")
            cur.execute(
                f"INSERT INTO {self.schema}.transitions (generation_id, source, dest, trigger, "
                "wall, detail, fence) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (gen_id, *transition, fence),
            )
            return None

        write = self._fenced("record", gen_id, body)
        if file_id is not None and event.source is State.REQUESTED:
            # the file id, first time: a takeover needs it to follow the job, not fail it
            self._writer.wait_for(write, self.durable_wait)

    def delivered(self, gen_id: str, where: str) -> None:
        """Queue: a done generation's result was delivered to ``where`` (the first one counts;
        refused when this journal held the job and another process took it over)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> str | None:
            fence = self._leases.fence(gen_id)
            if fence is None and self._leases.taken(gen_id):
                return None  # reported when the lease was lost
            mine = "fence = %s" if fence is not None else "true"  # never held: as SQLite
            cur.execute(
                f"UPDATE {self.schema}.generations SET delivered_to = %s WHERE id = %s AND "
                f"{mine} AND state = 'done' AND (delivered_to IS NULL OR delivered_to = %s)",
                (where, gen_id, *(() if fence is None else (fence,)), where),
            )
            if cur.rowcount == 1:
                return None
            if fence is not None and self._current_fence(gen_id) != fence:
                self._leases.lost(gen_id, "delivered")
                return None
            return f"{gen_id} is not done, already delivered, or held by another process"

        self._writer.submit(_Write("delivered", gen_id, run))

    def undelivered(self, gen_id: str, reason: str) -> None:
        """Queue: a done generation's result could not be delivered, because of ``reason``
        (kept in the entry, which stays pending: :attr:`~hybridgen.journal.Entry.unsaved`)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> str | None:
            cur.execute(
                f"UPDATE {self.schema}.generations SET reason = %s "
                "WHERE id = %s AND state = 'done' AND delivered_to IS NULL",
                (reason, gen_id),
            )
            return None if cur.rowcount == 1 else f"{gen_id} is not done, or already delivered"

        self._writer.submit(_Write("undelivered", gen_id, run))

    def fail(self, gen_id: str, reason: str) -> None:
        """Queue: mark an unfinished generation this journal holds failed (no transition)."""

        def body(cur: psycopg.Cursor[Any], fence: int, retrying: bool) -> str | None:
            cur.execute(
                f"UPDATE {self.schema}.generations SET state = 'failed', reason = %s "
                f"WHERE id = %s AND fence = %s AND {_NOT_ENDED}",
                (reason, gen_id, fence),
            )
            return None if cur.rowcount == 1 else self._refusal(cur, gen_id, "failed")

        self._fenced("fail", gen_id, body)

    def release(self, gen_id: str) -> None:
        """Queue: give ``gen_id``'s lease up (another worker may take it at once); this journal
        writes nothing more about it."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> None:
            fence = self._leases.drop(gen_id)  # the writes queued before this one used it
            if fence is not None:
                cur.execute(
                    f"UPDATE {self.schema}.generations SET lease_expires = 0 "
                    "WHERE id = %s AND fence = %s",
                    (gen_id, fence),
                )

        self._writer.submit(_Write("release", gen_id, run))

    def _refusal(self, cur: psycopg.Cursor[Any], gen_id: str, what: str) -> str:
        row = cur.execute(
            f"SELECT state, owner_pid, owner_host FROM {self.schema}.generations WHERE id = %s",
            (gen_id,),
        ).fetchone()
        if row is None:
            return f"not recorded ({what}): {gen_id} is not in the journal"
        if row[0] in _ENDED:
            return f"not recorded ({what}): {gen_id} has already ended ({row[0]})"
        return f"not recorded ({what}): {gen_id} is now held by process {row[1]} on {row[2]}"

    def _now(self, call: Callable[[psycopg.Cursor[Any], bool], Any], what: str) -> Any:
        """An answering call: ``call`` in a transaction, retried while the server is away."""
        return self._retrying(what, None, call)

    def claim(self, gen_id: str, *, reopen: bool = False) -> Entry:
        """Take the lease of ``gen_id`` for this journal (a new fence); the entry.

        With ``reopen``, a :attr:`~hybridgen.journal.Entry.reopenable` entry is taken and made
        unfinished again (see :meth:`hybridgen.journal.Journal.claim`).

        Raises :class:`~hybridgen.errors.LeaseHeld` when another live process holds it,
        :class:`~hybridgen.errors.JournalError` when it is not there, needs no work, or the
        server cannot be reached within :attr:`retry_for`.
        """

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> Entry:
            row = cur.execute(
                f"SELECT {_COLUMNS}, {_NOW} FROM {self.schema}.generations WHERE id = %s "
                "FOR UPDATE",
                (gen_id,),
            ).fetchone()
            if row is None:
                raise JournalError(f"generation {gen_id} is not in the journal ({self.where})")
            entry = _entry(row)
            if entry.owner is not None and entry.owner.id == self.owner.id and self.holds(gen_id):
                return entry
            reopening = reopen and entry.reopenable
            if not entry.needs_work and not reopening:
                raise JournalError(f"generation {gen_id} needs no work (it is {entry.state})")
            if entry.held_by_other(self.owner, row[-1]):
                raise LeaseHeld(gen_id, str(entry.owner), entry.lease_expires)
            fence, expires = cur.execute(
                f"UPDATE {self.schema}.generations SET owner = %s, owner_pid = %s, "
                f"owner_host = %s, lease_expires = {_NOW} + %s, "
                f"fence = nextval('{self.schema}.fence') WHERE id = %s "
                "RETURNING fence, lease_expires",
                (*self._mine(), gen_id),
            ).fetchone() or (0, 0.0)
            if reopening:
                cur.execute(
                    f"UPDATE {self.schema}.generations SET state = 'requested', reason = '' "
                    "WHERE id = %s",
                    (gen_id,),
                )
                cur.execute(
                    f"UPDATE {self.schema}.transitions SET superseded = true "
                    f"WHERE generation_id = %s AND dest IN {_ENDED_SQL}",
                    (gen_id,),
                )
                entry = attrs.evolve(entry, state=State.REQUESTED, reason="")
            self._leases.hold(gen_id, fence)
            return attrs.evolve(entry, owner=self.owner, lease_expires=expires)

        try:
            result: Entry = self._now(run, "claim")
        except LeaseHeld:
            raise
        except JournalError as exc:
            raise JournalError(f"cannot take generation {gen_id} over now: {exc}") from None
        return result

    def entries(self) -> list[Entry]:
        """Every journalled generation, oldest first (this journal's queued writes first,
        within :attr:`flush_timeout`)."""
        self.flush()

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> list[Entry]:
            rows = cur.execute(
                f"SELECT {_COLUMNS} FROM {self.schema}.generations ORDER BY seq"
            ).fetchall()
            return [_entry(row) for row in rows]

        result: list[Entry] = self._now(run, "entries")
        return result

    def pending(self, *, cancelled: bool = False) -> list[Entry]:
        """Every generation that is not ended, or done but not delivered, oldest first; with
        ``cancelled``, the :attr:`~hybridgen.journal.Entry.reopenable` ones too."""
        return [e for e in self.entries() if e.needs_work or (cancelled and e.reopenable)]

    def path_of(self, gen_id: str) -> list[tuple[str, str, str]]:
        """The recorded transitions of one generation as ``(source, trigger, dest)``."""
        self.flush()

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> list[tuple[str, str, str]]:
            rows = cur.execute(
                f"SELECT source, trigger, dest FROM {self.schema}.transitions "
                "WHERE generation_id = %s ORDER BY wall, ctid",
                (gen_id,),
            ).fetchall()
            return [(r[0], r[1], r[2]) for r in rows]

        result: list[tuple[str, str, str]] = self._now(run, "path_of")
        return result

    # -- the queue ---------------------------------------------------------------------------------

    def submit(
        self,
        request: StartRequest,
        policy: Policy,
        meta: Mapping[str, str] | None = None,
        *,
        gen_id: str | None = None,
    ) -> str:
        """Queue a job (nothing is sent); its generation id. Blocks until it is stored."""
        values = _queued_row(request, policy, meta, gen_id)
        new_id = values[0]

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> None:
            cur.execute(
                f"INSERT INTO {self.schema}.generations (id, request, policy, meta, state, "
                "started_wall) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                values,
            )
            if cur.rowcount != 1 and not retrying:
                raise JournalError(f"generation {new_id} is already in the journal")

        self._now(run, "submit")
        return new_id

    def lease_next(self, limit: int = 1) -> list[Entry]:
        """Lease up to ``limit`` jobs that need work and that no live process holds, oldest
        first (``FOR UPDATE SKIP LOCKED``: workers never wait for each other)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> list[Entry]:
            rows = cur.execute(
                f"UPDATE {self.schema}.generations g SET owner = %s, owner_pid = %s, "
                f"owner_host = %s, lease_expires = {_NOW} + %s, "
                f"fence = nextval('{self.schema}.fence') "
                f"FROM (SELECT id FROM {self.schema}.generations WHERE {_NEEDS_WORK} "
                f"AND lease_expires < {_NOW} ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) AS t "
                f"WHERE g.id = t.id RETURNING "
                + ", ".join(f"g.{c.strip()}" for c in _COLUMNS.split(",")),
                (*self._mine(), limit),
            ).fetchall()
            leased = [_entry(row) for row in rows]
            for entry, row in zip(leased, rows, strict=True):
                self._leases.hold(entry.id, row[16])
            return leased

        result: list[Entry] = self._now(run, "lease_next")
        return result

    def _fenced_now(self, gen_id: str, what: str, sql: str, args: tuple[Any, ...]) -> bool:
        fence = self._leases.fence(gen_id)
        if fence is None:
            return False

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> bool:
            cur.execute(sql, (*args, gen_id, fence))
            return cur.rowcount == 1

        try:
            done: bool = self._now(run, what)
        except JournalError as exc:
            self._writer.report(JournalFailure(what, str(exc), gen_id, lost=False))
            return False
        if not done and self._current_fence(gen_id) != fence:
            self._leases.lost(gen_id, what)
        return done

    def _current_fence(self, gen_id: str) -> int | None:
        def run(cur: psycopg.Cursor[Any], retrying: bool) -> int | None:
            row = cur.execute(
                f"SELECT fence FROM {self.schema}.generations WHERE id = %s", (gen_id,)
            ).fetchone()
            return None if row is None else int(row[0])

        with contextlib.suppress(JournalError):
            fence: int | None = self._now(run, "fence")
            return fence
        return None

    def mark_sending(self, gen_id: str, *, again: bool = False) -> bool:
        """Record that ``gen_id``'s start request is about to leave (blocks until stored).

        True when it may be sent: this journal still holds the job and it is in ``requested``
        with no start sent under another lease (``again``: even so, for a policy with
        ``retry_unsafe_starts``). False: do not send it.
        """
        return self._fenced_now(
            gen_id,
            "sending",
            f"UPDATE {self.schema}.generations SET sending_fence = fence, started_wall = %s, "
            f"lease_expires = {_NOW} + %s WHERE (%s OR sending_fence IS NULL OR "
            "sending_fence = fence) AND state = 'requested' AND id = %s AND fence = %s",
            (time.time(), self.lease, again),
        )

    def begin_download(self, gen_id: str) -> bool:
        """Whether this journal may download ``gen_id``'s result now (blocks): it still holds the
        job, which has not failed and is not delivered (its ``done`` may still be queued); the
        lease is renewed for the download."""
        return self._fenced_now(
            gen_id,
            "download",
            f"UPDATE {self.schema}.generations SET download_fence = fence, "
            f"lease_expires = {_NOW} + %s WHERE id = %s AND fence = %s "
            "AND state NOT IN ('failed', 'cancelled') AND delivered_to IS NULL",
            (self.lease,),
        )

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state: ``queued``, ``running``, ``abandoned`` (not ended,
        no live lease, started), ``done``, ``unsaved`` (done, result not delivered), ``failed``
        and ``cancelled``."""
        self.flush()

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> dict[str, int]:
            rows = cur.execute(
                "SELECT CASE "
                "WHEN state = 'done' AND delivered_to IS NULL AND lease_expires > n "
                "THEN 'running' "
                "WHEN state = 'done' AND delivered_to IS NULL THEN 'unsaved' "
                f"WHEN state IN {_ENDED_SQL} THEN state "
                "WHEN lease_expires > n THEN 'running' "
                "WHEN sending_fence IS NULL AND file_id IS NULL THEN 'queued' "
                "ELSE 'abandoned' END AS kind, count(*) "
                f"FROM {self.schema}.generations, (SELECT {_NOW} AS n) AS now GROUP BY kind"
            ).fetchall()
            return {row[0]: int(row[1]) for row in rows}

        found: dict[str, int] = self._now(run, "counts")
        return {kind: found.get(kind, 0) for kind in QUEUE_KINDS}

    def leases(self) -> list[Lease]:
        """The live leases of jobs that need work, oldest job first (``remaining`` by the
        database's clock)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> list[Lease]:
            rows = cur.execute(
                f"SELECT id, owner, owner_pid, owner_host, lease_expires, state, n "
                f"FROM {self.schema}.generations, (SELECT {_NOW}::float8 AS n) AS now "
                f"WHERE {_NEEDS_WORK} AND lease_expires > n ORDER BY seq"
            ).fetchall()
            return [Lease(r[0], Owner(r[1], r[2], r[3]), r[4], r[5], r[4] - r[6]) for r in rows]

        result: list[Lease] = self._now(run, "leases")
        return result

    def holders(self) -> list[tuple[str, int, list[str]]]:
        """Who holds live leases: ``(owner, how many, up to 5 generation ids)`` per owner."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> list[tuple[str, int, list[str]]]:
            rows = cur.execute(
                "SELECT owner_pid, owner_host, owner, count(*), "
                "(array_agg(id ORDER BY seq))[1:5] "
                f"FROM {self.schema}.generations WHERE {_NEEDS_WORK} "
                f"AND lease_expires > {_NOW} GROUP BY owner_pid, owner_host, owner ORDER BY 2, 1"
            ).fetchall()
            return [(f"process {r[0]} on {r[1]} ({r[2]})", int(r[3]), list(r[4])) for r in rows]

        result: list[tuple[str, int, list[str]]] = self._now(run, "holders")
        return result

    def needs_work(self) -> int:
        """How many jobs are not ended, or done and not delivered (held or not)."""

        def run(cur: psycopg.Cursor[Any], retrying: bool) -> int:
            row = cur.execute(
                f"SELECT count(*) FROM {self.schema}.generations WHERE {_NEEDS_WORK}"
            ).fetchone()
            return int(row[0]) if row else 0

        count: int = self._now(run, "needs_work")
        return count


def _entry(row: tuple[Any, ...]) -> Entry:
    owner = None if row[11] is None else Owner(row[11], row[12], row[13])
    request, policy, meta = (json.loads(v) if isinstance(v, str) else v for v in row[1:4])
    return Entry(
        id=row[0],
        request=request_from_record(request),
        policy=Policy(**policy),
        meta=meta,
        state=State(row[4]),
        started_wall=row[5],
        file_id=row[6],
        url=row[7],
        channel=row[8],
        reason=row[9],
        delivered_to=row[10],
        owner=owner,
        lease_expires=row[14] or 0.0,
        queued=row[15] is None and row[4] == str(State.REQUESTED) and row[6] is None,
    )


class _PgWriter(_Writer):
    """The writer thread of a :class:`PostgresJournal`: each write in a transaction of the
    pool's, retried while the server is away."""

    def __init__(self, journal: PostgresJournal, max_queue: int) -> None:
        super().__init__(beat=max(0.05, journal.lease / 3), max_queue=max_queue)
        self.journal = journal

    def apply(self, write: _Write) -> None:
        self.journal._apply(write)

    def heartbeat(self) -> None:
        self.journal._heartbeat()
