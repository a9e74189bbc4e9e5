"""Every error hybridgen raises, in one hierarchy.

Catch :class:`HybridgenError` for all of them. Each error names what was wrong and what to do;
none ever carries the API token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Result


class HybridgenError(Exception):
    """Base class of every error raised by hybridgen."""


class ConfigError(HybridgenError, ValueError):
    """A configuration value (environment variable, policy field, option) is invalid.

    ``field`` names the offending setting, e.g. ``"SUPERDUPERAI_URL"`` or ``"poll_interval"``;
    ``message`` is what is wrong with it, without the name (``"is not set; ..."``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class MissingExtra(ConfigError, ImportError):
    """A feature needs an optional dependency that is not installed; one line says what to install.

    ``feature`` names what was asked for (``"the embedded emulator"``), ``extra`` the extra that
    brings it (``pip install 'hybridgen[extra]'``), ``name`` (as for any :class:`ImportError`)
    the module that is missing. A :class:`ConfigError` (``field`` is ``"hybridgen[extra]"``):
    the ``hybridgen`` command exits 2.
    """

    def __init__(self, feature: str, *, extra: str, module: str) -> None:
        ImportError.__init__(
            self,
            f"{feature} needs {module}, which is not installed: pip install 'hybridgen[{extra}]'",
            name=module,
        )
        self.field = f"hybridgen[{extra}]"
        self.feature = feature
        self.extra = extra

    @classmethod
    def of(cls, exc: ModuleNotFoundError, feature: str, *, extra: str) -> MissingExtra:
        """The error to raise (``from None``) for ``exc``, a failed import of ``extra``'s module."""
        module = (exc.name or "a module").partition(".")[0]
        return cls(feature, extra=extra, module=_DISTRIBUTIONS.get(module, module))


_DISTRIBUTIONS = {"PIL": "Pillow"}
"""Modules whose distribution has another name, as :class:`MissingExtra` names them."""


class RequestError(HybridgenError, ValueError):
    """A generation request (prompt, size, seed, ...) is invalid; raised before any network I/O.

    ``field`` names the request's field, ``message`` what is wrong with it (without the name).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class VideoRefused(RequestError):
    """A video request the server's model list says cannot work; refused before any job starts.

    ``field`` names what to change (``model``, ``duration``, ``image``, ``max_cost``) and
    ``allowed`` the values that would do (listed in the message too).
    """

    def __init__(
        self,
        field: str,
        message: str,
        allowed: tuple[object, ...] = (),
        *,
        unit: str = "",
        label: str = "allowed",
    ) -> None:
        shown = ", ".join(f"{value}{unit}" for value in allowed[:20]) or "none"
        super().__init__(field, f"{message}; {label}: {shown}")
        self.allowed = allowed


class InvalidTransition(HybridgenError, RuntimeError):
    """A trigger was fired in a state that has no edge for it."""

    def __init__(self, state: str, trigger: str) -> None:
        super().__init__(
            f"trigger {trigger!r} is not allowed in state {state!r} "
            "(see hybridgen.machine.TRANSITIONS for the allowed edges)"
        )
        self.state = state
        self.trigger = trigger


class TransportError(HybridgenError):
    """Talking to the generation server failed."""


class TransientError(TransportError):
    """A failure worth retrying: 5xx, 429, timeouts, resets, a garbled reply.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    ``maybe_processed`` is False only when the server certainly did not act on the request
    (429, 503, a connection that never carried it): only then is a start safe to send again
    without risking a second, billed job.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_processed: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.maybe_processed = maybe_processed


class OversizedMessage(TransientError):
    """A push message was over the size limit: it was skipped (the channel goes on)."""


class PermanentError(TransportError):
    """A failure that retrying cannot fix: 400/404/422, or the server says the job failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(PermanentError):
    """No server answers at the configured URL, on first contact: the name does not resolve or
    the connection is refused, before the server ever replied.

    Raised only for requests that create nothing (a start, the model list) before any reply from
    that server; once a server has answered, a refused connection is a
    :class:`TransientError` (it may be restarting: a running job is never given up for it).
    """


class AuthError(PermanentError):
    """The server rejected the credentials (401/403)."""


class GenerationFailed(HybridgenError):
    """A generation ended in the ``failed`` state; ``result`` holds its reason and timings."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"generation {result.generation_id} failed: {result.reason}")
        self.result = result


class GenerationCancelled(HybridgenError):
    """A generation ended in the ``cancelled`` state through :meth:`Generation.cancel`."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"generation {result.generation_id} cancelled: {result.reason}")
        self.result = result


class JournalError(HybridgenError):
    """The journal cannot do what was asked now (e.g. it is locked, or has no such entry)."""


class LeaseHeld(JournalError):
    """Another live process runs this journalled generation; it is not taken over.

    ``holder`` names the process (``"process 123 on host"``), ``expires`` is the Unix time its
    lease ends unless renewed.
    """

    def __init__(self, generation_id: str, holder: str, expires: float) -> None:
        left = max(0.0, expires - time.time())
        super().__init__(
            f"generation {generation_id} is still run by {holder} (its lease has {left:.0f} s "
            "left and is renewed while it runs); wait for it to end, or resume once it is gone"
        )
        self.generation_id = generation_id
        self.holder = holder
        self.expires = expires


class RedirectError(PermanentError):
    """A redirect that is not followed: an https -> http downgrade, a loop, too many hops, or a
    redirect without a usable ``Location``.

    ``why`` is ``"downgrade"``, ``"loop"``, ``"too_many"`` or ``"no_location"``; ``hops`` counts
    the redirects followed before this one; ``status`` is the redirect's status.
    """

    def __init__(self, message: str, *, why: str, hops: int, status: int) -> None:
        super().__init__(message, status=status)
        self.why = why
        self.hops = hops


class DownloadError(PermanentError):
    """A result file could not be saved; the generation itself is done and ``url`` still holds.

    ``kind`` says why: ``"too_large"`` (over the size limit), ``"not_an_image"`` (e.g. an HTML
    error page), ``"not_a_video"`` (a video's file is no MP4, QuickTime or WebM), ``"timeout"``
    (not finished within the download timeout), ``"http"`` (an error status), ``"connection"``
    (the connection failed), ``"redirect"`` (a redirect that is not followed: see
    :class:`RedirectError`), ``"convert"`` (the image could not be converted to the asked
    format), ``"disk"`` (the file could not be written) or ``"no_result"`` (the generation has
    no result URL).
    """

    def __init__(self, message: str, *, url: str, kind: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.url = url
        self.kind = kind
