"""Where the command writes, with the token cut out: stderr remarks, stdout lines, logging.

Everything the command prints goes through :func:`say`, :func:`write_out` or the redacting log
handler, so that a secret noted with :func:`note_secret` never reaches a terminal, a pipe or a
log. This file decides nothing about what is printed.
"""

from __future__ import annotations

import logging
import os
import sys
import textwrap
from typing import Final

from ..errors import ConfigError

SECRETS: set[str] = set()
"""Texts (tokens) cut out of everything the command writes to stderr or stdout."""


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


def note_secret(value: str | None) -> None:
    if value and len(value.strip()) >= 4:
        SECRETS.add(value)
        SECRETS.add(value.strip())


WIDTH: Final = 80
"""The columns a plain-mode line of text fits in (longer ones are wrapped at spaces)."""


def fit(text: str, indent: str = "  ") -> str:
    """``text`` wrapped at :data:`WIDTH` columns, continuation lines indented by ``indent``.

    Words are never split, so a path or URL longer than a whole line stays whole (and longer).
    """
    return "\n".join(
        textwrap.fill(
            line,
            WIDTH,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        or line
        for line in text.split("\n")
    )


def say(message: str) -> None:
    """A remark on stderr, prefixed with the program name, secrets cut out, wrapped at 80."""
    write_err(f"hybridgen: {message}")


def write_err(text: str, indent: str = "  ") -> None:
    """``text`` on stderr, secrets cut out (before wrapping), wrapped at :data:`WIDTH`."""
    sys.stderr.write(fit(redact(text), indent) + "\n")
    sys.stderr.flush()


def write_out(line: str) -> None:
    sys.stdout.write(redact(line) + "\n")
    sys.stdout.flush()


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _Stderr:
    """Writes to whatever ``sys.stderr`` is now (rich's live display redirects it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(verbose: bool) -> int:
    """Log to stderr at DEBUG with ``-v`` or at ``HYBRIDGEN_LOG``'s level, else WARNING."""
    level = logging.WARNING
    raw = os.environ.get("HYBRIDGEN_LOG", "").strip()
    if verbose:
        level = logging.DEBUG
    elif raw:
        named = logging.getLevelName(raw.upper())
        if not isinstance(named, int):
            raise ConfigError(
                "HYBRIDGEN_LOG", f"must be DEBUG, INFO, WARNING or ERROR, got {raw!r}"
            )
        level = named
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return level
