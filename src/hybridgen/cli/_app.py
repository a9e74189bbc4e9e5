"""The argument parser and ``main``: which command runs, and how errors become exit codes.

Every subcommand's options are declared here and dispatched to its ``_cmd_*`` function; ``main``
maps :class:`UsageError`, :class:`~hybridgen.errors.ConfigError` and
:class:`~hybridgen.errors.RequestError` to exit 2, other library and OS errors to 1, Ctrl-C to
130. No command logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._version import __version__
from ..emulator.faults import (
    FILE_FAULTS,
    FILE_MODES,
    FILE_REDIRECTS,
    POLL_FAULTS,
    POLL_REDIRECTS,
    REDIRECT_TARGETS,
    SSE_MODES,
    START_FAULTS,
    WS_MODES,
)
from ..errors import AuthError, ConfigError, HybridgenError, MissingExtra, RequestError
from ..policy import PRESETS
from ..wire import BODY_FORMS
from ._exit import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    TOKEN_REJECTED,
    UsageError,
    sentence,
)
from ._options import EMULATOR_GEN_TIME, EMULATOR_SSE_MODE, EMULATOR_WS_MODE
from ._output import fit, note_secret, say


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``name`` of ``module`` (a sibling), imported only when that command runs:
    ``--help`` and one command never pay for the others (the client, the emulator's server)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(getattr(importlib.import_module(f"{__package__}.{module}"), name)(args))
        except BaseExceptionGroup as group:  # a server or view loaded inside trio.run
            missing, rest = group.split(MissingExtra)
            if missing is None or rest is not None:
                raise
            first: BaseException = missing
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    run.__name__ = run.__qualname__ = name
    return run


_cmd_generate = _command("_generate", "_cmd_generate")
_cmd_resume = _command("_resume", "_cmd_resume")
_cmd_serve = _command("_serve", "_cmd_serve")
_cmd_check = _command("_check", "_cmd_check")
_cmd_models = _command("_models", "_cmd_models")
_cmd_diagram = _command("_tools", "_cmd_diagram")
_cmd_bench = _command("_tools", "_cmd_bench")
_cmd_submit = _command("_queue", "_cmd_submit")
_cmd_worker = _command("_queue", "_cmd_worker")
_cmd_status = _command("_queue", "_cmd_status")
_cmd_download = _command("_download", "_cmd_download")


def _add_journal_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--journal-wait",
        type=float,
        metavar="S",
        help="at the end, wait up to S s for journal writes held up by another process's lock "
        "(default 30); what is still queued then is reported lost (exit 4)",
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose error line is wrapped at 80 columns like every other message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, fit(f"{self.prog}: error: {message}") + "\n")


def _name_the_choices(parser: argparse.ArgumentParser) -> None:
    """Show an option with choices as one word (``--ws-mode MODE``) and list the choices in its
    help, so that the usage lines fit in 80 columns; on every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _name_the_choices(child)
        elif action.choices is not None and action.metavar is None:
            action.metavar = action.dest.rsplit("_", 1)[-1].upper()
            words = [str(choice) for choice in action.choices]
            help_text = action.help or ""
            if not all(word in help_text for word in words):
                listed = f"one of {', '.join(words)}"
                action.help = f"{help_text}; {listed}" if help_text else listed


def _add_inspect_options(parser: argparse.ArgumentParser, *, page: str, after: str) -> None:
    """``--inspect PORT`` and ``--inspect-linger S``, as generate and worker take them."""
    parser.add_argument(
        "--inspect",
        metavar="PORT",
        help=f"serve {page} on 127.0.0.1:PORT (0: a free port; or HOST:PORT)",
    )
    parser.add_argument(
        "--inspect-linger",
        type=float,
        metavar="S",
        help=f"with --inspect: keep the page up S seconds after {after}",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hybridgen`` command."""
    parser = _Parser(
        prog="hybridgen",
        description=(
            "Get the result of a remote image generation by push (Server-Sent Events, or the "
            "legacy WebSocket) and polling at once: whichever knows first delivers it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hybridgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    verbose = _Parser(add_help=False)
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
            "3 done but not saved (the URL is kept: hybridgen download), 4 done but the journal "
            "is incomplete, 130 interrupted."
        ),
    )
    gen.add_argument("prompt", metavar="PROMPT", nargs="?", help="what to draw (or film)")
    gen.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="PATH",
        help=(
            "where to save the image: a regular file path whose suffix names the format (.png "
            "converts a WEBP result); no suffix keeps the file's own format and adds its suffix "
            "(with --batch: a directory)"
        ),
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
        help=(
            "record every generation in this journal: a SQLite file, or a postgresql:// URL "
            "(default: HYBRIDGEN_JOURNAL; see: hybridgen resume)"
        ),
    )
    _add_journal_wait(gen)
    gen.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line on stdout; the last is the result",
    )
    gen.add_argument(
        "--policy",
        choices=tuple(PRESETS),
        help="timing preset (default: default, video with --video; seed: the seed client's)",
    )
    gen.add_argument(
        "--video",
        action="store_true",
        help="make a video (generate-video) and save it as it is (.mp4, .webm or no suffix)",
    )
    gen.add_argument(
        "--duration",
        type=int,
        metavar="S",
        help="with --video: its length in seconds (default 5; the model lists what it allows)",
    )
    gen.add_argument(
        "--aspect-ratio",
        metavar="W:H",
        help="with --video: the frame's shape (default 16:9)",
    )
    gen.add_argument(
        "--image",
        metavar="FILE_OR_ID",
        help="with --video: the source of an image-to-video model (a file, uploaded, or a file id)",
    )
    gen.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="with --video: refuse, before starting, a video whose price is over USD",
    )
    gen.add_argument(
        "--model",
        metavar="NAME",
        help=(
            "the generation config to use (default comfyui/flux; with --video "
            "google-cloud/veo3-text2video; see: hybridgen models)"
        ),
    )
    gen.add_argument(
        "--body-form",
        choices=BODY_FORMS,
        default="config",
        help="start body: today's documented form (config, the default) or the seed-era one",
    )
    gen.add_argument(
        "--retry-unsafe-starts",
        action="store_true",
        help="send a start again even if the server may have made the job (may bill twice)",
    )
    gen.add_argument(
        "--ws-timeout",
        "--push-timeout",
        dest="push_timeout",
        type=float,
        metavar="S",
        help="seconds before polling starts (the push-only wait, any push channel)",
    )
    gen.add_argument("--poll-interval", type=float, metavar="S", help="seconds between polls")
    gen.add_argument("--deadline", type=float, metavar="S", help="seconds before giving up")
    gen.add_argument(
        "--request-timeout",
        type=float,
        metavar="S",
        help="seconds one request to the API may take (absolute)",
    )
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
        help=f"embedded emulator: generation time (default {EMULATOR_GEN_TIME:g} s, scaled)",
    )
    gen.add_argument(
        "--push",
        metavar="CHANNELS",
        help="push channels to open, comma-separated: websocket, sse (default: the preset's; "
        "'none': poll only)",
    )
    gen.add_argument(
        "--ws-mode",
        choices=WS_MODES,
        help=f"embedded emulator: legacy WebSocket behaviour (default {EMULATOR_WS_MODE}, as "
        "today's API)",
    )
    gen.add_argument(
        "--sse-mode",
        choices=SSE_MODES,
        help=f"embedded emulator: SSE behaviour (default {EMULATOR_SSE_MODE}, as today's API)",
    )
    gen.add_argument(
        "--trace",
        action="store_true",
        help="after the result, print the path taken as a Mermaid diagram",
    )
    _add_inspect_options(gen, page="the live inspector page", after="the run")
    gen.set_defaults(func=_cmd_generate)

    resume = sub.add_parser(
        "resume",
        parents=[verbose],
        help="finish the generations a journal left pending",
        description=(
            "Finish every pending generation of a --journal (the process that started them died): "
            "save the done ones, follow the running ones by file id on SUPERDUPERAI_URL without "
            "starting new jobs. Exit 0 all saved, 1 some failed, 2 bad usage, 3 some done but "
            "not saved, 4 some skipped (another process holds them) or the journal is "
            "incomplete, 130 interrupted."
        ),
    )
    resume.add_argument(
        "--journal",
        metavar="PATH",
        help="the journal to finish: a SQLite file or a postgresql:// URL (default: "
        "HYBRIDGEN_JOURNAL)",
    )
    resume.add_argument(
        "--include-cancelled",
        action="store_true",
        help="also follow and save the cancelled generations the server had started (Ctrl-C: "
        "their jobs may have finished, and are paid for)",
    )
    _add_journal_wait(resume)
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

    journal_help = "the shared journal: a postgresql:// URL (default: HYBRIDGEN_JOURNAL)"
    submit = sub.add_parser(
        "submit",
        parents=[verbose],
        help="queue jobs in a shared journal for workers to run; starts nothing",
        description=(
            "Queue one job (PROMPT) or one per line of --batch FILE in a PostgreSQL journal; "
            "`hybridgen worker` processes run them. Prints one JSON line per job with its key. "
            "Sends nothing to the API. Exit 0 queued, 2 bad usage."
        ),
    )
    submit.add_argument("prompt", metavar="PROMPT", nargs="?", help="what to draw")
    submit.add_argument("--batch", metavar="FILE", help="one prompt per non-empty line of FILE")
    submit.add_argument("--journal", metavar="DSN", help=journal_help)
    submit.add_argument(
        "--out", "-o", metavar="PATH", help="where the worker saves this job's image"
    )
    submit.add_argument("--model", metavar="NAME", help="the generation config to use")
    submit.add_argument("--policy", choices=tuple(PRESETS), default="default", help="timing preset")
    submit.add_argument(
        "--time-scale", type=float, metavar="X", help="multiply the preset's durations by X"
    )
    submit.add_argument(
        "--deadline", type=float, metavar="S", help="seconds from its start before a job fails"
    )
    submit.add_argument(
        "--retry-unsafe-starts",
        action="store_true",
        help="a worker taking the job over may send a start that may have reached the server",
    )
    submit.set_defaults(func=_cmd_submit)

    worker = sub.add_parser(
        "worker",
        parents=[verbose],
        help="run the jobs of a shared journal until SIGTERM",
        description=(
            "Take queued and abandoned jobs from a shared journal, run them on "
            "SUPERDUPERAI_URL and save their files. Many workers on many machines share one "
            "PostgreSQL journal (worker processes on one machine: a SQLite file too); each job "
            "runs in one of them at a time (leases with fencing). SIGTERM "
            "drains (no new job, the running ones finish); a second one gives them back. "
            "Exit 0, 1 when a job failed or its file could not be saved, 2 bad usage."
        ),
    )
    worker.add_argument("--journal", metavar="DSN", help=journal_help)
    worker.add_argument(
        "--out-dir", default=".", metavar="DIR", help="where images go (default: here)"
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="at most N jobs at a time (default %(default)s)",
    )
    worker.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="stop once no job in the journal needs work (nor is held by another worker)",
    )
    worker.add_argument(
        "--lease",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a job stays this worker's after its last renewal (default %(default)s)",
    )
    worker.add_argument(
        "--idle-wait",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between looks for a free job while none is (default %(default)s)",
    )
    worker.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per job on stdout; the last is the worker's summary",
    )
    _add_inspect_options(
        worker, page="the live inspector page of this worker's jobs", after="the worker stops"
    )
    worker.set_defaults(func=_cmd_worker)

    status = sub.add_parser(
        "status",
        parents=[verbose],
        help="count a journal's jobs per state and say who holds what",
        description=(
            "Count the jobs of a journal (PostgreSQL or SQLite) per state: queued, running, "
            "abandoned, done, unsaved (done, file not saved), failed, cancelled; and list the "
            "workers holding jobs. Exit 0."
        ),
    )
    status.add_argument(
        "--journal",
        metavar="DSN",
        help="a postgresql:// URL or a SQLite journal's path (default: HYBRIDGEN_JOURNAL)",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per holder, then the counts (the last object)",
    )
    status.set_defaults(func=_cmd_status)

    download = sub.add_parser(
        "download",
        parents=[verbose],
        help="save a finished result (by file id or URL); starts no job",
        description=(
            "Save the result of a finished generation: a result URL is fetched as it is; a file "
            "id is asked for once on SUPERDUPERAI_URL (token: SUPERDUPERAI_TOKEN) and its result "
            "fetched. Starts no job and waits for none. Exit 0 saved, 1 not done yet or failed "
            "(or the server could not be asked), 2 bad usage, 3 done but the download failed."
        ),
    )
    download.add_argument("target", metavar="FILE_ID|URL", help="the server's file id, or a URL")
    download.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="PATH",
        help="where to save the image (its suffix names the format, as with generate --out)",
    )
    download.add_argument(
        "--json", action="store_true", help="one result line on stdout, as generate --json"
    )
    download.set_defaults(func=_cmd_download)

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
    serve.add_argument(
        "--ws-mode",
        choices=WS_MODES,
        default=EMULATOR_WS_MODE,
        help="legacy WebSocket behaviour (default %(default)s, as today's API: it accepts the "
        "subscription and never sends the result)",
    )
    serve.add_argument(
        "--sse-mode",
        choices=SSE_MODES,
        default=EMULATOR_SSE_MODE,
        help="SSE (events/file.{id}) behaviour (default %(default)s, as today's API)",
    )
    serve.add_argument(
        "--gen-time",
        type=float,
        metavar="S",
        help=f"generation time (default {EMULATOR_GEN_TIME:g} s, scaled)",
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
        "--poll-fault-rate",
        type=float,
        metavar="P",
        help="with --poll-fault: each of those polls faults with probability P (default 1)",
    )
    serve.add_argument(
        "--poll-redirect",
        choices=POLL_REDIRECTS,
        help="redirect every poll once with this status to the same URL plus ?via=redirect "
        "(loop: back and forth for ever)",
    )
    serve.add_argument(
        "--retry-after",
        type=float,
        metavar="S",
        help="Retry-After sent with 429/503 faults (polls, starts, result files)",
    )
    serve.add_argument(
        "--start-fault", choices=START_FAULTS, help="what start requests get instead of a job"
    )
    serve.add_argument(
        "--start-faults", type=int, metavar="N", help="only the first N start requests fault"
    )
    serve.add_argument(
        "--job-fails", action="store_true", help="every job fails (its task says --fail-status)"
    )
    serve.add_argument(
        "--fail-status",
        metavar="WORD",
        help="the status word of a failed job's task (default error; e.g. failed); implies "
        "--job-fails",
    )
    serve.add_argument(
        "--fail-reason", metavar="TEXT", help="the error text of a failed job's task ('' for none)"
    )
    serve.add_argument(
        "--file-mode",
        choices=FILE_MODES,
        default="webp",
        help=(
            "how result files are served from the files origin: webp (today's CDN), png "
            "(seed era), html (an error page), huge (2 GiB), slow (1 byte/s, scaled)"
        ),
    )
    serve.add_argument(
        "--file-cuts",
        type=int,
        default=0,
        metavar="N",
        help="break the first N downloads of each result file off halfway (Range resumes them)",
    )
    serve.add_argument(
        "--file-fault",
        choices=FILE_FAULTS,
        help="what the first requests of each result file get, as a CDN that does not have it "
        "everywhere yet: 403/404 (a storage CDN's XML error), 429/503 (with --retry-after), 500",
    )
    serve.add_argument(
        "--file-faults",
        type=int,
        metavar="N",
        help="with --file-fault: how many requests of each result file get it (default 1)",
    )
    serve.add_argument(
        "--file-redirect",
        choices=FILE_REDIRECTS,
        help="redirect requests for result files with this status",
    )
    serve.add_argument(
        "--file-redirect-to",
        choices=REDIRECT_TARGETS,
        help="with --file-redirect: path (/files/x to /stored/x on the files origin, the "
        "default), origin (result URLs name the API's origin, which redirects to the files "
        "origin) or loop (/files/x and /stored/x send to each other)",
    )
    serve.add_argument(
        "--file-redirect-hops",
        type=int,
        metavar="N",
        help="with --file-redirect-to path: N redirects in a row (default 1)",
    )
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser(
        "check",
        parents=[verbose],
        help="check each step a generation needs (DNS, TCP, TLS, token, push); starts no job",
        description=(
            "Walk the path a generation takes against SUPERDUPERAI_URL (or the embedded emulator "
            "when it is unset): configuration, DNS, TCP, TLS, token, WebSocket, SSE. Each step "
            "gets a time, a verdict and, on failure, the fix. Exit 0 when a generation can work (a "
            "failing push channel is a warning: polling still works), 1 otherwise. Starts no job, "
            "unless --generate."
        ),
    )
    check.add_argument("--json", action="store_true", help="one JSON object per step on stdout")
    check.add_argument(
        "--generate",
        action="store_true",
        help="then run one real generation per way: polling, each push channel alone, hybrid",
    )
    check.add_argument(
        "--time-scale",
        type=float,
        metavar="X",
        help="multiply the --generate policies' durations (and the embedded emulator's job time)",
    )
    check.set_defaults(func=_cmd_check)

    models = sub.add_parser(
        "models",
        parents=[verbose],
        help="list the models (generation configs) the server offers",
        description=(
            "List the generation configs of SUPERDUPERAI_URL (or of the embedded emulator when it "
            "is unset): name (what generate --model takes), label, type, price, VIP-only. "
            "Starts no job."
        ),
    )
    models.add_argument(
        "--type",
        metavar="T[,T]",
        help="only these types (e.g. text_to_image,image_to_image; video: every video type)",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    models.set_defaults(func=_cmd_models)

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
            "stdout (name, value, unit, better, baseline, ratio: above 1, ours is better); see "
            "docs/performance.md."
        ),
    )
    from ..bench import add_arguments as _bench_arguments

    _bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    _name_the_choices(parser)
    return parser


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (argparse exits with 2 on bad usage itself)."""
    note_secret(os.environ.get("SUPERDUPERAI_TOKEN"))
    args = build_parser().parse_args(argv)
    from ._interrupt import signals_as_sigint

    TOKEN_REJECTED.clear()
    try:
        with signals_as_sigint():
            code = int(args.func(args))
    except (ConfigError, RequestError) as exc:
        message = getattr(exc, "message", None)  # a MissingExtra has no message of its own
        say(f"error: {exc if message is None else sentence(exc.field, message)}")
        return EXIT_USAGE
    except (UsageError, AuthError) as exc:  # a rejected token is bad configuration
        say(f"error: {exc}")
        return EXIT_USAGE
    except (HybridgenError, OSError) as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except BaseException as exc:
        if _only_interrupts(exc):
            say("interrupted")
            return EXIT_INTERRUPTED
        raise
    return EXIT_USAGE if code == EXIT_FAILED and TOKEN_REJECTED else code
