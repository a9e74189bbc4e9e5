"""Make SQLite fail like a broken disk, in this process or (through ``sitecustomize``) in a child;
hold a journal's write lock from another process.

``install("full", after=N)``: after ``N`` successful writes, every write raises SQLite's own
"database or disk is full" error. ``install("readonly")``: every connection is opened with
``PRAGMA query_only``, so the engine itself refuses each write ("attempt to write a readonly
database"). A child process gets the same from ``child_env(kind, after)``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SITE = Path(__file__).resolve().parent / "sqlite_faults_site"
_WRITES = ("INSERT", "UPDATE", "DELETE")
_original_connect = sqlite3.connect


def install(kind: str, after: int = 0) -> None:
    """Patch :func:`sqlite3.connect` so that every later connection fails as ``kind`` says."""
    budget = [after]
    lock = threading.Lock()

    class DiskFull(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.lstrip().upper().startswith(_WRITES):
                with lock:
                    budget[0] -= 1
                    if budget[0] < 0:
                        raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        if kind == "full":
            return _original_connect(*args, factory=DiskFull, **kwargs)
        db = _original_connect(*args, **kwargs)
        db.execute("PRAGMA query_only = ON")
        return db

    if kind not in ("full", "readonly"):
        raise ValueError(f"unknown SQLite fault {kind!r}")
    sqlite3.connect = connect  # type: ignore[assignment]


def uninstall() -> None:
    """Undo :func:`install`."""
    sqlite3.connect = _original_connect


def install_from_env() -> None:
    """Install the fault that ``CHAOS_SQLITE_FAULT`` (and ``CHAOS_SQLITE_AFTER``) name, if any."""
    kind = os.environ.get("CHAOS_SQLITE_FAULT")
    if kind:
        install(kind, int(os.environ.get("CHAOS_SQLITE_AFTER", "0")))


def child_env(env: dict[str, str], kind: str, after: int = 0) -> dict[str, str]:
    """``env`` for a child process whose SQLite fails as ``kind`` says."""
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([str(SITE), here, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, "PYTHONPATH": path, "CHAOS_SQLITE_FAULT": kind, "CHAOS_SQLITE_AFTER": str(after)}


_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # until the test lets go (or dies: EOF)
db.execute("COMMIT")
"""


@contextlib.contextmanager
def lock_held(path: Path, timeout: float = 30.0) -> Iterator[subprocess.Popen[str]]:
    """Another process holds ``path``'s SQLite write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        yield holder
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=timeout) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=timeout)
