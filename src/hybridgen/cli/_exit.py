"""How the command ends: its exit codes, and the usage error the parser cannot see.

Only :mod:`._app` maps exceptions to these codes; a command returns a code and raises typed errors,
it must not call ``sys.exit``.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""The generation is done and its image saved (or the server stopped cleanly)."""
EXIT_FAILED: Final = 1
"""The generation failed (the reason is on stderr), or the image could not be saved."""
EXIT_USAGE: Final = 2
"""Bad usage, or an invalid configuration or request (the message names the field)."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted by Ctrl-C (SIGINT); the generation was cancelled cleanly."""


class UsageError(Exception):
    """Bad usage the parser cannot see (e.g. emulator options while ``SUPERDUPERAI_URL`` is set)."""
