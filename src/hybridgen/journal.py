"""A journal of generations, so that a restarted client finishes what a crashed one started.

Each generation's request, policy and every transition are recorded as they happen. After a
crash, :meth:`SQLiteJournal.pending` lists the generations that had not ended (or whose result was
not yet delivered), and :meth:`hybridgen.driver.Client.resume` finishes each one by its file id,
without starting a new job on the server. :class:`SQLiteJournal` (stdlib :mod:`sqlite3`, WAL mode)
is the default; any object with the :class:`Journal` methods can replace it.

**Failures are contained.** Writes do not block the caller: :class:`SQLiteJournal` hands them to
its own writer thread through a bounded queue (only the write of a new file id is waited for, a
quarter of a second at most, see :class:`SQLiteJournal`). A write that finds the file locked by
another process waits in that thread (the first wait is reported, nothing is lost); a write that
fails (disk full, read-only file, a full queue, an entry this journal no longer owns) is logged,
counted in :attr:`SQLiteJournal.lost` and reported to the journal's watchers as a
:class:`JournalFailure` (the :class:`~hybridgen.driver.Client` turns each one into a
:class:`~hybridgen.events.JournalWarning` event). A generation never fails because of its journal.
:meth:`~SQLiteJournal.flush` and :meth:`~SQLiteJournal.close` wait for queued writes within a
bound, then give up on them (counted and reported).

**Leases: one owner per generation.** Each entry names its owner (:class:`Owner`: a random id per
journal object, its process id and host) and a lease expiry. :meth:`~SQLiteJournal.begin` takes the
lease for the writer; while the journal is open its writer thread renews the leases of its
unfinished entries every third of :attr:`SQLiteJournal.lease`; :meth:`~SQLiteJournal.close`
releases them. :meth:`~SQLiteJournal.claim` takes an entry over atomically, and only when nobody
live holds it: no owner, an expired lease, or an owner process on this host that is gone. Every
write about a generation is conditional on owning it, and a generation gets exactly one terminal
transition: the journal refuses a second one (a conditional update, backed by a partial unique
index).

**A server database.** The :class:`Journal` protocol maps onto a database such as PostgreSQL:

- ``claim`` is, in one transaction, ``SELECT ... WHERE id = $1 AND (owner IS NULL OR owner = $me
  OR lease_expires < now()) FOR UPDATE SKIP LOCKED`` then ``UPDATE ... SET owner = $me,
  lease_expires = now() + $lease`` (a worker pool claims ``LIMIT n`` rows the same way);
- every write is ``UPDATE generations ... WHERE id = $1 AND owner = $me AND state NOT IN ('done',
  'failed', 'cancelled')``, the transition row inserted only when one row changed;
- the one-terminal rule is a partial unique index on ``transitions (generation_id) WHERE dest IN
  ('done', 'failed', 'cancelled') AND NOT superseded``;
- the heartbeat is ``UPDATE ... SET lease_expires = now() + $lease WHERE owner = $me`` and
  unfinished.

**Paid for, not delivered.** A done entry whose result could not be saved stays pending
(:attr:`Entry.unsaved`, its ``url`` kept, the failure in its ``reason`` through
:meth:`~SQLiteJournal.undelivered`): resuming it downloads again, no new job. An entry cancelled
after the server named its file (:attr:`Entry.reopenable`, e.g. Ctrl-C) is not pending, but
``pending(cancelled=True)`` lists it and ``claim(gen_id, reopen=True)`` makes it unfinished again
(its cancel transition marked superseded) so that it can be followed by file id.

The process check is a shortcut for one host; across hosts the lease alone decides (clocks must
agree within a small part of the lease).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from .errors import JournalError, LeaseHeld
from .events import Transition
from .machine import TERMINAL, State
from .policy import Policy
from .video import StartRequest, request_from_record, request_record

__all__ = [
    "LEASE_LOST",
    "QUEUE_KINDS",
    "Entry",
    "Journal",
    "JournalFailure",
    "Lease",
    "Owner",
    "SQLiteJournal",
]

log: Final = logging.getLogger("hybridgen.journal")

_ENDED: Final = tuple(sorted(str(state) for state in TERMINAL))
_NOT_ENDED_SQL: Final = f"state NOT IN ({', '.join(repr(s) for s in _ENDED)})"
_NEEDS_WORK_SQL: Final = f"({_NOT_ENDED_SQL} OR (state = 'done' AND delivered_to IS NULL))"
_CLOSED: Final = "the journal closed before this write was done"

LEASE_LOST: Final = "lease lost"
"""How the reason of a :class:`JournalFailure` begins when another process took the job over:
this process must stop working on it."""

QUEUE_KINDS: Final = ("queued", "running", "abandoned", "done", "unsaved", "failed", "cancelled")
"""What a queue journal's ``counts()`` counts: ``queued`` (never started), ``running`` (a live
lease), ``abandoned`` (started, no live holder: the next worker takes it), ``done``, ``unsaved``
(done, its result not delivered), ``failed``, ``cancelled``."""


@attrs.frozen
class Owner:
    """Who holds a journal entry: a journal object's random ``id``, its process and host."""

    id: str
    pid: int
    host: str

    @classmethod
    def here(cls) -> Owner:
        """A new owner for this process (each journal object is its own owner)."""
        return cls(uuid.uuid4().hex[:16], os.getpid(), socket.gethostname())

    def gone(self) -> bool:
        """True when this owner's process is known to be dead (only decidable on its host)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # someone else's live process
            return False
        with contextlib.suppress(OSError, IndexError):
            # a killed process its parent has not reaped yet is a zombie: dead all the same
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] == "Z"
        return False

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


@attrs.frozen
class Entry:
    """One journalled generation: what was asked, how far it got, where its result went."""

    id: str
    request: StartRequest
    """What was asked: an :class:`~hybridgen.api.ImageRequest` or a
    :class:`~hybridgen.video.VideoRequest` (the journal records which)."""
    policy: Policy
    state: State
    started_wall: float
    file_id: str | None = None
    url: str | None = None
    channel: str | None = None
    reason: str = ""
    """Why it failed or was cancelled; for a done entry not delivered, why its save failed
    (:meth:`Journal.undelivered`)."""
    meta: Mapping[str, str] = attrs.field(factory=dict)
    delivered_to: str | None = None
    owner: Owner | None = None
    """Who holds the lease (``None``: nobody ever did, e.g. a journal from an older version)."""
    lease_expires: float = 0.0
    """Unix time the lease ends unless renewed (``0``: released)."""
    queued: bool = False
    """Submitted to a queue and never started: no start request was sent for it (see
    :meth:`hybridgen.journal_pg.PostgresJournal.submit`)."""

    @property
    def needs_work(self) -> bool:
        """Not ended, or done but its result not yet delivered."""
        if self.state not in TERMINAL:
            return True
        return self.unsaved

    @property
    def unsaved(self) -> bool:
        """Done on the server (its ``url`` kept) but its result not delivered yet: saving it
        again needs no new job."""
        return self.state is State.DONE and self.delivered_to is None

    @property
    def reopenable(self) -> bool:
        """Cancelled after the server named its file (a job that may run on, and is paid for):
        ``claim(..., reopen=True)`` can finish it."""
        return self.state is State.CANCELLED and self.file_id is not None and not self.delivered_to

    def held_by_other(self, me: Owner, now: float) -> bool:
        """True when an owner other than ``me`` is live: its lease runs and its process exists."""
        if self.owner is None or self.owner.id == me.id:
            return False
        return self.lease_expires > now and not self.owner.gone()


@attrs.frozen
class JournalFailure:
    """A journal write that failed (``lost``) or waits for another process's lock."""

    operation: str
    """``"begin"``, ``"record"``, ``"delivered"``, ``"undelivered"``, ``"fail"``,
    ``"heartbeat"``, ``"release"``."""
    reason: str
    generation_id: str | None = None
    lost: bool = True


FailureCallback = Callable[[JournalFailure], object]
"""Receives a :class:`JournalFailure`; may be called from the journal's writer thread."""


@attrs.frozen
class Lease:
    """A live lease: which worker holds which job, until when (``status`` prints these)."""

    generation_id: str
    owner: Owner
    expires: float
    """Unix time the lease ends unless renewed (by the journal's clock: the database's for
    PostgreSQL)."""
    state: str
    """The job's state (``done``: its result being saved)."""
    remaining: float
    """Seconds until it ends unless renewed, by the journal's clock when asked."""


def _added(callbacks: list[Any], callback: Any) -> Callable[[], None]:
    """Append ``callback`` to ``callbacks``; the function that takes it out again."""
    callbacks.append(callback)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)

    return remove


class _Leases:
    """The leases one journal object holds, with their fences, and who to tell when one is lost.

    Thread-safe: the writer thread and the callers' threads both use it.
    """

    def __init__(self, report: Callable[[JournalFailure], None]) -> None:
        self._report = report
        self._fences: dict[str, int] = {}
        self._taken: set[str] = set()  # the jobs another process took over from this journal
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[str], object]] = []

    def hold(self, gen_id: str, fence: int) -> None:
        with self._lock:
            self._fences[gen_id] = fence
            self._taken.discard(gen_id)

    def fence(self, gen_id: str) -> int | None:
        with self._lock:
            return self._fences.get(gen_id)

    def drop(self, gen_id: str) -> int | None:
        """Forget ``gen_id`` (released); its fence, if it was held."""
        with self._lock:
            return self._fences.pop(gen_id, None)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._fences)

    def taken(self, gen_id: str) -> bool:
        """Whether another process took ``gen_id`` over from this journal."""
        with self._lock:
            return gen_id in self._taken

    def watch(self, callback: Callable[[str], object]) -> Callable[[], None]:
        return _added(self._callbacks, callback)

    def lost(self, gen_id: str, operation: str) -> None:
        """Another process took ``gen_id`` over: forget it, report it, tell the callbacks."""
        with self._lock:
            known = self._fences.pop(gen_id, None) is not None
            self._taken.add(gen_id)
        if not known:
            return
        reason = f"{LEASE_LOST}: another process took {gen_id} over; this one stops on it"
        self._report(JournalFailure(operation, reason, gen_id, lost=True))
        for callback in tuple(self._callbacks):
            try:
                callback(gen_id)
            except Exception:
                log.exception("lease-lost callback %r raised", callback)


class Journal(Protocol):
    """What :class:`~hybridgen.driver.Client` needs from a journal (see the module docstring).

    ``begin``, ``record`` and ``delivered`` must return at once (queue the I/O) and must not raise
    for an I/O failure: they report it to the watchers. ``claim`` and ``flush`` may block; the
    client calls them from a worker thread.
    """

    def begin(
        self,
        gen_id: str,
        request: StartRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """A generation is about to send its start request (its lease is taken for this owner)."""

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """A generation made a transition (``file_id`` once the server named the file)."""

    def delivered(self, gen_id: str, where: str) -> None:
        """The result of a done generation was delivered (e.g. saved to ``where``)."""

    def undelivered(self, gen_id: str, reason: str) -> None:
        """The result of a done generation could not be delivered: keep ``reason`` in the
        entry's ``reason`` (its ``url`` is kept); it stays pending (:attr:`Entry.unsaved`)."""

    def claim(self, gen_id: str, *, reopen: bool = False) -> Entry:
        """Take the lease of ``gen_id`` atomically; raise :class:`~hybridgen.errors.LeaseHeld`
        when a live owner holds it, :class:`~hybridgen.errors.JournalError` when it cannot say.

        With ``reopen``, a :attr:`~Entry.reopenable` entry (cancelled, with a file id) is taken
        too and made unfinished again: state ``requested``, reason cleared, its earlier terminal
        transition kept in the history but marked superseded (the one-terminal rule counts only
        the live one), so the generation that finishes it records its own end."""

    def pending(self, *, cancelled: bool = False) -> list[Entry]:
        """Every generation that is not ended, or done but not delivered, oldest first; with
        ``cancelled``, the :attr:`~Entry.reopenable` ones too."""

    def watch(self, callback: FailureCallback) -> Callable[[], None]:
        """Report every :class:`JournalFailure` to ``callback``; returns an unwatcher."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued writes are done (at most ``timeout`` s); whether they all are."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    policy TEXT NOT NULL,
    meta TEXT NOT NULL,
    state TEXT NOT NULL,
    started_wall REAL NOT NULL,
    file_id TEXT,
    url TEXT,
    channel TEXT,
    reason TEXT NOT NULL DEFAULT '',
    delivered_to TEXT
);
CREATE TABLE IF NOT EXISTS transitions (
    generation_id TEXT NOT NULL REFERENCES generations(id),
    source TEXT NOT NULL,
    dest TEXT NOT NULL,
    trigger TEXT NOT NULL,
    wall REAL NOT NULL,
    detail TEXT NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0
);
"""
_LEASE_COLUMNS: Final = {
    "owner": "TEXT",
    "owner_pid": "INTEGER",
    "owner_host": "TEXT",
    "lease_expires": "REAL NOT NULL DEFAULT 0",
}
_QUEUE_COLUMNS: Final = {
    # bumped at every lease taken: the fence of the queue's calls
    "fence": "INTEGER NOT NULL DEFAULT 0",
    # the fence under which the start was sent (NULL: submitted, never sent)
    "sending_fence": "INTEGER",
    "download_fence": "INTEGER",
}
_OLD_ONE_TERMINAL: Final = "one_terminal_transition"
"""The index of journals before reopening existed (it counted superseded ends too)."""
_ONE_TERMINAL: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS one_live_terminal_transition ON transitions "
    f"(generation_id) WHERE dest IN ({', '.join(repr(s) for s in _ENDED)}) AND superseded = 0"
)
_TERMINAL_DESTS_SQL: Final = f"dest IN ({', '.join(repr(s) for s in _ENDED)})"
_COLUMNS: Final = (
    "id, request, policy, meta, state, started_wall, file_id, url, channel, reason, "
    "delivered_to, owner, owner_pid, owner_host, lease_expires, sending_fence, fence"
)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, its lock taken up front (``BEGIN IMMEDIATE``)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _is_lock(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


@attrs.define
class _Write:
    """One queued write: ``run(...)`` inside a transaction returns a refusal, or ``None``
    (SQLite: ``run(db)``; PostgreSQL: ``run(cursor, retrying)``)."""

    operation: str
    generation_id: str | None
    run: Callable[..., str | None]
    landed: threading.Event = attrs.field(factory=threading.Event)
    """Set once the write is done (committed, refused or lost)."""


class _Writer:
    """A journal's writer thread: drains a bounded queue of writes (:meth:`apply` each one) and
    renews the leases every ``beat`` seconds (:meth:`heartbeat`). Both backends share it."""

    def __init__(self, *, beat: float, max_queue: int) -> None:
        self.beat = beat
        self.queue: queue.Queue[_Write | None] = queue.Queue(max_queue)
        self.watchers: list[FailureCallback] = []
        self.lost = 0
        self.unfinished = 0
        self.idle = threading.Condition()
        self.stopping = False
        self.give_up_at = math.inf
        self.behind = False  # a caller gave up waiting for a write; cleared by the next success
        self.leases = _Leases(self.report)
        self.thread = threading.Thread(target=self._run, name="hybridgen-journal", daemon=True)

    # what a backend provides

    def apply(self, write: _Write) -> None:
        """Make ``write`` (in the writer thread); report a failure or refusal, never raise."""
        raise NotImplementedError

    def heartbeat(self) -> None:
        """Renew the leases this journal holds (in the writer thread)."""

    def slow(self) -> bool:
        """Whether the store is known to be slow now (nothing waits for a write then)."""
        return self.behind

    def finished(self) -> None:
        """The thread ends (close what it owns)."""

    # the queue

    def submit(self, write: _Write) -> None:
        with self.idle:
            if self.stopping:
                self.lose(write, "the journal is closed")
                return
            self.unfinished += 1
        try:
            self.queue.put_nowait(write)
        except queue.Full:
            self._done(write)
            self.lose(write, f"the journal's queue is full ({self.queue.maxsize} writes wait)")

    def report(self, failure: JournalFailure) -> None:
        level = logging.WARNING if failure.lost else logging.INFO
        gen = failure.generation_id or "-"
        log.log(level, "journal %s %s: %s", failure.operation, gen, failure.reason)
        for callback in tuple(self.watchers):
            try:
                callback(failure)
            except Exception:
                log.exception("journal watcher %r raised; it is detached", callback)
                with contextlib.suppress(ValueError):
                    self.watchers.remove(callback)

    def watch(self, callback: FailureCallback) -> Callable[[], None]:
        return _added(self.watchers, callback)

    def lose(self, write: _Write, reason: str) -> None:
        with self.idle:
            self.lost += 1
        self.report(JournalFailure(write.operation, reason, write.generation_id, lost=True))

    def wait_for(self, write: _Write, timeout: float) -> None:
        """Wait up to ``timeout`` s for ``write`` to land, unless the store is known to be slow
        (then at once: the caller's thread is the event loop)."""
        if not self.slow() and not write.landed.wait(timeout):
            self.behind = True

    def flush(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.unfinished == 0, timeout)

    def _done(self, write: _Write) -> None:
        write.landed.set()
        with self.idle:
            self.unfinished -= 1
            if self.unfinished == 0:
                self.idle.notify_all()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.beat
        try:
            while True:
                wait = 0.05 if self.stopping else max(0.0, next_beat - time.monotonic())
                try:
                    write = self.queue.get(timeout=wait)
                except queue.Empty:
                    write = None
                if write is not None:
                    self.apply(write)
                    self._done(write)
                elif self.stopping and self.queue.empty():
                    return
                if not self.stopping and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.beat
                    self.heartbeat()
        except Exception as exc:  # a broken connection: every write from now on is lost
            log.exception("the journal's writer thread stopped")
            self.drain(f"the journal's writer stopped: {exc!r}")
        finally:
            self.finished()

    def drain(self, reason: str) -> None:
        """Lose every queued write (``reason``) and take no more."""
        with self.idle:
            self.stopping = True
        while True:
            try:
                write = self.queue.get_nowait()
            except queue.Empty:
                return
            if write is not None:
                self.lose(write, reason)
                self._done(write)

    def stop(self, timeout: float, grace: float = 0.5) -> None:
        """Finish the queued writes within ``timeout`` seconds, then lose the rest and stop
        (waiting ``grace`` more for a write in progress)."""
        with self.idle:
            self.stopping = True
        self.give_up_at = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # wake the thread
        if threading.current_thread() is self.thread:
            return  # a journal dropped in its own writer thread: the loop ends on its own
        if self.thread.is_alive():
            self.thread.join(timeout + grace)
        if self.thread.is_alive():  # stuck in a write: leave it, lose what waits
            log.warning("the journal's writer is stuck in a write; it is left behind")
        self.drain(_CLOSED)


class _SQLiteWriter(_Writer):
    """The writer thread of a :class:`SQLiteJournal`: owns a connection, waits out other
    processes' locks."""

    def __init__(
        self,
        db: sqlite3.Connection,
        owner: Owner,
        lease: float,
        busy_timeout: float,
        max_queue: int,
    ) -> None:
        super().__init__(beat=max(0.05, lease / 3), max_queue=max_queue)
        self.db = db
        self.owner = owner
        self.lease = lease
        self.busy_timeout = busy_timeout
        self.waiting = False  # a wait for the lock was reported; cleared by the next success
        self.thread.start()

    def slow(self) -> bool:
        return self.behind or self.waiting

    def finished(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def apply(self, write: _Write, *, patient: bool = True) -> None:
        db = self.db
        while True:
            if time.monotonic() >= self.give_up_at:  # closing, and out of time
                self.lose(write, _CLOSED)
                return
            try:
                with _immediate(db):
                    refused = write.run(db)
            except sqlite3.Error as exc:
                if _is_lock(exc) and patient and time.monotonic() < self.give_up_at:
                    if not self.waiting:
                        self.waiting = True
                        reason = (
                            f"another process holds the journal's lock; the write waits ({exc})"
                        )
                        self.report(
                            JournalFailure(write.operation, reason, write.generation_id, lost=False)
                        )
                    continue  # the connection's busy timeout has waited already
                if _is_lock(exc) and patient:
                    self.lose(write, f"{_CLOSED}: another process held its lock ({exc})")
                elif _is_lock(exc):  # a heartbeat: no row is lost, the next one renews the leases
                    reason = f"another process holds the journal's lock; a heartbeat waits ({exc})"
                    self.report(
                        JournalFailure(write.operation, reason, write.generation_id, lost=False)
                    )
                else:
                    self.lose(write, f"{type(exc).__name__}: {exc}")
                return
            except Exception as exc:  # a bug or an OSError: report, never kill the thread
                self.lose(write, repr(exc))
                return
            self.waiting = self.behind = False
            if refused is not None:
                self.lose(write, refused)
            return

    def heartbeat(self) -> None:
        self.apply(_Write("heartbeat", None, self._heartbeat), patient=False)

    def _heartbeat(self, db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE generations SET lease_expires = ? "
            f"WHERE owner = ? AND lease_expires > 0 AND {_NEEDS_WORK_SQL}",
            (time.time() + self.lease, self.owner.id),
        )
        held = list(self.leases.held())
        if held:  # the leases another process took over meanwhile
            rows = db.execute(
                f"SELECT id FROM generations WHERE id IN ({', '.join('?' * len(held))}) "
                "AND (owner IS NULL OR owner != ?)",
                (*held, self.owner.id),
            ).fetchall()
            for (gen_id,) in rows:
                self.leases.lost(gen_id, "heartbeat")

    def _release(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE generations SET lease_expires = 0 WHERE owner = ?", (self.owner.id,))

    def stop(self, timeout: float, grace: float = 0.5) -> None:
        """Finish the queued writes within ``timeout`` seconds (releasing this owner's leases
        last), then lose the rest and stop."""
        self.submit(_Write("release", None, self._release))
        super().stop(timeout, grace=self.busy_timeout + grace)


class SQLiteJournal:
    """A :class:`Journal` in one SQLite file, written by its own thread (see the module docstring).

    ``lease`` is how long an entry stays this journal's after the last heartbeat (renewed every
    third of it while open); ``busy_timeout`` how long one attempt waits for another process's
    lock; ``max_queue`` how many writes may wait (more are lost and reported); ``flush_timeout``
    how long :meth:`flush` and :meth:`close` wait for queued writes by default.

    One write is waited for: the transition that first records a generation's file id (losing it
    in a crash would leave a job on the server that ``resume`` cannot find). :meth:`record` waits
    up to ``durable_wait`` seconds for it, so that its event is seen after the file id is safe,
    and not at all while the journal is known to be slow (locked, or a previous wait timed out).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lease: float = 30.0,
        busy_timeout: float = 1.0,
        max_queue: int = 10_000,
        flush_timeout: float = 5.0,
        durable_wait: float = 0.25,
        retry_for: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.lease = lease
        self.retry_for = retry_for
        self.flush_timeout = flush_timeout
        self.durable_wait = durable_wait
        self.owner = Owner.here()
        """This journal object's identity in the entries it owns."""
        self._db = _connect(self.path, busy_timeout)
        self._lock = threading.Lock()
        try:
            self._create_schema()
        except BaseException:
            self._db.close()
            raise
        self._writer = _SQLiteWriter(
            _connect(self.path, busy_timeout), self.owner, lease, busy_timeout, max_queue
        )
        self._leases = self._writer.leases
        self._closed = False
        # a journal dropped without close() still releases its leases and stops its thread
        self._finalizer = weakref.finalize(self, self._writer.stop, 1.0)

    def _create_schema(self) -> None:
        db = self._db
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        if self._add_columns(db, check=True):  # an older journal: one process migrates it
            with _immediate(db):
                self._add_columns(db)
        old = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (_OLD_ONE_TERMINAL,)
        ).fetchone()
        if old is not None:
            db.execute(f"DROP INDEX {_OLD_ONE_TERMINAL}")
        try:
            db.execute(_ONE_TERMINAL)
        except sqlite3.IntegrityError:  # an old journal already has a double: updates still guard
            log.warning("%s has a generation with two terminal transitions", self.path)

    @staticmethod
    def _add_columns(db: sqlite3.Connection, *, check: bool = False) -> bool:
        """Add the columns a journal written by an older version lacks (``check``: only say
        whether some are missing)."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(generations)")}
        missing = [(n, k) for n, k in (_LEASE_COLUMNS | _QUEUE_COLUMNS).items() if n not in columns]
        old_transitions = "superseded" not in {
            row[1] for row in db.execute("PRAGMA table_info(transitions)")
        }
        if check:
            return bool(missing) or old_transitions
        for name, kind in missing:
            db.execute(f"ALTER TABLE generations ADD COLUMN {name} {kind}")
        if "sending_fence" not in columns:  # every older entry was begun: its start may be out
            db.execute("UPDATE generations SET sending_fence = 0")
        if old_transitions:
            db.execute("ALTER TABLE transitions ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0")
        return True

    @property
    def lost(self) -> int:
        """How many writes failed or were given up since this journal was opened."""
        return self._writer.lost

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def queued(self) -> int:
        """How many writes are queued or being made now (not yet committed, refused or lost)."""
        return self._writer.unfinished

    def watch(self, callback: FailureCallback) -> Callable[[], None]:
        """Report each :class:`JournalFailure` to ``callback`` (called from the writer thread)."""
        return self._writer.watch(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is done (at most ``timeout``, default
        :attr:`flush_timeout`); return whether they all are."""
        return self._writer.flush(self.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> int:
        """Finish queued writes (within ``timeout``, default :attr:`flush_timeout`), release this
        journal's leases, close the file; return how many writes were lost since it opened."""
        if not self._closed:
            self._closed = True
            self._finalizer.detach()
            self._writer.stop(self.flush_timeout if timeout is None else timeout)
            with self._lock:
                self._db.close()
        return self.lost

    def _mine(self) -> tuple[float, str, int, str]:
        owner = self.owner
        return time.time() + self.lease, owner.id, owner.pid, owner.host

    def begin(
        self,
        gen_id: str,
        request: StartRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """Queue a new generation in state ``requested``, its lease held by this journal."""
        row = (
            gen_id,
            request_record(request),
            json.dumps(attrs.asdict(policy)),
            json.dumps(dict(meta)),
            str(State.REQUESTED),
            started_wall,
        )

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO generations (id, request, policy, meta, state, started_wall, "
                "lease_expires, owner, owner_pid, owner_host, fence, sending_fence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
                row + self._mine(),
            )
            self._leases.hold(gen_id, 1)

        self._writer.submit(_Write("begin", gen_id, run))

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """Queue one transition and the generation's new state (refused unless this journal
        owns the generation and it has not ended)."""
        owner = self.owner.id

        def run(db: sqlite3.Connection) -> str | None:
            changed = db.execute(
                "UPDATE generations SET state = ?, file_id = COALESCE(?, file_id), "
                "url = COALESCE(?, url), channel = COALESCE(?, channel), "
                "reason = CASE WHEN ? = 'done' THEN reason ELSE ? END "
                f"WHERE id = ? AND owner = ? AND {_NOT_ENDED_SQL}",
                (
                    str(event.dest),
                    file_id,
                    event.url,
                    event.channel,
                    str(event.dest),
                    event.detail if event.terminal else "",
                    gen_id,
                    owner,
                ),
            ).rowcount
            if changed != 1:
                return self._refused(db, gen_id, f"{event.source} -> {event.dest}", "record")
            db.execute(
                "INSERT INTO transitions (generation_id, source, dest, trigger, wall, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    gen_id,
                    str(event.source),
                    str(event.dest),
                    str(event.trigger),
                    event.wall,
                    event.detail,
                ),
            )
            return None

        write = _Write("record", gen_id, run)
        self._writer.submit(write)
        if file_id is not None and event.source is State.REQUESTED:  # the file id, first time
            self._writer.wait_for(write, self.durable_wait)

    def delivered(self, gen_id: str, where: str) -> None:
        """Queue: a done generation's result was delivered to ``where`` (the first one counts;
        refused when this journal held the job and another process took it over)."""
        owner = self.owner.id

        def run(db: sqlite3.Connection) -> str | None:
            if self._leases.taken(gen_id):
                return None  # reported when the lease was lost
            held = self._leases.fence(gen_id) is not None
            changed = db.execute(
                "UPDATE generations SET delivered_to = ? WHERE id = ? AND state = 'done' "
                "AND (delivered_to IS NULL OR delivered_to = ?) AND (? OR owner = ?)",
                (where, gen_id, where, not held, owner),
            ).rowcount
            if changed == 1 or (held and self._lost_to_other(db, gen_id, "delivered")):
                return None
            return f"{gen_id} is not done, already delivered, or held by another process"

        self._writer.submit(_Write("delivered", gen_id, run))

    def undelivered(self, gen_id: str, reason: str) -> None:
        """Queue: a done generation's result could not be delivered, because of ``reason``
        (kept in the entry; the entry stays pending, :attr:`Entry.unsaved`)."""

        def run(db: sqlite3.Connection) -> str | None:
            changed = db.execute(
                "UPDATE generations SET reason = ? "
                "WHERE id = ? AND state = 'done' AND delivered_to IS NULL",
                (reason, gen_id),
            ).rowcount
            return None if changed == 1 else f"{gen_id} is not done, or already delivered"

        self._writer.submit(_Write("undelivered", gen_id, run))

    def fail(self, gen_id: str, reason: str) -> None:
        """Queue: mark an unfinished generation this journal owns failed without a transition
        (e.g. it cannot be resumed)."""
        owner = self.owner.id

        def run(db: sqlite3.Connection) -> str | None:
            changed = db.execute(
                f"UPDATE generations SET state = ?, reason = ? "
                f"WHERE id = ? AND owner = ? AND {_NOT_ENDED_SQL}",
                (str(State.FAILED), reason, gen_id, owner),
            ).rowcount
            return None if changed == 1 else self._refused(db, gen_id, "failed", "fail")

        self._writer.submit(_Write("fail", gen_id, run))

    def _lost_to_other(self, db: sqlite3.Connection, gen_id: str, operation: str) -> bool:
        """True (and the lease reported lost) when another owner took ``gen_id`` over from
        this journal."""
        if self._leases.fence(gen_id) is None:
            return False
        row = db.execute("SELECT owner FROM generations WHERE id = ?", (gen_id,)).fetchone()
        if row is None or row[0] == self.owner.id:
            return False
        self._leases.lost(gen_id, operation)
        return True

    def _refused(
        self, db: sqlite3.Connection, gen_id: str, what: str, operation: str
    ) -> str | None:
        """Why a conditional write about ``gen_id`` changed nothing (``None``: the lease was
        lost, which is reported as such)."""
        if self._lost_to_other(db, gen_id, operation):
            return None
        row = db.execute(
            "SELECT state, owner_pid, owner_host FROM generations WHERE id = ?", (gen_id,)
        ).fetchone()
        if row is None:
            return f"not recorded ({what}): {gen_id} is not in the journal"
        if row[0] in _ENDED:
            return f"not recorded ({what}): {gen_id} has already ended ({row[0]})"
        return f"not recorded ({what}): {gen_id} is now held by process {row[1]} on {row[2]}"

    def _answer(self, what: str, call: Callable[[sqlite3.Connection], Any]) -> Any:
        """A call that answers: ``call(db)`` in one write transaction, again while another
        process holds the file's lock (within :attr:`retry_for`)."""
        give_up = time.monotonic() + self.retry_for
        while True:
            try:
                with self._lock, _immediate(self._db) as db:
                    return call(db)
            except sqlite3.Error as exc:
                if _is_lock(exc) and time.monotonic() < give_up:
                    continue  # the connection's busy timeout has waited already
                raise JournalError(f"cannot {what} in the journal {self.path} now: {exc}") from None

    # -- the queue: worker processes on one machine share the file ---------------------------

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

        def run(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO generations (id, request, policy, meta, state, started_wall) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    values,
                )
            except sqlite3.IntegrityError:
                raise JournalError(f"generation {new_id} is already in the journal") from None

        self._answer("queue a job", run)
        return new_id

    def lease_next(self, limit: int = 1) -> list[Entry]:
        """Lease up to ``limit`` jobs that need work and that no live process holds, oldest
        first (one write transaction: two workers never lease the same job)."""

        def run(db: sqlite3.Connection) -> list[tuple[Entry, int]]:
            now = time.time()
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM generations WHERE {_NEEDS_WORK_SQL} "
                "AND (lease_expires < ? OR owner_host = ?) ORDER BY rowid",
                (now, self.owner.host),
            )
            expires, owner, pid, host = self._mine()
            leased: list[tuple[Entry, int]] = []
            for row in rows.fetchall():
                entry = _entry(row)
                if entry.held_by_other(self.owner, now) or self._leases.fence(entry.id) is not None:
                    continue
                leased.append((entry, self._fence_of(row) + 1))
                if len(leased) == limit:
                    break
            for entry, fence in leased:
                db.execute(
                    "UPDATE generations SET owner = ?, owner_pid = ?, owner_host = ?, "
                    "lease_expires = ?, fence = ? WHERE id = ?",
                    (owner, pid, host, expires, fence, entry.id),
                )
            return [
                (attrs.evolve(entry, owner=self.owner, lease_expires=expires), fence)
                for entry, fence in leased
            ]

        leased: list[tuple[Entry, int]] = self._answer("lease a job", run)
        for entry, fence in leased:
            self._leases.hold(entry.id, fence)
        return [entry for entry, _ in leased]

    def _fenced_now(self, gen_id: str, what: str, sql: str, args: tuple[Any, ...]) -> bool:
        """A fenced write that answers: ``sql`` ends with ``id = ? AND fence = ? AND owner = ?``;
        whether it changed the row (a refusal because of another owner is a lost lease)."""
        fence = self._leases.fence(gen_id)
        if fence is None:
            return False

        def run(db: sqlite3.Connection) -> bool:
            if db.execute(sql, (*args, gen_id, fence, self.owner.id)).rowcount == 1:
                return True
            self._lost_to_other(db, gen_id, what)
            return False

        try:
            done: bool = self._answer(what, run)
        except JournalError as exc:
            self._writer.report(JournalFailure(what, str(exc), gen_id, lost=False))
            return False
        return done

    def mark_sending(self, gen_id: str, *, again: bool = False) -> bool:
        """Record that ``gen_id``'s start is about to leave (blocks); whether it may be sent, as
        :meth:`PostgresJournal.mark_sending <hybridgen.journal_pg.PostgresJournal.mark_sending>`
        says."""
        return self._fenced_now(
            gen_id,
            "sending",
            "UPDATE generations SET sending_fence = fence, started_wall = ?, lease_expires = ? "
            "WHERE (? OR sending_fence IS NULL OR sending_fence = fence) AND state = 'requested' "
            "AND id = ? AND fence = ? AND owner = ?",
            (time.time(), time.time() + self.lease, again),
        )

    def begin_download(self, gen_id: str) -> bool:
        """Whether this journal may download ``gen_id``'s result now (blocks; the lease renewed),
        as :meth:`PostgresJournal.begin_download
        <hybridgen.journal_pg.PostgresJournal.begin_download>` says."""
        return self._fenced_now(
            gen_id,
            "download",
            "UPDATE generations SET download_fence = fence, lease_expires = ? "
            "WHERE state NOT IN ('failed', 'cancelled') AND delivered_to IS NULL "
            "AND id = ? AND fence = ? AND owner = ?",
            (time.time() + self.lease,),
        )

    def release(self, gen_id: str) -> None:
        """Queue: give ``gen_id``'s lease up (another worker may take it at once); this journal
        writes nothing more about it."""
        owner = self.owner.id

        def run(db: sqlite3.Connection) -> None:
            fence = self._leases.drop(gen_id)  # the writes queued before this one used it
            if fence is not None:
                db.execute(
                    "UPDATE generations SET lease_expires = 0 "
                    "WHERE id = ? AND fence = ? AND owner = ?",
                    (gen_id, fence, owner),
                )

        self._writer.submit(_Write("release", gen_id, run))

    def holds(self, gen_id: str) -> bool:
        """Whether this journal holds ``gen_id``'s lease (as far as it knows)."""
        return self._leases.fence(gen_id) is not None

    def on_lease_lost(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(generation_id)`` when another process took a job of this journal's
        over (from the writer thread, or the thread that called); returns an unwatcher."""
        return self._leases.watch(callback)

    def needs_work(self) -> int:
        """How many jobs are not ended, or done and not delivered (held or not)."""
        self.flush()
        with self._lock:
            row = self._db.execute(
                f"SELECT count(*) FROM generations WHERE {_NEEDS_WORK_SQL}"
            ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """How many jobs are in each of :data:`QUEUE_KINDS`."""
        return _queue_counts(self.entries(), time.time())

    def leases(self) -> list[Lease]:
        """The live leases of jobs that need work, oldest job first."""
        return _live_leases(self.entries(), time.time())

    def claim(self, gen_id: str, *, reopen: bool = False) -> Entry:
        """Take the lease of ``gen_id`` for this journal, in one write transaction.

        Returns the entry. Raises :class:`~hybridgen.errors.LeaseHeld` when another owner is live
        (its lease runs and its process exists), :class:`~hybridgen.errors.JournalError` when the
        entry does not exist or needs no work, or the journal cannot be written now. With
        ``reopen``, a :attr:`~Entry.reopenable` entry is taken and made unfinished again (state
        ``requested``, its cancel transition marked superseded; see :meth:`Journal.claim`).
        """
        now = time.time()
        try:
            with self._lock, _immediate(self._db) as db:
                row = db.execute(f"SELECT {_COLUMNS} FROM generations WHERE id = ?", (gen_id,))
                found = row.fetchone()
                if found is None:
                    raise JournalError(f"generation {gen_id} is not in the journal {self.path}")
                entry = _entry(found)
                reopening = reopen and entry.reopenable
                if not entry.needs_work and not reopening:
                    raise JournalError(f"generation {gen_id} needs no work (it is {entry.state})")
                if entry.held_by_other(self.owner, now):
                    raise LeaseHeld(gen_id, str(entry.owner), entry.lease_expires)
                expires, owner, pid, host = self._mine()
                db.execute(
                    "UPDATE generations SET owner = ?, owner_pid = ?, owner_host = ?, "
                    "lease_expires = ?, fence = fence + 1 WHERE id = ?",
                    (owner, pid, host, expires, gen_id),
                )
                if reopening:
                    db.execute(
                        "UPDATE generations SET state = ?, reason = '' WHERE id = ?",
                        (str(State.REQUESTED), gen_id),
                    )
                    db.execute(
                        "UPDATE transitions SET superseded = 1 "
                        f"WHERE generation_id = ? AND {_TERMINAL_DESTS_SQL}",
                        (gen_id,),
                    )
                    entry = attrs.evolve(entry, state=State.REQUESTED, reason="")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot take generation {gen_id} over now: {exc}") from None
        self._leases.hold(gen_id, self._fence_of(found) + 1)
        return attrs.evolve(entry, owner=self.owner, lease_expires=expires)

    @staticmethod
    def _fence_of(row: tuple[Any, ...]) -> int:
        return int(row[16] or 0)

    def entries(self) -> list[Entry]:
        """Every journalled generation, oldest first (this journal's queued writes done first,
        within :attr:`flush_timeout`)."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM generations ORDER BY started_wall, rowid"
            ).fetchall()
        return [_entry(row) for row in rows]

    def pending(self, *, cancelled: bool = False) -> list[Entry]:
        """Every generation that is not ended, or done but not delivered, oldest first; with
        ``cancelled``, the :attr:`~Entry.reopenable` ones too."""
        return [e for e in self.entries() if e.needs_work or (cancelled and e.reopenable)]

    def path_of(self, gen_id: str) -> list[tuple[str, str, str]]:
        """The recorded transitions of one generation as ``(source, trigger, dest)``."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT source, trigger, dest FROM transitions WHERE generation_id = ? "
                "ORDER BY rowid",
                (gen_id,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def _entry(row: tuple[Any, ...]) -> Entry:
    owner = None if row[11] is None else Owner(row[11], row[12], row[13])
    return Entry(
        id=row[0],
        request=request_from_record(row[1]),
        policy=Policy(**json.loads(row[2])),
        meta=json.loads(row[3]),
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


def _queue_counts(entries: list[Entry], now: float) -> dict[str, int]:
    """How many of ``entries`` are in each of :data:`QUEUE_KINDS` at Unix time ``now``."""
    counts = dict.fromkeys(QUEUE_KINDS, 0)
    for entry in entries:
        live = entry.lease_expires > now and entry.owner is not None and not entry.owner.gone()
        if entry.state is State.DONE:
            kind = "done" if entry.delivered_to else "running" if live else "unsaved"
        elif entry.state in TERMINAL:
            kind = str(entry.state)
        else:
            kind = "running" if live else "queued" if entry.queued else "abandoned"
        counts[kind] += 1
    return counts


def _live_leases(entries: list[Entry], now: float) -> list[Lease]:
    """The live leases among ``entries`` that need work, in their order."""
    return [
        Lease(
            entry.id, entry.owner, entry.lease_expires, str(entry.state), entry.lease_expires - now
        )
        for entry in entries
        if entry.needs_work
        and entry.owner is not None
        and entry.lease_expires > now
        and not entry.owner.gone()
    ]


def _queued_row(
    request: StartRequest, policy: Policy, meta: Mapping[str, str] | None, gen_id: str | None
) -> tuple[str, str, str, str, str, float]:
    """A submitted job's ``(id, request, policy, meta, state, started_wall)`` (a new id unless
    ``gen_id``), as both backends store it."""
    return (
        gen_id or uuid.uuid4().hex[:16],
        request_record(request),
        json.dumps(attrs.asdict(policy)),
        json.dumps(dict(meta or {})),
        str(State.REQUESTED),
        time.time(),
    )
