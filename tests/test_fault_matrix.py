"""The fault matrix: every fault the emulator can play, by both policy presets, over real sockets.

Each case runs one whole generation (driver, :class:`SuperDuperTransport`, the loopback emulator)
and asserts its terminal state, the channel that delivered the result, the reason (a phrase it must
contain) and its elapsed time (bounds relative to the scaled policy, generous for a loaded
machine). Afterwards no client socket may be left open, and exactly one terminal event was sent.

The outcomes are collected as the cases run; the last test renders them as the table in
``docs/reliability.md`` and compares it with the committed file (set ``HYBRIDGEN_UPDATE_DOCS=1``
to rewrite it). The table holds no timings, only the bound each case asserts, so it is the same on
every run. Sections after the matrix's own that start with an HTML comment line (the chaos section
of ``tests/test_chaos.py``) are kept as they are.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

from hybridgen.api import Config, ImageRequest
from hybridgen.driver import Client
from hybridgen.emulator import Emulator, Faults, ServerModel
from hybridgen.errors import TransientError
from hybridgen.events import Event, Transition
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport
from hybridgen.testing.sockets import client_side_fds, port_of
from hybridgen.transport import WS_MAX_MESSAGE, SuperDuperTransport, Transport

TOKEN = "test-token-123"
SCALE = 0.02
"""Policy scale; the emulator runs at the same scale (``TIME_SCALE`` in conftest)."""
PRESETS = {"seed": Policy.seed().scaled(SCALE), "default": Policy.default().scaled(SCALE)}
GEN = 15.0
"""Nominal job length: ``GEN * SCALE`` = 0.3 s of real time."""
READY = GEN * SCALE
SLACK = 1.0
"""Seconds allowed over a bound for loopback round trips on a loaded 2-core machine."""
LIMIT = 10.0
"""No case may take longer than this."""
TABLE = Path(__file__).parent.parent / "docs" / "reliability.md"

Bound = Callable[[Policy], tuple[float, float]]


def _first_poll(p: Policy) -> float:
    return p.push_timeout


def _polled(p: Policy) -> float:
    """When a poll surely finds a ready result on a clean server."""
    return max(READY, p.push_timeout) + p.poll_interval * (1 + p.jitter)


def _after_errors(n: int, retry_after: float = 0.0) -> Bound:
    """Done by a poll after ``n`` failed polls (backoff, or Retry-After when honoured)."""

    def bound(p: Policy) -> tuple[float, float]:
        honoured = retry_after if p.honour_retry_after else 0.0
        if p.poll_retry_after_cap is not None:  # no push delivers in these cases
            honoured = min(honoured, p.poll_retry_after_cap)
        waits = sum(
            max(
                min(p.poll_interval * p.backoff_factor**k, p.backoff_cap) * (1 + p.jitter),
                honoured,
            )
            for k in range(1, n + 1)
        )
        low = p.push_timeout * (1 - p.jitter) + n * honoured
        return low, max(READY, p.push_timeout) + waits + p.poll_interval + SLACK

    return bound


def _after_start_retries(n: int, retry_after: float | None = None, ready: bool = True) -> Bound:
    """Ends after ``n`` start retries (backoff, or ``retry_after``), then the job's time."""

    def bound(p: Policy) -> tuple[float, float]:
        if retry_after is not None:
            low = high = n * retry_after
        else:
            waits = sum(min(p.poll_interval * p.backoff_factor**k, p.backoff_cap) for k in range(n))
            low, high = waits * (1 - p.jitter), waits * (1 + p.jitter)
        if ready:
            low, high = low + READY, high + _polled(p)
        return low, high + SLACK

    return bound


BOUNDS: dict[str, Bound] = {
    "at once": lambda p: (0.0, min(p.poll_interval, p.push_timeout) + SLACK),
    "at its first poll": lambda p: (_first_poll(p) * (1 - p.jitter), _first_poll(p) + SLACK),
    "when ready": lambda p: (READY, READY + SLACK),
    "ready + 1 poll": lambda p: (READY, _polled(p) + SLACK),
    "ready + 3 failed polls": _after_errors(3),
    "ready + 3 capped Retry-After": _after_errors(3, retry_after=0.2),
    "at the deadline": lambda p: (p.deadline - 1e-3, p.deadline + SLACK),
    "1 start Retry-After, ready + 1 poll": _after_start_retries(1, retry_after=0.2),
    "1 start retry, ready + 1 poll": _after_start_retries(1),
    "after 5 start retries": _after_start_retries(5, ready=False),
}
"""How soon each case ends: ``(lowest, highest)`` elapsed seconds, by the policy."""


@attrs.frozen
class Expect:
    """The outcome of one case under one preset."""

    state: State
    channel: str | None
    """Who must deliver: a channel, channels that race by design ("sse or polling"), or None."""
    reason: str  # a phrase the reason must contain ("" for done)
    ends: str  # a key of BOUNDS


def done(channel: str, ends: str) -> Expect:
    return Expect(State.DONE, channel, "", ends)


def failed(reason: str, ends: str) -> Expect:
    return Expect(State.FAILED, None, reason, ends)


@attrs.frozen
class Case:
    """One fault: the emulator's switches and the outcome under each preset."""

    name: str
    faults: Faults
    seed: Expect
    default: Expect
    token: str = TOKEN
    unreachable: bool = False


SILENT = Faults(ws_mode="silent", gen_time=GEN)
TODAY = Faults(ws_mode="silent", sse_mode="normal", gen_time=GEN)
"""Today's API: the legacy socket stays silent, the SSE stream pushes."""


def poll_errors(fault: str, **more: float) -> Faults:
    return SILENT.replace(poll_fault=fault, poll_faults=3, **more)


CASES = [
    Case(
        "no fault",
        Faults(gen_time=GEN),
        seed=done("websocket", "when ready"),
        default=done("websocket or polling", "ready + 1 poll"),
    ),
    Case(
        "WS handshake refused (HTTP 503)",
        Faults(ws_mode="refuse", gen_time=GEN),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "WS accepted but silent",
        SILENT,
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "WS closed mid-way (1011)",
        Faults(ws_mode="drop", ws_drops=1, ws_drop_after=5.0, gen_time=GEN),
        seed=done("polling", "ready + 1 poll"),
        default=done("websocket or polling", "ready + 1 poll"),
    ),
    Case(
        "WS junk: not JSON, unknown types, other files",
        Faults(ws_noise="junk", gen_time=GEN),
        seed=done("websocket", "when ready"),
        default=done("websocket or polling", "ready + 1 poll"),
    ),
    Case(
        "WS message over 1 MiB",
        Faults(ws_noise="oversized", gen_time=GEN),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    *(
        Case(
            f"HTTP {status} on 3 polls",
            poll_errors(status),
            seed=done("polling", "ready + 3 failed polls"),
            default=done("polling", "ready + 3 failed polls"),
        )
        for status in ("500", "502", "503", "504")
    ),
    Case(
        "HTTP 429 with Retry-After on 3 polls",
        poll_errors("429", retry_after=0.2 / SCALE),
        seed=done("polling", "ready + 3 failed polls"),  # the seed ignores Retry-After
        # no push may deliver: Retry-After holds a poll back at most poll_retry_after_cap
        default=done("polling", "ready + 3 capped Retry-After"),
    ),
    Case(
        "HTTP 503 with Retry-After on every poll",
        SILENT.replace(poll_fault="503", retry_after=0.2 / SCALE),
        # the server answers: polled until the deadline, no retry budget spent (issue 25)
        seed=failed("deadline; the last N polls failed (poll: HTTP 503", "at the deadline"),
        default=failed("deadline; the last N polls failed (poll: HTTP 503", "at the deadline"),
    ),
    Case(
        "every poll redirected (307, same origin)",
        SILENT.replace(poll_redirect="307"),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "polls redirected in a loop",
        SILENT.replace(poll_redirect="loop"),
        seed=failed("a redirect loop after", "at its first poll"),
        default=failed("a redirect loop after", "at its first poll"),
    ),
    Case(
        "HTTP 429 without Retry-After on 3 polls",
        poll_errors("429"),
        seed=done("polling", "ready + 3 failed polls"),
        default=done("polling", "ready + 3 failed polls"),
    ),
    Case(
        "connection reset mid-reply on 3 polls",
        poll_errors("reset"),
        seed=done("polling", "ready + 3 failed polls"),
        default=done("polling", "ready + 3 failed polls"),
    ),
    Case(
        "malformed JSON on 3 polls",
        poll_errors("garbage"),
        seed=done("polling", "ready + 3 failed polls"),
        default=done("polling", "ready + 3 failed polls"),
    ),
    Case(
        'done but `url: ""` (push and 3 polls)',
        Faults(gen_time=GEN, empty_url_polls=3),
        seed=done("polling", "ready + 3 failed polls"),
        default=done("polling", "ready + 3 failed polls"),
    ),
    Case(
        "every poll slower than request_timeout",
        SILENT.replace(poll_delay=20.0),
        seed=failed("deadline", "at the deadline"),
        default=failed("deadline", "at the deadline"),
    ),
    Case(
        "job reported failed",
        Faults(gen_time=GEN, job_fails=True),
        seed=failed("the server reports the job failed", "when ready"),
        default=failed("the server reports the job failed", "ready + 1 poll"),
    ),
    Case(
        "file id unknown (HTTP 404)",
        poll_errors("404"),
        seed=failed("HTTP 404", "at its first poll"),
        default=failed("HTTP 404", "at its first poll"),
    ),
    Case(
        "wrong token (HTTP 401)",
        Faults(gen_time=GEN),
        seed=failed("SUPERDUPERAI_TOKEN", "at once"),
        default=failed("SUPERDUPERAI_TOKEN", "at once"),
        token="tok-not-the-right-one",
    ),
    Case(
        "token not allowed (HTTP 403)",
        Faults(gen_time=GEN, forbidden=True),
        seed=failed("SUPERDUPERAI_TOKEN", "at once"),
        default=failed("SUPERDUPERAI_TOKEN", "at once"),
    ),
    Case(
        "today's API: WS silent, SSE pushes",
        TODAY,
        seed=done("polling", "ready + 1 poll"),
        default=done("sse or polling", "when ready"),
    ),
    Case(
        "SSE answers HTTP 524 (Cloudflare page)",
        TODAY.replace(sse_mode="refuse"),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "SSE stream ends mid-way (then works)",
        TODAY.replace(sse_mode="drop", ws_drops=1, ws_drop_after=5.0),
        seed=done("polling", "ready + 1 poll"),
        default=done("sse or polling", "ready + 1 poll"),
    ),
    Case(
        "SSE sends progress, never the result",
        TODAY.replace(sse_mode="progress"),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "WS sends progress, never the result",
        Faults(ws_mode="progress", gen_time=GEN),
        seed=done("polling", "ready + 1 poll"),
        default=done("polling", "ready + 1 poll"),
    ),
    Case(
        "SSE junk: not JSON, unknown types, other files",
        TODAY.replace(ws_noise="junk"),
        seed=done("polling", "ready + 1 poll"),
        default=done("sse or polling", "when ready"),
    ),
    Case(
        "job failed: SSE pushes a task error",
        TODAY.replace(job_fails=True),
        seed=failed("the server reports the job failed: the emulated job", "ready + 1 poll"),
        default=failed("the server reports the job failed: the emulated job", "when ready"),
    ),
    Case(
        "server unreachable (closed port)",
        Faults(gen_time=GEN),
        # first contact with a server that never answered: no retry can help (issue 26)
        seed=failed("cannot connect to http://127.0.0.1:", "at once"),
        default=failed("cannot connect to http://127.0.0.1:", "at once"),
        unreachable=True,
    ),
    Case(
        "start: HTTP 429 with Retry-After",
        Faults(gen_time=GEN, start_fault="429", start_faults=1, retry_after=0.2 / SCALE),
        seed=failed("HTTP 429 from the server (Too Many Requests)", "at once"),
        default=done("websocket or polling", "1 start Retry-After, ready + 1 poll"),
    ),
    Case(
        "start: HTTP 503 without Retry-After",
        Faults(gen_time=GEN, start_fault="503", start_faults=1),
        seed=failed("HTTP 503 from the server (Service Unavailable)", "at once"),
        default=done("websocket or polling", "1 start retry, ready + 1 poll"),
    ),
    Case(
        "start: HTTP 524, Cloudflare's HTML page (the job was made)",
        Faults(gen_time=GEN, start_fault="524", start_faults=1),
        seed=failed("(Cloudflare origin timeout); the job may exist", "at once"),
        default=failed("(Cloudflare origin timeout); the job may exist", "at once"),
    ),
    Case(
        "start: HTTP 422 with a FastAPI detail list",
        Faults(gen_time=GEN, start_fault="422"),
        seed=failed("config.generation_config_name: unknown generation config", "at once"),
        default=failed("config.generation_config_name: unknown generation config", "at once"),
    ),
    Case(
        "start: HTTP 409 Integrity error",
        Faults(gen_time=GEN, start_fault="409"),
        seed=failed("(Conflict): Integrity error, create", "at once"),
        default=failed("(Conflict): Integrity error, create", "at once"),
    ),
]

ROWS: dict[tuple[str, str], str] = {}
"""Table rows of the cases run so far, by (case, preset)."""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def normalise(reason: str) -> str:
    """The reason without the parts that change from run to run (ids, ports)."""
    reason = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", reason)
    reason = re.sub(r"the last \d+ polls", "the last N polls", reason)
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", reason)


def row(case: Case, preset: str, expect: Expect, reason: str) -> str:
    channel = expect.channel or "—"
    text = normalise(reason).replace("|", "\\|") if expect.state is State.FAILED else "—"
    return f"| {case.name} | {preset} | {expect.state} | {channel} | {text} | {expect.ends} |"


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault(emulator: Emulator, case: Case, preset: str) -> None:
    policy = PRESETS[preset]
    expect: Expect = getattr(case, preset)
    model = emulator.model
    model.faults = case.faults
    url = f"http://127.0.0.1:{closed_port()}" if case.unreachable else emulator.url
    events: list[Event] = []
    client = Client(SuperDuperTransport(Config(url=url, token=case.token)), policy=policy)
    async with client:
        client.subscribe(events.append)
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, ImageRequest(prompt="a red fox"))
            result = gen.result()
    # nothing of the client stays open once it is closed
    assert client_side_fds(port_of(url)) == 0

    assert result.state is expect.state, result
    assert expect.reason in normalise(result.reason), result.reason
    if expect.channel is None:
        assert result.channel is None, result
    else:
        assert result.channel in expect.channel.split(" or "), result
    low, high = BOUNDS[expect.ends](policy)
    assert low <= result.elapsed <= high, (result.elapsed, (low, high), result)

    terminal = [e for e in events if e.terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0]
    assert isinstance(terminal[0], Transition) and terminal[0].dest is result.state
    if result.state is State.DONE:
        # the result is the job's own, never another file's (the junk names one)
        (job,) = model.jobs.values()
        assert result.url == model.url_of(job)
        assert model.finished() == 1
    if expect.ends == "at once" and not case.unreachable:
        # a rejected token is not retried: no poll, at most one socket attempt
        assert model.counts["poll"] == 0 and model.counts["ws_connect"] <= 1
    ROWS[case.name, preset] = row(case, preset, expect, result.reason)


def render(rows: dict[tuple[str, str], str]) -> str:
    lines = [
        "# Reliability: the fault matrix",
        "",
        "<!-- Generated by tests/test_fault_matrix.py; do not edit by hand. -->",
        "",
        "Each row is one generation over real loopback sockets against the emulator, with the",
        f"policy preset scaled by {SCALE:g} (`Policy.seed().scaled({SCALE:g})`: a 0.6 s WebSocket",
        f"wait, polls every 0.04 s, a 3 s deadline; `Policy.default().scaled({SCALE:g})`: polls",
        "from 0.04 s on while listening, a 2.4 s deadline) and a job that takes 0.3 s. The test",
        "asserts every column before it writes the row:",
        "",
        "- **state**: the terminal state; exactly one terminal event is sent, and no client",
        "  socket is left open afterwards.",
        "- **channel**: who delivered the result (`websocket`, `sse` or `polling`). *websocket or",
        "  polling* marks a race by design: the default policy listens (on SSE, and on the",
        "  WebSocket while SSE is down or quiet) and polls, and whichever learns first wins. The",
        "  emulator plays the seed-era API (WebSocket pushes, SSE stream silent) unless a row says",
        "  otherwise; *today's API* is a silent WebSocket and an SSE stream that pushes (see",
        "  [the API today](api-today.md)).",
        "- **reason**: the generation's reason, as the caller gets it (ids and ports elided).",
        "- **ends**: the bound its elapsed time was checked against, relative to the scaled",
        "  policy (plus 1 s of slack for a loaded machine): *when ready* is the job's 0.3 s,",
        "  *ready + 1 poll* adds one poll interval (after the WebSocket wait, for the seed),",
        "  *failed polls* add their backoff (or the server's `Retry-After` when the policy",
        "  honours it; *capped*: while no push may deliver, a poll's `Retry-After` waits at",
        "  most `poll_retry_after_cap`, the seed's 2 s interval scaled); polls the server",
        "  answered (429, 5xx) spend no retry budget, so a storm of them ends at the deadline,",
        "  its reason naming the last error; *start retries* add the waits before each start",
        "  sent again. A start",
        "  the server may have processed (524) is never sent again: a second job would be",
        "  billed too.",
        "",
        "Regenerate with `HYBRIDGEN_UPDATE_DOCS=1 .venv/bin/pytest tests/test_fault_matrix.py`.",
        "",
        "| fault | preset | state | channel | reason | ends |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case in CASES:
        for preset in PRESETS:
            lines.append(rows[case.name, preset])
    lines += [
        "",
        "## Beyond the matrix",
        "",
        "- `tests/test_stateful.py`: a Hypothesis state machine starts many generations on",
        "  one shared server, flips its faults (server-wide, per project, per running job),",
        "  revokes the token, cancels generations and lets time pass; after every step each",
        "  generation must follow the machine's edges, have at most one terminal event (the",
        "  last), be terminal by its deadline, hold its own job's URL when done, and leave no",
        "  task or socket once it ended. It runs on trio's virtual clock over `MemoryTransport`.",
        "- `tests/test_leaks.py`: cancelling (by the handle or by trio cancellation) before the",
        "  start request, during the WebSocket wait, during a poll the server holds, during a",
        "  retry sleep and at random moments leaves the state `cancelled`, one terminal event,",
        "  and no task or file descriptor once the emulator stopped; a generation cancelled",
        "  before its start request sends nothing.",
        "- `tests/test_secrets.py`: with DEBUG logging on every logger and a distinctive token,",
        "  no log record, event, repr or error (with its chained causes) shows the token, on the",
        "  success path and every failure path; bad configuration and bad requests are typed",
        "  errors naming the field, raised before any network I/O.",
        "- `tests/test_load.py`: 1,000 concurrent generations (virtual clock) and 200 over real",
        "  sockets, with 10% of polls failing and the socket dropping for half of them: all end",
        "  `done`, and the done results are exactly the jobs the server finished (none lost).",
    ]
    return "\n".join(lines) + "\n"


def kept_sections(current: str) -> str:
    """What follows the matrix's own text in the file: sections that other tests generate (or
    people write), each starting with a line that is an HTML comment. They are kept as they are."""
    _, heading, after = current.partition("## Beyond the matrix")
    index = after.find("\n<!-- ")
    return after[index + 1 :] if heading and index >= 0 else ""


def test_reliability_table_is_current() -> None:
    expected = {(c.name, p) for c in CASES for p in PRESETS}
    if set(ROWS) != expected:
        pytest.skip("only some fault cases ran; the table needs all of them")
    kept = kept_sections(TABLE.read_text(encoding="utf-8") if TABLE.exists() else "")
    text = render(ROWS) + ("\n" + kept if kept else "")
    if os.environ.get("HYBRIDGEN_UPDATE_DOCS") == "1":
        TABLE.write_text(text, encoding="utf-8")
    current = TABLE.read_text(encoding="utf-8") if TABLE.exists() else ""
    diff = "".join(
        difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(TABLE), "run")
    )
    assert not diff, f"docs/reliability.md is out of date (HYBRIDGEN_UPDATE_DOCS=1):\n{diff}"


async def read_all(transport: Transport, received: list[str]) -> None:
    async with transport.listen(str(uuid.uuid4())) as messages:
        async for text in messages:
            received.append(text)


@pytest.mark.parametrize("kind", ["memory", "real"])
async def test_an_oversized_message_closes_the_socket_on_both_transports(
    emulator: Emulator, kind: str
) -> None:
    """The junk before it is delivered (for the caller to ignore); the big one ends the socket."""
    faults = Faults(ws_noise="oversized", gen_time=GEN)
    transport: Transport
    if kind == "real":
        emulator.model.faults = faults
        transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
    else:
        transport = MemoryTransport(ServerModel(faults, time_scale=SCALE))
    received: list[str] = []
    try:
        with trio.fail_after(LIMIT), pytest.raises(TransientError) as info:
            await read_all(transport, received)
    finally:
        await transport.aclose()
    assert "1009" in str(info.value)
    assert len(received) >= 5 and all(len(text) < WS_MAX_MESSAGE for text in received)
