"""The ``hybridgen`` command: ``generate`` (one or a batch), ``resume``, ``serve``, and more.

The command has no logic of its own: policies come from :mod:`hybridgen.policy`, the run from
:class:`hybridgen.driver.Client`, what it prints from the generation's events, the emulator from
:mod:`hybridgen.emulator`. Exit codes: 0 done, 1 failed, 2 bad usage or invalid configuration,
130 interrupted (Ctrl-C). The API token is never printed, in any mode or error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import re
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._version import __version__
from .api import Config, ImageRequest
from .emulator.model import POLL_FAULTS, WS_MODES
from .errors import ConfigError, HybridgenError, RequestError
from .events import Event, LoggingSubscriber, Progress, Retry, Transition
from .machine import State
from .policy import PRESETS, Policy

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from .driver import Generation
    from .emulator.model import Faults
    from .journal import Entry, SQLiteJournal
    from .transport import SuperDuperTransport

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "policy_from_options",
]

EXIT_OK: Final = 0
"""The generation is done and its image saved (or the server stopped cleanly)."""
EXIT_FAILED: Final = 1
"""The generation failed (the reason is on stderr), or the image could not be saved."""
EXIT_USAGE: Final = 2
"""Bad usage, or an invalid configuration or request (the message names the field)."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted by Ctrl-C (SIGINT); the generation was cancelled cleanly."""

EMBEDDED_GEN_TIME: Final = 5.0
"""The embedded emulator's generation time (seconds, before ``--time-scale``)."""
SERVE_GEN_TIME: Final = 35.0
"""``hybridgen serve``'s generation time (seconds, before ``--time-scale``)."""
DOWNLOAD_TIMEOUT: Final = 120.0
"""The longest the image download may take (not scaled)."""


_SECRETS: set[str] = set()
"""Texts (tokens) cut out of everything the command writes to stderr or stdout."""


class UsageError(Exception):
    """Bad usage the parser cannot see (e.g. emulator options while ``SUPERDUPERAI_URL`` is set)."""


def _redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def _note_secret(value: str | None) -> None:
    if value and len(value.strip()) >= 4:
        _SECRETS.add(value)
        _SECRETS.add(value.strip())


def _say(message: str) -> None:
    """One line on stderr, prefixed with the program name, secrets cut out."""
    sys.stderr.write(_redact(f"hybridgen: {message}") + "\n")
    sys.stderr.flush()


def _out(line: str) -> None:
    sys.stdout.write(_redact(line) + "\n")
    sys.stdout.flush()


# -- policy -----------------------------------------------------------------------------------


def policy_from_options(
    preset: str = "default",
    *,
    time_scale: float | None = None,
    ws_timeout: float | None = None,
    poll_interval: float | None = None,
    deadline: float | None = None,
) -> Policy:
    """The policy the command-line options ask for.

    Start from the ``preset`` (:data:`hybridgen.policy.PRESETS`), multiply its durations by
    ``time_scale``, then set the timings given explicitly (absolute seconds, never scaled). When an
    explicit ``poll_interval`` is longer than the preset's ``backoff_cap``, the cap is raised to it
    (the options have no cap of their own). Invalid values raise
    :class:`~hybridgen.errors.ConfigError` naming the field.
    """
    try:
        factory = PRESETS[preset]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise ConfigError("policy", f"must be one of {choices}; got {preset!r}") from None
    policy = factory()
    if time_scale is not None:
        policy = policy.scaled(time_scale)
    explicit: dict[str, Any] = {
        name: value
        for name, value in (
            ("ws_timeout", ws_timeout),
            ("poll_interval", poll_interval),
            ("deadline", deadline),
        )
        if value is not None
    }
    if poll_interval is not None and poll_interval > policy.backoff_cap:
        explicit["backoff_cap"] = poll_interval
    return policy.replace(**explicit)


def _scale(value: float | None) -> float:
    if value is None:
        return 1.0
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("time_scale", f"must be a positive number, got {value!r}")
    return value


def _absolute(name: str, value: float | None, scale: float) -> float | None:
    """An explicit emulator duration, pre-divided so that the model's scaling gives it back."""
    if value is None:
        return None
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(name, f"must be a number of seconds >= 0, got {value!r}")
    return value / scale


def _faults(**switches: Any) -> Faults:
    from .emulator.model import Faults

    try:
        return Faults(**{k: v for k, v in switches.items() if v is not None})
    except ValueError as exc:
        field, _, message = str(exc).partition(" ")
        raise ConfigError(field, message) from None


# -- logging ----------------------------------------------------------------------------------


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


class _Stderr:
    """Writes to whatever ``sys.stderr`` is now (rich's live display redirects it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _setup_logging(verbose: bool) -> int:
    """Log to stderr at DEBUG with ``-v`` or at ``HYBRIDGEN_LOG``'s level, else WARNING."""
    level = logging.WARNING
    raw = os.environ.get("HYBRIDGEN_LOG", "").strip()
    if verbose:
        level = logging.DEBUG
    elif raw:
        named = logging.getLevelName(raw.upper())
        if not isinstance(named, int):
            raise ConfigError(
                "HYBRIDGEN_LOG", f"must be DEBUG, INFO, WARNING or ERROR, got {raw!r}"
            )
        level = named
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return level


# -- reporting ------------------------------------------------------------------------------


@attrs.define
class Outcome:
    """How ``generate`` ended, as reported in its last line."""

    state: str
    generation_id: str | None = None
    channel: str | None = None
    url: str | None = None
    path: str | None = None
    elapsed: float = 0.0
    reason: str = ""
    history: list[Transition] = attrs.field(factory=list)
    started: float | None = None


class Reporter:
    """Shows one generation's events and its outcome (base: plain lines on stderr)."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def at(self, event: Event) -> float:
        """Seconds from the start request to ``event``."""
        if self.t0 is None:
            self.t0 = event.monotonic
        return event.monotonic - self.t0

    def begin(self) -> None:
        """Called once before the run."""

    def note(self, message: str) -> None:
        """A side remark (e.g. the embedded emulator's URL), on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """One event of the generation."""
        if isinstance(event, Transition):
            detail = f": {event.detail}" if event.detail else ""
            sys.stderr.write(
                _redact(
                    f"{self.at(event):7.2f}s  {event.source} -> {event.dest} "
                    f"({event.trigger}){detail}\n"
                )
            )
            sys.stderr.flush()

    def end(self) -> None:
        """Called once after the run, before :meth:`finish` (also on errors)."""

    def finish(self, outcome: Outcome, trace: str | None) -> None:
        """Show the outcome: the saved path on stdout, a failure's reason on stderr."""
        if outcome.path is not None:
            _out(outcome.path)
        _explain(outcome)
        if trace is not None:
            sys.stdout.write(trace)
            sys.stdout.flush()


def _explain(outcome: Outcome) -> None:
    if outcome.state == State.FAILED:
        _say(f"failed: {outcome.reason}")
    elif outcome.state == State.CANCELLED:
        _say(f"cancelled: {outcome.reason}")
    elif outcome.path is None:
        _say(f"the result was not saved: {outcome.reason}")


def _number(value: float) -> float:
    return round(value, 6)


def _event_json(event: Event, at: float) -> dict[str, Any]:
    """The ``--json`` line of a transition, progress or retry event."""
    if isinstance(event, Transition):
        return {
            "event": "transition",
            "id": event.generation_id,
            "from": str(event.source),
            "to": str(event.dest),
            "trigger": str(event.trigger),
            "at": _number(at),
        }
    if isinstance(event, Progress):
        return {
            "event": "progress",
            "id": event.generation_id,
            "fraction": event.fraction,
            "via": event.via,
            "at": _number(at),
        }
    return {
        "event": "retry",
        "id": event.generation_id,
        "what": event.what,
        "attempt": event.attempt,
        "delay": _number(event.delay),
        "reason": event.reason,
        "at": _number(at),
    }


class JsonReporter(Reporter):
    """One JSON object per line on stdout; remarks and reasons on stderr."""

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line."""
        _out(json.dumps(_event_json(event, self.at(event))))

    def finish(self, outcome: Outcome, trace: str | None) -> None:
        """Print the result line (the last on stdout); the trace goes to stderr."""
        _out(
            json.dumps(
                {
                    "event": "result",
                    "id": outcome.generation_id,
                    "state": outcome.state,
                    "channel": outcome.channel,
                    "url": outcome.url,
                    "path": outcome.path,
                    "elapsed": _number(outcome.elapsed),
                    "reason": outcome.reason or None,
                }
            )
        )
        _explain(outcome)
        if trace is not None:
            sys.stderr.write(trace)
            sys.stderr.flush()


_CHANNEL_OF_STATE: Final = {
    State.REQUESTED: "-",
    State.AWAITING_WS: "websocket",
    State.POLLING: "polling",
}


class _LiveView:
    """A rich live view on stderr, redrawn from ``__rich__``; remarks print above it."""

    def _init_live(self) -> None:
        from rich.console import Console

        self.console: Console = Console(stderr=True)
        self.live: Live | None = None
        self.clock0 = time.monotonic()

    def __rich__(self) -> RenderableType:
        raise NotImplementedError

    def begin(self) -> None:
        """Start the live display."""
        from rich.live import Live

        self.clock0 = time.monotonic()
        # stdout is left alone: saved paths go there when it is not a terminal
        self.live = Live(
            self,
            console=self.console,
            refresh_per_second=10,
            transient=True,
            redirect_stdout=False,
        )
        self.live.start()

    def note(self, message: str) -> None:
        """A dim remark above the live view."""
        text = _redact(f"hybridgen: {message}")
        self.console.print(text, style="dim", markup=False, highlight=False)

    def end(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.stop()
            self.live = None


class RichReporter(_LiveView, Reporter):
    """A live status line on the terminal (stderr): state, channel, elapsed, progress, retries."""

    def __init__(self) -> None:
        super().__init__()
        self._init_live()
        self.state = str(State.REQUESTED)
        self.channel = "-"
        self.fraction: float | None = None
        self.retries = 0
        self.stopped: float | None = None

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        percent = "  ?%" if self.fraction is None else f"{self.fraction * 100:3.0f}%"
        now = time.monotonic() if self.stopped is None else self.stopped
        grid.add_row(
            Spinner("dots", style="cyan"),
            f"[bold]{self.state:<11}[/]",
            f"channel [cyan]{self.channel:<9}[/]",
            f"{now - self.clock0:6.1f}s",
            ProgressBar(
                total=None if self.fraction is None else 1.0,
                completed=self.fraction or 0.0,
                width=20,
            ),
            percent,
            f"retries {self.retries}",
        )
        return grid

    def event(self, event: Event) -> None:
        """Update the live line; print transitions above it."""
        if isinstance(event, Transition):
            self.state = str(event.dest)
            self.channel = event.channel or _CHANNEL_OF_STATE.get(event.dest, self.channel)
            if event.terminal:
                self.stopped = time.monotonic()
                if event.dest is State.DONE:
                    self.fraction = 1.0
            detail = f": {event.detail}" if event.detail else ""
            self.console.print(
                _redact(
                    f"{self.at(event):7.2f}s  {event.source} -> {event.dest} "
                    f"({event.trigger}){detail}"
                ),
                markup=False,
                highlight=False,
            )
        elif isinstance(event, Progress):
            self.fraction = event.fraction
        elif isinstance(event, Retry):
            self.retries += 1

    def finish(self, outcome: Outcome, trace: str | None) -> None:
        """A final line naming the saved path (and the path on stdout when it is not a terminal)."""
        if outcome.path is not None:
            self.console.print(
                f"[green]done[/] via {outcome.channel} in {outcome.elapsed:.2f}s; "
                f"saved [bold]{_redact(outcome.path)}[/]",
                highlight=False,
            )
            if not sys.stdout.isatty():
                _out(outcome.path)
        else:
            _explain(outcome)
        if trace is not None:
            sys.stdout.write(trace)
            sys.stdout.flush()


# -- generate -----------------------------------------------------------------------------------


_EARLY_INTERRUPT: Final = "interrupted (SIGINT) before the generation started"


@attrs.define
class _Interrupt:
    """What a Ctrl-C cancels: the generation, and the scope of the work in progress."""

    outer: trio.CancelScope
    scope: trio.CancelScope | None = None
    gen: Generation | None = None
    hit: bool = False
    gens: list[Generation] = attrs.field(factory=list)
    """A batch's started generations (every one still running is cancelled)."""


async def _watch_sigint(interrupt: _Interrupt, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            interrupt.hit = True
            if interrupt.gen is not None:
                interrupt.gen.cancel("interrupted (SIGINT)")
            for gen in interrupt.gens:
                gen.cancel("interrupted (SIGINT)")
            (interrupt.scope or interrupt.outer).cancel()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@attrs.frozen
class _Job:
    request: ImageRequest
    policy: Policy
    config: Config | None
    faults: Faults | None
    time_scale: float
    out: Path
    log_events: bool
    journal: SQLiteJournal | None = None


async def _generate(job: _Job, reporter: Reporter) -> tuple[Outcome, bool]:
    outcome: Outcome | None = None
    async with trio.open_nursery() as watchers:
        interrupt = _Interrupt(watchers.cancel_scope)
        await watchers.start(_watch_sigint, interrupt)
        try:
            outcome = await _generate_body(job, reporter, interrupt)
        finally:
            watchers.cancel_scope.cancel()
    if outcome is None:
        outcome = Outcome(state=str(State.CANCELLED), reason=_EARLY_INTERRUPT)
    return outcome, interrupt.hit


async def _open_config(
    config: Config | None,
    faults: Faults | None,
    time_scale: float,
    stack: contextlib.AsyncExitStack,
    note: Callable[[str], None],
) -> Config:
    """``config``, or (when it is ``None``) that of an embedded emulator started on ``stack``."""
    if config is not None:
        return config
    from .emulator import running

    token = secrets.token_urlsafe(24)
    _note_secret(token)
    emulator = await stack.enter_async_context(running(faults, time_scale=time_scale, token=token))
    note(f"SUPERDUPERAI_URL is not set; using the embedded emulator at {emulator.url}")
    return Config(url=emulator.url, token=token)


async def _save(transport: SuperDuperTransport, url: str, out: Path) -> tuple[str | None, str]:
    """Download ``url`` to ``out`` atomically: ``(path, "")``, or ``(None, why not)``."""
    try:
        with trio.fail_after(DOWNLOAD_TIMEOUT):
            data = await transport.download(url)
        await trio.to_thread.run_sync(_write_atomic, out, data)
    except trio.TooSlowError:
        return None, f"the download took longer than {DOWNLOAD_TIMEOUT:g} s"
    except (HybridgenError, OSError) as exc:
        return None, f"could not save the image: {exc}"
    return os.fspath(out), ""


def _journal_meta(out: Path) -> dict[str, str]:
    return {"out": os.path.abspath(out)}


async def _generate_body(job: _Job, reporter: Reporter, interrupt: _Interrupt) -> Outcome:
    from .driver import Client
    from .transport import SuperDuperTransport

    async with contextlib.AsyncExitStack() as stack:
        config = await _open_config(job.config, job.faults, job.time_scale, stack, reporter.note)
        transport = SuperDuperTransport(config)
        client = await stack.enter_async_context(
            Client(transport, policy=job.policy, journal=job.journal)
        )
        client.subscribe(reporter.event)
        if job.log_events:
            client.subscribe(LoggingSubscriber())
        gen: Generation | None = None
        saved: str | None = None
        problem = ""
        with trio.CancelScope() as work:
            interrupt.scope = work
            async with trio.open_nursery() as nursery:
                meta = _journal_meta(job.out) if job.journal is not None else None
                gen = await nursery.start(functools.partial(client.start, meta=meta), job.request)
                interrupt.gen = gen
                reporter.t0 = gen.core.started
            result = gen.result()
            if result.state is State.DONE and result.url:
                saved, problem = await _save(transport, result.url, job.out)
                if saved is not None and job.journal is not None:
                    job.journal.delivered(gen.id, saved)
        interrupt.scope = None
        if gen is None:
            return Outcome(state=str(State.CANCELLED), reason=_EARLY_INTERRUPT)
        result = gen.result()
        if result.state is State.DONE and saved is None and not problem:
            problem = "interrupted (SIGINT) during the download"
        return Outcome(
            state=str(result.state),
            generation_id=result.generation_id,
            channel=result.channel,
            url=result.url,
            path=saved,
            elapsed=result.elapsed,
            reason=result.reason or problem,
            history=list(gen.history),
            started=gen.core.started,
        )


def _pick_reporter(as_json: bool) -> Reporter:
    if as_json:
        return JsonReporter()
    if sys.stderr.isatty():
        return RichReporter()
    return Reporter()


def _cmd_generate(args: argparse.Namespace) -> int:
    level = _setup_logging(args.verbose)
    batch = args.batch is not None
    if batch == (args.prompt is not None):
        raise UsageError("give exactly one of PROMPT or --batch FILE")
    if not batch and (args.concurrency is not None or args.fail_fast):
        raise UsageError("--concurrency and --fail-fast go with --batch FILE")
    if batch and args.trace:
        raise UsageError("--trace draws one generation's path; it cannot be used with --batch")
    embedded = "SUPERDUPERAI_URL" not in os.environ
    if not embedded and (args.gen_time is not None or args.ws_mode is not None):
        raise UsageError(
            "--gen-time and --ws-mode configure the embedded emulator; they cannot be used "
            "while SUPERDUPERAI_URL is set (unset it to use the emulator)"
        )
    request = None if batch else ImageRequest(prompt=args.prompt)
    policy = policy_from_options(
        args.policy,
        time_scale=args.time_scale,
        ws_timeout=args.ws_timeout,
        poll_interval=args.poll_interval,
        deadline=args.deadline,
    )
    scale = _scale(args.time_scale)
    config = None if embedded else Config.from_env()
    faults = None
    if embedded:
        gen_time = _absolute("gen_time", args.gen_time, scale)
        faults = _faults(
            gen_time=EMBEDDED_GEN_TIME if gen_time is None else gen_time, ws_mode=args.ws_mode
        )
    out = Path(args.out)
    if request is None:
        base = _Job(ImageRequest(prompt="-"), policy, config, faults, scale, out, log_events=False)
        return _cmd_batch(args, level, base)
    if out.is_dir():
        raise ConfigError("--out", f"{args.out} is a directory; give a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out", f"cannot create the directory {out.parent}: {exc}") from None
    journal = _open_journal(args.journal, create=True) if args.journal else None
    job = _Job(
        request,
        policy,
        config,
        faults,
        scale,
        out,
        log_events=level <= logging.INFO,
        journal=journal,
    )
    reporter = _pick_reporter(args.json)
    reporter.begin()
    try:
        outcome, interrupted = trio.run(_generate, job, reporter)
    finally:
        reporter.end()
        if journal is not None:
            journal.close()
    trace = None
    if args.trace:
        from .diagram import render_path

        trace = render_path(outcome.history, outcome.started)
    reporter.finish(outcome, trace)
    if interrupted or outcome.state == State.CANCELLED:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.path is not None else EXIT_FAILED


# -- batches and resume -------------------------------------------------------------------------


_NOT_SAVED: Final = "interrupted (SIGINT) during the download"
_NOT_RUN: Final = "not run: interrupted (SIGINT)"
_NO_FILE_ID: Final = "interrupted before the server named the file; start it again"


def _slug(prompt: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: lower-case ASCII words joined by dashes."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].strip("-")
    return slug or "image"


@attrs.frozen
class _Item:
    """One prompt of a batch (or one journal entry to resume)."""

    index: int
    """Its position, from 1 (the ``NNN`` of its file name)."""
    prompt: str
    out: Path | None
    """Where its image goes (``None``: a journal entry that does not say)."""
    request: ImageRequest | None = None
    entry: Entry | None = None


def _read_batch(source: str, out_dir: Path) -> list[_Item]:
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
            raise UsageError(f"--batch {label} line {number}: prompt: is not UTF-8 text") from None
        if not text:
            continue
        try:
            requests.append(ImageRequest(prompt=text))
        except RequestError as exc:
            raise UsageError(f"--batch {label} line {number}: {exc}") from None
    if not requests:
        raise UsageError(f"--batch {label}: no prompts (every line is empty)")
    width = max(3, len(str(len(requests))))
    return [
        _Item(i, r.prompt, out_dir / f"{i:0{width}d}-{_slug(r.prompt)}.png", request=r)
        for i, r in enumerate(requests, start=1)
    ]


def _item_explanation(outcome: Outcome) -> str:
    if outcome.state == State.FAILED:
        return f"failed: {outcome.reason}"
    if outcome.state == State.CANCELLED:
        return f"cancelled: {outcome.reason}"
    return f"the result was not saved: {outcome.reason}"


def _tally(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Items done (and saved), failed (or done but not saved) and cancelled."""
    done = sum(1 for o in outcomes if o.state == State.DONE and o.path is not None)
    cancelled = sum(1 for o in outcomes if o.state == State.CANCELLED)
    return {"done": done, "failed": len(outcomes) - done - cancelled, "cancelled": cancelled}


class _BatchReporter:
    """Shows the events of many generations, each item's outcome and the totals (plain lines)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.t0: dict[str, float] = {}
        self.index_of: dict[str, int] = {}

    def started(self, index: int, gen: Generation) -> None:
        """Item ``index`` runs as ``gen``."""
        self.t0[gen.id] = gen.core.started
        self.index_of[gen.id] = index

    def at(self, event: Event) -> float:
        """Seconds from the item's start request to ``event``."""
        return event.monotonic - self.t0.setdefault(event.generation_id, event.monotonic)

    def begin(self) -> None:
        """Called once before the run."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """One event of one item: its transitions on stderr."""
        if isinstance(event, Transition):
            index = self.index_of.get(event.generation_id, "?")
            detail = f": {event.detail}" if event.detail else ""
            sys.stderr.write(
                _redact(
                    f"{self.at(event):7.2f}s  [{index}] {event.source} -> {event.dest} "
                    f"({event.trigger}){detail}\n"
                )
            )
            sys.stderr.flush()

    def item(self, item: _Item, outcome: Outcome) -> None:
        """One item ended: its saved path on stdout, or why not on stderr."""
        if outcome.path is not None:
            _out(outcome.path)
        else:
            _say(f"[{item.index}] {_item_explanation(outcome)}")

    def end(self) -> None:
        """Called once after the run (also on errors)."""

    def summary(self, tally: dict[str, int], elapsed: float) -> None:
        """The totals, on stderr."""
        _say(
            f"{tally['done']} done, {tally['failed']} failed, {tally['cancelled']} cancelled "
            f"in {elapsed:.2f}s"
        )


class _JsonBatchReporter(_BatchReporter):
    """``--json``: event lines, a result line per item as it ends, a last ``batch`` line."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line (with the item's ``id``)."""
        _out(json.dumps(_event_json(event, self.at(event))))

    def item(self, item: _Item, outcome: Outcome) -> None:
        """Print the item's result line; a failure's reason also on stderr."""
        _out(
            json.dumps(
                {
                    "event": "result",
                    "index": item.index,
                    "prompt": item.prompt,
                    "id": outcome.generation_id,
                    "state": outcome.state,
                    "channel": outcome.channel,
                    "url": outcome.url,
                    "path": outcome.path,
                    "elapsed": _number(outcome.elapsed),
                    "reason": outcome.reason or None,
                }
            )
        )
        if outcome.path is None:
            _say(f"[{item.index}] {_item_explanation(outcome)}")

    def summary(self, tally: dict[str, int], elapsed: float) -> None:
        """Print the last line: the totals."""
        _out(json.dumps({"event": "batch", **tally, "elapsed": _number(elapsed)}))


class _RichBatchReporter(_LiveView, _BatchReporter):
    """On a terminal: a live aggregate view (items per state, progress, retries) on stderr."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self._init_live()
        self.states: dict[str, str] = {}
        self.ended: list[Outcome] = []
        self.retries = 0

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        running: dict[str, int] = {}
        for state in self.states.values():
            if state not in (State.DONE, State.FAILED, State.CANCELLED):
                running[state] = running.get(state, 0) + 1
        tally = _tally(self.ended)
        queued = self.total - len(self.states) - sum(1 for o in self.ended if not o.generation_id)
        live = " ".join(f"{state} {n}" for state, n in sorted(running.items())) or "-"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            Spinner("dots", style="cyan"),
            f"{len(self.ended)}/{self.total}",
            ProgressBar(total=self.total, completed=len(self.ended), width=20),
            # markup parsed here: a console.print(markup=False) also renders this view
            Text.from_markup(
                f"[green]done {tally['done']}[/] [red]failed {tally['failed']}[/] "
                f"cancelled {tally['cancelled']}"
            ),
            f"queued {max(queued, 0)}",
            f"running: {live}",
            f"retries {self.retries}",
            f"{time.monotonic() - self.clock0:6.1f}s",
        )
        return grid

    def event(self, event: Event) -> None:
        """Update the counts."""
        if isinstance(event, Transition):
            self.states[event.generation_id] = str(event.dest)
        elif isinstance(event, Retry):
            self.retries += 1

    def item(self, item: _Item, outcome: Outcome) -> None:
        """One line above the live view (and the path on stdout when it is not a terminal)."""
        self.ended.append(outcome)
        if outcome.path is not None:
            text = (
                f"[{item.index}] done via {outcome.channel} in {outcome.elapsed:.2f}s; "
                f"saved {outcome.path}"
            )
            self.console.print(_redact(text), style="green", markup=False, highlight=False)
            if not sys.stdout.isatty():
                _out(outcome.path)
        else:
            text = f"[{item.index}] {_item_explanation(outcome)}"
            self.console.print(_redact(text), style="red", markup=False, highlight=False)

    def summary(self, tally: dict[str, int], elapsed: float) -> None:
        """The totals."""
        self.console.print(
            f"{tally['done']} done, {tally['failed']} failed, {tally['cancelled']} cancelled "
            f"in {elapsed:.2f}s",
            markup=False,
            highlight=False,
        )


def _pick_batch_reporter(as_json: bool, total: int) -> _BatchReporter:
    if as_json:
        return _JsonBatchReporter(total)
    if sys.stderr.isatty():
        return _RichBatchReporter(total)
    return _BatchReporter(total)


@attrs.define
class _Run:
    """The state of a batch or resume run: what each item ended as, shared with the reporter."""

    items: list[_Item]
    reporter: _BatchReporter
    journal: SQLiteJournal | None
    outcomes: dict[int, Outcome] = attrs.field(factory=dict)
    gens: dict[int, Generation] = attrs.field(factory=dict)

    def started(self, item: _Item, gen: Generation, interrupt: _Interrupt) -> None:
        self.gens[item.index] = gen
        interrupt.gens.append(gen)
        self.reporter.started(item.index, gen)

    def ended(self, item: _Item, outcome: Outcome) -> None:
        if item.index not in self.outcomes:
            self.outcomes[item.index] = outcome
            self.reporter.item(item, outcome)

    async def deliver(self, transport: SuperDuperTransport, item: _Item, gen: Generation) -> None:
        """Wait for ``gen``, save its image to the item's path, report the item."""
        result = await gen.wait()
        saved, problem = None, "the journal does not say where to save it (no 'out')"
        if result.state is State.DONE and result.url and item.out is not None:
            saved, problem = await _save(transport, result.url, item.out)
            if saved is not None and self.journal is not None:
                self.journal.delivered(gen.id, saved)
        self.ended(item, _outcome_of(gen, saved, problem))

    def close(self, default_reason: str) -> list[Outcome]:
        """Report every item not reported yet (interrupted or never started); all outcomes."""
        for item in self.items:
            gen = self.gens.get(item.index)
            if gen is not None:
                self.ended(item, _outcome_of(gen, None, _NOT_SAVED))
            else:
                self.ended(item, Outcome(state=str(State.CANCELLED), reason=default_reason))
        return [self.outcomes[item.index] for item in self.items]


def _outcome_of(gen: Generation, saved: str | None, problem: str) -> Outcome:
    result = gen.result()
    return Outcome(
        state=str(result.state),
        generation_id=result.generation_id,
        channel=result.channel,
        url=result.url,
        path=saved,
        elapsed=result.elapsed,
        reason=result.reason or ("" if saved is not None else problem),
    )


@attrs.frozen
class _BatchJob:
    items: list[_Item]
    policy: Policy
    config: Config | None
    faults: Faults | None
    time_scale: float
    concurrency: int
    fail_fast: bool
    log_events: bool
    journal: SQLiteJournal | None = None


async def _with_sigint(
    body: Callable[[_Interrupt], Any],
) -> bool:
    """Run ``body(interrupt)`` with Ctrl-C cancelling its generations; whether Ctrl-C came."""
    async with trio.open_nursery() as watchers:
        interrupt = _Interrupt(watchers.cancel_scope)
        await watchers.start(_watch_sigint, interrupt)
        try:
            await body(interrupt)
        finally:
            watchers.cancel_scope.cancel()
    return interrupt.hit


async def _batch_body(job: _BatchJob, run: _Run, interrupt: _Interrupt) -> None:
    from .batch import run_batch
    from .driver import Client
    from .transport import SuperDuperTransport

    reporter = run.reporter
    async with contextlib.AsyncExitStack() as stack:
        config = await _open_config(job.config, job.faults, job.time_scale, stack, reporter.note)
        transport = SuperDuperTransport(config)  # one connection pool for every item
        client = await stack.enter_async_context(
            Client(transport, policy=job.policy, journal=job.journal)
        )
        client.subscribe(reporter.event)
        if job.log_events:
            client.subscribe(LoggingSubscriber())
        metas = None
        if job.journal is not None:
            metas = [_journal_meta(item.out) for item in job.items if item.out is not None]
        with trio.CancelScope() as work:
            interrupt.scope = work
            async with trio.open_nursery() as savers:

                def on_start(position: int, gen: Generation) -> None:
                    item = job.items[position]
                    run.started(item, gen, interrupt)
                    savers.start_soon(run.deliver, transport, item, gen)

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


def _batch_exit(outcomes: Sequence[Outcome], interrupted: bool) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    tally = _tally(outcomes)
    return EXIT_OK if tally["done"] == len(outcomes) else EXIT_FAILED


def _run_items(
    items: list[_Item],
    reporter: _BatchReporter,
    journal: SQLiteJournal | None,
    body: Callable[[_Run, _Interrupt], Any],
) -> int:
    run = _Run(items, reporter, journal)
    t0 = time.monotonic()
    reporter.begin()
    try:
        interrupted = trio.run(_with_sigint, functools.partial(body, run))
        outcomes = run.close(_NOT_RUN)
    finally:
        reporter.end()
    reporter.summary(_tally(outcomes), time.monotonic() - t0)
    return _batch_exit(outcomes, interrupted)


def _open_journal(path: str, *, create: bool) -> SQLiteJournal:
    from .journal import SQLiteJournal

    target = Path(path)
    if not create and not target.is_file():
        raise ConfigError("--journal", f"{path} does not exist (or is not a file)")
    try:
        if create:
            target.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteJournal(target)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError("--journal", f"cannot open {path} as a journal: {exc}") from None


def _cmd_batch(args: argparse.Namespace, level: int, base: _Job) -> int:
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("--out", f"{args.out} is not a directory; with --batch, give one")
    concurrency = 4 if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise ConfigError("--concurrency", f"must be a whole number >= 1, got {concurrency}")
    items = _read_batch(args.batch, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out", f"cannot create the directory {out_dir}: {exc}") from None
    journal = _open_journal(args.journal, create=True) if args.journal else None
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
        return _run_items(
            items,
            _pick_batch_reporter(args.json, len(items)),
            journal,
            lambda run, interrupt: _batch_body(job, run, interrupt),
        )
    finally:
        if journal is not None:
            journal.close()


# -- resume -------------------------------------------------------------------------------------


async def _resume_body(
    config: Config,
    journal: SQLiteJournal,
    concurrency: int,
    log_events: bool,
    run: _Run,
    interrupt: _Interrupt,
) -> None:
    from .driver import Client
    from .transport import SuperDuperTransport

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
                        saved, problem = await _save(transport, entry.url, item.out)
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
                await run.deliver(transport, item, gen)

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
    journal = _open_journal(args.journal, create=False)
    try:
        try:
            entries = journal.pending()
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise ConfigError("--journal", f"cannot read {args.journal}: {exc}") from None
        items: list[_Item] = []
        for index, entry in enumerate(entries, start=1):
            out = entry.meta.get("out")
            path = None if out is None else Path(out)
            items.append(_Item(index, entry.request.prompt, path, entry=entry))
        reporter = _pick_batch_reporter(args.json, len(items))
        if not items:
            reporter.note(f"nothing to resume in {args.journal}")
        return _run_items(
            items,
            reporter,
            journal,
            lambda run, interrupt: _resume_body(
                config, journal, args.concurrency, level <= logging.INFO, run, interrupt
            ),
        )
    finally:
        journal.close()


# -- serve ------------------------------------------------------------------------------------


async def _serve(faults: Faults, scale: float, token: str | None, host: str, port: int) -> int:
    from .emulator import running

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with running(faults, time_scale=scale, token=token, host=host, port=port) as emulator:
            _out(emulator.url)
            auth = "requires a bearer token" if token else "accepts any token"
            _say(
                f"emulator serving at {emulator.url} (ws-mode {faults.ws_mode}, generation "
                f"{faults.gen_time * scale:g} s, {auth}); Ctrl-C stops it"
            )
            async for signum in signals:
                _say(f"{signal.Signals(signum).name}: stopping")
                break
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    token = args.token or None
    _note_secret(token)
    scale = _scale(args.time_scale)
    gen_time = _absolute("gen_time", args.gen_time, scale)
    faults = _faults(
        gen_time=SERVE_GEN_TIME if gen_time is None else gen_time,
        ws_mode=args.ws_mode,
        poll_fault=args.poll_fault,
        poll_faults=args.poll_faults,
        retry_after=_absolute("retry_after", args.retry_after, scale),
    )
    return trio.run(_serve, faults, scale, token, args.host, args.port)


# -- diagram ----------------------------------------------------------------------------------


def _cmd_diagram(args: argparse.Namespace) -> int:
    from .diagram import SUFFIXES, DiagramError, GraphvizNotFound, render

    fmt = args.format
    if fmt is None:  # from the output's suffix (machine.svg), else Mermaid
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = next((f for f, s in SUFFIXES.items() if s == suffix), "mermaid")
    try:
        text = render(fmt)
    except GraphvizNotFound as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except DiagramError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write_atomic(Path(args.output), text.encode("utf-8"))
        _say(f"wrote {args.output}")
    return EXIT_OK


# -- bench --------------------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BENCHMARKS, run_names

    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return run_names(args.names, args.smoke, args.plot)


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hybridgen`` command."""
    parser = argparse.ArgumentParser(
        prog="hybridgen",
        description="Get the result of a remote image generation by WebSocket push and polling.",
    )
    parser.add_argument("--version", action="version", version=f"hybridgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging to stderr (also: HYBRIDGEN_LOG=DEBUG)",
    )

    gen = sub.add_parser(
        "generate",
        parents=[verbose],
        help="generate one image (or a batch) and save it",
        description=(
            "Run one generation (or, with --batch, one per line of a file) against "
            "SUPERDUPERAI_URL (token: SUPERDUPERAI_TOKEN), or, when SUPERDUPERAI_URL is unset, "
            "against an embedded emulator. Exit 0 done, 1 failed, 2 bad usage or configuration, "
            "130 interrupted."
        ),
    )
    gen.add_argument("prompt", metavar="PROMPT", nargs="?", help="what to draw")
    gen.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="PATH",
        help="where to save the image (with --batch: a directory)",
    )
    gen.add_argument(
        "--batch",
        metavar="FILE",
        help="one prompt per non-empty line of FILE ('-': stdin), saved as DIR/NNN-<slug>.png",
    )
    gen.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="with --batch: at most N generations at a time (default 4)",
    )
    gen.add_argument(
        "--fail-fast",
        action="store_true",
        help="with --batch: the first failed item cancels the others",
    )
    gen.add_argument(
        "--journal",
        metavar="PATH",
        help="record every generation in this SQLite journal (see: hybridgen resume)",
    )
    gen.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line on stdout; the last is the result",
    )
    gen.add_argument(
        "--policy",
        choices=tuple(PRESETS),
        default="default",
        help="timing preset (default: %(default)s; seed: the seed client's behaviour)",
    )
    gen.add_argument("--ws-timeout", type=float, metavar="S", help="seconds before polling starts")
    gen.add_argument("--poll-interval", type=float, metavar="S", help="seconds between polls")
    gen.add_argument("--deadline", type=float, metavar="S", help="seconds before giving up")
    gen.add_argument(
        "--time-scale",
        type=float,
        metavar="X",
        help="multiply every timing not given explicitly (preset, embedded emulator) by X",
    )
    gen.add_argument(
        "--gen-time",
        type=float,
        metavar="S",
        help=f"embedded emulator: generation time (default {EMBEDDED_GEN_TIME:g} s, scaled)",
    )
    gen.add_argument("--ws-mode", choices=WS_MODES, help="embedded emulator: WebSocket behaviour")
    gen.add_argument(
        "--trace",
        action="store_true",
        help="after the result, print the path taken as a Mermaid diagram",
    )
    gen.set_defaults(func=_cmd_generate)

    resume = sub.add_parser(
        "resume",
        parents=[verbose],
        help="finish the generations a journal left pending",
        description=(
            "Finish every pending generation of a --journal (the process that started them died): "
            "save the done ones, follow the running ones by file id on SUPERDUPERAI_URL without "
            "starting new jobs. Exit 0 all saved, 1 some failed, 2 bad usage, 130 interrupted."
        ),
    )
    resume.add_argument("--journal", required=True, metavar="PATH", help="the journal to finish")
    resume.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line on stdout; the last is the totals",
    )
    resume.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="at most N generations at a time (default %(default)s)",
    )
    resume.set_defaults(func=_cmd_resume)

    serve = sub.add_parser(
        "serve",
        parents=[verbose],
        help="run the emulator until Ctrl-C",
        description=(
            "Run the SuperDuperAI emulator on loopback. The first line of stdout is its base URL. "
            "Durations given explicitly are absolute; --time-scale scales the others."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    serve.add_argument("--ws-mode", choices=WS_MODES, default="normal", help="WebSocket behaviour")
    serve.add_argument(
        "--gen-time",
        type=float,
        metavar="S",
        help=f"generation time (default {SERVE_GEN_TIME:g} s, scaled)",
    )
    serve.add_argument("--time-scale", type=float, metavar="X", help="multiply default durations")
    serve.add_argument("--token", metavar="T", help="require 'Authorization: Bearer T'")
    serve.add_argument(
        "--poll-fault", choices=POLL_FAULTS, help="what polls get instead of a reply"
    )
    serve.add_argument(
        "--poll-faults", type=int, metavar="N", help="only the first N polls of each job fault"
    )
    serve.add_argument(
        "--retry-after", type=float, metavar="S", help="Retry-After sent with 429/503 faults"
    )
    serve.set_defaults(func=_cmd_serve)

    diagram = sub.add_parser(
        "diagram",
        help="draw the state machine (Mermaid, DOT or SVG)",
        description=(
            "Draw the generation state machine from its live definition. Mermaid and DOT need "
            "nothing; SVG runs Graphviz's dot program (exit 2 with install hints if it is missing)."
        ),
    )
    diagram.add_argument(
        "--format",
        "-f",
        choices=("mermaid", "dot", "svg"),
        help="default: from the --output suffix (.mmd, .dot, .svg), else mermaid",
    )
    diagram.add_argument("--output", "-o", metavar="PATH", help="write to PATH instead of stdout")
    diagram.set_defaults(func=_cmd_diagram)

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks (JSON lines on stdout, tables on stderr)",
        description=(
            "Run the named benchmarks (default: all). Each figure is one JSON object per line on "
            "stdout (name, value, unit, baseline, ratio); see docs/performance.md."
        ),
    )
    from .bench import add_arguments as _bench_arguments

    _bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (argparse exits with 2 on bad usage itself)."""
    _note_secret(os.environ.get("SUPERDUPERAI_TOKEN"))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ConfigError, RequestError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except (HybridgenError, OSError) as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except BaseException as exc:
        if _only_interrupts(exc):
            _say("interrupted")
            return EXIT_INTERRUPTED
        raise
