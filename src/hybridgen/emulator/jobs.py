"""One emulated generation job (:class:`Job`) and how its result file is served
(:class:`FilePlan`)."""

from __future__ import annotations

import attrs

from .faults import Faults

__all__ = ["FilePlan", "Job"]


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
