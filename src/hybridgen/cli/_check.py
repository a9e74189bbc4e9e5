"""``hybridgen check``: which part of the path a generation takes works, step by step.

Walks configuration → DNS → TCP → TLS → token (the model list: an authenticated request that
starts no job) → WebSocket (connect and subscribe, then the subscription kept) → SSE (the events
endpoint of a made-up file: a JSON 404 or an event stream proves the route exists; an HTML page,
a 5xx/524 or no connection is the problem), and reports each
step with its time, a verdict and, when it fails, the fix. The exit code says whether a generation
can work: polling needs every step up to the token; a failed push channel is a warning (polling
still delivers). It never starts a job; ``--generate`` then runs paid generations
(:mod:`._check_ways`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

import attrs
import trio

from ..config import USER_AGENT, Config
from ..errors import AuthError, ConfigError, HybridgenError, PermanentError
from ..wire import sse_path
from ._check_ways import Way, policies, run_ways, summary
from ._exit import EXIT_FAILED, EXIT_OK
from ._options import (
    EMULATOR_GEN_TIME,
    EMULATOR_SSE_MODE,
    EMULATOR_WS_MODE,
    make_faults,
    time_scale_of,
)
from ._output import fit, note_secret, redact, say, setup_logging, write_out

if TYPE_CHECKING:
    from ..emulator.model import ServerModel
    from ..events import Event
    from ._live import LiveWays

STEP_TIMEOUT: Final = 10.0
"""The longest one step may take (seconds)."""
KEEP_OPEN: Final = 1.0
"""How long a subscribed socket must stay open to count as a kept subscription (seconds)."""

Verdict = Literal["ok", "failed", "warning", "skipped"]
_FIX_INDENT: Final = " " * 9
"""Continuation lines (and ``fix:``) start under the step's name."""


@attrs.frozen
class Step:
    """One step's outcome: ``verdict``, ``seconds`` it took, what was seen, and the fix."""

    step: str
    verdict: Verdict
    seconds: float = 0.0
    detail: str = ""
    fix: str = ""


class _Failed(Exception):
    """A step failed: ``detail`` (what happened) and ``fix`` (what to do)."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


FIX_DNS: Final = (
    "the host name does not resolve: check the spelling of SUPERDUPERAI_URL, then your network "
    "and DNS (is the machine online? a VPN or proxy needed?)"
)
FIX_TCP: Final = (
    "nothing answers on that address: the server may be down, or a firewall or proxy blocks the "
    "port; try the URL in a browser from this machine"
)
FIX_TLS: Final = (
    "the secure connection failed: a proxy that intercepts HTTPS, a wrong system clock, or "
    "missing CA certificates (e.g. pip install certifi); http:// only for a local server"
)
FIX_TOKEN: Final = (
    "the server rejected SUPERDUPERAI_TOKEN: copy the token again from your account (no quotes or "
    "spaces); an expired token must be renewed"
)
FIX_API: Final = (
    "the server answered, but not as the SuperDuperAI API: is SUPERDUPERAI_URL the API's root "
    "URL (e.g. https://editor.superduperai.co)?"
)
FIX_WS: Final = (
    "the WebSocket push does not work from here (a proxy or firewall may block WebSockets or "
    "long-lived connections): generations still finish by polling, only later; "
    "--policy seed waits 30 s for it first, the default polls at once"
)
FIX_SUBSCRIBE: Final = (
    "the server closed the socket right after the subscribe message: the token may not use push, "
    "or the server changed its protocol; generations still finish by polling"
)
FIX_SSE: Final = (
    "the SSE push stream does not open from here (a proxy or CDN that cuts long-lived HTTP "
    "responses answers 524, or the server has no events endpoint): generations still finish by "
    "polling; --push websocket or --policy polling avoid it; hybridgen check --generate shows "
    "which way delivers"
)
SSE_PROBE: Final = "hybridgen-check-no-such-file"
"""The made-up file id the SSE step asks for (no job has it, so no job is touched)."""


async def _timed(name: str, body: Callable[[], Awaitable[str]], *, warn: bool = False) -> Step:
    t0 = trio.current_time()
    try:
        with trio.fail_after(STEP_TIMEOUT):
            detail = await body()
    except _Failed as exc:
        verdict: Verdict = "warning" if warn else "failed"
        return Step(name, verdict, trio.current_time() - t0, exc.detail, exc.fix)
    except trio.TooSlowError:
        verdict = "warning" if warn else "failed"
        fix = {"dns": FIX_DNS, "tcp": FIX_TCP, "tls": FIX_TLS, "token": FIX_API}.get(name, FIX_WS)
        return Step(
            name, verdict, trio.current_time() - t0, f"no answer in {STEP_TIMEOUT:g} s", fix
        )
    return Step(name, "ok", trio.current_time() - t0, detail)


class _Steps(list[Step]):
    """The steps so far; each is shown as soon as it is added."""

    def __init__(self, show: Callable[[Step | Way], None]) -> None:
        super().__init__()
        self.show = show

    def append(self, step: Step) -> None:
        """Add ``step`` and show it."""
        super().append(step)
        self.show(step)


async def _walk(config: Config, show: Callable[[Step | Way], None]) -> list[Step]:
    from ..transport import SuperDuperTransport

    parts = urlsplit(config.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    steps = _Steps(show)

    async def dns() -> str:
        try:
            found = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise _Failed(f"{host}: {exc.strerror or exc}", FIX_DNS) from None
        addresses = sorted({str(info[4][0]) for info in found})
        return f"{host} -> {', '.join(addresses[:3])}"

    stream: trio.SocketStream | None = None

    async def tcp() -> str:
        nonlocal stream
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise _Failed(f"{host}:{port}: {exc.strerror or exc}", FIX_TCP) from None
        return f"connected to {host}:{port}"

    async def tls() -> str:
        assert stream is not None
        wrapped = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
        try:
            await wrapped.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            cause = exc.__cause__ or exc
            raise _Failed(f"handshake with {host}:{port}: {cause}", FIX_TLS) from None
        finally:
            await trio.aclose_forcefully(wrapped)
        return f"{wrapped.version() or 'TLS'} with {host}"

    transport = SuperDuperTransport(config)

    async def token() -> str:
        try:
            models = await transport.models()
        except AuthError as exc:
            raise _Failed(str(exc), FIX_TOKEN) from None
        except PermanentError as exc:
            raise _Failed(str(exc), FIX_API) from None
        except HybridgenError as exc:
            raise _Failed(str(exc), FIX_TCP) from None
        return f"accepted (the model list has {len(models)} entries)"

    async def websocket() -> str:
        project = str(uuid.uuid4())
        subscribed_at: float | None = None
        try:
            async with transport.listen(project) as messages:
                subscribed_at = trio.current_time()
                with trio.move_on_after(KEEP_OPEN):
                    async for _ in messages:
                        pass  # messages about no job: only whether it stays open matters
                    raise _Failed("the server closed the socket after subscribing", FIX_SUBSCRIBE)
        except HybridgenError as exc:
            if subscribed_at is None:
                raise _Failed(str(exc), FIX_WS) from None
            after = trio.current_time() - subscribed_at
            raise _Failed(f"closed {after:.2f} s after subscribing: {exc}", FIX_SUBSCRIBE) from None
        return f"connected and subscribed; still open {KEEP_OPEN:g} s later"

    async def sse() -> str:
        return await _probe_sse(config)

    try:
        for name, body in (("dns", dns), ("tcp", tcp)):
            steps.append(await _timed(name, body))
            if steps[-1].verdict != "ok":
                return steps
        if parts.scheme == "https":
            steps.append(await _timed("tls", tls))
        else:
            if stream is not None:
                await stream.aclose()
            steps.append(Step("tls", "skipped", detail="plain http:// (a local server)"))
        if steps[-1].verdict == "failed":
            return steps
        steps.append(await _timed("token", token))
        if steps[-1].verdict != "ok":
            return steps
        steps.append(await _timed("websocket", websocket, warn=True))
        steps.append(await _timed("sse", sse, warn=True))
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        await transport.aclose()
    return steps


async def _probe_sse(config: Config) -> str:
    """Open the events stream of a made-up file: its status and first bytes tell whether the
    endpoint exists (a JSON 404 with ``detail``, or a stream) or something in between answers."""
    import httpx  # 50 ms, for this one probe: not at the command's start

    url = config.api_url(sse_path(SSE_PROBE))
    headers = {
        "Authorization": config.headers()["Authorization"],
        "Accept": "text/event-stream",
        "User-Agent": USER_AGENT,
    }
    try:
        async with (
            httpx.AsyncClient(timeout=STEP_TIMEOUT) as http,
            http.stream("GET", url, headers=headers) as reply,
        ):
            kind = reply.headers.get("content-type", "").partition(";")[0].strip()
            first = b""
            async for chunk in reply.aiter_bytes():
                first = chunk[:512]
                break
    except httpx.HTTPError as exc:
        raise _Failed(f"GET {sse_path(SSE_PROBE)}: {type(exc).__name__}", FIX_SSE) from None
    status = reply.status_code
    if status == 200 and kind == "text/event-stream":
        return f"event stream opened (HTTP 200, first bytes {first[:40]!r})"
    if status == 404 and kind == "application/json" and b'"detail"' in first:
        return "the endpoint answers (HTTP 404 with a JSON detail for a made-up file, as expected)"
    shown = kind or "no content type"
    raise _Failed(f"GET {sse_path(SSE_PROBE)}: HTTP {status} ({shown})", FIX_SSE)


async def _check(
    config: Config | None, generate: bool, time_scale: float, view: _View
) -> list[Step | Way]:
    if config is not None:
        steps: list[Step | Way] = [*await _walk(config, view.show)]
        if generate and _works(steps):
            steps += await _ways(config, time_scale, None, view)
        return steps
    from ..emulator import running

    token = secrets.token_urlsafe(24)
    note_secret(token)
    faults = make_faults(
        gen_time=EMULATOR_GEN_TIME, ws_mode=EMULATOR_WS_MODE, sse_mode=EMULATOR_SSE_MODE
    )
    async with running(faults, time_scale=time_scale, token=token) as emulator:
        say(f"SUPERDUPERAI_URL unset: checking the embedded emulator at {emulator.url}")
        config = Config(url=emulator.url, token=token)
        steps = [*await _walk(config, view.show)]
        if generate and _works(steps):
            steps += await _ways(config, time_scale, emulator.model, view)
        return steps


async def _ways(
    config: Config, time_scale: float, model: ServerModel | None, view: _View
) -> list[Way]:
    view.begin(list(policies(time_scale)))
    try:
        return await run_ways(config, time_scale, model, on_way=view.show, on_event=view.event)
    finally:
        view.end()


class _View:
    """How ``check`` shows its steps as they finish: lines on stdout (JSON with ``--json``);
    on a terminal, a live line on stderr while the ``--generate`` ways run."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.live: LiveWays | None = None

    def show(self, step: Step | Way) -> None:
        """One step's (or way's) outcome, now."""
        if self.as_json:
            write_out(json.dumps({**attrs.asdict(step), "seconds": round(step.seconds, 6)}))
            return
        line = f"{step.verdict:<8} {step.step:<15} {step.seconds * 1000:8.1f} ms  {step.detail}"
        text = fit(redact(line.rstrip()), _FIX_INDENT)
        if step.fix:
            text += "\n" + fit(redact(f"{_FIX_INDENT}fix: {step.fix}"), _FIX_INDENT + "     ")
        if self.live is not None:
            self.live.print(text)
        else:
            write_out(text)

    def begin(self, names: list[str]) -> None:
        """The ways ``names`` start: a live line on a terminal (stderr)."""
        if not self.as_json and sys.stderr.isatty():
            from ._live import LiveWays as live

            self.live = live(names)
            self.live.begin()

    def event(self, name: str, event: Event) -> None:
        """One event of way ``name``'s generation."""
        if self.live is not None:
            self.live.event(name, event)

    def end(self) -> None:
        """The ways ended: the live line goes."""
        if self.live is not None:
            self.live.end()
            self.live = None


def _works(steps: list[Step | Way]) -> bool:
    return not any(s.verdict == "failed" for s in steps)


def _configuration() -> tuple[Step, Config | None]:
    if "SUPERDUPERAI_URL" not in os.environ:
        return Step("configuration", "ok", detail="SUPERDUPERAI_URL unset: the emulator"), None
    try:
        config = Config.from_env()
    except ConfigError as exc:
        fix = f"set {exc.field} as the message says (see docs/configuration.md)"
        return Step("configuration", "failed", detail=str(exc), fix=fix), None
    return Step("configuration", "ok", detail=f"{config.url}, token set"), config


def _cmd_check(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    scale = time_scale_of(args.time_scale)
    first, config = _configuration()
    view = _View(args.json)
    view.show(first)
    steps: list[Step | Way] = [first]
    if first.verdict == "ok":
        steps += trio.run(_check, config, args.generate, scale, view)
    ways = [step for step in steps if isinstance(step, Way)]
    if ways and not args.json:
        write_out(fit(summary(ways), _FIX_INDENT))
    return EXIT_OK if _works(steps) else EXIT_FAILED
