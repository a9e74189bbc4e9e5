"""``hybridgen serve``: run the emulator on loopback until Ctrl-C or SIGTERM.

Prints the base URL as the first stdout line (scripts read it). The emulator's behaviour is in
:mod:`hybridgen.emulator`; this file only turns options into its faults and timings.
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING

import trio

from ._exit import EXIT_OK, UsageError
from ._options import EMULATOR_GEN_TIME, absolute_seconds, make_faults, time_scale_of
from ._output import note_secret, say, setup_logging, write_out

if TYPE_CHECKING:
    from ..emulator.model import Faults

_NEEDS: tuple[tuple[str, str, str | None], ...] = (
    ("poll_faults", "poll_fault", None),
    ("poll_fault_rate", "poll_fault", None),
    ("file_faults", "file_fault", None),
    ("file_redirect_to", "file_redirect", None),
    ("file_redirect_hops", "file_redirect", None),
    ("file_redirect_hops", "file_redirect_to", "path"),
)
"""Options that mean something only beside another: (option, the one it needs, its value if
that one must have a given value)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_pairs(args: argparse.Namespace) -> None:
    """A switch given without the one it qualifies is refused, not silently ignored."""
    for option, needed, value in _NEEDS:
        if getattr(args, option) is None:
            continue
        given = getattr(args, needed)
        if value is None and given is None:
            raise UsageError(f"{_flag(option)} goes with {_flag(needed)}; add {_flag(needed)}")
        if value is not None and given not in (None, value):
            raise UsageError(
                f"{_flag(option)} counts the hops of {_flag(needed)} {value}, not of "
                f"{_flag(needed)} {given}; drop {_flag(option)}"
            )


def _switches(faults: Faults) -> str:
    """The fault switches set, as serve's options (empty when none is)."""
    groups = (
        ("poll_fault", "poll_faults", "poll_fault_rate"),
        ("poll_redirect",),
        ("start_fault", "start_faults"),
        ("file_fault", "file_faults"),
        ("file_redirect", "file_redirect_to", "file_redirect_hops"),
    )
    words = [
        " ".join(
            f"{_flag(name)} {getattr(faults, name):g}"
            if isinstance(getattr(faults, name), float)
            else f"{_flag(name)} {getattr(faults, name)}"
            for name in group
            if getattr(faults, name) is not None
        )
        for group in groups
        if getattr(faults, group[0]) is not None
    ]
    if faults.file_cuts:
        words.append(f"--file-cuts {faults.file_cuts}")
    return f"; faults: {', '.join(words)}" if words else ""


async def _serve(faults: Faults, scale: float, token: str | None, host: str, port: int) -> int:
    from ..emulator import running

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with running(faults, time_scale=scale, token=token, host=host, port=port) as emulator:
            write_out(emulator.url)
            auth = "requires a bearer token" if token else "accepts any token"
            say(
                f"emulator serving at {emulator.url}, result files ({faults.file_mode}) at "
                f"{emulator.files_url} (ws-mode {faults.ws_mode}, sse-mode {faults.sse_mode}, "
                f"generation "
                f"{faults.gen_time * scale:g} s, {auth}){_switches(faults)}; Ctrl-C stops it"
            )
            async for signum in signals:
                say(f"{signal.Signals(signum).name}: stopping")
                break
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    _check_pairs(args)
    token = args.token or None
    note_secret(token)
    scale = time_scale_of(args.time_scale)
    gen_time = absolute_seconds("gen_time", args.gen_time, scale)
    faults = make_faults(
        gen_time=EMULATOR_GEN_TIME if gen_time is None else gen_time,
        ws_mode=args.ws_mode,
        sse_mode=args.sse_mode,
        poll_fault=args.poll_fault,
        poll_faults=args.poll_faults,
        poll_fault_rate=args.poll_fault_rate,
        poll_redirect=args.poll_redirect,
        retry_after=absolute_seconds("retry_after", args.retry_after, scale),
        start_fault=args.start_fault,
        start_faults=args.start_faults,
        file_mode=args.file_mode,
        file_cuts=args.file_cuts,
        file_fault=args.file_fault,
        file_faults=args.file_faults,
        file_redirect=args.file_redirect,
        file_redirect_to=args.file_redirect_to,
        file_redirect_hops=args.file_redirect_hops,
        job_fails=args.job_fails or args.fail_status is not None or None,
        fail_status=args.fail_status,
        fail_reason=args.fail_reason,
    )
    return trio.run(_serve, faults, scale, token, args.host, args.port)
