"""A worker: takes jobs from a shared queue journal, runs them, saves their files.

``await Worker(client, journal).run()`` leases the oldest job that needs work and that no live
process holds (:meth:`~hybridgen.journal_pg.PostgresJournal.lease_next`; a
:class:`~hybridgen.journal.SQLiteJournal` is a queue too, for processes on one machine), up to
``concurrency`` at a time, and finishes each as far as it got:

- a queued job: its start is marked as being sent (a fenced, durable write), then sent;
- a job whose start may have reached the server but whose file id was never recorded (its worker
  died in between): failed, not sent again, unless its policy's ``retry_unsafe_starts``;
- a job with a file id: followed by it (:meth:`~hybridgen.driver.Client.resume`), no new job;
- a done job whose file was not saved: downloaded again.

A done job's file is downloaded only after a fenced write says this worker still holds it, and
saved as the job's ``meta["out"]``, or in ``out_dir`` as ``<generation id>`` with the file's true
suffix. When the journal reports the lease of a running job lost (another worker took it over
after this one stalled), the job is stopped at once, recording and downloading nothing more.

:meth:`Worker.drain` stops taking jobs (the running ones finish); :meth:`Worker.abort` also
releases the running ones for other workers, without recording an end for them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Protocol

import attrs
import trio

from .driver import Client
from .errors import HybridgenError, JournalError
from .files import format_for_suffix
from .journal import Entry, Journal
from .machine import State
from .policy import Policy
from .wire import ImageRequest

__all__ = ["JobOutcome", "QueueJournal", "Worker", "WorkerSummary"]

log: Final = logging.getLogger("hybridgen.worker")

UNSAFE_START: Final = (
    "its start request may have reached the server but its file id was never recorded (the "
    "worker that sent it stopped); not sent again, which could bill twice (policy "
    "retry_unsafe_starts allows it)"
)


class QueueJournal(Journal, Protocol):
    """A :class:`~hybridgen.journal.Journal` that is also a job queue shared by workers:
    :class:`~hybridgen.journal_pg.PostgresJournal` (many machines) or
    :class:`~hybridgen.journal.SQLiteJournal` (processes on one machine). The blocking calls
    are run in threads."""

    def submit(
        self, request: ImageRequest, policy: Policy, meta: Mapping[str, str] | None = None
    ) -> str:
        """Queue a job; its generation id."""

    def lease_next(self, limit: int = 1) -> list[Entry]:
        """Lease up to ``limit`` jobs that need work and that nobody live holds."""

    def mark_sending(self, gen_id: str, *, again: bool = False) -> bool:
        """Record that the start is about to be sent; whether it may be."""

    def begin_download(self, gen_id: str) -> bool:
        """Whether this journal may download the job's result now."""

    def release(self, gen_id: str) -> None:
        """Give the job's lease up."""

    def fail(self, gen_id: str, reason: str) -> None:
        """Mark a held job failed."""

    def undelivered(self, gen_id: str, reason: str) -> None:
        """A done job's result could not be saved."""

    def needs_work(self) -> int:
        """How many jobs need work, held or not."""

    def on_lease_lost(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(gen_id)`` when another process took a job over."""


@attrs.frozen
class JobOutcome:
    """How one job ended in this worker."""

    generation_id: str
    state: str
    """``done``, ``failed``, ``cancelled``, ``unsaved`` (done, its file not saved), ``lost``
    (another worker took it over) or ``released`` (given back by :meth:`Worker.abort`)."""
    saved: str | None = None
    reason: str = ""
    file_id: str | None = None


@attrs.define
class WorkerSummary:
    """What a :meth:`Worker.run` did: jobs per outcome, and its event loop's longest stall."""

    outcomes: dict[str, int] = attrs.field(factory=dict)
    longest_stall: float = 0.0
    """Seconds: the longest time the event loop was late waking a 10 ms timer."""


class Worker:
    """Runs the jobs of a queue journal on a client (see the module docstring).

    ``journal`` defaults to ``client.journal``; the client records every generation in it.
    ``concurrency`` jobs run at once; ``idle_wait`` is how long to wait before asking again when
    no job is free; with ``exit_when_idle``, :meth:`run` returns once no job in the journal needs
    work (nor is held by anyone). ``on_outcome`` is called with each :class:`JobOutcome`.
    """

    def __init__(
        self,
        client: Client,
        journal: QueueJournal | None = None,
        *,
        out_dir: str | Path = ".",
        concurrency: int = 4,
        exit_when_idle: bool = False,
        idle_wait: float = 1.0,
        on_outcome: Callable[[JobOutcome], object] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        chosen = journal if journal is not None else client.journal
        if chosen is None or not hasattr(chosen, "lease_next"):
            raise JournalError(
                "a Worker needs a journal that is a queue (a SQLiteJournal or a PostgresJournal); "
                f"got {chosen!r}"
            )
        if client.journal is None:
            client.journal = chosen
        elif client.journal is not chosen:
            raise ValueError("the worker's journal must be its client's journal")
        self.client = client
        self.journal: QueueJournal = chosen  # type: ignore[assignment]
        self.out_dir = Path(out_dir)
        self.concurrency = concurrency
        self.exit_when_idle = exit_when_idle
        self.idle_wait = idle_wait
        self.on_outcome = on_outcome
        self.summary = WorkerSummary()
        self._draining = False
        self._wake = trio.Event()
        self._running: dict[str, trio.CancelScope] = {}
        self._lost: set[str] = set()
        self._released: set[str] = set()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` (or :meth:`abort`) was called."""
        return self._draining

    def drain(self) -> None:
        """Take no new job; :meth:`run` returns when the running ones have ended."""
        self._draining = True
        self._wake.set()

    def abort(self) -> None:
        """Drain, and give the running jobs back (their leases released, no end recorded):
        another worker takes them over by file id."""
        self.drain()
        for gen_id, scope in list(self._running.items()):
            self._released.add(gen_id)
            self.journal.release(gen_id)
            scope.cancel()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> WorkerSummary:
        """Run jobs until drained (or, with ``exit_when_idle``, until none needs work)."""
        token = trio.lowlevel.current_trio_token()

        def lost_from_any_thread(gen_id: str) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._lease_lost, gen_id)

        unwatch = self.journal.on_lease_lost(lost_from_any_thread)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_stalls)
                task_status.started()
                await self._take_jobs(nursery)
                while self._running:
                    await self._ended_one()
                nursery.cancel_scope.cancel()
        finally:
            unwatch()
        return self.summary

    async def _ended_one(self) -> None:
        self._wake = trio.Event()
        await self._wake.wait()

    async def _take_jobs(self, nursery: trio.Nursery) -> None:
        while not self._draining:
            free = self.concurrency - len(self._running)
            leased: list[Entry] = []
            if free > 0:
                leased = await trio.to_thread.run_sync(self.journal.lease_next, free)
            for entry in leased:
                scope = trio.CancelScope()
                self._running[entry.id] = scope
                nursery.start_soon(self._job, entry, scope)
            if leased:
                continue
            if self.exit_when_idle and not self._running:
                left = await trio.to_thread.run_sync(self.journal.needs_work)
                if left == 0:
                    return
            self._wake = trio.Event()
            with trio.move_on_after(self.idle_wait if free > 0 else math.inf):
                await self._wake.wait()

    def _lease_lost(self, gen_id: str) -> None:
        scope = self._running.get(gen_id)
        if scope is not None and gen_id not in self._released:
            log.warning("job %s: another worker took it over; this one stops on it", gen_id)
            self._lost.add(gen_id)
            scope.cancel()

    async def _watch_stalls(self) -> None:
        tick = 0.01
        while True:
            before = time.monotonic()
            await trio.sleep(tick)
            late = time.monotonic() - before - tick
            self.summary.longest_stall = max(self.summary.longest_stall, late)

    async def _job(self, entry: Entry, scope: trio.CancelScope) -> None:
        outcome = JobOutcome(entry.id, "cancelled", reason="not finished")
        try:
            with scope:
                outcome = await self._run_job(entry)
        finally:
            if entry.id in self._lost:
                outcome = JobOutcome(entry.id, "lost", reason="another worker took it over")
            elif entry.id in self._released:
                outcome = JobOutcome(entry.id, "released", reason="given back (worker stopping)")
            else:
                self.journal.release(entry.id)
            self._lost.discard(entry.id)
            self._released.discard(entry.id)
            del self._running[entry.id]
            self.summary.outcomes[outcome.state] = self.summary.outcomes.get(outcome.state, 0) + 1
            self._wake.set()
            if self.on_outcome is not None:
                self.on_outcome(outcome)

    async def _run_job(self, entry: Entry) -> JobOutcome:
        journal, client = self.journal, self.client
        if entry.state is State.DONE:
            return await self._deliver(entry, entry.url, entry.file_id)
        if entry.file_id is None and entry.state is State.REQUESTED:
            unsafe = not entry.queued
            if unsafe and not entry.policy.retry_unsafe_starts:
                journal.fail(entry.id, UNSAFE_START)
                return JobOutcome(entry.id, "failed", reason=UNSAFE_START)
            may_send = await trio.to_thread.run_sync(
                lambda: journal.mark_sending(entry.id, again=unsafe)
            )
            if not may_send:
                return JobOutcome(entry.id, "lost", reason="its lease ended before the start")
            result = await client.start(
                entry.request, policy=entry.policy, meta=entry.meta, generation_id=entry.id
            )
        elif entry.file_id is not None:
            result = await client.resume(
                entry.file_id,
                entry.request.project_id,
                elapsed=max(0.0, time.time() - entry.started_wall),
                generation_id=entry.id,
                policy=entry.policy,
            )
        else:  # cannot happen: lease_next takes only jobs that need work
            return JobOutcome(entry.id, str(entry.state), reason=entry.reason)
        if result.state is not State.DONE:
            return JobOutcome(
                entry.id, str(result.state), reason=result.reason, file_id=result.file_id
            )
        return await self._deliver(entry, result.url, result.file_id)

    async def _deliver(self, entry: Entry, url: str | None, file_id: str | None) -> JobOutcome:
        if not url:
            reason = "the journal has no result URL for it"
            self.journal.undelivered(entry.id, reason)
            return JobOutcome(entry.id, "unsaved", reason=reason, file_id=file_id)
        if not await trio.to_thread.run_sync(self.journal.begin_download, entry.id):
            return JobOutcome(entry.id, "lost", reason="another worker holds it; not downloaded")
        out = Path(entry.meta["out"]) if "out" in entry.meta else self.out_dir / entry.id
        try:
            saved = await self.client.download(
                url, out, convert=format_for_suffix(out), policy=entry.policy
            )
        except HybridgenError as exc:
            reason = f"could not save the image: {exc}"
            self.journal.undelivered(entry.id, reason)
            return JobOutcome(entry.id, "unsaved", reason=reason, file_id=file_id)
        self.journal.delivered(entry.id, saved.path)
        return JobOutcome(entry.id, "done", saved=saved.path, file_id=file_id)
