"""The ``hybridgen`` command: ``generate``, ``serve`` and ``diagram``.

The command has no logic of its own: policies come from :mod:`hybridgen.policy`, the run from
:class:`hybridgen.driver.Client`, what it prints from the generation's events, the emulator from
:mod:`hybridgen.emulator`. Exit codes: 0 done, 1 failed, 2 bad usage or invalid configuration,
130 interrupted (Ctrl-C). The API token is never printed, in any mode or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
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


class JsonReporter(Reporter):
    """One JSON object per line on stdout; remarks and reasons on stderr."""

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line."""
        line: dict[str, Any]
        if isinstance(event, Transition):
            line = {
                "event": "transition",
                "id": event.generation_id,
                "from": str(event.source),
                "to": str(event.dest),
                "trigger": str(event.trigger),
                "at": _number(self.at(event)),
            }
        elif isinstance(event, Progress):
            line = {
                "event": "progress",
                "id": event.generation_id,
                "fraction": event.fraction,
                "via": event.via,
                "at": _number(self.at(event)),
            }
        else:
            line = {
                "event": "retry",
                "id": event.generation_id,
                "what": event.what,
                "attempt": event.attempt,
                "delay": _number(event.delay),
                "reason": event.reason,
                "at": _number(self.at(event)),
            }
        _out(json.dumps(line))

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


class RichReporter(Reporter):
    """A live status line on the terminal (stderr): state, channel, elapsed, progress, retries."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console: Console = Console(stderr=True)
        self.live: Live | None = None
        self.state = str(State.REQUESTED)
        self.channel = "-"
        self.fraction: float | None = None
        self.retries = 0
        self.clock0 = time.monotonic()
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

    def begin(self) -> None:
        """Start the live display."""
        from rich.live import Live

        self.clock0 = time.monotonic()
        self.live = Live(self, console=self.console, refresh_per_second=10, transient=True)
        self.live.start()

    def note(self, message: str) -> None:
        """A dim remark above the live line."""
        text = _redact(f"hybridgen: {message}")
        self.console.print(text, style="dim", markup=False, highlight=False)

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

    def end(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.stop()
            self.live = None

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


async def _watch_sigint(interrupt: _Interrupt, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            interrupt.hit = True
            if interrupt.gen is not None:
                interrupt.gen.cancel("interrupted (SIGINT)")
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


async def _generate_body(job: _Job, reporter: Reporter, interrupt: _Interrupt) -> Outcome:
    from .driver import Client
    from .transport import SuperDuperTransport

    async with contextlib.AsyncExitStack() as stack:
        config = job.config
        if config is None:
            from .emulator import running

            token = secrets.token_urlsafe(24)
            _note_secret(token)
            emulator = await stack.enter_async_context(
                running(job.faults, time_scale=job.time_scale, token=token)
            )
            reporter.note(
                f"SUPERDUPERAI_URL is not set; using the embedded emulator at {emulator.url}"
            )
            config = Config(url=emulator.url, token=token)
        transport = SuperDuperTransport(config)
        client = await stack.enter_async_context(Client(transport, policy=job.policy))
        client.subscribe(reporter.event)
        if job.log_events:
            client.subscribe(LoggingSubscriber())
        gen: Generation | None = None
        saved: str | None = None
        problem = ""
        with trio.CancelScope() as work:
            interrupt.scope = work
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, job.request)
                interrupt.gen = gen
                reporter.t0 = gen.core.started
            result = gen.result()
            if result.state is State.DONE and result.url:
                try:
                    with trio.fail_after(DOWNLOAD_TIMEOUT):
                        data = await transport.download(result.url)
                    await trio.to_thread.run_sync(_write_atomic, job.out, data)
                except trio.TooSlowError:
                    problem = f"the download took longer than {DOWNLOAD_TIMEOUT:g} s"
                except (HybridgenError, OSError) as exc:
                    problem = f"could not save the image: {exc}"
                else:
                    saved = os.fspath(job.out)
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
    embedded = "SUPERDUPERAI_URL" not in os.environ
    if not embedded and (args.gen_time is not None or args.ws_mode is not None):
        raise UsageError(
            "--gen-time and --ws-mode configure the embedded emulator; they cannot be used "
            "while SUPERDUPERAI_URL is set (unset it to use the emulator)"
        )
    request = ImageRequest(prompt=args.prompt)
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
    if out.is_dir():
        raise ConfigError("--out", f"{args.out} is a directory; give a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out", f"cannot create the directory {out.parent}: {exc}") from None
    job = _Job(request, policy, config, faults, scale, out, log_events=level <= logging.INFO)
    reporter = _pick_reporter(args.json)
    reporter.begin()
    try:
        outcome, interrupted = trio.run(_generate, job, reporter)
    finally:
        reporter.end()
    trace = None
    if args.trace:
        from .diagram import render_path

        trace = render_path(outcome.history, outcome.started)
    reporter.finish(outcome, trace)
    if interrupted or outcome.state == State.CANCELLED:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.path is not None else EXIT_FAILED


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
        help="generate one image and save it",
        description=(
            "Run one generation against SUPERDUPERAI_URL (token: SUPERDUPERAI_TOKEN), or, when "
            "SUPERDUPERAI_URL is unset, against an embedded emulator. Exit 0 done, 1 failed, "
            "2 bad usage or configuration, 130 interrupted."
        ),
    )
    gen.add_argument("prompt", metavar="PROMPT", help="what to draw")
    gen.add_argument("--out", "-o", required=True, metavar="PATH", help="where to save the image")
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
