"""``hybridgen submit``, ``worker`` and ``status``: one job queue in a shared journal.

``submit`` queues jobs (one JSON line per job on stdout, with its ``key``) and starts nothing;
``worker`` runs queued and abandoned jobs with :class:`hybridgen.worker.Worker` until SIGTERM
(drain: no new job, the running ones finish; a second signal gives them back) or, with
``--exit-when-idle``, until none needs work; ``status`` counts the jobs per state and says who
holds what. The queue is a PostgreSQL journal; ``status`` reads a SQLite journal too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config import Config
from ..errors import ConfigError, JournalError
from ..machine import TERMINAL, State
from ..wire import ImageRequest
from ._exit import EXIT_FAILED, EXIT_OK, UsageError
from ._files import JOURNAL_ENV, _close_journal, _is_postgres, _journal_arg, _open_journal
from ._options import policy_from_options
from ._output import _out, _say, _setup_logging

if TYPE_CHECKING:
    from ..journal import Entry
    from ..journal_pg import PostgresJournal
    from ..worker import JobOutcome

STATES = ("queued", "running", "abandoned", "done", "unsaved", "failed", "cancelled")
"""The kinds ``status`` counts (``unsaved``: done, its file not saved yet)."""


def _where(args: argparse.Namespace) -> str:
    where = _journal_arg(args.journal)
    if where is None:
        raise UsageError(
            f"give --journal DSN (a postgresql:// URL or a path), or set {JOURNAL_ENV}"
        )
    return where


def _queue(args: argparse.Namespace, command: str, lease: float | None = None) -> PostgresJournal:
    where = _where(args)
    if not _is_postgres(where):
        raise ConfigError(
            "--journal",
            f"{command} needs a queue: a PostgreSQL journal (postgresql://...); a SQLite journal "
            "records one process's generations (see: hybridgen generate --journal, resume)",
        )
    journal = _open_journal(where, create=True, lease=lease)
    assert hasattr(journal, "lease_next")
    return journal  # type: ignore[return-value]


def _cmd_submit(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    if (args.batch is None) == (args.prompt is None):
        raise UsageError("give exactly one of PROMPT or --batch FILE")
    if args.out is not None and args.batch is not None:
        raise UsageError("--out names one job's file; with --batch the worker's --out-dir decides")
    if args.batch is not None:
        from ._batch import _read_batch

        items = _read_batch(args.batch, Path("."), args.model)
        requests = [item.request for item in items if item.request is not None]
    else:
        request = ImageRequest(prompt=args.prompt)
        requests = [request if args.model is None else attrs.evolve(request, model=args.model)]
    policy = policy_from_options(args.policy, time_scale=args.time_scale, deadline=args.deadline)
    if args.retry_unsafe_starts:
        policy = policy.replace(retry_unsafe_starts=True)
    meta = {} if args.out is None else {"out": os.path.abspath(args.out)}
    journal = _queue(args, "submit")
    try:
        for request in requests:
            key = journal.submit(request, policy, meta)
            _out(json.dumps({"key": key, "state": "queued", "prompt": request.prompt}))
    finally:
        _close_journal(journal)
    return EXIT_OK


def _outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    fields = attrs.asdict(outcome)
    return {"key": fields.pop("generation_id"), **fields}


async def _work(args: argparse.Namespace, journal: PostgresJournal) -> dict[str, Any]:
    from ..driver import Client
    from ..transport import SuperDuperTransport
    from ..worker import Worker

    def report(outcome: JobOutcome) -> None:
        if args.json:
            _out(json.dumps(_outcome_json(outcome)))
        else:
            where = f" -> {outcome.saved}" if outcome.saved else ""
            why = f" ({outcome.reason})" if outcome.reason and not outcome.saved else ""
            _say(f"job {outcome.generation_id}: {outcome.state}{where}{why}")

    config = Config.from_env()
    async with Client(SuperDuperTransport(config), journal=journal) as client:
        worker = Worker(
            client,
            out_dir=args.out_dir,
            concurrency=args.concurrency,
            exit_when_idle=args.exit_when_idle,
            idle_wait=args.idle_wait,
            on_outcome=report,
        )
        t0 = time.monotonic()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if worker.draining:
                            _say(f"{name} again: giving the running jobs back")
                            worker.abort()
                        else:
                            _say(f"{name}: draining (no new job; the running ones finish)")
                            worker.drain()

                nursery.start_soon(on_signals)
                summary = await worker.run()
                nursery.cancel_scope.cancel()
    return {
        "worker": str(journal.owner),
        "outcomes": summary.outcomes,
        "longest_stall_ms": round(summary.longest_stall * 1000, 1),
        "elapsed": round(time.monotonic() - t0, 3),
    }


def _cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    if args.concurrency < 1:
        raise ConfigError("--concurrency", f"must be a whole number >= 1, got {args.concurrency}")
    if not args.lease > 0:
        raise ConfigError("--lease", f"must be a positive number of seconds, got {args.lease}")
    if not args.idle_wait > 0:
        raise ConfigError("--idle-wait", f"must be positive, got {args.idle_wait}")
    if "SUPERDUPERAI_URL" not in os.environ:
        raise UsageError(
            "worker needs SUPERDUPERAI_URL (and SUPERDUPERAI_TOKEN): the server every worker "
            "sends its jobs to"
        )
    Config.from_env()  # a bad URL or token is bad usage, found before the journal opens
    try:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out-dir", f"cannot create {args.out_dir}: {exc}") from None
    journal = _queue(args, "worker", lease=args.lease)
    try:
        summary = trio.run(_work, args, journal)
    finally:
        _close_journal(journal)
    if args.json:
        _out(json.dumps(summary))
    else:
        done = ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items())) or "no job"
        _say(f"worker {summary['worker']} stopped: {done}")
    bad = {"failed", "unsaved"} & set(summary["outcomes"])
    return EXIT_FAILED if bad else EXIT_OK


def _counts_of(entries: list[Entry], now: float) -> dict[str, int]:
    """``status`` counts of a journal without a queue of its own (SQLite)."""
    counts = dict.fromkeys(STATES, 0)
    for entry in entries:
        live = entry.lease_expires > now and entry.owner is not None and not entry.owner.gone()
        if entry.state is State.DONE:
            kind = "done" if entry.delivered_to else "running" if live else "unsaved"
        elif entry.state in TERMINAL:
            kind = str(entry.state)
        else:
            kind = "running" if live else "queued" if entry.queued else "abandoned"
        counts[kind] += 1
    return counts


def _cmd_status(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    where = _where(args)
    journal = _open_journal(where, create=False)
    try:
        if _is_postgres(where):
            from ..journal_pg import PostgresJournal

            assert isinstance(journal, PostgresJournal)
            counts = journal.counts()
            holders = journal.holders()
        else:
            entries = journal.entries()
            now = time.time()
            counts = _counts_of(entries, now)
            held: dict[str, list[str]] = {}
            for entry in entries:
                if entry.needs_work and entry.owner is not None and entry.lease_expires > now:
                    held.setdefault(f"{entry.owner} ({entry.owner.id})", []).append(entry.id)
            holders = [(who, len(ids), ids[:5]) for who, ids in sorted(held.items())]
    except JournalError as exc:
        raise ConfigError("--journal", str(exc)) from None
    finally:
        _close_journal(journal)
    if args.json:
        for who, count, ids in holders:
            _out(json.dumps({"holder": who, "jobs": count, "some": ids}))
        _out(json.dumps(counts))
        return EXIT_OK
    width = max(len(kind) for kind in counts)
    for kind, count in counts.items():
        _out(f"{kind:<{width}}  {count}")
    for who, count, ids in holders:
        _out(f"held by {who}: {count} job(s), e.g. {', '.join(ids)}")
    return EXIT_OK
