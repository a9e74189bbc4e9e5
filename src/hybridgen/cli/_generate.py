"""``hybridgen generate PROMPT``: one generation, saved to ``--out``.

Checks the options, runs one generation through :class:`hybridgen.driver.Client`, saves the image
and picks the exit code; ``--batch`` hands over to :mod:`._batch`. The run's logic lives in the
driver and core: this file must not decide timings or retries.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ..config import Config
from ..errors import ConfigError, HybridgenError
from ..events import LoggingSubscriber
from ..machine import State
from ..policy import Policy
from ..video import (
    DEFAULT_VIDEO_MODEL,
    StartRequest,
    VideoRequest,
    check_cost,
    check_video,
    media_of,
    source_of,
)
from ..wire import VIDEO_KINDS, ImageRequest
from ._batch import cmd_batch, record_delivery
from ._exit import UsageError, worst_exit
from ._files import (
    check_out,
    checked_journal_wait,
    close_journal,
    journal_arg,
    journal_meta,
    open_journal,
    save_result,
)
from ._inspect import Publish, follow, inspecting, parse_address
from ._interrupt import Interrupt, early_interrupt, not_saved, watch_signals
from ._json import JsonReporter, outcome_json
from ._live import RichReporter
from ._models import check_model, server_models
from ._options import (
    EMULATOR_GEN_TIME,
    EMULATOR_SSE_MODE,
    EMULATOR_WS_MODE,
    absolute_seconds,
    external_scale_note,
    make_faults,
    open_config,
    policy_from_options,
    time_scale_of,
)
from ._output import say, setup_logging
from ._report import Outcome, Reporter

if TYPE_CHECKING:
    from ..driver import Client, Generation
    from ..emulator.model import Faults
    from ._files import CliJournal


@attrs.frozen
class GenerateJob:
    request: StartRequest
    policy: Policy
    config: Config | None
    faults: Faults | None
    time_scale: float
    out: Path
    log_events: bool
    journal: CliJournal | None = None
    publish: Publish | None = None
    source: Path | None = None
    """A video's local source file, uploaded before the start (``--image FILE``)."""


async def _generate(job: GenerateJob, reporter: Reporter) -> tuple[Outcome, bool]:
    outcome: Outcome | None = None
    async with trio.open_nursery() as watchers:
        interrupt = Interrupt(watchers.cancel_scope)
        await watchers.start(watch_signals, interrupt)
        try:
            outcome = await _generate_body(job, reporter, interrupt)
        finally:
            watchers.cancel_scope.cancel()
    if outcome is None:
        outcome = Outcome(state=str(State.CANCELLED), reason=early_interrupt(interrupt.signal_name))
    return outcome, interrupt.hit


async def _generate_body(job: GenerateJob, reporter: Reporter, interrupt: Interrupt) -> Outcome:
    from ..driver import Client
    from ._watch import WatchedTransport

    async with contextlib.AsyncExitStack() as stack:
        config = await open_config(job.config, job.faults, job.time_scale, stack, reporter.note)
        transport = WatchedTransport(config)
        client = await stack.enter_async_context(
            Client(transport, policy=job.policy, journal=job.journal)
        )
        client.subscribe(reporter.event)
        follow(client, reporter.at, job.publish)
        if job.log_events:
            client.subscribe(LoggingSubscriber())
        gen: Generation | None = None
        saved: str | None = None
        problem = ""
        with trio.CancelScope() as work:
            interrupt.scope = work
            request = job.request
            if job.source is not None and isinstance(request, VideoRequest):
                try:  # checked before this run; here the source is uploaded
                    request = await _upload(client, request, job.source, job.policy)
                except HybridgenError as exc:
                    return Outcome(state=str(State.FAILED), reason=f"the upload failed: {exc}")
            async with trio.open_nursery() as nursery:
                meta = journal_meta(job.out) if job.journal is not None else None
                gen = await nursery.start(functools.partial(client.start, meta=meta), request)
                interrupt.gen = gen
                reporter.t0 = gen.core.started
            result = gen.result()
            if result.state is State.DONE and result.url:
                saved, problem = await save_result(
                    client,
                    result.url,
                    job.out,
                    media=media_of(request),
                    generation_id=result.generation_id,
                )
        interrupt.scope = None
        if gen is None:
            return Outcome(
                state=str(State.CANCELLED), reason=early_interrupt(interrupt.signal_name)
            )
        result = gen.result()
        if result.state is State.DONE and saved is None and not problem:
            problem = not_saved(interrupt.signal_name)
        if job.journal is not None and result.state is State.DONE:
            record_delivery(job.journal, gen.id, saved, problem)
        return Outcome.of(gen, saved, problem, keep_path=True)


async def _upload(
    client: Client, request: VideoRequest, source: Path, policy: Policy
) -> VideoRequest:
    plan = await client.plan_video(
        request.prompt,
        model=request.model,
        duration=request.duration,
        aspect_ratio=request.aspect_ratio,
        image=source,
        policy=policy,
    )
    return attrs.evolve(request, image=plan.request.image)


VIDEO_SUFFIXES: Final = (".mp4", ".webm", ".mov")


def _video_request(args: argparse.Namespace, config: Config | None, out: Path) -> _Video:
    """The video ``generate --video`` asks for, checked against the model list before any
    job (or upload) starts; says its price on stderr."""
    if args.batch is not None:
        raise UsageError("--video makes one video; it cannot be used with --batch")
    if out.suffix and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(
            "--out",
            f"a video is saved as it is, never converted: give a {', '.join(VIDEO_SUFFIXES)} "
            f"path or one without a suffix, not {out.suffix}",
        )
    source = None if args.image is None else source_of(args.image)
    request = VideoRequest(
        prompt=args.prompt,
        model=args.model or DEFAULT_VIDEO_MODEL,
        duration=5 if args.duration is None else args.duration,
        aspect_ratio=args.aspect_ratio or "16:9",
        image=source if isinstance(source, str) else None,
    )
    draft = request if not isinstance(source, Path) else attrs.evolve(request, image="upload")
    model = check_video(draft, server_models(config, VIDEO_KINDS))
    cost = check_cost(model, request.duration, args.max_cost, field="--max-cost")
    per_second = "" if model.price_per_second is None else f" at ${model.price_per_second:g}/s"
    price = "unknown (the model list gives none)" if cost is None else f"${cost:.2f}"
    say(f"price: {price} ({model.name}, {request.duration} s{per_second})")
    return _Video(request, source if isinstance(source, Path) else None)


@attrs.frozen
class _Video:
    request: VideoRequest
    source: Path | None


def _pick_reporter(as_json: bool, policy: Policy) -> Reporter:
    if as_json:
        return JsonReporter()
    if sys.stderr.isatty():
        together = policy.push and not policy.push_fallback  # all open at once, else in turn
        return RichReporter(["+".join(policy.push)] if together else policy.push)
    return Reporter()


def _cmd_generate(args: argparse.Namespace) -> int:
    level = setup_logging(args.verbose)
    batch = args.batch is not None
    if batch == (args.prompt is not None):
        raise UsageError("give exactly one of PROMPT or --batch FILE")
    if not batch and (args.concurrency is not None or args.fail_fast):
        raise UsageError("--concurrency and --fail-fast go with --batch FILE")
    if batch and args.trace:
        raise UsageError("--trace draws one generation's path; it cannot be used with --batch")
    if args.inspect is not None:
        parse_address(args.inspect)  # a bad address is bad usage, found before any work
    out = Path(args.out) if batch else check_out(args.out, video=args.video)  # before any I/O
    embedded = "SUPERDUPERAI_URL" not in os.environ
    if not embedded and (
        args.gen_time is not None or args.ws_mode is not None or args.sse_mode is not None
    ):
        raise UsageError(
            "--gen-time, --ws-mode and --sse-mode configure the embedded emulator; they cannot be "
            "used while SUPERDUPERAI_URL is set (unset it to use the emulator)"
        )
    config = None if embedded else Config.from_env()
    video = None
    if args.video:
        video = _video_request(args, config, out)
    elif any(v is not None for v in (args.duration, args.image, args.max_cost, args.aspect_ratio)):
        raise UsageError("--duration, --image, --max-cost and --aspect-ratio go with --video")
    elif args.model is not None:  # checked against the server's list before any job starts
        check_model(args.model, server_models(config))
    request: StartRequest | None = None
    if video is not None:
        request = video.request
    elif not batch:
        request = ImageRequest(prompt=args.prompt, body_form=args.body_form)
        if args.model is not None:
            request = attrs.evolve(request, model=args.model)
    policy = policy_from_options(
        args.policy or ("video" if args.video else "default"),
        time_scale=args.time_scale,
        push_timeout=args.push_timeout,
        poll_interval=args.poll_interval,
        deadline=args.deadline,
        request_timeout=args.request_timeout,
        keep_bounds=not embedded,
        push=args.push,
    )
    if args.retry_unsafe_starts:
        policy = policy.replace(retry_unsafe_starts=True)
    scale = time_scale_of(args.time_scale)
    faults = None
    if embedded:
        gen_time = absolute_seconds("gen_time", args.gen_time, scale)
        faults = make_faults(  # today's API unless told otherwise: silent socket, working SSE
            gen_time=EMULATOR_GEN_TIME if gen_time is None else gen_time,
            ws_mode=args.ws_mode or EMULATOR_WS_MODE,
            sse_mode=args.sse_mode or EMULATOR_SSE_MODE,
        )
    elif args.time_scale is not None:
        say(external_scale_note(scale, policy))
    if request is None:
        base = GenerateJob(
            ImageRequest(prompt="-"), policy, config, faults, scale, out, log_events=False
        )
        return cmd_batch(args, level, base)
    wait = checked_journal_wait(args.journal_wait)
    where = journal_arg(args.journal)
    journal = open_journal(where, create=True) if where else None
    with inspecting(args.inspect, args.inspect_linger) as publish:
        job = GenerateJob(
            request,
            policy,
            config,
            faults,
            scale,
            out,
            log_events=level <= logging.INFO,
            journal=journal,
            publish=publish,
            source=None if video is None else video.source,
        )
        reporter = _pick_reporter(args.json, policy)
        reporter.begin()
        try:
            try:
                outcome, interrupted = trio.run(_generate, job, reporter)
            finally:
                reporter.end()
            # the journal closes (within --journal-wait) before the result line, which says
            # whether it is complete
            lost = None if journal is None else close_journal(journal, wait)
            trace = None
            if args.trace:
                from ..diagram import render_path

                trace = render_path(outcome.history, outcome.started)
            reporter.finish(outcome, trace, lost)
            if publish is not None:
                publish(outcome_json(outcome, journal_lost=lost))
        finally:
            if journal is not None:
                close_journal(journal, wait)
    return worst_exit(
        interrupted=interrupted or outcome.state == State.CANCELLED,
        failed=outcome.state == State.FAILED,
        unsaved=outcome.unsaved,
        incomplete=bool(lost),
    )
