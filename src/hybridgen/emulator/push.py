"""What the emulator pushes: each job's WebSocket and SSE timelines and the feeds that play them."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import trio

from .assets import junk_messages, oversized_message
from .downloads import FileServing
from .faults import Faults
from .jobs import Job
from .replies import SseRefused, WsDropped, WsRefused

__all__ = ["MAX_KEEPALIVES", "SSE_KEEPALIVE", "sse_frame"]

MAX_KEEPALIVES: Final = 300
"""The most SSE keep-alive comments one job's stream sends (``sse_keepalive``)."""
SSE_KEEPALIVE: Final = ""
"""A stream's keep-alive in the SSE schedule (sent as a comment, no data): no message is empty."""


class PushFeeds(FileServing):
    """The push channels of an emulated server: a base of
    :class:`~hybridgen.emulator.model.ServerModel`."""

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
        noise = junk_messages(project_id) if faults.ws_noise is not None else []
        for text in noise:
            yield text
        if faults.ws_noise == "oversized":
            yield oversized_message()
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
