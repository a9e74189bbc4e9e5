"""``hybridgen resume``: finish the generations a journal left pending.

Decides which journal entries are saved now (done, not delivered), followed again by file id
(running) or failed (no file id yet). It starts no new job, and it never runs without
``SUPERDUPERAI_URL`` (an embedded emulator would not have the jobs). Items run through the batch
machinery of :mod:`._batch`; this file must not grow a second one.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from ..api import Config
from ..errors import ConfigError, JournalError
from ..events import LoggingSubscriber
from ..machine import State
from ..video import media_of
from ._batch import _Item, _pick_batch_reporter, _Run, _run_items
from ._exit import UsageError
from ._files import (
    JOURNAL_ENV,
    _close_journal,
    _journal_arg,
    _journal_name,
    _open_journal,
    _save,
)
from ._interrupt import _Interrupt
from ._output import _setup_logging
from ._report import Outcome

if TYPE_CHECKING:
    from ..driver import Generation
    from ..journal import Entry
    from ._files import CliJournal


_NO_FILE_ID: Final = "interrupted before the server named the file; start it again"


async def _resume_body(
    config: Config,
    journal: CliJournal,
    concurrency: int,
    log_events: bool,
    run: _Run,
    interrupt: _Interrupt,
) -> None:
    from ..driver import Client
    from ..transport import SuperDuperTransport

    limiter = trio.CapacityLimiter(concurrency)
    transport = SuperDuperTransport(config)
    async with Client(transport, journal=journal) as client:
        client.subscribe(run.reporter.event)
        if log_events:
            client.subscribe(LoggingSubscriber())

        async def finish(item: _Item, entry: Entry) -> None:
            async with limiter:
                if entry.state is State.DONE:  # done, not delivered: save it
                    saved, problem = None, "the journal has no result URL for it"
                    if item.out is None:
                        problem = "the journal does not say where to save it (no 'out')"
                    elif entry.url:
                        saved, problem = await _save(
                            client, entry.url, item.out, entry.policy, media_of(entry.request)
                        )
                    if saved is not None:
                        journal.delivered(entry.id, saved)
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
                async with trio.open_nursery() as nursery:
                    gen: Generation = await nursery.start(
                        functools.partial(
                            client.resume,
                            entry.file_id,
                            entry.request.project_id,
                            elapsed=max(0.0, time.time() - entry.started_wall),
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
                        journal.fail(entry.id, _NO_FILE_ID)
                        run.ended(item, Outcome(str(State.FAILED), entry.id, reason=_NO_FILE_ID))
                    else:
                        nursery.start_soon(finish, item, entry)
        interrupt.scope = None


def _claim(journal: CliJournal, entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Take over each entry no live process runs (atomically, one by one): those taken, and why
    each other one was skipped."""
    claimed: list[Entry] = []
    skipped: list[str] = []
    for entry in entries:
        try:
            claimed.append(journal.claim(entry.id))
        except JournalError as exc:  # LeaseHeld: another live process runs it
            skipped.append(str(exc))
    return claimed, skipped


def _cmd_resume(args: argparse.Namespace) -> int:
    level = _setup_logging(args.verbose)
    if "SUPERDUPERAI_URL" not in os.environ:
        raise UsageError(
            "resume needs SUPERDUPERAI_URL (and SUPERDUPERAI_TOKEN): the jobs to finish are on "
            "that server (an embedded emulator would not have them)"
        )
    config = Config.from_env()
    if args.concurrency < 1:
        raise ConfigError("--concurrency", f"must be a whole number >= 1, got {args.concurrency}")
    where = _journal_arg(args.journal)
    if where is None:
        raise UsageError(f"give --journal PATH (or a postgresql:// URL), or set {JOURNAL_ENV}")
    journal = _open_journal(where, create=False)
    try:
        try:
            entries = journal.pending()
        except (sqlite3.Error, JournalError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError("--journal", f"cannot read {_journal_name(journal)}: {exc}") from None
        claimed, skipped = _claim(journal, entries)
        items: list[_Item] = []
        for index, entry in enumerate(claimed, start=1):
            out = entry.meta.get("out")
            path = None if out is None else Path(out)
            items.append(_Item(index, entry.request.prompt, path, entry=entry))
        reporter = _pick_batch_reporter(args.json, len(items))
        for why in skipped:
            reporter.note(f"skipped: {why}")
        if not items:
            reporter.note(f"nothing to resume in {_journal_name(journal)}")
        return _run_items(
            items,
            reporter,
            journal,
            lambda run, interrupt: _resume_body(
                config, journal, args.concurrency, level <= logging.INFO, run, interrupt
            ),
        )
    finally:
        _close_journal(journal)
