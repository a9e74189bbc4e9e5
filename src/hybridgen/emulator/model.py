"""The emulator's behaviour, without sockets: jobs, their timelines and the fault switches.

One :class:`ServerModel` decides everything a SuperDuperAI-like server does: when a job's result is
ready, what a poll returns (or which fault it hits), what the project's socket sends and when it
drops. Two front ends serve it: the real HTTP + WebSocket server (:mod:`hybridgen.emulator.server`)
and the in-memory transport (:class:`hybridgen.testing.MemoryTransport`) used on trio's virtual
clock. Time is trio's clock, so the same model runs in real and in virtual time.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

import trio

from . import assets as _assets
from . import downloads as _downloads
from . import faults as _faults
from . import push as _push
from . import replies as _replies
from . import state as _state
from .assets import (
    GENERATION_CONFIGS,
    OVERSIZED_MESSAGE_BYTES,
    SAMPLE_MP4,
    UPLOAD_BODY_LIMIT,
    VIDEO_CONFIGS,
)
from .downloads import FILE_CHUNK as FILE_CHUNK
from .faults import (
    FILE_FAULTS,
    FILE_MODES,
    FILE_REDIRECTS,
    JOB_FAILED_REASON,
    MAX_COUNT,
    MAX_FILE_BYTES,
    MAX_PROGRESS_STEPS,
    MAX_SECONDS,
    POLL_FAULTS,
    POLL_REDIRECTS,
    SSE_MODES,
    START_FAULTS,
    TODAYS_API,
    WS_MODES,
    WS_NOISES,
    Faults,
)
from .faults import REDIRECT_TARGETS as REDIRECT_TARGETS
from .faults import FileFault as FileFault
from .faults import FileMode as FileMode
from .faults import PollFault as PollFault
from .faults import PollRedirect as PollRedirect
from .faults import RedirectStatus as RedirectStatus
from .faults import RedirectTo as RedirectTo
from .faults import StartFault as StartFault
from .faults import WsMode as WsMode
from .faults import WsNoise as WsNoise
from .jobs import FilePlan, Job
from .push import MAX_KEEPALIVES, SSE_KEEPALIVE, PushFeeds, sse_frame
from .replies import (
    CLOUDFLARE_524,
    GARBAGE_BODY,
    BadRequest,
    ErrorReply,
    Forbidden,
    Redirect,
    Rejected,
    SseRefused,
    WsDropped,
    WsRefused,
    detail_reply,
    short_repr,
)
from .replies import HTML_ERROR_PAGE as HTML_ERROR_PAGE
from .state import RECEIVED_KEPT as RECEIVED_KEPT

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


class ServerModel(PushFeeds):
    """Jobs and faults of one emulated SuperDuperAI server (see the module docstring).

    ``time_scale`` multiplies every duration of the faults (0.05: a 35 s job takes 1.75 s).
    ``token``: when set, requests must carry ``Authorization: Bearer <token>``.
    ``file_base``: the base of result URLs (the files origin's URL; in memory, a ``.invalid`` host
    that no resolver knows);
    ``api_base``: the API's own (for ``file_redirect_to='origin'``).
    ``seed``: seeds the file ids and the random fault draws (``None``: fresh ids every run, so
    two runs of the emulator never reuse a file id).
    """

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
                raise BadRequest(f"{where}.reference_id", f"file {short_repr(ref)} not found")
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
            return detail_reply(409, "Integrity error, create")
        if fault == "422":
            item = {
                "loc": ["body", "config", "generation_config_name"],
                "msg": "unknown generation config (emulated)",
                "type": "value_error",
            }
            return detail_reply(422, [item])
        if fault == "429":
            return detail_reply(429, "Too many requests (emulated)", retry_after)
        if fault == "503":
            return detail_reply(503, "Service temporarily unavailable (emulated)", retry_after)
        return ErrorReply(524, CLOUDFLARE_524, "text/html; charset=UTF-8")

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


_RENAMED: Final = {
    "_CLOUDFLARE_524": "CLOUDFLARE_524",
    "_detail": "detail_reply",
    "_huge_mp4_head": "huge_mp4_head",
    "_junk": "junk_messages",
    "_oversized": "oversized_message",
    "_shown": "short_repr",
}


def __getattr__(name: str) -> object:
    """The private names this module had before it was split, from their new homes."""
    name = _RENAMED.get(name, name)
    if not name.startswith("__"):
        for home in (_faults, _assets, _replies, _state, _downloads, _push):
            if hasattr(home, name):
                return getattr(home, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
