"""An in-memory transport over the emulator's :class:`~hybridgen.emulator.model.ServerModel`.

It behaves as the real server does over sockets (same jobs, timelines and faults) but without
sockets, so a 2-minute scenario runs on trio's virtual clock in milliseconds. It passes the same
contract tests as :class:`~hybridgen.transport.SuperDuperTransport` against the real emulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from ..api import FileStatus, ImageRequest, parse_file, parse_file_list
from ..emulator.model import BadRequest, Forbidden, ServerModel, WsDropped, WsRefused
from ..errors import AuthError, PermanentError, TransientError
from ..transport import WS_MAX_MESSAGE

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """A :class:`~hybridgen.transport.Transport` talking to a :class:`ServerModel` in memory.

    ``token`` is what it sends as bearer token (checked when the model has one). ``calls`` records
    ``(trio time, what)`` for every request, so tests can check when polls happened.
    """

    def __init__(self, model: ServerModel | None = None, *, token: str | None = None) -> None:
        self.model = model if model is not None else ServerModel()
        self.token = token
        self.calls: list[tuple[float, str]] = []
        self.open_sockets = 0

    def _check_auth(self) -> None:
        header = None if self.token is None else f"Bearer {self.token}"
        if not self.model.authorized(header):
            raise AuthError(
                "the server rejected the token (HTTP 401); check SUPERDUPERAI_TOKEN", status=401
            )

    async def start(self, request: ImageRequest) -> FileStatus:
        """Create a job on the model."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "start"))
        self._check_auth()
        try:
            job = self.model.create(request.to_json())
        except Forbidden as exc:
            raise _forbidden(exc) from None
        except BadRequest as exc:
            raise PermanentError(
                f"the server rejected the request (HTTP 422): {exc}", status=422
            ) from None
        return parse_file_list([self.model.file_json(job)])

    async def poll(self, file_id: str) -> FileStatus:
        """Read one file's status, through the model's poll faults."""
        self.calls.append((trio.current_time(), "poll"))
        self._check_auth()
        job = self.model.jobs.get(file_id)
        if job is None:
            await trio.lowlevel.checkpoint()
            raise PermanentError(f"file {file_id} not found (HTTP 404)", status=404)
        try:
            self.model.check_access(job.project_id)
        except Forbidden as exc:
            await trio.lowlevel.checkpoint()
            raise _forbidden(exc) from None
        fault = self.model.poll_fault(job)
        delay = self.model.poll_delay(job)
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        if fault is None:
            return parse_file(self.model.file_json(job))
        if fault == "reset":
            raise TransientError("poll: connection reset by the server")
        if fault == "garbage":
            raise TransientError("malformed poll reply from the server: not JSON")
        status = int(fault)
        if status == 404:
            raise PermanentError(f"file {file_id} not found (HTTP 404)", status=404)
        retry_after = self.model.retry_after(job) if status in (429, 503) else None
        raise TransientError(
            f"poll: HTTP {status} from the server", status=status, retry_after=retry_after
        )

    @contextlib.asynccontextmanager
    async def listen(self, project_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """Open the project's socket on the model."""
        await trio.lowlevel.checkpoint()
        self.calls.append((trio.current_time(), "ws_connect"))
        self._check_auth()
        try:
            self.model.ws_accept(project_id)
        except Forbidden as exc:
            raise _forbidden(exc) from None
        except WsRefused as exc:
            raise TransientError(f"WebSocket handshake refused: {exc}") from None
        self.open_sockets += 1
        messages = _messages(self.model, project_id)
        try:
            yield messages
        finally:
            self.open_sockets -= 1
            await messages.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


def _forbidden(exc: Forbidden) -> AuthError:
    return AuthError(
        f"the server rejected the token (HTTP 403: {exc}); check SUPERDUPERAI_TOKEN", status=403
    )


async def _messages(model: ServerModel, project_id: str) -> AsyncIterator[str]:
    feed = model.ws_feed(project_id)
    try:
        async for text in feed:
            if len(text) > WS_MAX_MESSAGE:  # as the real socket does: close it (1009)
                raise TransientError(
                    "WebSocket closed: a message was over the size limit (code 1009)"
                )
            yield text
    except WsDropped as exc:
        raise TransientError(f"WebSocket dropped: {exc}") from None
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
