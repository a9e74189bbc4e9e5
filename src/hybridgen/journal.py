"""A journal of generations, so that a restarted client finishes what a crashed one started.

Each generation's request, policy and every transition are recorded as they happen. After a
crash, :meth:`SQLiteJournal.pending` lists the generations that had not ended (or whose result was
not yet delivered), and :meth:`hybridgen.driver.Client.resume` finishes each one by its file id,
without starting a new job on the server. :class:`SQLiteJournal` (stdlib :mod:`sqlite3`, WAL mode)
is the default; any object with the :class:`Journal` methods can replace it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from .api import ImageRequest
from .events import Transition
from .machine import TERMINAL, State
from .policy import Policy

__all__ = ["Entry", "Journal", "SQLiteJournal"]


@attrs.frozen
class Entry:
    """One journalled generation: what was asked, how far it got, where its result went."""

    id: str
    request: ImageRequest
    policy: Policy
    state: State
    started_wall: float
    file_id: str | None = None
    url: str | None = None
    channel: str | None = None
    reason: str = ""
    meta: Mapping[str, str] = attrs.field(factory=dict)
    delivered_to: str | None = None

    @property
    def needs_work(self) -> bool:
        """Not ended, or done but its result not yet delivered."""
        if self.state not in TERMINAL:
            return True
        return self.state is State.DONE and self.delivered_to is None


class Journal(Protocol):
    """What :class:`~hybridgen.driver.Client` needs from a journal."""

    def begin(
        self,
        gen_id: str,
        request: ImageRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """A generation is about to send its start request."""

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """A generation made a transition (``file_id`` once the server named the file)."""

    def delivered(self, gen_id: str, where: str) -> None:
        """The result of a done generation was delivered (e.g. saved to ``where``)."""

    def pending(self) -> list[Entry]:
        """Every generation that is not ended, or done but not delivered, oldest first."""


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
    detail TEXT NOT NULL
);
"""


class SQLiteJournal:
    """A :class:`Journal` in one SQLite file; every write is committed at once (crash-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def begin(
        self,
        gen_id: str,
        request: ImageRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """Record a new generation in state ``requested``."""
        self._write(
            "INSERT INTO generations (id, request, policy, meta, state, started_wall) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                gen_id,
                json.dumps(attrs.asdict(request)),
                json.dumps(attrs.asdict(policy)),
                json.dumps(dict(meta)),
                str(State.REQUESTED),
                started_wall,
            ),
        )

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """Record one transition and the generation's new state."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    gen_id,
                    str(event.source),
                    str(event.dest),
                    str(event.trigger),
                    event.wall,
                    event.detail,
                ),
            )
            self._db.execute(
                "UPDATE generations SET state = ?, file_id = COALESCE(?, file_id), "
                "url = COALESCE(?, url), channel = COALESCE(?, channel), "
                "reason = CASE WHEN ? = 'done' THEN reason ELSE ? END WHERE id = ?",
                (
                    str(event.dest),
                    file_id,
                    event.url,
                    event.channel,
                    str(event.dest),
                    event.detail if event.terminal else "",
                    gen_id,
                ),
            )

    def delivered(self, gen_id: str, where: str) -> None:
        """Mark a done generation's result as delivered to ``where``."""
        self._write("UPDATE generations SET delivered_to = ? WHERE id = ?", (where, gen_id))

    def fail(self, gen_id: str, reason: str) -> None:
        """Mark a generation failed without a transition (e.g. it cannot be resumed)."""
        self._write(
            "UPDATE generations SET state = ?, reason = ? WHERE id = ?",
            (str(State.FAILED), reason, gen_id),
        )

    def entries(self) -> list[Entry]:
        """Every journalled generation, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, request, policy, meta, state, started_wall, file_id, url, channel, "
                "reason, delivered_to FROM generations ORDER BY started_wall, rowid"
            ).fetchall()
        return [
            Entry(
                id=row[0],
                request=ImageRequest(**json.loads(row[1])),
                policy=Policy(**json.loads(row[2])),
                meta=json.loads(row[3]),
                state=State(row[4]),
                started_wall=row[5],
                file_id=row[6],
                url=row[7],
                channel=row[8],
                reason=row[9],
                delivered_to=row[10],
            )
            for row in rows
        ]

    def pending(self) -> list[Entry]:
        """Every generation that is not ended, or done but not delivered, oldest first."""
        return [entry for entry in self.entries() if entry.needs_work]

    def path_of(self, gen_id: str) -> list[tuple[str, str, str]]:
        """The recorded transitions of one generation as ``(source, trigger, dest)``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT source, trigger, dest FROM transitions WHERE generation_id = ? "
                "ORDER BY rowid",
                (gen_id,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]
