"""``hybridgen resume``: finish the generations a journal left pending.

Decides which journal entries are saved now (done, not delivered), followed again by file id
(running; with ``--include-cancelled`` also cancelled ones the server had named) or ended (no file
id: never started again, since the job may exist; the message says how to find it). It starts no
new job, and it never runs without ``SUPERDUPERAI_URL`` (an embedded emulator would not have the
jobs). Items run through the batch
machinery of :mod:`._batch`; this file must not grow a second one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from ..config import Config
from ..errors import ConfigError, JournalError
from ..events import LoggingSubscriber
from ..machine import State
from ..video import media_of
from ._batch import BatchItem, BatchRun, pick_batch_reporter, record_delivery, run_items
from ._exit import UsageError
from ._files import (
    JOURNAL_ENV,
    checked_journal_wait,
    close_journal,
    journal_arg,
    journal_name,
    open_journal,
    save_result,
)
from ._interrupt import Interrupt
from ._output import setup_logging
from ._report import Outcome

if TYPE_CHECKING:
    from ..driver import Generation
    from ..journal import Entry
    from ._files import CliJournal


def _no_file_id(entry: Entry, server: str) -> str:
    """Why an entry without a file id is not followed, and how to find its job (never: start
    it again, which could bill it twice)."""
    when = datetime.datetime.fromtimestamp(entry.started_wall, datetime.UTC)
    return (
        "the journal has no file id for it (the run ended before recording one), so it cannot "
        "be followed, and it is not started again: the start request may have reached the "
        f"server, where the job may exist and be billed. Look for it among your files on "
        f"{server} (prompt {entry.request.prompt!r}, started {when:%Y-%m-%d %H:%M:%S} UTC); "
        "with its file id, hybridgen download FILE_ID --out PATH saves it"
    )


def _found_on_disk(entry: Entry, out: Path | None) -> str | None:
    """The image file of an entry without a file id, if one was written after its start (the
    journal lost the rest of its story, e.g. under another process's lock)."""
    if out is None:
        return None
    candidates = [out] if out.suffix else [out.with_suffix(s) for s in _SUFFIXES]
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime >= entry.started_wall:
                return str(path)
    return None


_SUFFIXES: Final = (".png", ".webp", ".jpg", ".jpeg", ".gif")


def _shown(path: str) -> Path:
    """``path`` as the batch printed it: relative when it is under the current directory."""
    relative = os.path.relpath(path)
    return Path(path if relative.startswith("..") else relative)


def _resumed_elapsed(entry: Entry) -> float:
    """Seconds into its deadline a resumed entry starts: the time since its start, but leaving
    room for a few polls (a job that outlived its deadline while nobody watched is asked once
    more, not failed unseen)."""
    policy = entry.policy
    window = policy.push_timeout + 2 * policy.poll_interval + policy.request_timeout
    age = max(0.0, time.time() - entry.started_wall)
    return min(age, max(0.0, policy.deadline - window))


async def _resume_body(
    config: Config,
    journal: CliJournal,
    concurrency: int,
    log_events: bool,
    run: BatchRun,
    interrupt: Interrupt,
) -> None:
    from ..driver import Client
    from ..transport import SuperDuperTransport

    limiter = trio.CapacityLimiter(concurrency)
    transport = SuperDuperTransport(config)
    async with Client(transport, journal=journal) as client:
        client.subscribe(run.reporter.event)
        if log_events:
            client.subscribe(LoggingSubscriber())

        async def finish(item: BatchItem, entry: Entry) -> None:
            async with limiter:
                if entry.state is State.DONE:  # done, not delivered: save it
                    saved, problem = None, "the journal has no result URL for it"
                    if item.out is None:
                        problem = "the journal does not say where to save it (no 'out')"
                    elif entry.url:
                        saved, problem = await save_result(
                            client,
                            entry.url,
                            item.out,
                            entry.policy,
                            media_of(entry.request),
                            generation_id=entry.id,
                        )
                    record_delivery(journal, entry.id, saved, problem)
                    outcome = Outcome(
                        state=str(State.DONE),
                        generation_id=entry.id,
                        channel=entry.channel,
                        url=entry.url,
                        path=saved,
                        elapsed=max(0.0, time.time() - entry.started_wall),
                        reason=problem,
                    )
                    run.ended(item, outcome)
                    return
                assert entry.file_id is not None
                elapsed = _resumed_elapsed(entry)
                run.reporter.note(
                    f"[{item.index}] following file {entry.file_id}, started "
                    f"{time.time() - entry.started_wall:.1f}s ago (times below count from now)"
                )
                run.reporter.expect(item.index, entry.id, trio.current_time())
                async with trio.open_nursery() as nursery:
                    gen: Generation = await nursery.start(
                        functools.partial(
                            client.resume,
                            entry.file_id,
                            entry.request.project_id,
                            elapsed=elapsed,
                            generation_id=entry.id,
                            policy=entry.policy,
                        )
                    )
                    run.started(item, gen, interrupt)
                await run.deliver(client, item, gen)

        with trio.CancelScope() as work:
            interrupt.scope = work
            async with trio.open_nursery() as nursery:
                for item in run.items:
                    entry = item.entry
                    assert entry is not None
                    if entry.state is not State.DONE and entry.file_id is None:
                        run.ended(item, _without_file_id(journal, entry, item, config.url))
                    else:
                        nursery.start_soon(finish, item, entry)
        interrupt.scope = None


def _without_file_id(journal: CliJournal, entry: Entry, item: BatchItem, server: str) -> Outcome:
    """An unfinished entry the server never named (as far as the journal knows): ended in the
    journal, never started again; reported saved when its image is on disk after all."""
    found = _found_on_disk(entry, item.out)
    if found is not None:
        why = (
            f"no file id recorded, but its image {found} was written after its start: it was "
            "saved, and the journal missed the end"
        )
        journal.fail(entry.id, why)
        return Outcome(str(State.DONE), entry.id, path=found, reason=why)
    why = _no_file_id(entry, server)
    journal.fail(entry.id, why)
    return Outcome(str(State.FAILED), entry.id, reason=why)


def _claim(journal: CliJournal, entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Take over each entry no live process runs (atomically, one by one; a cancelled one with
    a file id is reopened): those taken, and why each other one was skipped."""
    claimed: list[Entry] = []
    skipped: list[str] = []
    for entry in entries:
        try:
            claimed.append(journal.claim(entry.id, reopen=entry.reopenable))
        except JournalError as exc:  # LeaseHeld: another live process runs it
            skipped.append(str(exc))
    return claimed, skipped


def _cancelled_note(cancelled: list[Entry], journal: str) -> str:
    """Plain ``resume``: the cancelled jobs the server had started (paid for), and the flag."""
    more = ", ..." if len(cancelled) > 3 else ""
    ids = ", ".join(e.file_id or "" for e in cancelled[:3]) + more
    return (
        f"{len(cancelled)} generation(s) were cancelled after the server started them (file "
        f"{ids}): their jobs may have finished and are paid for; hybridgen resume --journal "
        f"{journal} --include-cancelled follows and saves them"
    )


def _cmd_resume(args: argparse.Namespace) -> int:
    level = setup_logging(args.verbose)
    if "SUPERDUPERAI_URL" not in os.environ:
        raise UsageError(
            "resume needs SUPERDUPERAI_URL (and SUPERDUPERAI_TOKEN): the jobs to finish are on "
            "that server (an embedded emulator would not have them)"
        )
    config = Config.from_env()
    if args.concurrency < 1:
        raise ConfigError("--concurrency", f"must be a whole number >= 1, got {args.concurrency}")
    wait = checked_journal_wait(args.journal_wait)
    where = journal_arg(args.journal)
    if where is None:
        raise UsageError(f"give --journal PATH (or a postgresql:// URL), or set {JOURNAL_ENV}")
    journal = open_journal(where, create=False)
    try:
        try:
            entries = journal.pending(cancelled=True)
        except (sqlite3.Error, JournalError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError("--journal", f"cannot read {journal_name(journal)}: {exc}") from None
        cancelled = [e for e in entries if e.reopenable]
        if not args.include_cancelled:
            entries = [e for e in entries if not e.reopenable]
        claimed, skipped = _claim(journal, entries)
        items: list[BatchItem] = []
        for index, entry in enumerate(claimed, start=1):
            out = entry.meta.get("out")
            path = None if out is None else _shown(out)
            items.append(BatchItem(index, entry.request.prompt, path, entry=entry))
        reporter = pick_batch_reporter(args.json, len(items))
        for why in skipped:
            reporter.note(f"skipped: {why}")
        if cancelled and not args.include_cancelled:
            reporter.note(_cancelled_note(cancelled, where))
        if not items:
            held = f" ({len(skipped)} held by another process)" if skipped else ""
            reporter.note(f"nothing to resume in {journal_name(journal)} now{held}")
        return run_items(
            items,
            reporter,
            journal,
            lambda run, interrupt: _resume_body(
                config, journal, args.concurrency, level <= logging.INFO, run, interrupt
            ),
            journal_wait=wait,
            skipped=len(skipped),
        )
    finally:
        close_journal(journal, wait)
