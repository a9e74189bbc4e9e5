"""Result files as they are: the format read from the bytes, saved atomically within limits.

A result URL may serve any image format (the real CDN serves WEBP), or something that is not an
image at all (an HTML error page). :func:`save` streams a body to a temporary file beside the
destination, with a size limit, checks from the bytes that it is an image (magic numbers, then
a full decode by Pillow when it is installed: ``hybridgen[convert]``, in ``[cli]``), converts it
only when asked (which needs Pillow), and renames it into place. Memory stays at about one chunk
whatever the server sends. :meth:`hybridgen.Client.download` is the usual way in.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal

import attrs
import trio

from .errors import (
    ConfigError,
    DownloadError,
    MissingExtra,
    PermanentError,
    RedirectError,
    TransientError,
    TransportError,
)
from .policy import Policy

if TYPE_CHECKING:
    from .transport import Transport

log: Final = logging.getLogger("hybridgen.files")

__all__ = [
    "CONVERT_FORMATS",
    "DOWNLOAD_LIMIT",
    "IMAGE_TYPES",
    "RESUMES",
    "Reopen",
    "VIDEO_DOWNLOAD_LIMIT",
    "VIDEO_TYPES",
    "Media",
    "SavedFile",
    "PROPAGATION_STATUSES",
    "check_destination",
    "convert_target",
    "download",
    "download_retry_delay",
    "format_for_suffix",
    "save",
    "sniff",
    "sniff_video",
]

DOWNLOAD_LIMIT: Final = 64 * 2**20
"""The default size limit of a downloaded file, in bytes (64 MiB)."""

IMAGE_TYPES: Final = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "image/heic": ".heic",
}
"""The image types recognised from their bytes, with the suffix a file of that type gets."""

VIDEO_TYPES: Final = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
}
"""The video types recognised from their bytes (:func:`sniff_video`), with their suffixes."""

VIDEO_DOWNLOAD_LIMIT: Final = 8 * 2**30
"""The default size limit of a downloaded video, in bytes (8 GiB; it streams to disk)."""

Media = Literal["image", "video"]
"""What a result file must be: an image, or a video."""

Reopen = Callable[[int], AbstractAsyncContextManager[AsyncIterator[bytes]]]
"""Opens a result file's body from a byte offset on (an HTTP range request), to resume it."""

RESUMES: Final = 5
"""Resumes of a broken download in a row that may bring no new byte before it fails."""

_MP4_BRANDS: Final = frozenset(
    b"isom iso2 iso3 iso4 iso5 iso6 iso8 mp41 mp42 avc1 M4V  M4VP dash mmp4 msnv".split()
)

CONVERT_FORMATS: Final = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}
"""The formats a file can be converted to (``convert=``), by name."""

_PILLOW: Final = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/avif": "AVIF",
}
PROPAGATION_STATUSES: Final = (403, 404)
"""Statuses of a file's host tried again within ``Policy.download_propagation`` of the result."""
_HEAD: Final = 64
"""Bytes enough to recognise every format of :data:`IMAGE_TYPES` and :data:`VIDEO_TYPES`."""
_WRITE_AT: Final = 2**20
"""Bytes gathered before one write to disk (in a worker thread)."""


def sniff(head: bytes) -> str | None:
    """The image type of a file from its first bytes (magic numbers), or ``None``.

    Recognises PNG, JPEG, WEBP, GIF, AVIF and HEIC; the URL and the server's ``Content-Type``
    are never trusted.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "image/heic"
    return None


def sniff_video(head: bytes) -> str | None:
    """The video type of a file from its first bytes (at least 64 of them for WebM), or ``None``.

    Recognises MP4 (an ``ftyp`` box of an MP4 brand), QuickTime and WebM (an EBML header whose
    document type is ``webm``). AVIF and HEIC images share MP4's box format: they are not videos.
    """
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        compatible = {head[i : i + 4] for i in range(16, min(len(head), 64) - 3, 4)}
        if brand in _MP4_BRANDS or (sniff(head) is None and compatible & _MP4_BRANDS):
            return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"\x42\x82\x84webm" in head[:64]:
        return "video/webm"
    return None


def _check_mp4(path: str, url: str) -> None:
    """The top-level boxes of an MP4 chain to its end and include the movie (``moov``)."""
    size = os.stat(path).st_size
    seen: set[bytes] = set()
    at = 0
    with open(path, "rb") as f:
        while at < size:
            f.seek(at)
            head = f.read(16)
            length = int.from_bytes(head[:4], "big")
            if length == 1 and len(head) == 16:
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:
                length = size - at
            if len(head) < 8 or length < 8 or at + length > size:
                raise DownloadError(
                    f"download of {url}: not a valid MP4 video (a box at byte {at} is cut short)",
                    url=url,
                    kind="not_a_video",
                )
            seen.add(head[4:8])
            at += length
    if b"moov" not in seen:
        raise DownloadError(
            f"download of {url}: not a valid MP4 video (it has no 'moov' box)",
            url=url,
            kind="not_a_video",
        )


def _describe(head: bytes) -> str:
    """What a body that is not an image looks like, for an error message (no server text)."""
    text = head.lstrip()
    if not text:
        return "an empty body"
    if text[:1] == b"<":
        return "an HTML or XML page"
    if text[:1] in (b"{", b"["):
        return "JSON"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in text):
        return "plain text"
    return "binary data of no known format"


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """The conversion format a file name asks for (``fox.png``: ``"png"``), else ``None``."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in CONVERT_FORMATS else None


def check_destination(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~hybridgen.errors.ConfigError` (``out``) unless ``path`` can be a new file.

    The path must be a regular file or not exist yet: a directory, a device (``/dev/full``), a
    FIFO or a socket is refused, before any I/O. Nothing is created.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("out", f"cannot use {os.fspath(path)}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise ConfigError("out", f"{os.fspath(path)} is {kind}; give the path of a regular file")


@attrs.frozen
class SavedFile:
    """A result file saved on disk.

    ``path`` is where it is (the true suffix added when the asked path had none);
    ``content_type`` is its format as saved, read from the bytes (e.g. ``"image/webp"``);
    ``source_type`` the format the server sent (they differ when it was converted); ``size`` is
    its size in bytes; ``url`` where it came from.
    """

    path: str
    content_type: str
    size: int
    url: str
    source_type: str

    @property
    def video(self) -> bool:
        """True when the file is a video."""
        return self.content_type.startswith("video/")

    @property
    def converted(self) -> bool:
        """True when the file was converted from the format the server sent."""
        return self.content_type != self.source_type


def convert_target(convert: str | None) -> str | None:
    """The image type ``convert`` names (``"png"``: ``"image/png"``), or ``None`` for none.

    Raises :class:`~hybridgen.errors.ConfigError` for an unknown format and
    :class:`~hybridgen.errors.MissingExtra` when a conversion is asked and Pillow is not
    installed, before any I/O.
    """
    if convert is None:
        return None
    target = CONVERT_FORMATS.get(str(convert).lower().lstrip("."))
    if target is None:
        raise ConfigError(
            "convert", f"must be one of {', '.join(CONVERT_FORMATS)} or None, got {convert!r}"
        )
    try:
        import PIL  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingExtra.of(exc, f"converting a result to {convert}", extra="convert") from None
    return target


async def save(
    chunks: AsyncIterator[bytes],
    path: str | os.PathLike[str],
    *,
    url: str,
    limit: int = DOWNLOAD_LIMIT,
    convert: str | None = None,
    on_received: Callable[[], object] | None = None,
    media: Media = "image",
    reopen: Reopen | None = None,
) -> SavedFile:
    """Stream ``chunks`` (a result file's body) to ``path``; return the :class:`SavedFile`.

    The body goes to a temporary file in ``path``'s directory (created if needed), at most
    ``limit`` bytes; it must be an image (read from its bytes). ``convert`` (``"png"``,
    ``"jpeg"``, ...) converts it with Pillow when it is in another format; ``None`` keeps the
    bytes as they are. A ``path`` without a suffix gets the true one (``fox`` -> ``fox.webp``).
    The file then replaces ``path`` atomically. Any failure raises
    :class:`~hybridgen.errors.DownloadError` and leaves nothing behind; an existing ``path`` that
    is not a regular file (a device, a FIFO) is never written. ``on_received`` is called once the
    whole body is on disk, before the checks (e.g. to lift a deadline meant for the transfer).
    ``media="video"`` wants a video instead (MP4, QuickTime or WebM, checked from its bytes and,
    for MP4, its box structure): it is never converted (``convert`` must be ``None``).
    ``reopen(start)`` (an async context giving the body from byte ``start`` on: an HTTP range
    request) resumes a body that breaks off with a :class:`~hybridgen.errors.TransientError`,
    up to :data:`RESUMES` times in a row without a new byte (with a short backoff); without it
    a broken body fails the save.
    """
    target = convert_target(convert)
    if media == "video" and target is not None:
        raise ConfigError("convert", f"a video is never converted; got {convert!r}")
    dest = Path(path)
    try:
        check_destination(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except (ConfigError, OSError) as exc:
        raise DownloadError(f"cannot save {url} to {dest}: {exc}", url=url, kind="disk") from None
    try:
        with os.fdopen(fd, "wb") as f:
            size, source = await _receive(chunks, f, url, limit, media, reopen)
        if on_received is not None:
            on_received()
        if media == "video":
            saved_type = source
            if source == "video/mp4":
                await trio.to_thread.run_sync(_check_mp4, tmp, url)
            os.chmod(tmp, 0o644)
        else:
            saved_type = await trio.to_thread.run_sync(_finish, tmp, url, source, target)
        final = _final_path(dest, saved_type)
        size = os.stat(tmp).st_size
        check_destination(final)
        os.replace(tmp, final)
    except ConfigError as exc:
        raise DownloadError(f"cannot save {url}: {exc}", url=url, kind="disk") from None
    except OSError as exc:
        raise DownloadError(
            f"cannot save {url} to {dest}: {exc.strerror or exc}", url=url, kind="disk"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return SavedFile(os.fspath(final), saved_type, size, url, source)


async def _receive(
    chunks: AsyncIterator[bytes],
    f: IO[bytes],
    url: str,
    limit: int,
    media: Media = "image",
    reopen: Reopen | None = None,
) -> tuple[int, str]:
    """Write the body to ``f``, within ``limit``; its size and type (from its bytes). A body
    that breaks off is resumed from where it broke through ``reopen``, when given."""
    sniffer = sniff_video if media == "video" else sniff
    size = 0
    head = b""
    source: str | None = None
    pending = bytearray()
    in_a_row = 0
    async with contextlib.AsyncExitStack() as reopened:
        while True:
            before = size
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise DownloadError(
                            f"download of {url}: the file is over the size limit ({limit} bytes)",
                            url=url,
                            kind="too_large",
                        )
                    if source is None:
                        head = (head + chunk)[:_HEAD]
                        source = sniffer(head)
                        if source is None and len(head) >= _HEAD:
                            raise _not_an_image(url, head, media)
                    pending += chunk
                    if len(pending) >= _WRITE_AT:
                        data, pending = bytes(pending), bytearray()
                        await trio.to_thread.run_sync(f.write, data)
                break
            except TransientError:
                in_a_row = 0 if size > before else in_a_row + 1
                if reopen is None or in_a_row >= RESUMES:
                    raise
                log.debug("download of %s broke off at byte %d; resuming", url, size)
                await trio.sleep(min(0.25 * 2**in_a_row, 8.0))
                chunks = await _reopen(reopened, reopen, size)
    if source is None:
        raise _not_an_image(url, head, media)
    data = bytes(pending)
    del pending

    def flush() -> None:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

    await trio.to_thread.run_sync(flush)
    return size, source


async def _reopen(
    stack: contextlib.AsyncExitStack, reopen: Reopen, start: int
) -> AsyncIterator[bytes]:
    """The body from byte ``start`` on; a transient failure to reopen it is one more try."""
    try:
        return await stack.enter_async_context(reopen(start))
    except TransientError:
        return _broken()


async def _broken() -> AsyncIterator[bytes]:
    raise TransientError("download: the resumed request failed")
    yield b""  # pragma: no cover - makes this an async generator


def _not_an_image(url: str, head: bytes, media: Media = "image") -> DownloadError:
    if media == "video":
        return DownloadError(
            f"download of {url}: not a video (the server sent {_describe(head)})",
            url=url,
            kind="not_a_video",
        )
    return DownloadError(
        f"download of {url}: not an image (the server sent {_describe(head)})",
        url=url,
        kind="not_an_image",
    )


def _finish(tmp: str, url: str, source: str, target: str | None) -> str:
    """Check the image with Pillow (if installed) and convert it in place if asked; its type."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ModuleNotFoundError:  # plain hybridgen: the magic number was the check
        os.chmod(tmp, 0o644)
        return source
    pillow = _PILLOW.get(source)
    try:
        if pillow is not None:  # HEIC needs a plugin: its magic number is the check
            with Image.open(tmp) as image:
                found = image.format
                image.verify()
            if found != pillow:
                raise DownloadError(
                    f"download of {url}: its bytes start like {source} but Pillow reads {found}",
                    url=url,
                    kind="not_an_image",
                )
    except Image.DecompressionBombError:
        raise DownloadError(
            f"download of {url}: the image has too many pixels to open safely",
            url=url,
            kind="too_large",
        ) from None
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError, OSError) as exc:
        raise DownloadError(
            f"download of {url}: not a valid {source} image ({exc})", url=url, kind="not_an_image"
        ) from None
    if target is not None and target != source:
        _convert(tmp, url, target)
    os.chmod(tmp, 0o644)
    return source if target is None else target


def _convert(tmp: str, url: str, target: str) -> None:
    """Convert the image at ``tmp`` to ``target`` in place (through a second temporary file)."""
    from PIL import Image, UnidentifiedImageError

    conv = tmp + ".conv"
    try:
        with Image.open(tmp) as image:
            image.load()
            out: Image.Image = image
            if target == "image/jpeg" and image.mode not in ("RGB", "L"):
                out = image.convert("RGB")
            with open(conv, "wb") as f:
                out.save(f, format=_PILLOW[target])
                f.flush()
                os.fsync(f.fileno())
        os.replace(conv, tmp)
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError, KeyError) as exc:
        raise DownloadError(
            f"download of {url}: cannot convert it to {target} ({exc})", url=url, kind="convert"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(conv)


def _final_path(dest: Path, content_type: str) -> Path:
    if dest.suffix:
        return dest
    return dest.with_name(dest.name + {**IMAGE_TYPES, **VIDEO_TYPES}[content_type])


RetryHook = Callable[[int, float, TransportError], object]
"""Called before each wait between two download attempts: ``(attempt, delay, error)``."""


def download_retry_delay(
    error: TransportError,
    attempt: int,
    now: float,
    *,
    deadline: float,
    propagated: float,
    policy: Policy,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The wait before the next attempt of a download whose ``attempt``-th one failed with
    ``error`` at ``now``; ``None`` to give up (sans-IO: the decision :func:`download` follows).

    Tried again: a :class:`~hybridgen.errors.TransientError` (connection error, body cut short,
    stall, 408/425/429, 5xx), and a 403/404 before ``propagated`` (the end of
    ``Policy.download_propagation``); never a :class:`~hybridgen.errors.DownloadError` (too
    large, not an image), a :class:`~hybridgen.errors.RedirectError`, or any other permanent
    status. The wait is ``download_retry_delay`` times ``backoff_factor`` per earlier retry, at
    most ``backoff_cap``, with ``jitter``, and at least a ``Retry-After`` (with
    ``honour_retry_after``); a wait that would end at or after ``deadline`` gives up now.
    """
    if isinstance(error, DownloadError | RedirectError):
        return None
    if isinstance(error, PermanentError):
        if error.status not in PROPAGATION_STATUSES or now >= propagated:
            return None
    elif not isinstance(error, TransientError):
        return None
    delay = min(
        policy.download_retry_delay * policy.backoff_factor ** (attempt - 1), policy.backoff_cap
    )
    if policy.jitter:
        delay *= 1 + policy.jitter * (2 * rand() - 1)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and policy.honour_retry_after:
        delay = max(delay, retry_after)
    if now + delay >= deadline:
        return None
    return delay


async def download(
    transport: Transport,
    url: str,
    path: str | os.PathLike[str],
    *,
    policy: Policy,
    limit: int = DOWNLOAD_LIMIT,
    convert: str | None = None,
    media: Media = "image",
    reopen: Reopen | None = None,
    announced_at: float | None = None,
    on_retry: RetryHook | None = None,
    rand: Callable[[], float] = random.random,
) -> SavedFile:
    """Fetch the file at ``url`` through ``transport`` and :func:`save` it to ``path``
    (``media``, ``reopen``: as :func:`save` takes them; a body resumed by range stays one
    attempt).

    Every attempt and wait fits in ``policy.download_timeout`` from the call (the time spent
    writing to disk, checking the image and converting it is not counted); an attempt that gets
    no byte for ``policy.request_timeout`` is cut and counts as a transient failure. A failed
    attempt is tried again as :func:`download_retry_delay` decides (``on_retry`` is told first);
    ``announced_at`` (trio time) is when the server announced the result, the start of
    ``policy.download_propagation`` (``None``: now). Redirects are the transport's
    (:meth:`~hybridgen.transport.SuperDuperTransport.fetch`). Any failure raises
    :class:`~hybridgen.errors.DownloadError` (``kind``: ``"http"``, ``"connection"``,
    ``"redirect"``, ``"timeout"``, or :func:`save`'s), naming the file's host and status and how
    many attempts were made; nothing is left behind.
    """
    started = trio.current_time()
    deadline = started + policy.download_timeout
    propagated = (started if announced_at is None else announced_at) + policy.download_propagation
    attempt = 0
    while True:
        attempt += 1
        try:
            saved = await _attempt(
                transport, url, path, limit, convert, media, reopen, deadline, policy
            )
        except TransportError as exc:
            error = exc
        else:
            if saved is not None:
                return saved
            raise DownloadError(
                f"download of {url}: not finished within {policy.download_timeout:g} s "
                f"(download_timeout){_tries(attempt)}",
                url=url,
                kind="timeout",
            )
        now = trio.current_time()
        delay = download_retry_delay(
            error, attempt, now, deadline=deadline, propagated=propagated, policy=policy, rand=rand
        )
        if delay is None:
            raise _failed(url, error, attempt) from None
        if on_retry is not None:
            on_retry(attempt, delay, error)
        await trio.sleep(delay)


async def _attempt(
    transport: Transport,
    url: str,
    path: str | os.PathLike[str],
    limit: int,
    convert: str | None,
    media: Media,
    reopen: Reopen | None,
    deadline: float,
    policy: Policy,
) -> SavedFile | None:
    """One ``GET`` and save: the file, or ``None`` when ``deadline`` cut it. A stall of
    ``request_timeout`` (no reply, or no byte of the body) raises ``TransientError``."""
    stall = policy.request_timeout
    saved: SavedFile | None = None
    # The bound encloses the whole `async with`: a transport's fetch may open a nursery. While
    # the network is awaited (the reply, each chunk) it is at most `stall` away, never past
    # `deadline`; while a chunk is written to disk, and for the checks after the body, it is off.
    with trio.CancelScope(deadline=min(deadline, trio.current_time() + stall)) as bound:

        def waiting(network: bool | None) -> None:
            """The network awaited (True), a chunk to write (False), or in between (None)."""
            if network is None:
                bound.deadline = deadline
            elif network:
                bound.deadline = min(deadline, trio.current_time() + stall)
            else:
                bound.deadline = math.inf

        resume: Reopen | None = None
        if reopen is not None:
            opener = reopen

            @contextlib.asynccontextmanager
            async def resume_at(start: int) -> AsyncIterator[AsyncIterator[bytes]]:
                waiting(True)
                async with opener(start) as rest:
                    yield _Watched(rest, waiting)

            resume = resume_at

        async with transport.fetch(url, limit=limit) as chunks:
            saved = await save(
                _Watched(chunks, waiting),
                path,
                url=url,
                limit=limit,
                convert=convert,
                media=media,
                reopen=resume,
            )
    if saved is None and trio.current_time() < deadline:
        raise TransientError(f"download: no byte for {stall:g} s (request_timeout)")
    return saved


class _Watched:
    """A body's chunks; ``waiting(True)`` as the next one is awaited, ``waiting(False)`` once it
    came (or the body ended), ``waiting(None)`` when it broke off."""

    def __init__(
        self, chunks: AsyncIterator[bytes], waiting: Callable[[bool | None], None]
    ) -> None:
        self._chunks = chunks
        self._waiting = waiting

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> bytes:
        self._waiting(True)
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._waiting(False)
            raise
        except BaseException:
            self._waiting(None)
            raise
        self._waiting(False)
        return chunk


def _tries(attempt: int) -> str:
    return f"; {attempt} attempts" if attempt > 1 else ""


def _failed(url: str, error: TransportError, attempt: int) -> DownloadError:
    """The download's final error for the last attempt's ``error``."""
    if isinstance(error, DownloadError):
        if attempt == 1:
            return error
        return DownloadError(
            f"{error}{_tries(attempt)}", url=error.url, kind=error.kind, status=error.status
        )
    status = getattr(error, "status", None)
    kind = "redirect" if isinstance(error, RedirectError) else "http" if status else "connection"
    return DownloadError(
        f"download of {url}: {str(error).removeprefix('download: ')}{_tries(attempt)}",
        url=url,
        kind=kind,
        status=status,
    )
