"""What goes over the wire to the SuperDuperAI API: its paths, the request, the reply models.

:class:`ImageRequest` checks every field before any network I/O; :class:`FileStatus`,
:class:`ModelInfo` and :class:`Push` are what :mod:`hybridgen.parse` reads from replies and push
messages. Nothing here touches the network. :mod:`hybridgen.api` re-exports every name.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any, Final, Literal

import attrs

from . import _fields
from .errors import RequestError

__all__ = [
    "BODY_FORMS",
    "GENERATE_IMAGE",
    "GENERATION_CONFIGS",
    "MAX_PROMPT_CHARS",
    "PUSH_CHANNELS",
    "VIDEO_KINDS",
    "BodyForm",
    "FileStatus",
    "ImageRequest",
    "ModelInfo",
    "Push",
    "PushKind",
    "file_path",
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
MAX_PROMPT_CHARS: Final = _fields.MAX_PROMPT_CHARS


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


BodyForm = Literal["config", "legacy"]
BODY_FORMS: Final = ("config", "legacy")
"""The forms of the start body: ``config`` (today's documented form) and ``legacy`` (the seed's)."""


def _check_body_form(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in BODY_FORMS:
        raise RequestError("body_form", f"must be 'config' or 'legacy', got {value!r}")


@attrs.frozen(kw_only=True)
class ImageRequest:
    """One image to generate. Every field is checked here, before any network I/O.

    Invalid values raise :class:`~hybridgen.errors.RequestError` naming the field. ``body_form``
    chooses the start body: ``config`` (today's documented form, numbers as numbers) or
    ``legacy`` (the seed-era flat form, numbers as strings) for servers that predate it.
    """

    prompt: str = attrs.field(validator=_fields.check_prompt)
    project_id: str = attrs.field(
        factory=lambda: str(uuid.uuid4()), validator=_fields.check_project
    )
    model: str = attrs.field(
        default="comfyui/flux", validator=lambda i, a, v: _fields.name_text("model", v)
    )
    style_name: str = attrs.field(
        default="flux_watercolor", validator=lambda i, a, v: _fields.name_text("style_name", v)
    )
    shot_size: str = attrs.field(
        default="medium-shot", validator=lambda i, a, v: _fields.name_text("shot_size", v)
    )
    seed: int = attrs.field(factory=lambda: random.randrange(2**40), validator=_fields.check_seed)
    width: int = attrs.field(default=1024, validator=_fields.check_size)
    height: int = attrs.field(default=1024, validator=_fields.check_size)
    aspect_ratio: str = attrs.field(default="1:1", validator=_fields.check_aspect)
    quality: str = attrs.field(default="hd", validator=_fields.check_quality)
    batch_size: int = attrs.field(default=1, validator=_fields.check_batch)
    body_form: BodyForm = attrs.field(default="config", validator=_check_body_form)

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
