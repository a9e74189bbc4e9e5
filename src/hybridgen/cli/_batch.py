"""``hybridgen generate --batch FILE``: many prompts, one client, one image file per prompt.

Reads and checks the prompts, names each item's file, runs them with
:func:`hybridgen.batch.run_batch` and reports each item as it ends; :class:`BatchRun` and
:func:`run_items` are shared with ``resume``. Concurrency and fail-fast are decided by
:mod:`hybridgen.batch`, not here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config import Config
from ..errors import ConfigError, RequestError
from ..events import LoggingSubscriber
from ..machine import State
from ..policy import Policy
from ..video import media_of
from ..wire import BodyForm, ImageRequest
from ._exit import UsageError, sentence, worst_exit
from ._files import (
    JOURNAL_WAIT,
    checked_journal_wait,
    close_journal,
    journal_arg,
    journal_meta,
    open_journal,
    save_result,
)
from ._inspect import Publish, follow, inspecting
from ._interrupt import Interrupt, not_run, not_saved, with_signals
from ._json import JsonBatchReporter, batch_json, outcome_json
from ._live import RichBatchReporter
from ._options import open_config
from ._report import BatchReporter, Outcome, count_outcomes

if TYPE_CHECKING:
    from ..driver import Client, Generation
    from ..emulator.model import Faults
    from ..journal import Entry, Journal
    from ._files import CliJournal
    from ._generate import GenerateJob


def _slug(prompt: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: lower-case ASCII words joined by dashes."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].strip("-")
    return slug or "image"


@attrs.frozen
class BatchItem:
    """One prompt of a batch (or one journal entry to resume)."""

    index: int
    """Its position, from 1 (the ``NNN`` of its file name)."""
    prompt: str
    out: Path | None
    """Where its image goes (``None``: a journal entry that does not say)."""
    request: ImageRequest | None = None
    entry: Entry | None = None


def read_batch(
    source: str, out_dir: Path, model: str | None = None, body_form: BodyForm = "config"
) -> list[BatchItem]:
    """Every non-empty line of ``source`` (``-``: stdin) as a checked request; ``UsageError``."""
    label = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError("--batch", f"cannot read {label}: {exc.strerror or exc}") from None
    requests: list[ImageRequest] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(
                f"--batch {label} line {number}: the prompt is not UTF-8 text"
            ) from None
        if not text:
            continue
        try:
            request = ImageRequest(prompt=text, body_form=body_form)
            requests.append(request if model is None else attrs.evolve(request, model=model))
        except RequestError as exc:
            why = sentence(exc.field, exc.message)
            raise UsageError(f"--batch {label} line {number}: {why}") from None
    if not requests:
        raise UsageError(f"--batch {label}: no prompts (every line is empty)")
    width = max(3, len(str(len(requests))))
    return [
        BatchItem(i, r.prompt, out_dir / f"{i:0{width}d}-{_slug(r.prompt)}.png", request=r)
        for i, r in enumerate(requests, start=1)
    ]


def pick_batch_reporter(as_json: bool, total: int) -> BatchReporter:
    if as_json:
        return JsonBatchReporter(total)
    if sys.stderr.isatty():
        return RichBatchReporter(total)
    return BatchReporter(total)


@attrs.define
class BatchRun:
    """The state of a batch or resume run: what each item ended as, shared with the reporter."""

    items: list[BatchItem]
    reporter: BatchReporter
    journal: CliJournal | None
    outcomes: dict[int, Outcome] = attrs.field(factory=dict)
    gens: dict[int, Generation] = attrs.field(factory=dict)
    publish: Publish | None = None

    def started(self, item: BatchItem, gen: Generation, interrupt: Interrupt) -> None:
        self.gens[item.index] = gen
        interrupt.gens.append(gen)
        self.reporter.started(item.index, gen)

    def ended(self, item: BatchItem, outcome: Outcome) -> None:
        if item.index not in self.outcomes:
            self.outcomes[item.index] = outcome
            self.reporter.item(item, outcome)
            if self.publish is not None:
                self.publish(outcome_json(outcome, item))

    async def deliver(self, client: Client, item: BatchItem, gen: Generation) -> None:
        """Wait for ``gen``, save its image to the item's path, report the item."""
        result = await gen.wait()
        saved, problem = None, "the journal does not say where to save it (no 'out')"
        if result.state is State.DONE and result.url and item.out is not None:
            media = "image" if item.entry is None else media_of(item.entry.request)
            saved, problem = await save_result(
                client, result.url, item.out, gen.core.policy, media, generation_id=gen.id
            )
        if self.journal is not None and result.state is State.DONE:
            record_delivery(self.journal, gen.id, saved, problem)
        self.ended(item, _outcome_of(gen, saved, problem))

    def close(self, signal_name: str | None) -> list[Outcome]:
        """Report every item not reported yet (interrupted by ``signal_name``, or never started);
        all outcomes."""
        for item in self.items:
            gen = self.gens.get(item.index)
            if gen is not None:
                self.ended(item, _outcome_of(gen, None, not_saved(signal_name)))
            else:
                self.ended(item, Outcome(state=str(State.CANCELLED), reason=not_run(signal_name)))
        return [self.outcomes[item.index] for item in self.items]


def _outcome_of(gen: Generation, saved: str | None, problem: str) -> Outcome:
    return Outcome.of(gen, saved, "" if saved is not None else problem)


@attrs.frozen
class _BatchJob:
    items: list[BatchItem]
    policy: Policy
    config: Config | None
    faults: Faults | None
    time_scale: float
    concurrency: int
    fail_fast: bool
    log_events: bool
    journal: CliJournal | None = None


async def _batch_body(job: _BatchJob, run: BatchRun, interrupt: Interrupt) -> None:
    from ..batch import run_batch
    from ..driver import Client
    from ._watch import WatchedTransport

    reporter = run.reporter
    async with contextlib.AsyncExitStack() as stack:
        config = await open_config(job.config, job.faults, job.time_scale, stack, reporter.note)
        transport = WatchedTransport(config)  # one connection pool for every item
        client = await stack.enter_async_context(
            Client(transport, policy=job.policy, journal=job.journal)
        )
        client.subscribe(reporter.event)
        follow(client, reporter.at, run.publish)
        if job.log_events:
            client.subscribe(LoggingSubscriber())
        metas = None
        if job.journal is not None:
            metas = [journal_meta(item.out) for item in job.items if item.out is not None]
        with trio.CancelScope() as work:
            interrupt.scope = work
            async with trio.open_nursery() as savers:

                def on_start(position: int, gen: Generation) -> None:
                    item = job.items[position]
                    run.started(item, gen, interrupt)
                    savers.start_soon(run.deliver, client, item, gen)

                results = await run_batch(
                    client,
                    [item.request or item.prompt for item in job.items],
                    concurrency=job.concurrency,
                    fail_fast=job.fail_fast,
                    on_start=on_start,
                    metas=metas,
                )
            for item, result in zip(job.items, results, strict=True):
                if item.index not in run.gens:  # not started (fail-fast)
                    run.ended(item, Outcome(state=str(result.state), reason=result.reason))
        interrupt.scope = None


def record_delivery(journal: Journal, gen_id: str, saved: str | None, problem: str) -> None:
    """Tell the journal where a done generation's image went, or why it is not saved (the
    entry then stays pending with its URL: ``resume`` downloads it again, no new job)."""
    if saved is not None:
        journal.delivered(gen_id, os.path.abspath(saved))
    else:
        journal.undelivered(gen_id, problem)


def _batch_exit(outcomes: Sequence[Outcome], interrupted: bool, incomplete: bool) -> int:
    tally = count_outcomes(outcomes)
    return worst_exit(
        interrupted=interrupted,
        failed=tally["failed"] + tally["cancelled"] > 0,
        unsaved=tally["unsaved"] > 0,
        incomplete=incomplete,
    )


def run_items(
    items: list[BatchItem],
    reporter: BatchReporter,
    journal: CliJournal | None,
    body: Callable[[BatchRun, Interrupt], Any],
    publish: Publish | None = None,
    *,
    journal_wait: float = JOURNAL_WAIT,
    skipped: int | None = None,
) -> int:
    """Run ``body`` over ``items``, report each and the totals, close the journal before the
    totals (so that they say whether it is complete); the exit code. ``skipped``: with
    ``resume``, how many entries another process holds (counted in the totals)."""
    run = BatchRun(items, reporter, journal, publish=publish)
    t0 = time.monotonic()
    reporter.begin()
    try:
        signal_name = trio.run(with_signals, functools.partial(body, run))
        outcomes = run.close(signal_name)
    finally:
        reporter.end()
    elapsed = time.monotonic() - t0
    extra: dict[str, int] = {}
    if skipped is not None:
        extra["skipped"] = skipped
    if journal is not None:
        extra["journal_lost"] = close_journal(journal, journal_wait)
    reporter.summary(count_outcomes(outcomes), elapsed, extra)
    if publish is not None:
        publish(batch_json(count_outcomes(outcomes), elapsed, **extra))
    incomplete = bool(extra.get("skipped") or extra.get("journal_lost"))
    return _batch_exit(outcomes, signal_name is not None, incomplete)


def cmd_batch(args: argparse.Namespace, level: int, base: GenerateJob) -> int:
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("--out", f"{args.out} is not a directory; with --batch, give one")
    concurrency = 4 if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise ConfigError("--concurrency", f"must be a whole number >= 1, got {concurrency}")
    items = read_batch(args.batch, out_dir, args.model, args.body_form)
    if not out_dir.parent.is_dir():
        raise ConfigError(
            "--out", f"names a directory in {out_dir.parent}, which does not exist; create it first"
        )
    try:
        out_dir.mkdir(exist_ok=True)  # the batch's own directory; never the folders above it
    except OSError as exc:
        raise ConfigError("--out", f"cannot create the directory {out_dir}: {exc}") from None
    wait = checked_journal_wait(args.journal_wait)
    where = journal_arg(args.journal)
    journal = open_journal(where, create=True) if where else None
    job = _BatchJob(
        items,
        base.policy,
        base.config,
        base.faults,
        base.time_scale,
        concurrency,
        args.fail_fast,
        log_events=level <= logging.INFO,
        journal=journal,
    )
    try:
        with inspecting(args.inspect, args.inspect_linger) as publish:
            return run_items(
                items,
                pick_batch_reporter(args.json, len(items)),
                journal,
                lambda run, interrupt: _batch_body(job, run, interrupt),
                publish,
                journal_wait=wait,
            )
    finally:
        if journal is not None:
            close_journal(journal)
