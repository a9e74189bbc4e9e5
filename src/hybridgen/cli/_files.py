"""Where results land on disk: image saves, ``--out`` checks and opening the journal file.

Images are saved by :meth:`hybridgen.Client.download` (streamed to a temporary file beside the
target, checked to be an image from its bytes, renamed; bounded by the policy's
``download_timeout``), converted to the format ``--out``'s suffix names, or given their true
suffix when it has none. Errors become a reason (saves) or a
:class:`~hybridgen.errors.ConfigError` naming ``--out`` or ``--journal``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError, HybridgenError
from ..files import CONVERT_FORMATS, Media, check_destination, convert_target, format_for_suffix
from ._output import say

if TYPE_CHECKING:
    from ..driver import Client
    from ..journal import SQLiteJournal
    from ..journal_pg import PostgresJournal
    from ..policy import Policy

    CliJournal = SQLiteJournal | PostgresJournal
    """A journal the commands open: a SQLite file or a PostgreSQL database."""

JOURNAL_ENV: Final = "HYBRIDGEN_JOURNAL"
"""The environment variable that gives ``--journal`` when it is not on the command line."""


def write_atomic(path: Path, data: bytes) -> None:
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


async def save_result(
    client: Client,
    url: str,
    out: Path,
    policy: Policy | None = None,
    media: Media = "image",
    generation_id: str | None = None,
) -> tuple[str | None, str]:
    """Save the file at ``url`` as ``out`` asks: ``(real path, "")``, or ``(None, why not)``.

    Its retry events name ``generation_id`` (the generation whose result it is), if given.

    ``out``'s suffix names the format (``.png``: converted to PNG if it is not one); without a
    suffix the file keeps its format and gets its true suffix. A video (``media``) is never
    converted.
    """
    convert = format_for_suffix(out) if media == "image" else None
    try:
        saved = await client.download(
            url, out, convert=convert, policy=policy, media=media, generation_id=generation_id
        )
    except HybridgenError as exc:
        return None, f"could not save the {media}: {exc}"
    return saved.path, ""


def check_out(value: str, *, video: bool = False) -> Path:
    """``--out`` as a path to a regular file (new or existing), checked before any I/O.

    A directory, a device (``/dev/full``), a FIFO or a socket, a suffix that names no format
    hybridgen writes (``t.txt``; a ``video``'s suffixes are checked with its request), or a folder
    that does not exist is a usage error (exit 2): nothing is created but the file itself.
    """
    out = Path(value)
    try:
        check_destination(out)
    except ConfigError as exc:
        raise ConfigError("--out", exc.message) from None
    suffix = out.suffix
    if suffix and not video and format_for_suffix(out) is None:
        allowed = ", ".join(f".{name}" for name in CONVERT_FORMATS)
        raise ConfigError(
            "--out",
            f"ends in {suffix!r}, which names no image format; use {allowed}, or no suffix "
            "to keep the file's own format (its suffix is added)",
        )
    convert_target(format_for_suffix(out))  # a format to convert to needs Pillow
    _check_folder(out.parent, "--out")
    return out


def _check_folder(folder: Path, flag: str) -> None:
    """Raise :class:`ConfigError` naming ``flag`` unless ``folder`` is an existing directory."""
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ConfigError(flag, f"names a file in {folder}, which {what}; create it first")


def journal_meta(out: Path) -> dict[str, str]:
    return {"out": os.path.abspath(out)}


def journal_arg(value: str | None) -> str | None:
    """``--journal``, else ``HYBRIDGEN_JOURNAL`` (``None``: neither is set)."""
    if value:
        return value
    return os.environ.get(JOURNAL_ENV, "").strip() or None


def is_postgres(path: str) -> bool:
    return path.startswith(("postgresql://", "postgres://"))


JOURNAL_WAIT: Final = 30.0
"""How long the end of a run waits, by default (``--journal-wait``), for journal writes still
queued (e.g. behind another process's lock) before it gives up on them and says so."""
JOURNAL_FLUSH: Final = 1.0
"""How long the client's own end waits for them first (the command then waits the rest, and
says it waits)."""


def checked_journal_wait(value: float | None) -> float:
    """``--journal-wait`` checked: seconds >= 0 (default :data:`JOURNAL_WAIT`)."""
    if value is None:
        return JOURNAL_WAIT
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError("--journal-wait", f"must be a number of seconds >= 0, got {value!r}")
    return value


def open_journal(path: str, *, create: bool, lease: float | None = None) -> CliJournal:
    """The journal ``path`` names: a SQLite file, or a ``postgresql://`` database."""
    if is_postgres(path):
        try:
            from ..journal_pg import PostgresJournal
        except ImportError as exc:
            raise ConfigError("--journal", str(exc)) from None
        from ..errors import JournalError

        try:
            return PostgresJournal(path, lease=30.0 if lease is None else lease)
        except JournalError as exc:
            raise ConfigError("--journal", str(exc)) from None
    from ..journal import SQLiteJournal

    target = Path(path)
    if not create and not target.is_file():
        raise ConfigError("--journal", f"{path} does not exist (or is not a file)")
    try:
        if create:
            target.parent.mkdir(parents=True, exist_ok=True)
        if lease is None:
            return SQLiteJournal(target, flush_timeout=JOURNAL_FLUSH)
        return SQLiteJournal(target, flush_timeout=JOURNAL_FLUSH, lease=lease)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError("--journal", f"cannot open {path} as a journal: {exc}") from None


def journal_name(journal: CliJournal) -> str:
    """Where a journal is, for messages (never a password)."""
    path = getattr(journal, "path", None)
    return str(path) if path is not None else str(getattr(journal, "where", "the journal"))


def close_journal(journal: CliJournal, wait: float = JOURNAL_WAIT) -> int:
    """Close the journal, waiting up to ``wait`` s for writes still queued (saying so on stderr
    when there are some); say how many writes it could not record; return that number.
    Closing it again says nothing more."""
    if getattr(journal, "closed", False):
        return journal.lost
    if not journal.flush(timeout=0):
        say(
            f"journal: waiting up to {wait:g} s for writes to {journal_name(journal)} "
            "(another process may hold its lock; --journal-wait sets the bound)"
        )
    try:
        lost = journal.close(timeout=wait)
    except KeyboardInterrupt:  # the user stops waiting: what is still queued is lost
        lost = journal.lost + getattr(journal, "queued", 0)
    if lost:
        say(
            f"journal: {lost} write(s) to {journal_name(journal)} were not recorded (see the "
            "journal warnings above): the journal is incomplete; the generations themselves were "
            "not affected"
        )
    return lost
