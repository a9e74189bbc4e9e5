"""The command's transport: the real one, remembering whether the server rejected the token.

A rejected token is bad configuration (exit 2), whichever generation met it; the driver turns
the :class:`~hybridgen.errors.AuthError` into a failed generation's reason, so the requests it
failed are noted in :data:`._exit.TOKEN_REJECTED`, which :mod:`._app` reads when it picks the exit
code. Imported lazily, with the transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ..errors import AuthError
from ..transport import SuperDuperTransport
from ..video import StartRequest
from ..wire import FileStatus, ModelInfo
from ._exit import TOKEN_REJECTED


@contextlib.contextmanager
def _noting() -> Iterator[None]:
    """Note an :class:`AuthError` raised inside, and let it go on."""
    try:
        yield
    except AuthError as exc:
        TOKEN_REJECTED.append(str(exc))
        raise


class WatchedTransport(SuperDuperTransport):
    """A :class:`SuperDuperTransport` that notes every :class:`AuthError` it raises."""

    async def start(self, request: StartRequest) -> FileStatus:
        """As :meth:`SuperDuperTransport.start`; a rejected token is noted."""
        with _noting():
            return await super().start(request)

    async def upload(self, data: bytes, *, filename: str, content_type: str) -> str:
        """As :meth:`SuperDuperTransport.upload`; a rejected token is noted."""
        with _noting():
            return await super().upload(data, filename=filename, content_type=content_type)

    async def poll(self, file_id: str) -> FileStatus:
        """As :meth:`SuperDuperTransport.poll`; a rejected token is noted."""
        with _noting():
            return await super().poll(file_id)

    async def models(self, types: Sequence[str] = ()) -> list[ModelInfo]:
        """As :meth:`SuperDuperTransport.models`; a rejected token is noted."""
        with _noting():
            return await super().models(types)
