"""The command's transport: the real one, remembering whether the server rejected the token.

A rejected token is bad configuration (exit 2), whichever generation met it; the driver turns
the :class:`~hybridgen.errors.AuthError` into a failed generation's reason, so the requests it
failed are noted in :data:`._exit.TOKEN_REJECTED`, which :mod:`._app` reads when it picks the exit
code. Imported lazily, with the transport.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..api import FileStatus, ImageRequest, ModelInfo
from ..errors import AuthError
from ..transport import SuperDuperTransport
from ._exit import TOKEN_REJECTED


class WatchedTransport(SuperDuperTransport):
    """A :class:`SuperDuperTransport` that notes every :class:`AuthError` it raises."""

    async def start(self, request: ImageRequest) -> FileStatus:
        """As :meth:`SuperDuperTransport.start`; a rejected token is noted."""
        try:
            return await super().start(request)
        except AuthError as exc:
            TOKEN_REJECTED.append(str(exc))
            raise

    async def poll(self, file_id: str) -> FileStatus:
        """As :meth:`SuperDuperTransport.poll`; a rejected token is noted."""
        try:
            return await super().poll(file_id)
        except AuthError as exc:
            TOKEN_REJECTED.append(str(exc))
            raise

    async def models(self, types: Sequence[str] = ()) -> list[ModelInfo]:
        """As :meth:`SuperDuperTransport.models`; a rejected token is noted."""
        try:
            return await super().models(types)
        except AuthError as exc:
            TOKEN_REJECTED.append(str(exc))
            raise
