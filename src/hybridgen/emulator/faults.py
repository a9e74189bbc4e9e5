"""The emulator's fault switches: :class:`Faults`, what each switch takes, and their limits."""

from __future__ import annotations

import math
import re
from typing import Any, Final, Literal

import attrs

from .replies import BadRequest, short_repr

__all__ = [
    "FILE_FAULTS",
    "FILE_MODES",
    "FILE_REDIRECTS",
    "JOB_FAILED_REASON",
    "MAX_COUNT",
    "MAX_FILE_BYTES",
    "MAX_PROGRESS_STEPS",
    "MAX_SECONDS",
    "POLL_FAULTS",
    "POLL_REDIRECTS",
    "REDIRECT_TARGETS",
    "SSE_MODES",
    "START_FAULTS",
    "TODAYS_API",
    "WS_MODES",
    "WS_NOISES",
    "Faults",
]

WsMode = Literal["normal", "silent", "late", "drop", "refuse", "progress", "oneshot"]
WS_MODES: Final = ("normal", "silent", "late", "drop", "refuse", "progress", "oneshot")
SSE_MODES: Final = WS_MODES
"""The SSE stream's modes: the same names as the socket's (``hybridgen serve --sse-mode``)."""
PollFault = Literal["500", "502", "503", "504", "429", "reset", "garbage", "404"]
POLL_FAULTS: Final = ("500", "502", "503", "504", "429", "reset", "garbage", "404")
StartFault = Literal["409", "422", "429", "503", "524"]
START_FAULTS: Final = ("409", "422", "429", "503", "524")
WsNoise = Literal["junk", "oversized"]
WS_NOISES: Final = ("junk", "oversized")
FileMode = Literal["webp", "png", "html", "huge", "slow"]
FILE_MODES: Final = ("webp", "png", "html", "huge", "slow")
FileFault = Literal["403", "404", "429", "500", "503"]
FILE_FAULTS: Final = ("403", "404", "429", "500", "503")
RedirectStatus = Literal["301", "302", "303", "307", "308"]
FILE_REDIRECTS: Final = ("301", "302", "303", "307", "308")
RedirectTo = Literal["path", "origin", "loop"]
REDIRECT_TARGETS: Final = ("path", "origin", "loop")
PollRedirect = Literal["301", "302", "303", "307", "308", "loop"]
POLL_REDIRECTS: Final = ("301", "302", "303", "307", "308", "loop")


JOB_FAILED_REASON: Final = "the emulated job failed (job_fails switch)"
"""The default ``fail_reason``: the text a failed job's task carries."""
MAX_SECONDS: Final = 24 * 3600.0
"""The longest duration a fault switch takes (seconds, before time scaling)."""
MAX_COUNT: Final = 10**9
"""The largest count a fault switch takes (``ws_drops``, ``poll_faults``, ``empty_url_polls``)."""
MAX_FILE_BYTES: Final = 2**34
"""The largest ``file_bytes`` (16 GiB: a body that only costs what the client reads)."""
MAX_PROGRESS_STEPS: Final = 1000
"""The most progress messages per job (each is scheduled when the job starts)."""


def _choice(options: tuple[str, ...]) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in options:
            raise BadRequest(
                attribute.name, f"must be one of {', '.join(options)}; got {short_repr(value)}"
            )

    return check


def _number(high: float, what: str) -> Any:
    """A validator: a finite number in ``0..high`` (``None`` passes)."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        # compared before isfinite: a 400-digit integer is not convertible to float
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and 0 <= value <= high
            and math.isfinite(value)
        ):
            raise BadRequest(
                attribute.name, f"must be {what} in 0..{high:g}, got {short_repr(value)}"
            )

    return check


def _count(high: int) -> Any:
    """A validator: a whole number in ``0..high`` (``None`` passes)."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high):
            raise BadRequest(
                attribute.name, f"must be a whole number in 0..{high}, got {short_repr(value)}"
            )

    return check


def _flag(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise BadRequest(attribute.name, f"must be true or false, got {short_repr(value)}")


_STATUS_WORD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_\- ]{0,39}")


def _status_word(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _STATUS_WORD.fullmatch(value):
        raise BadRequest(
            attribute.name,
            f"must be a status word (a letter, then up to 39 letters, digits, _, - or spaces), "
            f"got {short_repr(value)}",
        )


def _reason_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or len(value) > 300 or not value.isprintable():
        raise BadRequest(
            attribute.name,
            f"must be printable text of at most 300 characters, got {short_repr(value)}",
        )


_SECONDS: Final = _number(MAX_SECONDS, "seconds")


@attrs.frozen(kw_only=True)
class Faults:
    """The switches of one emulated server (or project). Times are seconds, before time scaling.

    - ``ws_mode``: ``normal`` pushes the result when ready; ``silent`` accepts the socket and
      never sends; ``late`` pushes ``late_by`` after ready; ``drop`` closes each of the first
      ``ws_drops`` connections ``ws_drop_after`` after it opened (later ones work); ``refuse``
      rejects the handshake; ``progress`` sends the progress messages, never the result;
      ``oneshot`` sends each connection one message at once (the latest the job's timeline has
      reached: its result once ready, else its latest progress, else progress 0) and then ends
      the connection cleanly, as a server that closes each stream after one message.
    - ``sse_mode``: the same for the file's SSE stream (``GET /api/v1/events/file.{id}``), as
      today's API does: ``render_progress`` messages, then ``render_result`` and a ``task``
      ``completed`` (a failed job: a ``task`` with status ``error`` and the reason). ``drop`` ends
      the stream (the client sees "stream ended"); ``refuse`` answers HTTP 524 with Cloudflare's
      HTML page. The default, ``silent``, plays the seed-era server (the stream opens, nothing
      comes); :data:`TODAYS_API` plays today's. ``sse_keepalive``: seconds between the
      ``: keep-alive`` comments the stream sends in any mode but ``refuse``, from the job's
      start (0: none; at most :data:`MAX_KEEPALIVES` per job).
    - ``poll_fault``: what the first ``poll_faults`` polls of each job get (``None`` count: every
      poll), each with probability ``poll_fault_rate``: an HTTP status (``500``, ``502``, ``503``,
      ``504``, ``429``, ``404``), ``reset`` (connection dropped) or ``garbage`` (invalid JSON).
      ``retry_after`` goes with 429/503. ``poll_delay`` makes every poll answer that much later.
    - ``gen_time``: how long a job takes; ``job_fails``: the job ends with an error instead,
      its task saying ``fail_status`` (the API's ``error`` by default; e.g. ``failed``) with the
      text ``fail_reason`` (none when empty) in the file's ``tasks`` and the SSE ``task``
      message.
    - ``progress_steps``: progress messages sent on the socket during the job (``normal``/``late``).
    - ``ws_noise``: ``junk`` sends invalid messages on every socket (not JSON, not an object,
      unknown types, malformed progress, a result for another file) when it opens and before each
      real message; ``oversized`` sends that junk plus one message of
      :data:`OVERSIZED_MESSAGE_BYTES` when the socket opens.
    - ``empty_url_polls``: the first that many polls that find the job done answer ``url: ""``
      (a completed job whose file is not stored yet); the push then carries ``url: ""`` too.
    - ``forbidden``: the token is valid but may not use this project: its start requests, polls
      and sockets get HTTP 403.
    - ``start_fault``: what the first ``start_faults`` start requests get (``None`` count: every
      one), as the real API answers them: ``409`` (``Integrity error, create``), ``422`` (a
      FastAPI validation ``detail`` list), ``429`` and ``503`` (with ``retry_after``; no job is
      made), ``524`` (Cloudflare's HTML page after the origin timed out: the job *was* made).
    - ``file_cuts``: the first that many downloads of each result file break off halfway
      through what they asked for (the connection closes mid-body); the file origin honours
      ``Range: bytes=N-`` (HTTP 206), so a client can resume.
    - ``file_mode``: how result files are served (from the files origin): ``webp`` (as today's
      CDN), ``png`` (as seed-era servers), ``html`` (an HTML error page with status 200),
      ``huge`` (``file_bytes`` bytes: a PNG signature then zeros, a video's the sample MP4
      then a ``free`` box of zeros; no ``Content-Length``) or
      ``slow`` (the WEBP one byte per second, scaled).
    - ``file_fault``: what the first ``file_faults`` requests of each result file get before it is
      served, as a CDN that does not have a new file everywhere yet: ``403`` or ``404`` (a
      CDN's XML error), ``429``/``503`` (with ``retry_after``) or ``500`` (a body cut short is
      ``file_cuts``).
    - ``file_redirect``: result files are redirected with this status (``302``, ``307``, ...),
      ``file_redirect_to``: ``path`` (``/files/x`` to ``/stored/x`` on the files origin,
      ``file_redirect_hops`` hops with relative ``Location``), ``origin`` (result URLs name the
      API's origin, which redirects to the files origin, as an API download endpoint sending
      to presigned storage) or ``loop`` (``/files/x`` and ``/stored/x`` send to each other).
    - ``poll_redirect``: polls (``GET /api/v1/file/{id}``) are redirected to the same URL with
      ``?via=redirect`` on the same origin with this status; ``loop``: back and forth forever.

    Every switch is range-checked (durations up to :data:`MAX_SECONDS`, counts up to
    :data:`MAX_COUNT`, ``progress_steps`` up to :data:`MAX_PROGRESS_STEPS`), so no setting can make
    the server busy for long: a bad one raises :class:`BadRequest` naming the switch.
    """

    ws_mode: WsMode = attrs.field(default="normal", validator=_choice(WS_MODES))
    sse_mode: WsMode = attrs.field(default="silent", validator=_choice(SSE_MODES))
    late_by: float = attrs.field(default=5.0, validator=_SECONDS)
    ws_drops: int = attrs.field(default=1, validator=_count(MAX_COUNT))
    ws_drop_after: float = attrs.field(default=1.0, validator=_SECONDS)
    poll_fault: PollFault | None = attrs.field(default=None, validator=_choice(POLL_FAULTS))
    poll_faults: int | None = attrs.field(default=None, validator=_count(MAX_COUNT))
    poll_fault_rate: float = attrs.field(default=1.0, validator=_number(1.0, "a probability"))
    retry_after: float | None = attrs.field(default=None, validator=_SECONDS)
    poll_delay: float = attrs.field(default=0.0, validator=_SECONDS)
    gen_time: float = attrs.field(default=35.0, validator=_SECONDS)
    job_fails: bool = attrs.field(default=False, validator=_flag)
    fail_status: str = attrs.field(default="error", validator=_status_word)
    fail_reason: str = attrs.field(default=JOB_FAILED_REASON, validator=_reason_text)
    progress_steps: int = attrs.field(default=3, validator=_count(MAX_PROGRESS_STEPS))
    ws_noise: WsNoise | None = attrs.field(default=None, validator=_choice(WS_NOISES))
    empty_url_polls: int = attrs.field(default=0, validator=_count(MAX_COUNT))
    forbidden: bool = attrs.field(default=False, validator=_flag)
    start_fault: StartFault | None = attrs.field(default=None, validator=_choice(START_FAULTS))
    start_faults: int | None = attrs.field(default=None, validator=_count(MAX_COUNT))
    file_mode: FileMode = attrs.field(default="webp", validator=_choice(FILE_MODES))
    file_bytes: int = attrs.field(default=2**31, validator=_count(MAX_FILE_BYTES))
    file_cuts: int = attrs.field(default=0, validator=_count(MAX_COUNT))
    sse_keepalive: float = attrs.field(default=0.0, validator=_SECONDS)
    file_fault: FileFault | None = attrs.field(default=None, validator=_choice(FILE_FAULTS))
    file_faults: int = attrs.field(default=1, validator=_count(MAX_COUNT))
    file_redirect: RedirectStatus | None = attrs.field(
        default=None, validator=_choice(FILE_REDIRECTS)
    )
    file_redirect_to: RedirectTo = attrs.field(default="path", validator=_choice(REDIRECT_TARGETS))
    file_redirect_hops: int = attrs.field(default=1, validator=_count(100))
    poll_redirect: PollRedirect | None = attrs.field(
        default=None, validator=_choice(POLL_REDIRECTS)
    )

    def replace(self, **changes: Any) -> Faults:
        """A copy with some switches changed."""
        return attrs.evolve(self, **changes)


TODAYS_API: Final = Faults(ws_mode="silent", sse_mode="normal")
"""The API as it is today: the legacy socket accepts and stays silent, the SSE stream pushes."""
