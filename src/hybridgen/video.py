"""Video generations, sans I/O: the start request, the checks against the model list, the upload.

The API makes videos with the same file objects, push channels and polls as images (so the same
machine drives them), with these differences, from the public 2025 notes of the team that runs
the seed's client:

- the start is ``POST /api/v1/file/generate-video`` (:data:`GENERATE_VIDEO`), and its reply is a
  **single** file object (``video_generation_id``, a nested ``video_generation``, tasks of type
  ``video-generation-flow``), not a list; :func:`hybridgen.api.parse_start_reply` reads both;
- video models come from the same ``GET /api/v1/generation-config`` list, with types
  ``text_to_video``, ``image_to_video`` and ``video_to_video``, allowed durations and a price per
  second in ``params`` (:class:`hybridgen.api.ModelInfo`);
- image-to-video sends ``references: [{"type": "SOURCE", "reference_id": ID}]``, the id of a file
  uploaded with ``POST /api/v1/file/upload`` (multipart, field ``payload``: :data:`UPLOAD`,
  :func:`multipart_body`, :func:`parse_upload_reply`) or of an earlier generation.

:func:`check_video` refuses, before any request, what the model list says cannot work: a
duration the model does not allow, an image-to-video model without its image, a text-to-video
model given one. Each refusal is a :class:`~hybridgen.errors.VideoRefused` listing the allowed
values.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypedDict

import attrs

from ._fields import check_aspect, check_project, check_prompt, check_seed
from .errors import RequestError, TransientError, VideoRefused
from .parse import load_json, parse_file_list
from .wire import ImageRequest, ModelInfo

__all__ = [
    "DEFAULT_VIDEO_MODEL",
    "GENERATE_VIDEO",
    "MAX_VIDEO_SECONDS",
    "UPLOAD",
    "UPLOAD_LIMIT",
    "StartRequest",
    "VideoOptions",
    "VideoRequest",
    "check_cost",
    "check_video",
    "find_model",
    "media_of",
    "multipart_body",
    "parse_upload_reply",
    "request_from_record",
    "request_record",
    "source_of",
]

GENERATE_VIDEO: Final = "/api/v1/file/generate-video"
"""The start request of a video: ``POST``, body :meth:`VideoRequest.to_json`."""
UPLOAD: Final = "/api/v1/file/upload"
"""``POST`` a file (multipart, field ``payload``); the reply is the new file object."""
DEFAULT_VIDEO_MODEL: Final = "google-cloud/veo3-text2video"
"""The model a :class:`VideoRequest` names unless told otherwise (text-to-video: no image)."""
MAX_VIDEO_SECONDS: Final = 600
"""The longest ``duration`` a request may ask for (the model list usually allows far less)."""
UPLOAD_LIMIT: Final = 64 * 2**20
"""The largest file :meth:`hybridgen.Client.generate_video` uploads as a source (64 MiB)."""
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")
"""A file id as the API gives them (UUIDs, integers): no dots or slashes, unlike a path."""
_NEGATIVE_CHARS: Final = 2000


def _validate_model(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}", value
    ):
        raise RequestError("model", f"must be a model name like 'comfyui/ltx', got {value!r}")


def _validate_duration(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VIDEO_SECONDS:
        raise RequestError(
            "duration",
            f"must be a whole number of seconds in 1..{MAX_VIDEO_SECONDS}, got {value!r}",
        )


def _validate_source(inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not _ID_RE.fullmatch(value)):
        raise RequestError("image", f"must be a file id like the API's (a UUID), got {value!r}")


def _validate_optional_seed(
    inst: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None:
        check_seed(inst, attribute, value)


def _validate_negative(inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > _NEGATIVE_CHARS:
        raise RequestError(
            "negative_prompt", f"must be text of at most {_NEGATIVE_CHARS} characters"
        )
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise RequestError("negative_prompt", "contains control characters; remove them")


@attrs.frozen(kw_only=True)
class VideoRequest:
    """One video to generate. Every field is checked here, before any network I/O.

    ``image`` is the id of the source file (an upload, or an earlier generation's file) for an
    image-to-video or video-to-video model; :meth:`hybridgen.Client.generate_video` uploads a
    local file and fills it in. Whether the model allows the ``duration`` and needs (or refuses)
    an ``image`` is the model list's to say: see :func:`check_video`.

    The body puts ``duration`` and ``aspect_ratio`` in ``config.params``, as the API's own guide
    documents; that team's client code puts them on ``config`` itself, a form their server takes
    too. hybridgen sends the documented one.
    """

    prompt: str = attrs.field(validator=check_prompt)
    model: str = attrs.field(default=DEFAULT_VIDEO_MODEL, validator=_validate_model)
    duration: int = attrs.field(default=5, validator=_validate_duration)
    aspect_ratio: str = attrs.field(default="16:9", validator=check_aspect)
    image: str | None = attrs.field(default=None, validator=_validate_source)
    seed: int | None = attrs.field(default=None, validator=_validate_optional_seed)
    negative_prompt: str | None = attrs.field(default=None, validator=_validate_negative)
    project_id: str = attrs.field(factory=lambda: str(uuid.uuid4()), validator=check_project)

    kind: ClassVar[str] = "video"
    """What this request makes (the journal records it, so a resume knows a video)."""

    def to_json(self) -> dict[str, Any]:
        """The body of ``POST /api/v1/file/generate-video``."""
        params: dict[str, Any] = {"duration": self.duration, "aspect_ratio": self.aspect_ratio}
        if self.seed is not None:
            params["seed"] = self.seed
        if self.negative_prompt:
            params["negative_prompt"] = self.negative_prompt
        config: dict[str, Any] = {
            "prompt": self.prompt,
            "generation_config_name": self.model,
            "params": params,
        }
        if self.image is not None:
            config["references"] = [{"type": "SOURCE", "reference_id": self.image}]
        return {"project_id": self.project_id, "config": config}


class VideoOptions(TypedDict, total=False):
    """The choices of :meth:`hybridgen.Client.generate_video` (see :class:`VideoRequest`):
    ``image`` may also be a local file to upload; ``max_cost`` (US dollars) refuses a dearer
    video before it starts."""

    model: str
    duration: int
    aspect_ratio: str
    image: str | os.PathLike[str] | None
    seed: int | None
    negative_prompt: str | None
    max_cost: float | None


StartRequest = ImageRequest | VideoRequest
"""What a start request can be: an image or a video."""


def request_record(request: StartRequest) -> str:
    """The JSON text a journal stores for ``request`` (a video's says ``"kind": "video"``)."""
    data = attrs.asdict(request)
    if isinstance(request, VideoRequest):
        data["kind"] = "video"
    return json.dumps(data)


def request_from_record(record: str | Mapping[str, Any]) -> StartRequest:
    """The request a journal stored with :func:`request_record` (its JSON text, or the object
    a JSON column gives back); older rows, without a ``kind``, are images."""
    data = json.loads(record) if isinstance(record, str) else dict(record)
    if not isinstance(data, dict):
        raise ValueError("a journal's request must be a JSON object")
    if data.pop("kind", "image") == "video":
        return VideoRequest(**data)
    return ImageRequest(**data)


def media_of(request: StartRequest) -> Literal["image", "video"]:
    """What a request's result file is: ``"video"`` for a :class:`VideoRequest`."""
    return "video" if isinstance(request, VideoRequest) else "image"


def find_model(name: str, models: Sequence[ModelInfo]) -> ModelInfo:
    """The video model called ``name`` in the list; :class:`VideoRefused` (``model``) otherwise."""
    for model in models:
        if model.name == name:
            if not model.video:
                raise VideoRefused(
                    "model",
                    f"{name!r} is a {model.type or 'non-video'} model, not a video model",
                    _video_names(models),
                )
            return model
    raise VideoRefused("model", f"the server has no video model {name!r}", _video_names(models))


def _video_names(models: Sequence[ModelInfo]) -> tuple[str, ...]:
    return tuple(m.name for m in models if m.video)


def check_video(request: VideoRequest, models: Sequence[ModelInfo]) -> ModelInfo:
    """Check ``request`` against the server's model list; its model, or :class:`VideoRefused`.

    Refused: a model the list does not have (or that is not a video model), a duration (or an
    aspect ratio, when the list names them) the model does not allow, an image-to-video or
    video-to-video model without its source, a text-to-video model given one. Each error names
    the field and lists the allowed values.
    """
    model = find_model(request.model, models)
    if not model.allows(request.duration):
        allowed: tuple[object, ...] = model.durations or (f"1..{model.max_duration}",)
        raise VideoRefused(
            "duration",
            f"{model.name} does not make {request.duration} s videos",
            allowed,
            unit="s",
        )
    if model.aspect_ratios and request.aspect_ratio not in model.aspect_ratios:
        raise VideoRefused(
            "aspect_ratio",
            f"{model.name} does not make {request.aspect_ratio} videos",
            model.aspect_ratios,
        )
    if model.needs_source and request.image is None:
        what = "an image" if model.type == "image_to_video" else "a source video"
        raise VideoRefused(
            "image",
            f"{model.name} is {model.type}: it needs {what} (a local file or a file id)",
            _names_of(models, "text_to_video"),
            label="text-to-video models",
        )
    if not model.needs_source and request.image is not None:
        raise VideoRefused(
            "image",
            f"{model.name} is {model.type}: it takes no image",
            _names_of(models, "image_to_video"),
            label="image-to-video models",
        )
    return model


def check_cost(
    model: ModelInfo, duration: int, max_cost: float | None, *, field: str = "max_cost"
) -> float | None:
    """The price of ``duration`` seconds of ``model``; :class:`VideoRefused` (``field``) when it
    is over ``max_cost`` or unknown while ``max_cost`` is given (listing the durations within)."""
    cost = model.cost(duration)
    if max_cost is None or (cost is not None and cost <= max_cost):
        return cost
    shown = "has no price" if cost is None else f"costs ${cost:.2f}"
    within = tuple(d for d in model.durations if (model.cost(d) or math.inf) <= max_cost)
    raise VideoRefused(
        field,
        f"{model.name} for {duration} s {shown}, over the limit of ${max_cost:g}",
        within,
        unit="s",
        label="durations within it",
    )


def _names_of(models: Sequence[ModelInfo], kind: str) -> tuple[str, ...]:
    return tuple(m.name for m in models if m.type == kind)


def source_of(image: str | os.PathLike[str]) -> Path | str:
    """What ``image`` names: a local file (a :class:`~pathlib.Path`, to upload) or a file id.

    A path that exists is a file; text shaped like an id (no ``/`` or ``.``) is an id; anything
    else is a :class:`~hybridgen.errors.RequestError` (``image``) saying neither was found.
    """
    path = Path(image)
    if path.is_file():
        return path
    if path.exists():
        raise RequestError("image", f"{os.fspath(image)} is not a regular file")
    text = os.fspath(image)
    if _ID_RE.fullmatch(text):
        return text
    raise RequestError(
        "image", f"{text} is neither an existing file nor a file id (like a UUID); check the path"
    )


def _header_safe(name: str) -> str:
    cleaned = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in name)
    return cleaned.encode("ascii", "replace").decode("ascii").replace("?", "_")[:200] or "upload"


def multipart_body(
    data: bytes, filename: str, content_type: str, *, boundary: str | None = None
) -> tuple[bytes, str]:
    """The body of ``POST /api/v1/file/upload``: ``data`` as the multipart field ``payload``.

    Returns ``(body, content type header)``. The file name is reduced to printable ASCII without
    quotes (a header cannot carry more); the boundary is random unless given.
    """
    boundary = boundary or f"hybridgen-{random.getrandbits(96):024x}"
    if boundary.encode() in data:  # a fixed boundary that the data contains would cut it
        raise ValueError("the multipart boundary occurs in the data")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="payload"; filename="{_header_safe(filename)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def parse_upload_reply(body: bytes) -> str:
    """The new file's id from the upload's reply (a file object, or a list of one)."""
    data = load_json("upload reply", body)
    if isinstance(data, Mapping) and isinstance(data.get("file"), Mapping):
        data = data["file"]
    try:
        return parse_file_list(data).id
    except TransientError as exc:
        raise TransientError(str(exc).replace("start reply", "upload reply")) from None
