"""The SuperDuperAI editor API, sans I/O: configuration, URLs, headers, request and reply models.

Nothing here touches the network. :mod:`hybridgen.transport` does the I/O with these pieces, and
:mod:`hybridgen.emulator` serves the same shapes.
"""

from __future__ import annotations

import http
import ipaddress
import json
import logging
import math
import os
import random
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn, SupportsIndex
from urllib.parse import urlsplit

import attrs

from ._version import __version__
from .errors import ConfigError, RequestError, TransientError

__all__ = [
    "BODY_FORMS",
    "GENERATE_IMAGE",
    "GENERATION_CONFIGS",
    "PUSH_CHANNELS",
    "MAX_REPLY_BYTES",
    "VIDEO_KINDS",
    "TASK_STATUSES",
    "BodyForm",
    "FileStatus",
    "ModelInfo",
    "Push",
    "ImageRequest",
    "Config",
    "StatusMeaning",
    "error_reason",
    "failure_reason",
    "file_path",
    "load_json",
    "parse_file",
    "parse_file_list",
    "parse_generation_configs",
    "parse_push",
    "parse_poll_reply",
    "parse_start_reply",
    "status_meaning",
    "status_phrase",
    "parse_ws_message",
    "sse_path",
    "subscribe_message",
    "ws_path",
]

GENERATE_IMAGE: Final = "/api/v1/file/generate-image"
GENERATION_CONFIGS: Final = "/api/v1/generation-config"
"""The list of generation configs (models): ``GET``, optionally ``?type=text_to_image,...``."""
PUSH_CHANNELS: Final = ("websocket", "sse")
"""The push channels a :class:`~hybridgen.policy.Policy` may open: the project's legacy WebSocket
and the file's Server-Sent Events stream."""
USER_AGENT: Final = f"hybridgen/{__version__}"
MAX_PROMPT_CHARS: Final = 4000
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-_.~+/=]+")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}")
MAX_REPLY_BYTES: Final = 4 * 2**20
"""The default :attr:`Config.max_reply_bytes`: 4 MiB, about a thousand times a real reply."""
REASON_CHARS: Final = 300
"""The longest server-given reason kept in an error message (longer ones are cut with ...)."""
_ID_CHARS: Final = 200
_URL_CHARS: Final = 16_384

log: Final = logging.getLogger("hybridgen.api")

StatusMeaning = Literal["running", "completed", "failed", "cancelled"]

TASK_STATUSES: Final[Mapping[str, StatusMeaning]] = MappingProxyType(
    {
        # The API's own words: its OpenAPI TaskStatusEnum (file tasks in lower case; project
        # tasks and SSE `task_status` messages in upper case, the same words).
        "in_progress": "running",
        "completed": "completed",
        "error": "failed",
        # Its other enums and its own clients' words (LoraStatusEnum; the editor's project
        # statuses; the failure status seen with "NSFW content detected").
        "pending": "running",
        "processing": "running",
        "canceled": "cancelled",
        "failed": "failed",
        # Job-queue words an independent server uses for the same states.
        "queued": "running",
        "in_queue": "running",
        "waiting": "running",
        "scheduled": "running",
        "created": "running",
        "submitted": "running",
        "started": "running",
        "running": "running",
        "generating": "running",
        "retry": "running",
        "retrying": "running",
        "complete": "completed",
        "done": "completed",
        "finished": "completed",
        "success": "completed",
        "succeeded": "completed",
        "failure": "failed",
        "timeout": "failed",
        "timed_out": "failed",
        "rejected": "failed",
        "expired": "failed",
        "cancelled": "cancelled",
        "aborted": "cancelled",
        "revoked": "cancelled",
    }
)
"""Every task or file status word hybridgen knows, normalised (lower case, ``-`` and spaces as
``_``), and what it means: ``running`` (keep waiting), ``completed`` (the job is done: its URL
comes with the message or from a poll), ``failed`` or ``cancelled`` (the server ended the job
without a result: the generation fails at once, with the server's words in its reason).

A word not in this table is logged once per process as a warning (``hybridgen.api``) and read as
``running``: the job is never taken for done on a word hybridgen does not know, its result URL
still ends it when it comes, and the deadline ends it otherwise."""

_ERROR_KEYS: Final = ("error", "error_message")
"""Where a task or file carries an error text: such a text fails the job unless its status says
it completed."""
_REASON_KEYS: Final = (*_ERROR_KEYS, "message", "detail", "reason")
"""Where the reason of a failed task is read, in this order."""
_WARN_LIMIT: Final = 64
_warned: set[str] = set()


def _warn_unknown(word: str) -> None:
    if word in _warned or len(_warned) > _WARN_LIMIT:
        return
    _warned.add(word)
    if len(_warned) > _WARN_LIMIT:
        log.warning("more unknown task statuses from the server; no more are logged")
        return
    log.warning(
        "unknown task status %r from the server: read as still running (the deadline bounds "
        "the wait); known statuses: hybridgen.api.TASK_STATUSES",
        word,
    )


def status_meaning(status: object) -> StatusMeaning:
    """What a task or file ``status`` means, read through :data:`TASK_STATUSES` (any case).

    A missing status (``None`` or ``""``; the API's tasks may omit it) means ``running``. Any other
    word or value not in the table is logged once per process as a warning and means
    ``running`` too: never done, never silently dropped.
    """
    if status is None:
        return "running"
    word = _clip(str(status), 40).lower().replace("-", "_").replace(" ", "_")
    if not word:
        return "running"
    meaning = TASK_STATUSES.get(word)
    if meaning is None:
        _warn_unknown(word)
        return "running"
    return meaning


def failure_reason(status: str | None, error: str | None) -> str:
    """The reason of a generation the server ended: its ``error`` text, its ``status`` word.

    ``"the server reports the job failed: NSFW content detected"``, ``"the server cancelled the
    job (status 'canceled')"``; the status word is named unless it is the API's usual
    ``error``.
    """
    cancelled = status is not None and status_meaning(status) == "cancelled"
    reason = "the server cancelled the job" if cancelled else "the server reports the job failed"
    if status and status.lower() != "error":
        reason = f"{reason} (status {_clip(status, 40)!r})"
    return f"{reason}: {error}" if error else reason


def file_path(file_id: str) -> str:
    """The path of one file's status: ``/api/v1/file/{file_id}``."""
    return f"/api/v1/file/{file_id}"


def ws_path(project_id: str) -> str:
    """The path of a project's WebSocket: ``/api/v1/ws/project.{project_id}``."""
    return f"/api/v1/ws/project.{project_id}"


def sse_path(file_id: str) -> str:
    """The path of one file's Server-Sent Events stream: ``/api/v1/events/file.{file_id}``."""
    return f"/api/v1/events/file.{file_id}"


def subscribe_message(project_id: str) -> str:
    """The JSON text sent right after the socket opens."""
    return json.dumps({"type": "subscribe", "projectId": f"project.{project_id}"})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class Secret:
    """A string that never shows itself in reprs, logs or errors; ``reveal()`` gives it back.

    It refuses to be pickled (and so does a :class:`Config` holding it): a pickle would carry
    the token in clear to wherever the bytes go (a queue, a cache, a file). Build the
    configuration again where it is needed, e.g. ``Config.from_env()`` in the other process.
    Copies within the process (``copy.copy``, ``copy.deepcopy``) share the same object.
    """

    _value: str = attrs.field(repr=False)

    def reveal(self) -> str:
        """The secret text itself (only for the Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "a Secret (the API token) cannot be pickled: the pickle would carry it in clear; "
            "build the Config again where it is needed (e.g. Config.from_env())"
        )

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


_INSECURE_HINT: Final = "pass allow_insecure=True (HYBRIDGEN_ALLOW_INSECURE=1)"


def _check_url(url: str, allow_insecure: bool, insecure_hint: str = _INSECURE_HINT) -> str:
    stripped = url.strip().rstrip("/")
    if not stripped:
        raise ConfigError(
            "SUPERDUPERAI_URL", "is empty; set it to e.g. https://editor.superduperai.co"
        )
    if any(c.isspace() for c in stripped):
        raise ConfigError("SUPERDUPERAI_URL", f"contains white space: {stripped!r}")
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"must start with https:// (or http:// for a local server), got {stripped!r}",
        )
    if not parts.hostname:
        raise ConfigError("SUPERDUPERAI_URL", f"has no host name: {stripped!r}")
    if parts.query or parts.fragment:
        raise ConfigError(
            "SUPERDUPERAI_URL", f"must be a base URL without ?query or #fragment: {stripped!r}"
        )
    if parts.path:
        root = f"{parts.scheme}://{parts.netloc}"
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"must be the server's root URL, without a path ({parts.path}): hybridgen adds "
            f"/api/v1/... itself; set it to {root}",
        )
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"uses plain http:// for a non-local host ({parts.hostname}); use https://, "
            f"or {insecure_hint} if you really mean it",
        )
    return stripped


def _as_secret(token: str | Secret) -> Secret:
    return token if isinstance(token, Secret) else Secret(token)


@attrs.frozen
class Config:
    """Where the API is and how to authenticate. The token never appears in reprs or errors."""

    url: str
    token: Secret = attrs.field(converter=_as_secret)
    allow_insecure: bool = False
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The largest start or poll reply read (bytes, after decompression); a longer one is
    abandoned unread and reported as a :class:`~hybridgen.errors.TransientError`."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url(self.url, self.allow_insecure))
        limit = self.max_reply_bytes
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1024:
            raise ConfigError(
                "max_reply_bytes", f"must be a whole number of bytes >= 1024, got {limit!r}"
            )
        token = self.token.reveal()
        if not token.strip():
            raise ConfigError(
                "SUPERDUPERAI_TOKEN", "is empty; set it to your SuperDuperAI API token"
            )
        if not _TOKEN_RE.fullmatch(token):
            raise ConfigError(
                "SUPERDUPERAI_TOKEN",
                "has characters a bearer token cannot have (white space, quotes, ...); "
                "copy it again without surrounding text",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``SUPERDUPERAI_URL``, ``SUPERDUPERAI_TOKEN`` and ``HYBRIDGEN_ALLOW_INSECURE``."""
        env = os.environ if env is None else env
        url = env.get("SUPERDUPERAI_URL")
        if url is None:
            raise ConfigError(
                "SUPERDUPERAI_URL",
                "is not set; set it to the API's base URL (hybridgen's command line uses its "
                "embedded emulator when it is unset)",
            )
        token = env.get("SUPERDUPERAI_TOKEN")
        if token is None:
            raise ConfigError(
                "SUPERDUPERAI_TOKEN", "is not set; set it to your SuperDuperAI API token"
            )
        insecure = env.get("HYBRIDGEN_ALLOW_INSECURE", "").strip().lower() in ("1", "true", "yes")
        # read from the environment: the fix to name is the environment's too
        _check_url(url, insecure, "set HYBRIDGEN_ALLOW_INSECURE=1")
        return cls(url=url, token=token, allow_insecure=insecure)

    def api_url(self, path: str) -> str:
        """The full URL of an API path (``/api/v1/...``)."""
        return f"{self.url}/{path.lstrip('/')}"

    def ws_url(self, path: str) -> str:
        """The full WebSocket URL of a path: ``http`` becomes ``ws``, ``https`` becomes ``wss``."""
        base = "ws" + self.url[len("http") :]
        return f"{base}/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        """Request headers: bearer auth, JSON content type and a User-Agent naming hybridgen."""
        return {
            "Authorization": f"Bearer {self.token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }


def _text(field: str, value: object, *, pattern: re.Pattern[str] = _NAME_RE) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RequestError(field, f"must be a short name like 'comfyui/flux', got {value!r}")
    return value


def _validate_prompt(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise RequestError("prompt", f"must be text, got {type(value).__name__}")
    if not value.strip():
        raise RequestError("prompt", "is empty; describe the image to generate")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(
            "prompt", f"has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}, shorten it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            "prompt", f"cannot be sent as UTF-8 (character at index {exc.start}); remove it"
        ) from None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise RequestError("prompt", "contains control characters; remove them")


def _validate_size(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 64 <= value <= 4096:
        raise RequestError(
            attribute.name, f"must be a whole number of pixels in 64..4096, got {value!r}"
        )


def _validate_seed(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise RequestError("seed", f"must be a whole number in 0..2**53-1, got {value!r}")


def _validate_project(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise RequestError("project_id", f"must be a UUID, got {value!r}") from None


def _validate_batch(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
        raise RequestError("batch_size", f"must be 1..4, got {value!r}")


def _validate_aspect(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]{0,2}:[1-9][0-9]{0,2}", value):
        raise RequestError("aspect_ratio", f"must look like '16:9', got {value!r}")


def _validate_quality(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("hd", "full_hd"):
        raise RequestError("quality", f"must be 'hd' or 'full_hd', got {value!r}")


BodyForm = Literal["config", "legacy"]
BODY_FORMS: Final = ("config", "legacy")
"""The forms of the start body: ``config`` (today's documented form) and ``legacy`` (the seed's)."""


def _validate_body_form(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in BODY_FORMS:
        raise RequestError("body_form", f"must be 'config' or 'legacy', got {value!r}")


@attrs.frozen(kw_only=True)
class ImageRequest:
    """One image to generate. Every field is checked here, before any network I/O.

    Invalid values raise :class:`~hybridgen.errors.RequestError` naming the field. ``body_form``
    chooses the start body: ``config`` (today's documented form, numbers as numbers) or
    ``legacy`` (the seed-era flat form, numbers as strings) for servers that predate it.
    """

    prompt: str = attrs.field(validator=_validate_prompt)
    project_id: str = attrs.field(factory=lambda: str(uuid.uuid4()), validator=_validate_project)
    model: str = attrs.field(default="comfyui/flux", validator=lambda i, a, v: _text("model", v))
    style_name: str = attrs.field(
        default="flux_watercolor", validator=lambda i, a, v: _text("style_name", v)
    )
    shot_size: str = attrs.field(
        default="medium-shot", validator=lambda i, a, v: _text("shot_size", v)
    )
    seed: int = attrs.field(factory=lambda: random.randrange(2**40), validator=_validate_seed)
    width: int = attrs.field(default=1024, validator=_validate_size)
    height: int = attrs.field(default=1024, validator=_validate_size)
    aspect_ratio: str = attrs.field(default="1:1", validator=_validate_aspect)
    quality: str = attrs.field(default="hd", validator=_validate_quality)
    batch_size: int = attrs.field(default=1, validator=_validate_batch)
    body_form: BodyForm = attrs.field(default="config", validator=_validate_body_form)

    def to_json(self) -> dict[str, Any]:
        """The body of ``POST /api/v1/file/generate-image``, in the form ``body_form`` names."""
        if self.body_form == "legacy":
            return self._legacy_json()
        return {
            "project_id": self.project_id,
            "config": {
                "prompt": self.prompt,
                "generation_config_name": self.model,
                "params": {
                    "width": self.width,
                    "height": self.height,
                    "quality": self.quality,
                    "style": self.style_name,
                    "shot_size": self.shot_size,
                    "seed": self.seed,
                    "aspect_ratio": self.aspect_ratio,
                    "batch_size": self.batch_size,
                },
            },
        }

    def _legacy_json(self) -> dict[str, Any]:
        """The seed-era flat body, as the seed's SuperDuperAI client sent it."""
        return {
            "type": "media",
            "template_name": None,
            "project_id": self.project_id,
            "style_name": self.style_name,
            "config": {
                "prompt": self.prompt,
                "shot_size": self.shot_size,
                "style_name": self.style_name,
                "seed": str(self.seed),
                "aspecRatio": self.aspect_ratio,  # sic: the API's old spelling, sent too
                "aspect_ratio": self.aspect_ratio,
                "batch_size": self.batch_size,
                "entity_ids": [],
                "generation_config_name": self.model,
                "width": str(self.width),
                "height": str(self.height),
                "qualityType": self.quality,
                "references": [],
            },
        }


@attrs.frozen
class FileStatus:
    """What the server says about one file: from a poll, the start reply, or a socket message.

    ``url`` is set when the result is ready; ``failed`` when the server reports the job failed or
    cancelled (a task's status means so in :data:`TASK_STATUSES`, or a task carries an error
    text), with the server's text in ``error`` and its status word in ``status``; ``progress``
    is a fraction in ``[0, 1]`` when known.
    """

    id: str
    url: str | None = None
    failed: bool = False
    error: str | None = None
    progress: float | None = None
    status: str | None = None

    @property
    def ready(self) -> bool:
        """True when the result URL is there (an empty ``url`` does not count)."""
        return bool(self.url)


def _bad(what: str, detail: str) -> TransientError:
    return TransientError(f"malformed {what} from the server: {detail}")


def _clip(text: str, limit: int = REASON_CHARS) -> str:
    """One printable line of at most ``limit`` characters (no terminal escapes from a server)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # a 400-digit integer overflows here
    except OverflowError:
        return None
    if not math.isfinite(number):
        return None
    fraction = number / 100 if number > 1 else number
    return min(max(fraction, 0.0), 1.0)


def _task_error(task: Mapping[str, Any], keys: tuple[str, ...] = _REASON_KEYS) -> str | None:
    """The first non-empty text among ``keys`` of a task (the server's reason), clipped."""
    for key in keys:
        detail = task.get(key)
        if isinstance(detail, str) and detail.strip():
            return _clip(detail, 500)
    return None


def _task_failure(task: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """``(status, reason)`` when a task (or file) says the job ended without a result, else
    ``None``: its status means failed or cancelled, or it carries an error text and its status
    does not say it completed."""
    status = task.get("status")
    meaning = status_meaning(status)
    word = _clip(str(status), 40) if status is not None and str(status) else None
    if meaning in ("failed", "cancelled"):
        return word, _task_error(task)
    if meaning != "completed" and _task_error(task, _ERROR_KEYS) is not None:
        return word, _task_error(task)
    return None


def _parse_file(obj: object, what: str) -> FileStatus:
    if not isinstance(obj, dict):
        raise _bad(what, f"expected a JSON object, got {type(obj).__name__}")
    file_id = obj.get("id", obj.get("file_id"))
    if not isinstance(file_id, str | int) or isinstance(file_id, bool) or str(file_id) == "":
        raise _bad(what, "it has no 'id'")
    if len(str(file_id)) > _ID_CHARS:
        raise _bad(what, f"its 'id' is over {_ID_CHARS} characters long")
    # ``thumbnail_url`` may come before ``url``: a preview, never the result.
    url = obj.get("url")
    if url is not None and not isinstance(url, str):
        raise _bad(what, f"'url' must be a string or null, got {type(url).__name__}")
    if url is not None and len(url) > _URL_CHARS:
        raise _bad(what, f"its 'url' is over {_URL_CHARS} characters long")
    tasks = obj.get("tasks")
    carriers = [obj, *(tasks if isinstance(tasks, list) else ())]  # the file's own status too
    failure = None
    for task in carriers:
        if isinstance(task, dict):
            failure = _task_failure(task)
            if failure is not None:
                break
    return FileStatus(
        id=str(file_id),
        url=url or None,
        failed=failure is not None,
        error=failure[1] if failure is not None else None,
        progress=_fraction(obj.get("progress")),
        status=failure[0] if failure is not None else None,
    )


def parse_file(obj: object, what: str = "file object") -> FileStatus:
    """Parse one file object (``GET /api/v1/file/{id}``); raise a typed error if malformed.

    Today's replies nest objects (``image_generation``), carry ``tasks`` (a task whose status
    means failed or cancelled in :data:`TASK_STATUSES`, or that carries an ``error`` text, means
    the job failed, with its text as the reason; a ``status`` on the file itself is read the
    same way), may use integer ids and may set ``thumbnail_url`` before ``url``: only ``url`` is
    the result. Any failure while reading the
    object is a :class:`~hybridgen.errors.TransientError` ("malformed ..."), never another error.
    """
    try:
        return _parse_file(obj, what)
    except TransientError:
        raise
    except Exception as exc:  # RecursionError, OverflowError, ...: one bad reply, not a bug
        raise _bad(what, f"{type(exc).__name__}: {_clip(str(exc), 100)}") from None


def parse_file_list(data: object) -> FileStatus:
    """Parse the reply of the start request: a JSON list of file objects (the first is ours) or,
    as some servers answer, a single file object."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise _bad("start reply", "expected a non-empty JSON list of file objects")
    return parse_file(data[0], "start reply")


VIDEO_KINDS: Final = ("text_to_video", "image_to_video", "video_to_video")
"""The ``type`` of a video model in the model list: what its source is (none, an image, a video)."""


@attrs.frozen
class ModelInfo:
    """One generation config the server offers: ``name`` is what :attr:`ImageRequest.model` takes.

    ``price`` is the server's price for one generation when it gives one (``None`` otherwise);
    ``vip`` is true when only VIP accounts may use it. Video models (``type`` in
    :data:`VIDEO_KINDS`) also say the ``durations`` they allow (seconds; empty: any up to
    ``max_duration``, or any when that is ``None`` too), their ``price_per_second`` and,
    when the list gives them, their ``aspect_ratios``.
    """

    name: str
    label: str = ""
    type: str = ""
    price: float | None = None
    vip: bool = False
    durations: tuple[int, ...] = ()
    max_duration: int | None = None
    price_per_second: float | None = None
    aspect_ratios: tuple[str, ...] = ()
    """The frame shapes a video model makes (``"16:9"``, ...; empty: the list does not say)."""

    @property
    def video(self) -> bool:
        """True for a video model (``text_to_video``, ``image_to_video``, ``video_to_video``)."""
        return self.type in VIDEO_KINDS

    @property
    def needs_source(self) -> bool:
        """True when a job of this model needs an input file (an image or a video)."""
        return self.type in ("image_to_video", "video_to_video")

    def allows(self, duration: int) -> bool:
        """Whether this model makes videos of ``duration`` seconds (as far as the list says)."""
        if self.durations:
            return duration in self.durations
        return self.max_duration is None or 1 <= duration <= self.max_duration

    def cost(self, duration: int) -> float | None:
        """The price of one video of ``duration`` seconds (``None`` when the list gives none)."""
        if self.price_per_second is not None:
            return self.price_per_second * duration
        return self.price


def _price(params: object) -> float | None:
    if not isinstance(params, dict):
        return None
    for key in ("price", "cost", "credits"):
        value = params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _number(params: object, key: str) -> float | None:
    value = params.get(key) if isinstance(params, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds_list(params: object) -> tuple[int, ...]:
    """The allowed durations: whole positive seconds, sorted (odd entries are skipped)."""
    if not isinstance(params, dict):
        return ()
    raw = params.get("available_durations", params.get("durations"))
    if not isinstance(raw, list):
        return ()
    found = {
        int(v)
        for v in raw[:100]
        if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 3600 and v == int(v)
    }
    return tuple(sorted(found))


def _shapes(params: object) -> tuple[str, ...]:
    raw = params.get("supported_aspect_ratios") if isinstance(params, dict) else None
    if not isinstance(raw, list):
        return ()
    return tuple(v for v in raw[:50] if isinstance(v, str) and re.fullmatch(r"\d{1,3}:\d{1,3}", v))


def parse_generation_configs(data: object) -> list[ModelInfo]:
    """Parse ``GET /api/v1/generation-config`` (a list, or an object with ``items``).

    Entries without a usable ``name`` are skipped; a reply that is not a list at all raises
    :class:`~hybridgen.errors.TransientError`.
    """
    if isinstance(data, dict):
        data = data.get("items", data.get("data"))
    if not isinstance(data, list):
        raise _bad("generation-config reply", "expected a JSON list of generation configs")
    models: list[ModelInfo] = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            continue
        vip = entry.get("vip_required", entry.get("is_vip", entry.get("vip", False)))
        params = entry.get("params")
        longest = _number(params, "max_duration")
        models.append(
            ModelInfo(
                name=name,
                label=str(entry.get("label") or ""),
                type=str(entry.get("type") or ""),
                price=_price(params),
                vip=vip is True,
                durations=_seconds_list(params),
                max_duration=int(longest) if longest is not None and 1 <= longest <= 3600 else None,
                price_per_second=_number(params, "price_per_second"),
                aspect_ratios=_shapes(params),
            )
        )
    return models


def load_json(what: str, body: bytes | str) -> object:
    """``json.loads`` whose every failure is a :class:`~hybridgen.errors.TransientError`.

    Invalid JSON, nesting too deep for the parser (``RecursionError``), integers too long to
    convert: each is one malformed ``what`` from the server, worth retrying, never a crash.
    """
    try:
        return json.loads(body)
    except Exception as exc:
        raise _bad(what, f"not JSON ({type(exc).__name__}: {_clip(str(exc), 100)})") from None


def parse_start_reply(body: bytes) -> FileStatus:
    """Parse the raw body of the start reply (see :func:`parse_file_list`)."""
    return parse_file_list(load_json("start reply", body))


def parse_poll_reply(body: bytes) -> FileStatus:
    """Parse the raw body of a poll reply (see :func:`parse_file`)."""
    return parse_file(load_json("poll reply", body), "poll reply")


_STATUS_NAMES: Final = {
    520: "Cloudflare: unknown error from the origin",
    521: "Cloudflare: origin server down",
    522: "Cloudflare: connection to the origin timed out",
    523: "Cloudflare: origin unreachable",
    524: "Cloudflare origin timeout",
    525: "Cloudflare: TLS handshake with the origin failed",
    526: "Cloudflare: invalid origin certificate",
}


def status_phrase(status: int) -> str:
    """A short name for an HTTP status (``"Too Many Requests"``, ``"Cloudflare origin timeout"``);
    ``""`` for an unknown one."""
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _validation_item(item: object) -> str:
    """One FastAPI validation error: ``{"loc": ["body", "config", "prompt"], "msg": ...}``."""
    if not isinstance(item, dict):
        return json.dumps(item)[:REASON_CHARS]
    loc = item.get("loc")
    parts = [str(p) for p in loc] if isinstance(loc, list) else []
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    msg = item.get("msg")
    text = msg if isinstance(msg, str) else "invalid"
    return f"{'.'.join(parts)}: {text}" if parts else text


def _reason_of(data: object, text: str) -> str:
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            detail = data.get(key)
            if isinstance(detail, str):
                return detail
            if isinstance(detail, list) and detail:
                return "; ".join(_validation_item(item) for item in detail[:5])
    return text


def error_reason(body: bytes, content_type: str | None = None) -> str:
    """What an error reply says, as one short printable line; ``""`` if nothing readable.

    A FastAPI ``detail`` list becomes ``config.prompt: field required``; a ``detail`` string is
    kept; an HTML page (a proxy's error page) gives ``""``, never its markup. The result is at
    most :data:`REASON_CHARS` characters long.
    """
    text = body[: REASON_CHARS * 64].decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "html" in (content_type or "").lower() or text[:1] == "<":
        return ""
    try:
        reason = _reason_of(json.loads(text), text)
    except Exception:  # not JSON (or cut short): the text itself
        reason = text
    return _clip(reason)


PushKind = Literal["result", "progress", "failed", "completed"]


@attrs.frozen
class Push:
    """One push message about a file, from any push channel (WebSocket or SSE).

    ``kind`` is ``"result"`` (``url`` is set), ``"progress"`` (``progress`` is a fraction in
    ``[0, 1]``), ``"failed"`` (the job failed or was cancelled: ``reason`` is the server's text
    and ``status`` its status word, when it gave them) or ``"completed"`` (the job finished but
    the message has no URL: a poll fetches it).
    """

    file_id: str
    kind: PushKind
    url: str | None = None
    progress: float | None = None
    reason: str | None = None
    status: str | None = None


def _file_id(obj: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _push_of_file(obj: object) -> Push:
    file = parse_file(obj, "push file message")
    if file.ready:
        return Push(file.id, "result", url=file.url)
    if file.failed:
        return Push(file.id, "failed", reason=file.error, status=file.status)
    # a seed-era `file` message without a url says nothing more (its clients waited on)
    return Push(file.id, "progress", progress=file.progress)


def _push_of_task(obj: Mapping[str, Any], file_id: str | None) -> Push | None:
    """A ``task`` or ``task_status`` message: the job failed, completed, or (``None``) runs."""
    file_id = _file_id(obj, "file_id") or file_id  # a task's own 'id' is not the file's
    failure = _task_failure(obj)
    if file_id is None:
        return None
    if failure is not None:
        return Push(file_id, "failed", reason=failure[1], status=failure[0])
    if status_meaning(obj.get("status")) == "completed":
        return Push(file_id, "completed")
    return None


def _push(data: object, file_id: str | None) -> Push | None:
    if not isinstance(data, dict):
        raise _bad("push message", f"expected a JSON object, got {type(data).__name__}")
    kind, obj = data.get("type"), data.get("object")
    if kind == "file":
        push = _push_of_file(obj)
        return None if push.kind == "progress" and push.progress is None else push
    if kind not in ("render_progress", "render_result", "task", "task_status"):
        return None  # unknown types (data, entity, ...) say nothing we use
    if not isinstance(obj, dict):
        raise _bad(f"{kind} message", "its 'object' is not a JSON object")
    if kind in ("task", "task_status"):
        return _push_of_task(obj, file_id)
    file_id = _file_id(obj, "file_id", "id") or file_id
    if file_id is None:
        raise _bad(f"{kind} message", "it has no 'object.file_id'")
    if kind == "render_result":
        url = obj.get("url") or obj.get("file_url")
        if url is not None and not isinstance(url, str):
            raise _bad("render_result message", f"'url' is a {type(url).__name__}")
        return Push(file_id, "result", url=url) if url else Push(file_id, "completed")
    fraction = _fraction(obj.get("progress"))
    if fraction is None:
        raise _bad("render_progress message", "it needs a numeric 'object.progress'")
    return Push(file_id, "progress", progress=fraction)


def parse_push(text: str | bytes, file_id: str | None = None) -> Push | None:
    """Parse one push message (a WebSocket message or an SSE ``data:`` payload).

    ``file`` and ``render_result`` carry the result (``object.url``, or ``object.file_url``);
    ``render_progress`` carries ``object.progress`` (0..1 or 0..100); ``task`` and
    ``task_status`` say the job ended when their status means so in :data:`TASK_STATUSES` (any
    case) or they carry an ``error`` text: failed or cancelled (``kind="failed"``, with the
    server's text and word) or completed. ``file_id`` is the file a message without
    ``object.file_id`` is about (the file's own SSE stream); ``None``: such a task message is
    ignored. Returns ``None`` for messages that say nothing we use (unknown types, tasks still
    running; an unknown status word is logged once as a warning). Anything malformed, however
    deep or odd (nesting that exhausts the recursion limit, numbers too big for a float, invalid
    UTF-8), raises :class:`~hybridgen.errors.TransientError` for the caller to log and ignore.
    """
    try:
        return _push(json.loads(text), file_id)
    except TransientError:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
        raise _bad("push message", f"{type(exc).__name__}: {str(exc)[:200]}") from None


def parse_ws_message(text: str | bytes) -> FileStatus | None:
    """Parse one push message as a :class:`FileStatus` (kept for callers of older versions).

    Same rules as :func:`parse_push`; a ``completed`` message without a URL gives a file with
    neither ``url`` nor ``progress``.
    """
    push = parse_push(text)
    if push is None:
        return None
    return FileStatus(
        id=push.file_id,
        url=push.url,
        failed=push.kind == "failed",
        error=push.reason,
        progress=push.progress,
        status=push.status,
    )
