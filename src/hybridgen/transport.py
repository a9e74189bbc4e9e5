"""Transports: how hybridgen talks to a generation server.

:class:`Transport` is the interface the trio driver uses; :class:`hybridgen.testing.MemoryTransport`
is the in-memory implementation used on trio's virtual clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .api import FileStatus, ImageRequest

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """What the driver needs from a server connection."""

    async def start(self, request: ImageRequest) -> FileStatus:
        """Send the start request; return the new file (its ``id`` names the job)."""
        ...

    async def poll(self, file_id: str) -> FileStatus:
        """Fetch one file's status."""
        ...

    def listen(self, project_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Open and subscribe the project's socket; iterate over its raw text messages.

        Entering raises a :class:`~hybridgen.errors.TransportError` if the socket cannot open.
        Iteration ends when the server closes the socket, or raises ``TransientError`` when the
        connection drops.
        """
        ...

    async def aclose(self) -> None:
        """Release connections (pools, sockets)."""
        ...
