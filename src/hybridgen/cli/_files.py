"""Where results land on disk: image saves, ``--out`` checks and opening the journal file.

Images are saved by :meth:`hybridgen.Client.download` (streamed to a temporary file beside the
target, checked to be an image from its bytes, renamed; bounded by the policy's
``download_timeout``), converted to the format ``--out``'s suffix names, or given their true
suffix when it has none. Errors become a reason (saves) or a
:class:`~hybridgen.errors.ConfigError` naming ``--out`` or ``--journal``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError, HybridgenError
from ..files import CONVERT_FORMATS, Media, check_destination, convert_target, format_for_suffix
from ._output import _say

if TYPE_CHECKING:
    from ..driver import Client
    from ..journal import SQLiteJournal
    from ..policy import Policy


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


async def _save(
    client: Client, url: str, out: Path, policy: Policy | None = None, media: Media = "image"
) -> tuple[str | None, str]:
    """Save the file at ``url`` as ``out`` asks: ``(real path, "")``, or ``(None, why not)``.

    ``out``'s suffix names the format (``.png``: converted to PNG if it is not one); without a
    suffix the file keeps its format and gets its true suffix. A video (``media``) is never
    converted.
    """
    convert = format_for_suffix(out) if media == "image" else None
    try:
        saved = await client.download(url, out, convert=convert, policy=policy, media=media)
    except HybridgenError as exc:
        return None, f"could not save the {media}: {exc}"
    return saved.path, ""


def _check_out(value: str, *, video: bool = False) -> Path:
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
