"""``hybridgen serve``: run the emulator on loopback until Ctrl-C or SIGTERM.

Prints the base URL as the first stdout line (scripts read it). The emulator's behaviour is in
:mod:`hybridgen.emulator`; this file only turns options into its faults and timings.
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING

import trio

from ._exit import EXIT_OK
from ._options import EMULATOR_GEN_TIME, _absolute, _faults, _scale
from ._output import _note_secret, _out, _say, _setup_logging

if TYPE_CHECKING:
    from ..emulator.model import Faults


async def _serve(faults: Faults, scale: float, token: str | None, host: str, port: int) -> int:
    from ..emulator import running

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with running(faults, time_scale=scale, token=token, host=host, port=port) as emulator:
            _out(emulator.url)
            auth = "requires a bearer token" if token else "accepts any token"
            _say(
                f"emulator serving at {emulator.url}, result files ({faults.file_mode}) at "
                f"{emulator.files_url} (ws-mode {faults.ws_mode}, sse-mode {faults.sse_mode}, "
                f"generation "
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
        gen_time=EMULATOR_GEN_TIME if gen_time is None else gen_time,
        ws_mode=args.ws_mode,
        sse_mode=args.sse_mode,
        poll_fault=args.poll_fault,
        poll_faults=args.poll_faults,
        retry_after=_absolute("retry_after", args.retry_after, scale),
        start_fault=args.start_fault,
        start_faults=args.start_faults,
        file_mode=args.file_mode,
        file_cuts=args.file_cuts,
        job_fails=args.job_fails or args.fail_status is not None or None,
        fail_status=args.fail_status,
        fail_reason=args.fail_reason,
    )
    return trio.run(_serve, faults, scale, token, args.host, args.port)
