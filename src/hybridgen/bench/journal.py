"""Journal under a held lock: the longest event-loop stall while another process holds it.

Another process takes the journal file's write lock (``BEGIN IMMEDIATE``) and keeps it for 8 s
(1 s with ``--smoke``). Meanwhile one client runs generations back to back (0.2 s jobs on the
in-memory server, real clock) with that journal, and a trio task asks to wake every 10 ms and
records the longest extra delay: how long the event loop was blocked. Ours is
:class:`~hybridgen.journal.SQLiteJournal` (writes on its own thread); the baseline writes the same
rows on the event loop with SQLite's default 5 s busy timeout, as the journal did before::

    python -m hybridgen.bench journal [--smoke]
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from ..driver import Client
from ..emulator.model import Faults, ServerModel
from ..events import Transition
from ..journal import Entry, Journal, SQLiteJournal
from ..machine import State
from ..policy import Policy
from ..testing import MemoryTransport
from ..video import StartRequest
from ._report import Figure, figure

__all__ = ["run"]

TICK = 0.01
_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


class OnTheLoop:
    """The baseline: each write runs on the caller's thread (the event loop) and may raise."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)  # busy timeout: SQLite's 5 s

    def begin(
        self,
        gen_id: str,
        request: StartRequest,
        policy: Policy,
        started_wall: float,
        meta: Mapping[str, str],
    ) -> None:
        """Insert the row now."""
        self._db.execute(
            "INSERT INTO generations (id, request, policy, meta, state, started_wall) "
            "VALUES (?, '{}', '{}', '{}', ?, ?)",
            (gen_id, str(State.REQUESTED), started_wall),
        )

    def record(self, gen_id: str, event: Transition, file_id: str | None) -> None:
        """Update the row now."""
        self._db.execute("UPDATE generations SET state = ? WHERE id = ?", (str(event.dest), gen_id))

    def delivered(self, gen_id: str, where: str) -> None:
        """Not measured."""

    def undelivered(self, gen_id: str, reason: str) -> None:
        """Not measured."""

    def claim(self, gen_id: str, *, reopen: bool = False) -> Entry:
        """Not measured."""
        raise NotImplementedError

    def pending(self, *, cancelled: bool = False) -> list[Entry]:
        """Not measured."""
        return []

    def watch(self, callback: Callable[[Any], object]) -> Callable[[], None]:
        """Nothing to watch: failures raise."""
        return lambda: None

    def flush(self, timeout: float | None = None) -> bool:
        """Every write is done when it returns."""
        return True


def _stall(journal: Journal, hold: float) -> tuple[float, int]:
    """The longest loop stall (s) and the generations done while the lock is held."""

    async def main() -> tuple[float, int]:
        worst = 0.0
        done = 0

        async def ticker(task_status: trio.TaskStatus[None]) -> None:
            nonlocal worst
            last = time.perf_counter()
            task_status.started()
            while True:
                await trio.sleep(TICK)
                now = time.perf_counter()
                worst = max(worst, now - last - TICK)
                last = now

        client = Client(MemoryTransport(ServerModel(Faults(gen_time=0.2))), journal=journal)
        async with trio.open_nursery() as nursery:
            await nursery.start(ticker)
            until = time.perf_counter() + hold
            while time.perf_counter() < until:
                result = await client.start("a red fox")
                done += result.state is State.DONE
            nursery.cancel_scope.cancel()
        return worst, done

    return trio.run(main)


def _locked(path: Path, hold: float, journal: Journal) -> tuple[float, int]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(hold)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline() != "locked\n":
            raise RuntimeError("the lock holder did not start")
        return _stall(journal, hold)
    finally:
        holder.wait(timeout=hold + 30)


def run(smoke: bool = False) -> list[Figure]:
    """Measure both journals under the same held lock, one after the other."""
    hold = 1.0 if smoke else 8.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        SQLiteJournal(path).close()
        ours = SQLiteJournal(path)
        try:
            stall, done = _locked(path, hold, ours)
        finally:
            ours.close(timeout=10)
        quiet = logging.getLogger("hybridgen.driver")
        level, quiet.level = quiet.level, logging.CRITICAL  # the baseline's errors are expected
        try:
            base_stall, base_done = _locked(path, hold, OnTheLoop(path))
        finally:
            quiet.setLevel(level)
    return [
        figure("journal.lock.max_loop_stall", stall, "s", base_stall),
        figure("journal.lock.done", done, "generations", base_done, higher_is_better=True),
    ]
