"""What every part of the emulated server shares: its switches, counters, jobs and clock.

:class:`ServerState` is the base of :class:`~hybridgen.emulator.model.ServerModel` (which
documents its arguments); :mod:`hybridgen.emulator.downloads` and :mod:`hybridgen.emulator.push`
build on it.
"""

from __future__ import annotations

import collections
import hmac
import math
import random
from typing import Any, Final

import trio

from .faults import Faults
from .jobs import Job
from .replies import Forbidden

__all__: list[str] = []

RECEIVED_KEPT: Final = 1000
"""How many requests for result files :attr:`ServerModel.received` keeps (the latest)."""


class ServerState:
    """The switches, counters and jobs of one emulated server, and the answers only they decide."""

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

    # -- polls ------------------------------------------------------------------------------

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
