"""Where results land on disk: atomic image saves and opening the journal file.

A saved image is written to a temporary file beside its target and renamed, so a reader never sees
a partial file; the download has a deadline (:data:`DOWNLOAD_TIMEOUT`). Errors become a reason
(saves) or a :class:`~hybridgen.errors.ConfigError` naming ``--journal``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from ..errors import ConfigError, HybridgenError
from ._output import _say

if TYPE_CHECKING:
    from ..journal import SQLiteJournal
    from ..transport import SuperDuperTransport


DOWNLOAD_TIMEOUT: Final = 120.0
"""The longest the image download may take (not scaled)."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def _save(transport: SuperDuperTransport, url: str, out: Path) -> tuple[str | None, str]:
    """Download ``url`` to ``out`` atomically: ``(path, "")``, or ``(None, why not)``."""
    try:
        with trio.fail_after(DOWNLOAD_TIMEOUT):
            data = await transport.download(url)
        await trio.to_thread.run_sync(_write_atomic, out, data)
    except trio.TooSlowError:
        return None, f"the download took longer than {DOWNLOAD_TIMEOUT:g} s"
    except (HybridgenError, OSError) as exc:
        return None, f"could not save the image: {exc}"
    return os.fspath(out), ""


def _journal_meta(out: Path) -> dict[str, str]:
    return {"out": os.path.abspath(out)}


def _open_journal(path: str, *, create: bool) -> SQLiteJournal:
    from ..journal import SQLiteJournal

    target = Path(path)
    if not create and not target.is_file():
        raise ConfigError("--journal", f"{path} does not exist (or is not a file)")
    try:
        if create:
            target.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteJournal(target)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError("--journal", f"cannot open {path} as a journal: {exc}") from None


JOURNAL_CLOSE_TIMEOUT: Final = 1.0
"""How long closing the journal waits for writes still queued (the run already waited for them
within the journal's ``flush_timeout`` as its client ended)."""


def _close_journal(journal: SQLiteJournal) -> None:
    """Close the journal; say on stderr how many writes it could not record."""
    lost = journal.close(timeout=JOURNAL_CLOSE_TIMEOUT)
    if lost:
        _say(
            f"journal: {lost} write(s) to {journal.path} were not recorded (see the journal "
            "warnings above); the generations themselves were not affected"
        )
