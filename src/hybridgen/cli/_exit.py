"""How the command ends: its exit codes, and the usage error the parser cannot see.

Only :mod:`._app` maps exceptions to these codes; a command returns a code and raises typed errors,
it must not call ``sys.exit``.
"""

from __future__ import annotations

import re
from typing import Final

EXIT_OK: Final = 0
"""The generation is done and its image saved (or the server stopped cleanly)."""
EXIT_FAILED: Final = 1
"""The generation failed (the reason is on stderr)."""
EXIT_USAGE: Final = 2
"""Bad usage, or an invalid configuration or request (the message names the field)."""
EXIT_UNSAVED: Final = 3
"""Done on the server (paid for) but the image could not be saved: the result line keeps its
``url`` (``"saved": false``); ``hybridgen download URL --out PATH`` or ``resume`` saves it
without a new job."""
EXIT_INCOMPLETE: Final = 4
"""Every item ended as reported, but not everything is accounted for: the journal could not
record some writes (another process held its lock too long, a full disk), or ``resume`` left
entries another live process holds. Nothing failed; look again later (``resume``)."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted by Ctrl-C (SIGINT); the generation was cancelled cleanly."""


TOKEN_REJECTED: Final[list[str]] = []
"""The errors of this run's requests whose token the server rejected (401/403): however the run
ends, a rejected token is bad configuration (exit 2)."""


class UsageError(Exception):
    """Bad usage the parser cannot see (e.g. emulator options while ``SUPERDUPERAI_URL`` is set)."""


def worst_exit(*, interrupted: bool, failed: bool, unsaved: bool, incomplete: bool) -> int:
    """The exit code of a run from what happened, the worst first: interrupted, a failure, a
    result not saved, an incomplete journal, else 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    if failed:
        return EXIT_FAILED
    if unsaved:
        return EXIT_UNSAVED
    return EXIT_INCOMPLETE if incomplete else EXIT_OK


FLAGS: Final = {
    "push_timeout": "--ws-timeout",
    "ws_timeout": "--ws-timeout",
    "poll_interval": "--poll-interval",
    "deadline": "--deadline",
    "request_timeout": "--request-timeout",
    "time_scale": "--time-scale",
    "gen_time": "--gen-time",
    "retry_after": "--retry-after",
    "push": "--push",
    "policy": "--policy",
    "model": "--model",
    "body_form": "--body-form",
    "out": "--out",
    "format": "--format",
    "prompt": "the prompt",
    **{
        name: "--" + name.replace("_", "-")
        for name in (
            "poll_faults",
            "poll_fault_rate",
            "start_faults",
            "file_cuts",
            "file_faults",
            "file_redirect_hops",
            "fail_status",
            "fail_reason",
        )
    },
}
"""What the command line calls a library field in its messages (a flag, or words)."""
_IN_MESSAGE: Final = re.compile(
    r"\b(?:push_timeout|ws_timeout|poll_interval|request_timeout|time_scale)\b"
)
_VERBS: Final = frozenset(
    (
        "is",
        "are",
        "must",
        "has",
        "have",
        "contains",
        "cannot",
        "goes",
        "uses",
        "names",
        "needs",
        "ends",
    )
)


def sentence(field: str, message: str) -> str:
    """``field``'s problem as a sentence naming what the user typed or set.

    ``("poll_interval", "must be ...")`` reads ``--poll-interval must be ...``; a message that
    does not start with a verb keeps a colon after the name (``--push: unknown channel ...``).
    """
    name = FLAGS.get(field, field)
    message = _IN_MESSAGE.sub(lambda m: FLAGS[m[0]], message)
    first = message.split(" ", 1)[0]
    return f"{name} {message}" if first in _VERBS else f"{name}: {message}"
