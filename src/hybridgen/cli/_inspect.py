"""``generate --inspect PORT``: the live inspector for one run, served from its own thread.

The server runs on a trio run of its own in a thread, so it is up before the first generation
starts and can stay up after the run's own trio run has ended (``--inspect-linger``). The run
publishes into it the very objects ``--json`` prints (:mod:`._json`): its events as they happen,
each result, and the batch totals. ``Inspector.publish`` is thread-safe.
"""

from __future__ import annotations

import contextlib
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import ConfigError
from ..jsonevents import event_json
from ._output import SECRETS, say

if TYPE_CHECKING:
    from ..driver import Client
    from ..events import Event
    from ..inspector import Inspector

Publish = Callable[[Mapping[str, Any]], None]
"""Where a run sends its JSON objects (an inspector's ``publish``)."""

START_TIMEOUT: Final = 30.0
"""Seconds the inspector's server may take to start listening."""
STOP_TIMEOUT: Final = 10.0
"""Seconds the inspector's thread may take to stop."""

_ADDRESS: Final = re.compile(r"(?:(?P<host>\[[^\]]+\]|[^:\[\]]+):)?(?P<port>\d+)")


def parse_address(value: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``; loopback by default."""
    found = _ADDRESS.fullmatch(value.strip())
    port = int(found["port"]) if found else -1
    if found is None or port > 65535:
        raise ConfigError(
            "--inspect", f"must be PORT or HOST:PORT with a port in 0..65535, got {value!r}"
        )
    return (found["host"] or "127.0.0.1").strip("[]"), port


def follow(client: Client, at: Callable[[Event], float], publish: Publish | None) -> None:
    """Publish every event of ``client`` as its ``--json`` object (times from ``at``)."""
    if publish is not None:
        client.subscribe(lambda event: publish(event_json(event, at(event))))


class _Server:
    """An inspector served on ``host:port`` by a trio run in a thread of its own."""

    def __init__(self, inspector: Inspector, host: str, port: int) -> None:
        self.inspector = inspector
        self._where = (host, port)
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._stop: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._main, name="hybridgen-inspector", daemon=True)

    def start(self) -> str:
        """Start listening; the URL (raises :class:`ConfigError` if it cannot listen)."""
        self._thread.start()
        try:
            got = self._ready.get(timeout=START_TIMEOUT)
        except queue.Empty:
            got = TimeoutError(f"not listening after {START_TIMEOUT:g} s")
        if isinstance(got, BaseException):
            host, port = self._where
            raise ConfigError("--inspect", f"cannot serve the inspector on {host}:{port}: {got}")
        return got

    def stop(self) -> None:
        """Stop serving and wait (boundedly) for the thread to end."""
        if self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._stop()
        self._thread.join(timeout=STOP_TIMEOUT)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the waiting main thread, not lost
            self._ready.put(exc)

    async def _serve(self) -> None:
        from ..inspector import serve_inspector

        host, port = self._where
        async with trio.open_nursery() as nursery:
            token = trio.lowlevel.current_trio_token()
            self._stop = partial(token.run_sync_soon, nursery.cancel_scope.cancel)
            url = await nursery.start(
                partial(serve_inspector, self.inspector, host=host, port=port)
            )
            self._ready.put(url)


@contextlib.contextmanager
def inspecting(address: str | None, linger: float | None) -> Iterator[Publish | None]:
    """Serve the inspector for the block (``None`` address: yield ``None``, serve nothing).

    Prints ``hybridgen: inspector: URL`` on stderr before the block runs; after it, keeps serving
    ``linger`` seconds (Ctrl-C ends that wait early), then stops.
    """
    if address is None:
        if linger is not None:
            raise ConfigError("--inspect-linger", "goes with --inspect PORT")
        yield None
        return
    if linger is not None and not (math.isfinite(linger) and linger >= 0):
        raise ConfigError("--inspect-linger", f"must be a number of seconds >= 0, got {linger!r}")
    from ..inspector import Inspector

    host, port = parse_address(address)
    inspector = Inspector(secrets=SECRETS)  # the set is read at every publish
    server = _Server(inspector, host, port)
    url = server.start()
    say(f"inspector: {url}")  # "hybridgen: inspector: URL", like every other remark
    try:
        yield inspector.publish
    finally:
        inspector.close()
        try:
            if linger:
                time.sleep(linger)  # the page stays up: that is what was asked for
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
