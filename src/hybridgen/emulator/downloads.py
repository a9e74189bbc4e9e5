"""How the emulator serves result files: their URLs, redirects, faults, and bodies at their pace."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Final

import trio

from .assets import SAMPLE_MP4, huge_mp4_head
from .jobs import FilePlan, Job
from .replies import HTML_ERROR_PAGE, ErrorReply, Redirect, WsDropped, detail_reply
from .state import ServerState

__all__: list[str] = []

FILE_CHUNK: Final = 2**16
"""The size of the pieces a result file is sent in."""


class FileServing(ServerState):
    """The result files of an emulated server: a base of
    :class:`~hybridgen.emulator.model.ServerModel`."""

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
        missing = detail_reply(404, f"File {name} not found or not ready")
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
            return detail_reply(status, f"emulated CDN HTTP {status}", retry_after)
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
            head = huge_mp4_head(size) if video else b"\x89PNG\r\n\x1a\n"
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
