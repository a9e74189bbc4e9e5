"""``hybridgen download (FILE_ID | URL) --out PATH``: save a finished result, no new job.

A URL is fetched as it is (through :meth:`hybridgen.Client.download`, like every save); a file
id is asked for once (``GET /api/v1/file/{id}`` on ``SUPERDUPERAI_URL``) and its result URL
fetched. A job that is not done yet, or failed, is said so; nothing here waits for one (that is
``generate`` and ``resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Final

import trio

from ..config import Config
from ..errors import ConfigError, HybridgenError, TransportError
from ..machine import State
from ..policy import Policy
from ._exit import EXIT_FAILED, EXIT_OK, EXIT_UNSAVED, UsageError
from ._files import check_out, save_result
from ._json import outcome_json
from ._output import setup_logging, write_out
from ._report import Outcome, explain

if TYPE_CHECKING:
    from ..driver import Client

_NO_API: Final = "http://127.0.0.1:9"
"""The API origin of a URL-only download without SUPERDUPERAI_URL: no real server, so no token
is sent with the file's request (a token is sent only to the API's own origin)."""


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


async def _result_url(client: Client, file_id: str, policy: Policy) -> str:
    """Ask the server once for ``file_id``; its result URL, or why there is none (raised)."""
    try:
        with trio.fail_after(policy.request_timeout):
            status = await client.transport.poll(file_id)
    except trio.TooSlowError:
        raise TransportError(
            f"file {file_id}: the server did not answer within {policy.request_timeout:g} s"
        ) from None
    if status.failed or status.error:
        raise _NotReady(f"file {file_id}: the job failed on the server: {status.error or '-'}")
    if not status.ready or status.url is None:
        progress = "" if status.progress is None else f" ({status.progress:.0%} done)"
        raise _NotReady(
            f"file {file_id} is not done yet{progress}: try again later (or follow it with "
            "hybridgen resume, if a --journal recorded it)"
        )
    return status.url


class _NotReady(HybridgenError):
    """The file exists but has no result to download (still running, or failed)."""


async def _download(config: Config, target: str, out_path: str, policy: Policy) -> Outcome:
    from pathlib import Path

    from ..driver import Client
    from ..transport import SuperDuperTransport

    t0 = time.monotonic()
    async with Client(SuperDuperTransport(config), policy=policy) as client:
        file_id = None if _is_url(target) else target
        try:
            url = target if file_id is None else await _result_url(client, target, policy)
        except _NotReady as exc:
            return Outcome(str(State.FAILED), file_id, reason=str(exc))
        saved, problem = await save_result(client, url, Path(out_path), policy)
    return Outcome(
        str(State.DONE),
        file_id,
        url=url,
        path=saved,
        elapsed=time.monotonic() - t0,
        reason=problem,
    )


def _cmd_download(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    target = args.target.strip()
    if not target:
        raise UsageError("give a file id or a result URL")
    check_out(args.out)  # before any I/O
    if any(c.isspace() for c in target):
        raise ConfigError("FILE_ID", f"has white space in it: {target!r}")
    if "SUPERDUPERAI_URL" in os.environ:
        config = Config.from_env()
    elif _is_url(target):
        config = Config(url=_NO_API, token="no-api")
    else:
        raise UsageError(
            "a file id needs SUPERDUPERAI_URL (and SUPERDUPERAI_TOKEN): the file is on that "
            "server (the embedded emulator starts empty); or give the result's URL"
        )
    outcome = trio.run(_download, config, target, args.out, Policy.default())
    if args.json:
        write_out(json.dumps(outcome_json(outcome)))
    elif outcome.path is not None:
        write_out(outcome.path)
    explain(outcome)
    if outcome.state == State.FAILED:
        return EXIT_FAILED
    return EXIT_UNSAVED if outcome.unsaved else EXIT_OK
