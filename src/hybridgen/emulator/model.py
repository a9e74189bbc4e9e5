"""The emulator's behaviour, without sockets: jobs, their timelines and the fault switches.

One :class:`ServerModel` decides everything a SuperDuperAI-like server does: when a job's result is
ready, what a poll returns (or which fault it hits), what the project's socket sends and when it
drops. Two front ends serve it: the real HTTP + WebSocket server (:mod:`hybridgen.emulator.server`)
and the in-memory transport (:class:`hybridgen.testing.MemoryTransport`) used on trio's virtual
clock. Time is trio's clock, so the same model runs in real and in virtual time.
"""

from __future__ import annotations

import collections
import hmac
import json
import math
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import trio

__all__ = [
    "FILE_FAULTS",
    "FILE_MODES",
    "FILE_REDIRECTS",
    "POLL_REDIRECTS",
    "Redirect",
    "GARBAGE_BODY",
    "JOB_FAILED_REASON",
    "MAX_COUNT",
    "MAX_KEEPALIVES",
    "MAX_FILE_BYTES",
    "MAX_PROGRESS_STEPS",
    "MAX_SECONDS",
    "FilePlan",
    "OVERSIZED_MESSAGE_BYTES",
    "POLL_FAULTS",
    "SSE_MODES",
    "TODAYS_API",
    "START_FAULTS",
    "WS_MODES",
    "WS_NOISES",
    "GENERATION_CONFIGS",
    "SAMPLE_MP4",
    "UPLOAD_BODY_LIMIT",
    "VIDEO_CONFIGS",
    "BadRequest",
    "ErrorReply",
    "Faults",
    "Forbidden",
    "Job",
    "Rejected",
    "ServerModel",
    "SseRefused",
    "WsDropped",
    "WsRefused",
    "parse_upload",
    "sse_frame",
    "SSE_KEEPALIVE",
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
RECEIVED_KEPT: Final = 1000
"""How many requests for result files :attr:`ServerModel.received` keeps (the latest)."""
FILE_CHUNK: Final = 2**16
"""The size of the pieces a result file is sent in."""
HTML_ERROR_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>emulated CDN error page (file_mode html)</p></body></html>"
)
OVERSIZED_MESSAGE_BYTES: Final = 2**20 + 2**16
"""The size of the ``oversized`` noise message: above trio-websocket's default 1 MiB limit."""

GENERATION_CONFIGS: Final = (
    {
        "name": "comfyui/flux",
        "label": "Flux",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 1.0},
        "vip_required": False,
    },
    {
        "name": "comfyui/flux-dev",
        "label": "Flux Dev",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 2.0},
        "vip_required": False,
    },
    {
        "name": "comfyui/sdxl",
        "label": "Stable Diffusion XL",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 0.5},
        "vip_required": False,
    },
    {
        "name": "comfyui/flux-kontext",
        "label": "Flux Kontext (edit)",
        "type": "image_to_image",
        "source": "comfyui",
        "params": {"price": 2.5},
        "vip_required": True,
    },
    {
        "name": "google-cloud/veo3-text2video",
        "label": "Veo 3",
        "type": "text_to_video",
        "source": "google-cloud",
        "params": {
            "price_per_second": 2.0,
            "available_durations": [5, 8],
            "supported_aspect_ratios": ["16:9", "9:16"],
        },
        "vip_required": True,
    },
    {
        "name": "azure-openai/sora",
        "label": "Sora",
        "type": "text_to_video",
        "source": "azure-openai",
        "params": {"price_per_second": 0.5, "available_durations": [5, 10, 15, 20]},
        "vip_required": False,
    },
    {
        "name": "comfyui/ltx",
        "label": "LTX",
        "type": "image_to_video",
        "source": "comfyui",
        "params": {"price_per_second": 0.4, "available_durations": [5, 10]},
        "vip_required": False,
    },
    {
        "name": "fal-ai/kling-video/v2.1",
        "label": "Kling 2.1",
        "type": "image_to_video",
        "source": "fal-ai",
        "params": {"price_per_second": 0.28, "available_durations": [5, 10]},
        "vip_required": False,
    },
    {
        "name": "comfyui/lip-sync",
        "label": "Lip sync",
        "type": "video_to_video",
        "source": "comfyui",
        "params": {"price_per_second": 0.3, "max_duration": 30},
        "vip_required": False,
    },
)
"""The emulator's generation configs (``GET /api/v1/generation-config``): a small, realistic list
in the real server's shape (``params`` carry prices; video ones a price per second and their
allowed durations, none per generation)."""

VIDEO_CONFIGS: Final[dict[str, dict[str, Any]]] = {
    str(c["name"]): c for c in GENERATION_CONFIGS if str(c["type"]).endswith("video")
}
"""The video models of :data:`GENERATION_CONFIGS`, by name."""

SAMPLE_MP4: Final = (Path(__file__).parent / "assets" / "sample.mp4").read_bytes()
"""Every video job's result: a real, playable 2 s H.264 MP4 of 128x72 (``assets/make_sample.sh``
made it once with ffmpeg; the emulator needs no ffmpeg)."""
UPLOAD_BODY_LIMIT: Final = 32 * 2**20
"""The largest upload (bytes) the emulator takes; a longer one gets HTTP 413."""


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


def _shown(value: object) -> str:
    """A short ``repr`` of a rejected value (a control request may send a huge one)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _choice(options: tuple[str, ...]) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in options:
            raise BadRequest(
                attribute.name, f"must be one of {', '.join(options)}; got {_shown(value)}"
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
            raise BadRequest(attribute.name, f"must be {what} in 0..{high:g}, got {_shown(value)}")

    return check


def _count(high: int) -> Any:
    """A validator: a whole number in ``0..high`` (``None`` passes)."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high):
            raise BadRequest(
                attribute.name, f"must be a whole number in 0..{high}, got {_shown(value)}"
            )

    return check


def _flag(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise BadRequest(attribute.name, f"must be true or false, got {_shown(value)}")


_STATUS_WORD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_\- ]{0,39}")


def _status_word(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _STATUS_WORD.fullmatch(value):
        raise BadRequest(
            attribute.name,
            f"must be a status word (a letter, then up to 39 letters, digits, _, - or spaces), "
            f"got {_shown(value)}",
        )


def _reason_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or len(value) > 300 or not value.isprintable():
        raise BadRequest(
            attribute.name, f"must be printable text of at most 300 characters, got {_shown(value)}"
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


MAX_KEEPALIVES: Final = 300
"""The most SSE keep-alive comments one job's stream sends (``sse_keepalive``)."""
SSE_KEEPALIVE: Final = ""
"""A stream's keep-alive in the SSE schedule (sent as a comment, no data): no message is empty."""

TODAYS_API: Final = Faults(ws_mode="silent", sse_mode="normal")
"""The API as it is today: the legacy socket accepts and stays silent, the SSE stream pushes."""


@attrs.frozen
class FilePlan:
    """How one result file is served: what to render (``image_format``, Pillow's name, or
    ``None``), with which ``content_type`` and declared ``length`` (``None``: not declared);
    ``body`` is a ready-made body (a video's MP4); ``cut`` says this download breaks off
    halfway (``file_cuts``)."""

    job: Job
    mode: str
    content_type: str
    image_format: str | None
    length: int | None
    body: bytes | None = None
    cut: bool = False


@attrs.frozen
class Redirect:
    """A redirect reply: its ``status`` and ``Location`` (relative or absolute)."""

    status: int
    location: str


@attrs.frozen
class ErrorReply:
    """An HTTP error reply as the emulator sends it: status, body and ``Retry-After`` seconds."""

    status: int
    body: bytes
    content_type: str = "application/json"
    retry_after: float | None = None


def _detail(status: int, detail: object, retry_after: float | None = None) -> ErrorReply:
    return ErrorReply(status, json.dumps({"detail": detail}).encode(), retry_after=retry_after)


class Rejected(Exception):
    """The start request is answered with an error: :attr:`reply` is the answer."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply


class BadRequest(Rejected, ValueError):
    """The start request's body is invalid; ``field`` names the first bad field.

    Its :attr:`reply` is a FastAPI-style 422:
    ``{"detail": [{"loc": ["body", ...], "msg": ..., "type": ...}]}``.
    """

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        loc = ["body", *field.split(".")] if field != "body" else ["body"]
        super().__init__(_detail(422, [{"loc": loc, "msg": message, "type": kind}]))
        self.args = (f"{field}: {message}",)
        self.field = field


GARBAGE_BODY: Final = b"<html><body>502 Bad Gateway (emulated garbage)</body"
"""What a poll with the ``garbage`` fault gets: an HTTP 200 whose body is not JSON."""

_CLOUDFLARE_524: Final = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>emulator | 524: A timeout occurred</title>
<meta charset="UTF-8" /><style>body{font-family:sans-serif}</style></head>
<body><div id="cf-wrapper"><h1><span>A timeout occurred</span> <span>Error code 524</span></h1>
<p>The origin web server timed out responding to this request.</p>
<p>Cloudflare Ray ID: 0000000000000000 (emulated)</p></div></body></html>
"""


class WsRefused(Exception):
    """The socket handshake is refused (``ws_mode='refuse'``)."""


class Forbidden(Exception):
    """The project is off limits for this token (``forbidden``): HTTP 403."""


class WsDropped(Exception):
    """The socket is dropped (``ws_mode='drop'``)."""


class SseRefused(Exception):
    """The SSE request fails with HTTP 524 (``sse_mode='refuse'``)."""


@attrs.define(eq=False)
class Job:
    """One generation job on the emulated server."""

    id: str
    project_id: str
    prompt: str
    seed: int
    width: int
    height: int
    created: float
    ready_at: float
    faults: Faults
    config_name: str = "comfyui/flux"
    kind: str = "image"
    """``image`` or ``video`` (made by ``generate-video``)."""
    duration: int | None = None
    """A video's length in seconds."""
    aspect_ratio: str = "1:1"
    source: str | None = None
    """A video job's source file id (``references``)."""
    cuts: int = 0
    """Downloads of this job's file cut off so far (``file_cuts``)."""
    task_id: int = 0
    """The job's task id (an integer, as the real API's)."""
    polls: int = 0
    file_requests: int = 0
    """Requests that reached the job's file (after its redirects), for ``file_faults``."""
    empty_urls: int = 0
    """Polls answered with an empty ``url`` so far (``empty_url_polls``)."""
    error: str | None = None
    """Why the job fails though ``job_fails`` is off (a video model's missing source)."""
    schedule: list[tuple[float, str]] = attrs.field(factory=list)
    """The socket messages of this job, as ``(time, JSON text)``."""
    sse_schedule: list[tuple[float, str]] = attrs.field(factory=list)
    """The SSE messages of this job, as ``(time, JSON text)``."""

    @property
    def fails(self) -> bool:
        """Whether the job ends with an error (``job_fails``, or an :attr:`error` of its own)."""
        return self.faults.job_fails or self.error is not None

    @property
    def reason(self) -> str:
        """The error text of a failing job (its own, else ``fail_reason``; may be empty)."""
        return self.error or self.faults.fail_reason

    @property
    def flow(self) -> str:
        """The type of the job's task: ``image-generation-flow`` or ``video-generation-flow``."""
        return f"{self.kind}-generation-flow"


_ZERO: Final = Faults()


class ServerModel:
    """Jobs and faults of one emulated SuperDuperAI server (see the module docstring).

    ``time_scale`` multiplies every duration of the faults (0.05: a 35 s job takes 1.75 s).
    ``token``: when set, requests must carry ``Authorization: Bearer <token>``.
    ``file_base``: the base of result URLs (the files origin's URL; in memory, a ``.invalid`` host
    that no resolver knows);
    ``api_base``: the API's own (for ``file_redirect_to='origin'``).
    ``seed``: seeds the file ids and the random fault draws (``None``: fresh ids every run, so
    two runs of the emulator never reuse a file id).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        time_scale: float = 1.0,
        token: str | None = None,
        file_base: str = "http://files.emulator.invalid",
        api_base: str = "http://api.emulator.invalid",
        seed: int | None = None,
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
        self.faults = faults if faults is not None else Faults()
        self.project_faults: dict[str, Faults] = {}
        self.time_scale = time_scale
        self.token = token
        self.file_base = file_base
        self.api_base = api_base
        self.received: collections.deque[tuple[str, bool]] = collections.deque(maxlen=RECEIVED_KEPT)
        """The latest requests for result files and redirected polls: ``(URL, whether an
        Authorization header came)``, to check where the token went."""
        self.jobs: dict[str, Job] = {}
        self.counts: dict[str, int] = {
            "start": 0,
            "start_fault": 0,
            "poll": 0,
            "ws_connect": 0,
            "ws_drop": 0,
            "sse_connect": 0,
            "sse_drop": 0,
            "download": 0,
            "download_range": 0,
            "file_fault": 0,
            "redirect": 0,
            "models": 0,
            "upload": 0,
        }
        self.uploads: dict[str, dict[str, Any]] = {}
        """Uploaded files (``POST /api/v1/file/upload``) by id: their file objects."""
        self._by_project: dict[str, list[Job]] = {}
        self._drops: dict[tuple[str, str], int] = {}
        self._start_hits: tuple[Faults | None, int] = (None, 0)
        self._rng = random.Random(seed)
        self._news: dict[str, trio.lowlevel.ParkingLot] = {}
        """Where each project's sockets wait for its next job (one lot a project: a new job
        wakes its own project's sockets, not every socket of the server)."""

    # -- switches ---------------------------------------------------------------------------

    def faults_for(self, project_id: str) -> Faults:
        """The faults that apply to a project (its own, else the server's)."""
        return self.project_faults.get(project_id, self.faults)

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value is acceptable (compared in constant time)."""
        if self.token is None:
            return True
        given = (authorization or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, f"Bearer {self.token}".encode("utf-8", "surrogatepass"))

    def check_access(self, project_id: str) -> None:
        """Raise :class:`Forbidden` if the project's requests get HTTP 403 (``forbidden``)."""
        if self.faults_for(project_id).forbidden:
            raise Forbidden(f"this token may not use project {project_id}")

    def finished(self) -> int:
        """How many jobs' results have become ready (failed jobs do not count), by now.

        Counted from the jobs' timelines, so a result delivered by push counts as much as one a
        poll found.
        """
        now = trio.current_time()
        return sum(1 for job in self.jobs.values() if job.ready_at <= now and not job.fails)

    def stats(self) -> dict[str, int]:
        """The request counters plus ``finished`` (see :meth:`finished`)."""
        return {**self.counts, "finished": self.finished()}

    # -- HTTP -------------------------------------------------------------------------------

    def generation_configs(self, types: str | None = None) -> list[dict[str, Any]]:
        """The generation configs, only those of the comma-separated ``types`` when given."""
        self.counts["models"] += 1
        wanted = {t.strip() for t in types.split(",") if t.strip()} if types else None
        return [dict(c) for c in GENERATION_CONFIGS if wanted is None or c["type"] in wanted]

    def create(self, body: object) -> Job:
        """Start a job from a ``generate-image`` body.

        Takes today's form (``{"project_id"?, "config": {"prompt", "generation_config_name",
        "params": {"width", ...}}}``, numbers as numbers) and the seed-era flat form (``"type":
        "media"``, numbers as strings or numbers). Raises :class:`BadRequest` (422) if the body is
        invalid and :class:`Rejected` for a ``start_fault``.
        """
        project_id, faults, fault, body = self._begin(body)
        legacy = body.get("type") == "media"
        if legacy or project_id is not None:
            _uuid(project_id)
        config = _mapping(body, "config", "")
        prompt = _prompt(config)
        config_name = config.get("generation_config_name", "comfyui/flux")
        if not isinstance(config_name, str):
            raise BadRequest("config.generation_config_name", "str type expected", "type_error.str")
        params, where = (
            (config, "config")
            if legacy
            else (_mapping(config, "params", "config."), "config.params")
        )
        numbers = {
            name: _int_field(params, where, name, low, high, default=default, strict=not legacy)
            for name, low, high, default in (
                ("seed", 0, 2**53 - 1, 0),
                ("width", 64, 4096, 1024),
                ("height", 64, 4096, 1024),
            )
        }
        job = self._job(
            project_id,
            prompt,
            faults,
            seed=numbers["seed"],
            width=numbers["width"],
            height=numbers["height"],
            config_name=config_name,
        )
        return self._register(job, fault, faults)

    def _job(self, project_id: object, prompt: str, faults: Faults, **fields: Any) -> Job:
        """A new job of the project (access checked), ready ``gen_time`` from now."""
        self.check_access(str(project_id))
        now = trio.current_time()
        return Job(
            id=self._new_id(),
            project_id=str(project_id or ""),
            prompt=prompt,
            created=now,
            ready_at=now + faults.gen_time * self.time_scale,
            faults=faults,
            task_id=len(self.jobs) + 1,
            **fields,
        )

    def _begin(self, body: object) -> tuple[object, Faults, str | None, Mapping[str, Any]]:
        """Count a start request; its project id, faults, the start fault it gets and its body.

        Raises :class:`Rejected` for a start fault other than ``524`` and :class:`BadRequest`
        for a body that is not an object.
        """
        self.counts["start"] += 1
        project_id = body.get("project_id") if isinstance(body, Mapping) else None
        faults = self.faults_for(str(project_id))
        fault = self._start_fault(faults)
        if fault is not None and fault != "524":
            raise Rejected(self._fault_reply(fault, faults))
        if not isinstance(body, Mapping):
            raise BadRequest("body", "value is not a valid dict", "type_error.dict")
        return project_id, faults, fault, body

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def create_video(self, body: object) -> Job:
        """Start a video job from a ``generate-video`` body.

        Takes ``duration`` and ``aspect_ratio`` from ``config.params`` (the API's guide) or from
        ``config`` itself (that team's client), and the source from ``config.references``
        (``[{"type": "SOURCE", "reference_id": ID}]``, an upload or an earlier job). An unknown
        video model, a duration it does not allow or an unknown reference is a 422; an
        image-to-video or video-to-video job without a source is accepted and then fails, as the
        real server's did. The job takes ``gen_time`` like an image's; start faults apply.
        """
        project_id, faults, fault, body = self._begin(body)
        if project_id is not None:
            _uuid(project_id)
        config = _mapping(body, "config", "")
        prompt = _prompt(config)
        name = config.get("generation_config_name")
        spec = VIDEO_CONFIGS.get(name) if isinstance(name, str) else None
        if spec is None or not isinstance(name, str):
            known = ", ".join(VIDEO_CONFIGS)
            raise BadRequest(
                "config.generation_config_name", f"unknown video generation config; known: {known}"
            )
        params = _mapping(config, "params", "config.")
        where = "config.params" if "duration" in params else "config"
        source = params if "duration" in params else config
        duration = _int_field(source, where, "duration", 1, 3600, default=5, strict=True)
        allowed = spec["params"].get("available_durations")
        longest = spec["params"].get("max_duration")
        if (allowed and duration not in allowed) or (longest and duration > longest):
            shown = ", ".join(map(str, allowed)) if allowed else f"1..{longest}"
            raise BadRequest(f"{where}.duration", f"{name} allows durations {shown}")
        aspect = params.get("aspect_ratio", config.get("aspect_ratio", "16:9"))
        if not isinstance(aspect, str) or len(aspect) > 16:
            raise BadRequest("config.params.aspect_ratio", "str type expected", "type_error.str")
        shapes = spec["params"].get("supported_aspect_ratios")
        if shapes and aspect not in shapes:
            raise BadRequest(
                "config.params.aspect_ratio", f"{name} makes {', '.join(shapes)} videos"
            )
        seed = params.get("seed", config.get("seed", 0))
        reference = self._reference(config.get("references"))
        job = self._job(
            project_id,
            prompt,
            faults,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
            width=1280,
            height=720,
            config_name=name,
            kind="video",
            duration=duration,
            aspect_ratio=aspect,
            source=reference,
        )
        if spec["type"] != "text_to_video" and reference is None:
            job.error = f"{name} is {spec['type']}: it needs a source file in references"
        return self._register(job, fault, faults)

    def _reference(self, references: object) -> str | None:
        """The source file id of ``config.references``; a 422 for a malformed or unknown one."""
        if references is None or references == []:
            return None
        if not isinstance(references, list) or len(references) > 8:
            raise BadRequest("config.references", "value is not a valid list", "type_error.list")
        for index, item in enumerate(references):
            where = f"config.references.{index}"
            if not isinstance(item, Mapping):
                raise BadRequest(where, "value is not a valid dict", "type_error.dict")
            ref = item.get("reference_id")
            if not isinstance(ref, str) or not ref:
                raise BadRequest(f"{where}.reference_id", "field required", "value_error.missing")
            if ref not in self.uploads and ref not in self.jobs:
                raise BadRequest(f"{where}.reference_id", f"file {_shown(ref)} not found")
            if item.get("type", "SOURCE") == "SOURCE":
                return ref
        return None

    def upload(self, data: bytes, filename: str, content_type: str) -> dict[str, Any]:
        """Store an uploaded file (``POST /api/v1/file/upload``); its file object."""
        self.counts["upload"] += 1
        kind = content_type.partition("/")[0] if content_type else "file"
        file_id = self._new_id()
        obj: dict[str, Any] = {
            "id": file_id,
            "url": f"{self.file_base}/uploads/{file_id}",
            "thumbnail_url": None,
            "type": kind if kind in ("image", "video", "audio") else "file",
            "name": filename[:200],
            "size": len(data),
            "tasks": [],
        }
        self.uploads[file_id] = obj
        return obj

    def _register(self, job: Job, fault: str | None, faults: Faults) -> Job:
        """Schedule ``job``'s pushes, keep it, wake its project's sockets; the 524 fault."""
        job.schedule = self._schedule(job)
        job.sse_schedule = self._sse_schedule(job)
        self.jobs[job.id] = job
        self._by_project.setdefault(job.project_id, []).append(job)
        news = self._news.get(job.project_id)
        if news is not None:
            news.unpark_all()
        if fault == "524":  # the origin made the job; the proxy gave up waiting for it
            raise Rejected(self._fault_reply(fault, faults))
        return job

    def _start_fault(self, faults: Faults) -> str | None:
        """Count a start request against ``start_faults``; the fault it gets, if any.

        ``start_faults`` counts from the moment these switches were set (a new :class:`Faults`).
        """
        if faults.start_fault is None:
            return None
        if self._start_hits[0] is not faults:
            self._start_hits = (faults, 0)
        hits = self._start_hits[1]
        if faults.start_faults is not None and hits >= faults.start_faults:
            return None
        self._start_hits = (faults, hits + 1)
        self.counts["start_fault"] += 1
        return faults.start_fault

    def _fault_reply(self, fault: str, faults: Faults) -> ErrorReply:
        retry_after = None if faults.retry_after is None else faults.retry_after * self.time_scale
        if fault == "409":
            return _detail(409, "Integrity error, create")
        if fault == "422":
            item = {
                "loc": ["body", "config", "generation_config_name"],
                "msg": "unknown generation config (emulated)",
                "type": "value_error",
            }
            return _detail(422, [item])
        if fault == "429":
            return _detail(429, "Too many requests (emulated)", retry_after)
        if fault == "503":
            return _detail(503, "Service temporarily unavailable (emulated)", retry_after)
        return ErrorReply(524, _CLOUDFLARE_524, "text/html; charset=UTF-8")

    def poll_fault(self, job: Job) -> str | None:
        """Count a poll of ``job`` and return the fault it hits, if any."""
        self.counts["poll"] += 1
        job.polls += 1
        f = job.faults
        if f.poll_fault is None or (f.poll_faults is not None and job.polls > f.poll_faults):
            return None
        if f.poll_fault_rate < 1 and self._rng.random() >= f.poll_fault_rate:
            return None
        return f.poll_fault

    def poll_delay(self, job: Job) -> float:
        """How long the poll's answer is held back."""
        return job.faults.poll_delay * self.time_scale

    def retry_after(self, job: Job) -> float | None:
        """The ``Retry-After`` seconds that go with a 429/503, if any."""
        ra = job.faults.retry_after
        return None if ra is None else ra * self.time_scale

    def file_json(self, job: Job) -> dict[str, Any]:
        """The file object of ``job`` as ``GET /api/v1/file/{id}`` returns it now.

        Today's fields: a nested ``image_generation``, ``tasks`` (one ``in_progress`` task while
        running, none once done, an ``error`` task with its text on failure), an integer task
        id, ``thumbnail_url`` set shortly before ``url``, null ``video_generation*`` and
        ``audio_generation*``, and no project id.
        """
        now = trio.current_time()
        fails = job.fails
        status = "in_progress"
        if now >= job.ready_at:
            status = job.faults.fail_status if fails else "completed"
        url: str | None = self.url_of(job) if status == "completed" and not fails else None
        if url is not None and job.empty_urls < job.faults.empty_url_polls:
            job.empty_urls += 1
            url = ""
        previewed = now >= job.ready_at - (job.ready_at - job.created) / 5
        tasks: list[dict[str, Any]] = []
        if status != "completed" or fails:
            task: dict[str, Any] = {
                "type": job.flow,
                "status": status,
                "id": job.task_id,
                "file_id": job.id,
                "project_id": None,
            }
            if fails and now >= job.ready_at and job.reason:
                task["error"] = job.reason
            tasks.append(task)
        generation: dict[str, Any] = {
            "id": job.id,
            "prompt": job.prompt,
            "seed": job.seed,
            "width": job.width,
            "height": job.height,
            "generation_config_name": job.config_name,
        }
        if job.kind == "video":
            generation.update(
                duration=job.duration,
                aspect_ratio=job.aspect_ratio,
                generation_config=dict(VIDEO_CONFIGS.get(job.config_name, {})),
            )
        thumbnail = self.url_of(job, thumbnail=True) if previewed and not fails else None
        file: dict[str, Any] = {
            "id": job.id,
            "url": url,
            "thumbnail_url": thumbnail,
            "type": job.kind,
            "image_generation_id": None,
            "image_generation": None,
            "video_generation_id": None,
            "video_generation": None,
            "audio_generation_id": None,
            "audio_generation": None,
            "duration": job.duration,
            "tasks": tasks,
        }
        file[f"{job.kind}_generation_id"] = job.id
        file[f"{job.kind}_generation"] = generation
        return file

    def url_of(self, job: Job, *, thumbnail: bool = False) -> str:
        """Where the job's file is served (on the files origin, like the real CDN; on the API's
        with ``file_redirect_to='origin'``, which redirects there)."""
        if thumbnail:  # a video's preview is an image, as the real CDN's
            return f"{self.file_base}/files/{job.id}.webp?thumbnail=1"
        ext = "mp4" if job.kind == "video" else "png" if job.faults.file_mode == "png" else "webp"
        f = job.faults
        base = (
            self.api_base if f.file_redirect and f.file_redirect_to == "origin" else self.file_base
        )
        return f"{base}/files/{job.id}.{ext}"

    def poll_redirect(
        self, job: Job, path: str, query: str, authorization: str | None
    ) -> Redirect | None:
        """The redirect a poll of ``job`` at ``path?query`` gets (``poll_redirect``), if any:
        a relative ``Location`` on the same origin. A redirected poll is recorded in
        :attr:`received`."""
        how = job.faults.poll_redirect
        if how is None:
            return None
        self.received.append(
            (f"{self.api_base}{path}{'?' + query if query else ''}", bool(authorization))
        )
        if how == "loop":
            self.counts["redirect"] += 1
            return Redirect(307, path if query else f"{path}?via=loop")
        if query:
            return None
        self.counts["redirect"] += 1
        return Redirect(int(how), f"{path}?via=redirect")

    def serve_file(
        self, origin: str, path: str, query: str, authorization: str | None
    ) -> FilePlan | Redirect | ErrorReply:
        """What a request for a result file gets: ``origin`` is ``"files"`` or ``"api"``,
        ``path`` ``/files/{name}`` or ``/stored/{name}``; recorded in :attr:`received`.

        The file's redirects come first (``file_redirect``), then its faults (``file_fault``,
        counted per file), then the file (see :meth:`file_plan`); an unknown or unready file is
        a 404.
        """
        base = self.api_base if origin == "api" else self.file_base
        self.received.append((f"{base}{path}{'?' + query if query else ''}", bool(authorization)))
        where, _, name = path.lstrip("/").partition("/")
        file_id = name.partition(".")[0]
        job = self.jobs.get(file_id)
        missing = _detail(404, f"File {name} not found or not ready")
        if job is None or job.fails or trio.current_time() < job.ready_at:
            return missing
        f = job.faults
        if origin == "api" or where == "files" or f.file_redirect_to == "loop":
            hop = 0
        else:
            hop = int(query.removeprefix("hop=")) if query.removeprefix("hop=").isdigit() else 1
        if f.file_redirect is not None:
            status = int(f.file_redirect)
            target: str | None = None
            if origin == "api":
                target = (
                    f"{self.file_base}/stored/{name}" if f.file_redirect_to == "origin" else None
                )
                if target is None:
                    return missing
            elif f.file_redirect_to == "loop":
                target = f"/stored/{name}" if where == "files" else f"/files/{name}"
            elif f.file_redirect_to == "path" and hop < f.file_redirect_hops:
                target = f"/stored/{name}?hop={hop + 1}"
            if target is not None:
                self.counts["redirect"] += 1
                return Redirect(status, target)
        job.file_requests += 1
        if f.file_fault is not None and job.file_requests <= f.file_faults:
            self.counts["file_fault"] += 1
            status = int(f.file_fault)
            if status in (403, 404):  # a storage CDN's words, in XML
                word = "AccessDenied" if status == 403 else "NoSuchKey"
                body = f"<Error><Code>{word}</Code><Message>{word}</Message></Error>".encode()
                return ErrorReply(status, body, "application/xml")
            retry_after = self.retry_after(job) if status in (429, 503) else None
            return _detail(status, f"emulated CDN HTTP {status}", retry_after)
        plan = self.file_plan(name)
        return missing if plan is None else plan

    def file_plan(self, name: str) -> FilePlan | None:
        """How ``/files/{name}`` is served now; ``None`` (404) for an unknown or unready file.

        Counts a download.
        """
        file_id, _, ext = name.partition(".")
        job = self.jobs.get(file_id)
        if job is None or job.fails or trio.current_time() < job.ready_at:
            return None
        self.counts["download"] += 1
        mode = job.faults.file_mode
        cut = job.cuts < job.faults.file_cuts
        if cut:
            job.cuts += 1
        if mode == "html":
            return FilePlan(job, mode, "text/html", None, len(HTML_ERROR_PAGE), cut=cut)
        video = job.kind == "video" and ext == "mp4"
        if mode == "huge":
            kind = "video/mp4" if video else "image/png"
            return FilePlan(job, mode, kind, None, None, cut=cut)
        if video:
            return FilePlan(job, mode, "video/mp4", None, len(SAMPLE_MP4), SAMPLE_MP4, cut)
        fmt = "PNG" if mode == "png" else "WEBP"
        return FilePlan(job, mode, f"image/{fmt.lower()}", fmt, None, cut=cut)

    async def file_chunks(
        self, plan: FilePlan, image: bytes, start: int = 0
    ) -> AsyncIterator[bytes]:
        """The body of a planned file from byte ``start`` on (a range request), piece by piece,
        at its pace (``image``: the rendering). A ``cut`` plan raises :class:`WsDropped` once it
        has sent half of what was asked (the front end drops the connection)."""
        total = self.file_size(plan, image)
        cut_at = start + (total - start) // 2 if plan.cut else math.inf
        sent = start
        async for chunk in self._body(plan, image, start):
            if sent + len(chunk) > cut_at:
                yield chunk[: int(cut_at) - sent]
                raise WsDropped(f"the emulator cut the download of {plan.job.id} (file_cuts)")
            sent += len(chunk)
            yield chunk

    def file_size(self, plan: FilePlan, image: bytes) -> int:
        """The whole body's size in bytes."""
        if plan.mode == "html":
            return len(HTML_ERROR_PAGE)
        if plan.mode == "huge":
            return plan.job.faults.file_bytes
        return len(image)

    async def _body(self, plan: FilePlan, image: bytes, start: int) -> AsyncIterator[bytes]:
        if plan.mode == "html":
            yield HTML_ERROR_PAGE[start:]
        elif plan.mode == "huge":
            video = plan.content_type.startswith("video/")
            size = plan.job.faults.file_bytes
            head = _huge_mp4_head(size) if video else b"\x89PNG\r\n\x1a\n"
            if start < len(head):
                yield head[start:size]
            at = max(start, len(head))
            zeros = bytes(FILE_CHUNK)
            while at < size:
                piece = zeros[: min(FILE_CHUNK, size - at)]
                at += len(piece)
                yield piece
        elif plan.mode == "slow":
            for index in range(start, len(image)):
                yield image[index : index + 1]
                await trio.sleep(self.time_scale)
        else:
            for index in range(start, len(image), FILE_CHUNK):
                yield image[index : index + FILE_CHUNK]

    # -- WebSocket --------------------------------------------------------------------------

    def ws_accept(self, project_id: str) -> None:
        """Count a socket connection; raise :class:`WsRefused` if the handshake is refused."""
        self.counts["ws_connect"] += 1
        self.check_access(project_id)
        if self.faults_for(project_id).ws_mode == "refuse":
            raise WsRefused(f"the emulator refuses sockets for project {project_id}")

    def ws_feed(self, project_id: str) -> AsyncIterator[str]:
        """The messages one socket connection of the project receives, each at its time.

        Raises :class:`WsDropped` when the connection is to be dropped. Messages due before the
        connection opened are not sent (pushes are not replayed).
        """
        return self._timeline(
            ("ws", project_id),
            self.faults_for(project_id),
            lambda: self._by_project.get(project_id, ()),
            lambda job: job.schedule,
            project_id,
        )

    # -- Server-Sent Events -------------------------------------------------------------------

    def sse_accept(self, file_id: str) -> Job:
        """Count an SSE request for ``file_id`` and return its job.

        Raises ``KeyError`` for an unknown file, :class:`Forbidden` for a ``forbidden`` project
        and :class:`SseRefused` when the request gets HTTP 524 (``sse_mode='refuse'``: the job's
        faults, or the server's for an unknown file).
        """
        self.counts["sse_connect"] += 1
        job = self.jobs.get(file_id)
        if job is None:  # a proxy's timeout comes whatever the file: 524 before 404
            if self.faults.sse_mode == "refuse":
                raise SseRefused(f"the emulator answers 524 to SSE requests for file {file_id}")
            raise KeyError(file_id)
        self.check_access(job.project_id)
        if job.faults.sse_mode == "refuse":
            raise SseRefused(f"the emulator answers 524 to SSE requests for file {file_id}")
        return job

    async def sse_feed(self, job: Job) -> AsyncIterator[str]:
        """The messages one SSE stream of ``job`` receives, each at its time; it ends when the
        stream is to be dropped (``sse_mode='drop'``). Messages due before it opened are lost."""
        feed = self._timeline(
            ("sse", job.id), job.faults, lambda: (job,), lambda j: j.sse_schedule, job.project_id
        )
        try:
            async for text in feed:
                yield text
        except WsDropped:
            return
        finally:
            await feed.aclose()  # type: ignore[attr-defined]

    async def _timeline(
        self,
        key: tuple[str, str],
        faults: Faults,
        jobs: Callable[[], Iterable[Job]],
        schedule: Callable[[Job], list[tuple[float, str]]],
        project_id: str,
    ) -> AsyncIterator[str]:
        """Yield the scheduled messages of ``jobs`` from now on, each at its time, with the
        faults' noise; raise :class:`WsDropped` when this connection is to be dropped."""
        channel = key[0]
        mode = faults.ws_mode if channel == "ws" else faults.sse_mode
        opened = trio.current_time()
        drop_at = math.inf
        if mode == "drop" and self._drops.get(key, 0) < faults.ws_drops:
            self._drops[key] = self._drops.get(key, 0) + 1
            drop_at = opened + faults.ws_drop_after * self.time_scale
        sent: set[tuple[str, int]] = set()
        noise = _junk(project_id) if faults.ws_noise is not None else []
        for text in noise:
            yield text
        if faults.ws_noise == "oversized":
            yield _oversized()
        if mode == "oneshot":
            latest = self._latest(jobs(), schedule, opened)
            if latest is not None:
                yield latest
            self.counts[f"{channel}_drop"] += 1  # ended by the server, cleanly
            return
        while True:
            now = trio.current_time()
            if now >= drop_at:
                self.counts[f"{channel}_drop"] += 1
                raise WsDropped(f"the emulator dropped the {channel} connection {key[1]}")
            next_at = drop_at
            for job in jobs():
                for index, (at, text) in enumerate(schedule(job)):
                    if at < opened or (job.id, index) in sent:
                        continue
                    if at <= now:
                        sent.add((job.id, index))
                        for junk in noise:
                            yield junk
                        yield text
                    else:
                        next_at = min(next_at, at)
            if trio.current_time() < next_at:
                if channel == "sse":  # one job, known timeline: no news can change it
                    await trio.sleep_until(next_at)
                else:
                    news = self._news.setdefault(project_id, trio.lowlevel.ParkingLot())
                    try:
                        with trio.move_on_at(next_at):
                            await news.park()
                    finally:
                        if not news and self._news.get(project_id) is news:
                            del self._news[project_id]

    @staticmethod
    def _latest(
        jobs: Iterable[Job], schedule: Callable[[Job], list[tuple[float, str]]], now: float
    ) -> str | None:
        """What a ``oneshot`` connection gets: the newest job's latest due message (the first
        of those due at the same moment: the result before the task that follows it), else its
        progress 0."""
        newest = None
        for job in jobs:
            newest = job
        if newest is None:
            return None
        due = [(at, text) for at, text in schedule(newest) if at <= now and text != SSE_KEEPALIVE]
        if due:
            last = max(at for at, _ in due)
            return next(text for at, text in due if at == last)
        progress = {"file_id": newest.id, "progress": 0}
        return json.dumps({"type": "render_progress", "object": progress})

    def _progress(self, job: Job) -> list[tuple[float, str]]:
        steps = job.faults.progress_steps
        span = job.ready_at - job.created
        return [
            (
                job.created + span * k / (steps + 1),
                json.dumps(
                    {
                        "type": "render_progress",
                        "object": {"file_id": job.id, "progress": round(100 * k / (steps + 1))},
                    }
                ),
            )
            for k in range(1, steps + 1)
        ]

    def _push_at(self, job: Job, mode: str) -> float:
        return job.ready_at + (job.faults.late_by * self.time_scale if mode == "late" else 0.0)

    def _schedule(self, job: Job) -> list[tuple[float, str]]:
        mode = job.faults.ws_mode
        if mode not in ("normal", "late", "drop", "progress", "oneshot"):
            return []
        messages = self._progress(job)
        if mode != "progress":
            body = self._final_file(job)
            push = json.dumps({"type": "file", "object": body})
            messages.append((self._push_at(job, mode), push))
        return messages

    def _sse_schedule(self, job: Job) -> list[tuple[float, str]]:
        messages = self._sse_news(job)
        every = job.faults.sse_keepalive * self.time_scale
        if every > 0 and job.faults.sse_mode != "refuse":
            alive = [(job.created + every * k, SSE_KEEPALIVE) for k in range(1, MAX_KEEPALIVES + 1)]
            messages = sorted(messages + alive, key=lambda message: message[0])
        return messages

    def _sse_news(self, job: Job) -> list[tuple[float, str]]:
        mode = job.faults.sse_mode
        if mode not in ("normal", "late", "drop", "progress", "oneshot"):
            return []
        messages = self._progress(job)
        if mode == "progress":
            return messages
        at = self._push_at(job, mode)
        task: dict[str, Any] = {"id": job.id, "file_id": job.id, "status": "completed"}
        if job.fails:
            task["status"] = job.faults.fail_status
            if job.reason:
                task["error"] = job.reason
        elif not job.faults.empty_url_polls:  # a file not stored yet: only the task says done
            result = {"file_id": job.id, "url": self.url_of(job)}
            messages.append((at, json.dumps({"type": "render_result", "object": result})))
        messages.append((at, json.dumps({"type": "task", "object": task})))
        return messages

    def _final_file(self, job: Job) -> dict[str, Any]:
        failed = job.fails
        task = {
            "type": job.flow,
            "status": job.faults.fail_status if failed else "completed",
            "id": job.id,
        }
        if failed and job.reason:
            task["error"] = job.reason
        url = None if failed else self.url_of(job)
        if url is not None and job.faults.empty_url_polls:
            url = ""
        return {
            "id": job.id,
            "url": url,
            "type": job.kind,
            "project_id": job.project_id,
            f"{job.kind}_generation_id": job.id,
            "tasks": [task],
        }


def sse_frame(text: str) -> bytes:
    """One message as an SSE event: a ``data:`` line per line of ``text``, then a blank line
    (:data:`SSE_KEEPALIVE`: a comment line instead)."""
    if text == SSE_KEEPALIVE:
        return b": keep-alive\n\n"
    return "".join(f"data: {line}\n" for line in text.split("\n")).encode() + b"\n"


def _junk(project_id: str) -> list[str]:
    """Messages a client must log and ignore (``ws_noise``)."""
    other = str(uuid.uuid5(uuid.NAMESPACE_URL, project_id))
    return [
        "this is not JSON {",
        "[1, 2, 3]",
        json.dumps({"type": "mystery", "object": {"file_id": other}}),
        json.dumps({"type": "render_progress", "object": {"file_id": 42}}),
        json.dumps({"type": "render_progress", "object": {"file_id": other, "progress": "x"}}),
        json.dumps({"type": "file", "object": {"url": 5}}),
        json.dumps({"type": "file", "object": {"id": other, "url": "http://elsewhere/x.png"}}),
        json.dumps({"type": "file"}),
    ]


def _oversized() -> str:
    """One valid JSON message of an unknown type, :data:`OVERSIZED_MESSAGE_BYTES` long."""
    head, tail = '{"type": "padding", "object": "', '"}'
    return head + "x" * (OVERSIZED_MESSAGE_BYTES - len(head) - len(tail)) + tail


def _mapping(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = parent.get(name, {} if where else None)
    if value is None:
        raise BadRequest(f"{where}{name}", "field required", "value_error.missing")
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where}{name}", "value is not a valid dict", "type_error.dict")
    return value


def _int_field(
    params: Mapping[str, Any],
    where: str,
    name: str,
    low: int,
    high: int,
    *,
    default: int,
    strict: bool,
) -> int:
    """A whole number in ``low..high``; the seed-era form (not ``strict``) may send it as text."""
    raw = params.get(name, default)
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and not strict and raw.isascii() and raw.strip().isdigit():
        value = int(raw)
    if value is None or len(str(raw)) > 20:
        raise BadRequest(f"{where}.{name}", "value is not a valid integer", "type_error.integer")
    if not low <= value <= high:
        raise BadRequest(
            f"{where}.{name}",
            f"ensure this value is in {low}..{high}",
            "value_error.number.not_in_range",
        )
    return value


def _huge_mp4_head(size: int) -> bytes:
    """The start of a ``huge`` video of ``size`` bytes: the sample MP4, then the header of a
    ``free`` box (64-bit size) whose zeros fill the rest, so the whole file is a valid MP4."""
    rest = size - len(SAMPLE_MP4)
    if rest < 16:
        return SAMPLE_MP4[:size]
    return SAMPLE_MP4 + (1).to_bytes(4, "big") + b"free" + rest.to_bytes(8, "big")


def _uuid(value: object) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise BadRequest("project_id", "value is not a valid uuid", "type_error.uuid") from None


def _prompt(config: Mapping[str, Any]) -> str:
    prompt = config.get("prompt")
    if prompt is None:
        raise BadRequest("config.prompt", "field required", "value_error.missing")
    if not isinstance(prompt, str):
        raise BadRequest("config.prompt", "str type expected", "type_error.str")
    if not prompt.strip():
        raise BadRequest("config.prompt", "ensure this value has at least 1 characters")
    return prompt


def parse_upload(body: bytes, content_type: str) -> tuple[bytes, str, str]:
    """The ``payload`` field of a multipart upload: ``(data, file name, content type)``.

    Raises :class:`BadRequest` (422) for a body that is not multipart or has no ``payload``.
    """
    kind, _, rest = content_type.partition(";")
    boundary = ""
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        raise BadRequest("payload", "expected multipart/form-data with a boundary")
    for section in body.split(b"--" + boundary.encode())[1:]:
        if section.startswith(b"--"):
            break
        head, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = head.decode("latin-1").lower()
        if not re.search(r'(?:^|;)\s*name="payload"', headers, re.MULTILINE):
            continue  # another field (a file *named* payload is not the field)
        name = "upload"
        original = head.decode("latin-1")
        marker = original.lower().find('filename="')
        if marker >= 0:
            name = original[marker + 10 :].partition('"')[0] or name
        part_type = "application/octet-stream"
        for line in original.split("\r\n"):
            if line.lower().startswith("content-type:"):
                part_type = line.partition(":")[2].strip()
        return data.removesuffix(b"\r\n"), name, part_type
    raise BadRequest("payload", "field required", "value_error.missing")
