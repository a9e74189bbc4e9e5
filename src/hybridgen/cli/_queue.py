"""``hybridgen submit``, ``worker`` and ``status``: one job queue in a shared journal.

``submit`` queues jobs (one JSON line per job on stdout, with its ``key``) and starts nothing;
``worker`` runs queued and abandoned jobs with :class:`hybridgen.worker.Worker` until SIGTERM
(drain: no new job, the running ones finish; a second signal gives them back) or, with
``--exit-when-idle``, until none needs work; ``status`` counts the jobs per state and says who
holds what (per running job: its worker and when its lease ends). The queue is a PostgreSQL
journal (workers on many machines) or a SQLite file (worker processes on one machine).
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
from ..journal import QUEUE_KINDS, Lease
from ..wire import ImageRequest
from ._exit import EXIT_FAILED, EXIT_OK, UsageError
from ._files import JOURNAL_ENV, close_journal, journal_arg, open_journal
from ._inspect import Publish, follow, inspecting, parse_address
from ._options import policy_from_options
from ._output import say, setup_logging, write_out

if TYPE_CHECKING:
    from ..events import Event
    from ..worker import JobOutcome
    from ._files import CliJournal

STATES = QUEUE_KINDS
"""The kinds ``status`` counts (``unsaved``: done, its file not saved yet)."""


def _where(args: argparse.Namespace) -> str:
    where = journal_arg(args.journal)
    if where is None:
        raise UsageError(
            f"give --journal DSN (a postgresql:// URL or a path), or set {JOURNAL_ENV}"
        )
    return where


def _queue(args: argparse.Namespace, lease: float | None = None) -> CliJournal:
    return open_journal(_where(args), create=True, lease=lease)


def _cmd_submit(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    if (args.batch is None) == (args.prompt is None):
        raise UsageError("give exactly one of PROMPT or --batch FILE")
    if args.out is not None and args.batch is not None:
        raise UsageError("--out names one job's file; with --batch the worker's --out-dir decides")
    if args.batch is not None:
        from ._batch import read_batch

        items = read_batch(args.batch, Path("."), args.model)
        requests = [item.request for item in items if item.request is not None]
    else:
        request = ImageRequest(prompt=args.prompt)
        requests = [request if args.model is None else attrs.evolve(request, model=args.model)]
    policy = policy_from_options(args.policy, time_scale=args.time_scale, deadline=args.deadline)
    if args.retry_unsafe_starts:
        policy = policy.replace(retry_unsafe_starts=True)
    meta = {} if args.out is None else {"out": os.path.abspath(args.out)}
    journal = _queue(args)
    try:
        for request in requests:
            key = journal.submit(request, policy, meta)
            write_out(json.dumps({"key": key, "state": "queued", "prompt": request.prompt}))
    finally:
        close_journal(journal)
    return EXIT_OK


def _outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    fields = attrs.asdict(outcome)
    return {"key": fields.pop("generation_id"), **fields}


def _outcome_result(outcome: JobOutcome, elapsed: float) -> dict[str, Any]:
    """A job's end as the inspector's ``result`` object (a job taken over or given back is shown
    cancelled, with why)."""
    from ..jsonevents import result_json

    state = outcome.state
    shown = "done" if state in ("done", "unsaved") else state
    if state in ("lost", "released"):
        shown = "cancelled"
    return result_json(
        generation_id=outcome.generation_id, state=shown, channel=None, url=None,
        path=outcome.saved, elapsed=elapsed, reason=outcome.reason,
        saved=outcome.saved is not None if shown == "done" else None,
    )  # fmt: skip


async def _work(
    args: argparse.Namespace, journal: CliJournal, publish: Publish | None = None
) -> dict[str, Any]:
    from ..driver import Client
    from ..transport import SuperDuperTransport
    from ..worker import Worker

    started: dict[str, float] = {}

    def at(event: Event) -> float:  # seconds since the job's first event in this worker
        return event.monotonic - started.setdefault(event.generation_id or "", event.monotonic)

    def report(outcome: JobOutcome) -> None:
        if publish is not None:
            t0 = started.pop(outcome.generation_id, None)
            elapsed = 0.0 if t0 is None else trio.current_time() - t0
            publish(_outcome_result(outcome, elapsed))
        if args.json:
            write_out(json.dumps(_outcome_json(outcome)))
        else:
            where = f" -> {outcome.saved}" if outcome.saved else ""
            why = f" ({outcome.reason})" if outcome.reason and not outcome.saved else ""
            say(f"job {outcome.generation_id}: {outcome.state}{where}{why}")

    config = Config.from_env()
    async with Client(SuperDuperTransport(config), journal=journal) as client:
        follow(client, at, publish)
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
                            say(f"{name} again: giving the running jobs back")
                            worker.abort()
                        else:
                            say(f"{name}: draining (no new job; the running ones finish)")
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
    setup_logging(args.verbose)
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
    if args.inspect is not None:
        parse_address(args.inspect)
    try:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out-dir", f"cannot create {args.out_dir}: {exc}") from None
    with inspecting(args.inspect, args.inspect_linger) as publish:
        journal = _queue(args, lease=args.lease)
        try:
            summary = trio.run(_work, args, journal, publish)
        finally:
            close_journal(journal)
        if args.json:  # before the page's lingering
            write_out(json.dumps(summary))
        else:
            done = ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items()))
            say(f"worker {summary['worker']} stopped: {done or 'no job'}")
    bad = {"failed", "unsaved"} & set(summary["outcomes"])
    return EXIT_FAILED if bad else EXIT_OK


def _holders(leases: list[Lease]) -> list[tuple[str, list[Lease]]]:
    """The leases grouped by their holder (``process PID on HOST (ID)``), in holder order."""
    held: dict[str, list[Lease]] = {}
    for lease in leases:
        held.setdefault(f"{lease.owner} ({lease.owner.id})", []).append(lease)
    return sorted(held.items())


def _lease_json(lease: Lease) -> dict[str, Any]:
    owner = lease.owner
    return {
        "key": lease.generation_id,
        "state": lease.state,
        "worker": owner.id,
        "pid": owner.pid,
        "host": owner.host,
        "lease_expires": round(lease.expires, 3),
        "lease_left": round(lease.remaining, 1),
    }


def _cmd_status(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    journal = open_journal(_where(args), create=False)
    try:
        counts = journal.counts()
        leases = journal.leases()
    except JournalError as exc:
        raise ConfigError("--journal", str(exc)) from None
    finally:
        close_journal(journal)
    holders = _holders(leases)
    if args.json:
        for lease in leases:
            write_out(json.dumps(_lease_json(lease)))
        for who, held in holders:
            some = [lease.generation_id for lease in held[:5]]
            write_out(json.dumps({"holder": who, "worker": held[0].owner.id, "jobs": len(held),
                             "some": some}))  # fmt: skip
        write_out(json.dumps(counts))
        return EXIT_OK
    width = max(len(kind) for kind in counts)
    for kind, count in counts.items():
        write_out(f"{kind:<{width}}  {count}")
    for who, held in holders:
        write_out(f"held by {who}: {len(held)} job(s)")
        for lease in held:
            write_out(
                f"  {lease.generation_id}  {lease.state}, lease ends in {lease.remaining:.1f} s"
            )
    return EXIT_OK
