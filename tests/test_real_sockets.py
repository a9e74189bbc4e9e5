"""Whole generations over real loopback sockets: the driver, SuperDuperTransport and the emulator.

Timings are scaled: the emulator's jobs run at ``TIME_SCALE`` of their nominal length and the
policies at ``POLICY_SCALE`` (``Policy.seed().scaled(0.05)`` waits 1.5 s for the socket instead of
30 s). Bounds are generous multiples of those scaled timings, not wall-clock goals.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import trio

from hybridgen.api import Config, ImageRequest
from hybridgen.driver import Client, Result
from hybridgen.emulator import Emulator, Faults
from hybridgen.emulator.model import Job
from hybridgen.errors import DownloadError, GenerationFailed
from hybridgen.events import Event, Retry
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing.sockets import client_side_fds, fds_but_server_side
from hybridgen.transport import SuperDuperTransport

TOKEN = "test-token-123"
POLICY_SCALE = 0.05
SLACK = 0.5
"""Seconds allowed on top of a scaled timing for loopback round trips and a loaded machine."""
LIMIT = 8.0
"""No test body may take longer than this."""

DEFAULT = Policy.default().scaled(POLICY_SCALE)  # SSE (socket if quiet) + polls every 0.1 s
# each request bounded by 2 s, not the scaled 0.5 s: a start timed out on a loaded machine
EAGER = Policy.eager().scaled(POLICY_SCALE).replace(request_timeout=2.0)  # socket and SSE at once
SEED = Policy.seed().scaled(POLICY_SCALE).replace(request_timeout=2.0)  # 1.5 s socket, then polls


def gen_time(emulator: Emulator, seconds: float) -> float:
    """The nominal ``gen_time`` that makes a job take ``seconds`` of real time."""
    return seconds / emulator.model.time_scale


def client_for(
    emulator: Emulator, token: str = TOKEN, *, http: httpx.AsyncClient | None = None
) -> Client:
    transport = SuperDuperTransport(Config(url=emulator.url, token=token), http=http)
    return Client(transport, policy=DEFAULT)


async def generate(emulator: Emulator, faults: Faults, policy: Policy) -> tuple[float, Result]:
    emulator.model.faults = faults
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT):
            result = await client.generate("a red fox", policy=policy)
    return result.elapsed, result


async def test_push_delivers_the_result(emulator: Emulator, tmp_path: Path) -> None:
    ready_in = 0.3
    # No poll before 3 s: only the socket can deliver.
    policy = EAGER.replace(push_timeout=3.0, deadline=4.0)
    emulator.model.faults = Faults(gen_time=gen_time(emulator, ready_in))
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT):
            result = await client.generate("a red fox", policy=policy)
    assert result.state is State.DONE and result.channel == "websocket"
    assert result.polls == 0
    assert result.url is not None
    assert ready_in <= result.elapsed <= ready_in + SLACK
    # The pushed URL is real: it serves the image (WEBP, from the files origin), the same bytes
    # every time; saved as .png it is converted.
    retried: list[Event] = []  # a download retried (a stall on a loaded machine) is served again
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT):
            saved = await client.download(result, tmp_path / "fox", on_event=retried.append)
            png = await client.download(
                result, tmp_path / "fox.png", convert="png", on_event=retried.append
            )
            with pytest.raises(DownloadError) as missing:
                await client.download(
                    f"{emulator.files_url}/files/{uuid.uuid4()}.webp", tmp_path / "x"
                )
    assert saved.content_type == "image/webp" and saved.path == str(tmp_path / "fox.webp")
    assert (tmp_path / "fox.webp").read_bytes()[8:12] == b"WEBP"
    assert png.content_type == "image/png" and png.source_type == "image/webp"
    assert (tmp_path / "fox.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert missing.value.status == 404 and missing.value.kind == "http"
    assert emulator.model.counts["download"] == 2 + len(retried)


async def test_silent_socket_seed_waits_for_its_ws_timeout(emulator: Emulator) -> None:
    ready_in = 0.3
    elapsed, result = await generate(
        emulator, Faults(ws_mode="silent", gen_time=gen_time(emulator, ready_in)), SEED
    )
    assert result.channel == "polling"
    # The seed polls only after its fixed socket wait, long after the result was ready.
    assert SEED.push_timeout <= elapsed <= SEED.push_timeout + SEED.poll_interval + SLACK


async def test_silent_socket_default_costs_about_one_poll_interval(emulator: Emulator) -> None:
    ready_in = 0.3
    elapsed, result = await generate(
        emulator, Faults(ws_mode="silent", gen_time=gen_time(emulator, ready_in)), DEFAULT
    )
    assert result.channel == "polling"
    one_interval = DEFAULT.poll_interval * (1 + DEFAULT.jitter)
    assert ready_in <= elapsed <= ready_in + one_interval + SLACK
    assert elapsed < SEED.push_timeout  # far earlier than the seed on the same server


async def test_default_opens_the_socket_only_beside_a_quiet_sse_stream(
    emulator: Emulator,
) -> None:
    # The seed-era server: SSE connects and stays silent, the socket pushes. No poll before 3 s.
    policy = DEFAULT.replace(push_timeout=3.0, deadline=4.0)
    assert policy.push_quiet is not None
    ready_in = policy.push_quiet + 0.4
    faults = Faults(ws_mode="normal", sse_mode="silent", gen_time=gen_time(emulator, ready_in))
    elapsed, result = await generate(emulator, faults, policy)
    assert (result.state, result.channel, result.polls) == (State.DONE, "websocket", 0)
    assert emulator.model.counts["sse_connect"] == emulator.model.counts["ws_connect"] == 1
    assert ready_in <= elapsed <= ready_in + SLACK
    # Today's API: SSE pushes; the socket is never opened.
    before = dict(emulator.model.counts)
    faults = faults.replace(ws_mode="silent", sse_mode="normal")
    elapsed, result = await generate(emulator, faults, policy)
    assert (result.state, result.channel) == (State.DONE, "sse")
    counts = {k: v - before[k] for k, v in emulator.model.counts.items()}
    assert (counts["sse_connect"], counts["ws_connect"]) == (1, 0)
    assert ready_in <= elapsed <= ready_in + SLACK


async def test_socket_dropped_midway_still_done(emulator: Emulator) -> None:
    ready_in = 0.6
    faults = Faults(
        ws_mode="drop",
        ws_drops=1,
        ws_drop_after=gen_time(emulator, 0.15),
        gen_time=gen_time(emulator, ready_in),
    )
    # Polls only from 3 s on: the result must come from the reconnected socket.
    policy = EAGER.replace(push_timeout=3.0, deadline=4.0)
    elapsed, result = await generate(emulator, faults, policy)
    assert result.state is State.DONE
    assert result.channel == "websocket"
    assert result.push_failures >= 1
    assert emulator.model.counts["ws_drop"] == 1
    assert emulator.model.counts["ws_connect"] >= 2
    assert ready_in <= elapsed <= ready_in + SLACK


async def test_push_after_the_seeds_fallback(emulator: Emulator) -> None:
    # The job ends just after the seed's socket wait: the seed has closed its socket by then and
    # must poll; the default policy still listens and gets the push.
    ready_in = SEED.push_timeout + 0.2
    faults = Faults(gen_time=gen_time(emulator, ready_in))
    seed_elapsed, seed = await generate(emulator, faults, SEED)
    assert seed.channel == "polling"
    assert ready_in <= seed_elapsed <= ready_in + SEED.poll_interval + SLACK

    # Slow polls, so that only the open socket can be this quick.
    listening = DEFAULT.replace(poll_interval=3.0, backoff_cap=3.0, deadline=5.0)
    elapsed, default = await generate(emulator, faults, listening)
    assert default.channel == "websocket"
    assert ready_in <= elapsed <= ready_in + SLACK


async def test_wrong_token_fails_fast_without_retries(emulator: Emulator) -> None:
    requests: list[str] = []

    async def record(request: httpx.Request) -> None:
        requests.append(f"{request.method} {request.url.path}")

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    emulator.model.faults = Faults(gen_time=gen_time(emulator, 0.3))
    try:
        async with client_for(emulator, token="not-the-token", http=http) as client:
            with trio.fail_after(LIMIT), pytest.raises(GenerationFailed) as info:
                await client.generate("a red fox", policy=DEFAULT)
    finally:
        await http.aclose()
    result = info.value.result
    assert result.state is State.FAILED
    assert "SUPERDUPERAI_TOKEN" in result.reason
    assert "not-the-token" not in result.reason and TOKEN not in result.reason
    assert result.elapsed < DEFAULT.poll_interval + SLACK
    assert requests == ["POST /api/v1/file/generate-image"]  # one start, no retry
    async with httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        stats = (await http.get(f"{emulator.url}/_emulator/stats", headers=auth)).json()
    assert stats["poll"] == 0
    assert stats["start"] == 0  # the start never got past the token check


@pytest.mark.parametrize(
    ("fault", "retry_after", "cap"),
    [("500", None, 0.1), ("503", 0.5, None), ("429", 0.5, None), ("429", 0.5, 0.1)],
)
async def test_server_errors_are_retried_then_done(
    emulator: Emulator, fault: str, retry_after: float | None, cap: float | None
) -> None:
    """Answered poll errors are polled through; with ``poll_retry_after_cap`` None, Retry-After
    is waited in full, with the (scaled) default cap one interval (no push can deliver)."""
    ready_in = 0.3
    faults = Faults(
        ws_mode="silent",
        gen_time=gen_time(emulator, ready_in),
        poll_fault=fault,  # type: ignore[arg-type]
        poll_faults=2,
        retry_after=None if retry_after is None else gen_time(emulator, retry_after),
    )
    policy = DEFAULT.replace(deadline=4.0, poll_retry_after_cap=cap)
    elapsed, result = await generate(emulator, faults, policy)
    assert result.state is State.DONE
    assert result.channel == "polling"
    assert result.poll_errors == 2
    # no Retry-After: the polls go on one interval apart, so one may still find the job running
    assert emulator.model.counts["poll"] == result.polls >= 3
    if retry_after is not None and cap is None:
        assert result.polls == 3
        # Two Retry-After waits before the good poll (one interval each: 0.2 s).
        assert elapsed >= DEFAULT.push_timeout * (1 - DEFAULT.jitter) + 2 * retry_after
    elif retry_after is not None:  # capped: polled again one interval later, as the seed would
        assert elapsed < DEFAULT.push_timeout + 2 * retry_after
    assert elapsed <= 4.0


async def test_deadline_fails_the_generation(emulator: Emulator) -> None:
    emulator.model.faults = Faults(ws_mode="silent", gen_time=gen_time(emulator, 30.0))
    policy = DEFAULT.replace(deadline=0.5)
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT), pytest.raises(GenerationFailed) as info:
            await client.generate("a red fox", policy=policy)
    result = info.value.result
    assert "deadline" in result.reason
    assert policy.deadline <= result.elapsed <= policy.deadline + SLACK
    assert result.polls >= 1


async def test_cancel_midway_closes_every_socket(emulator: Emulator) -> None:
    port = int(emulator.url.rsplit(":", 1)[1])
    model = emulator.model
    # A long job, a socket that stays open and polls held back by the server: mid-generation
    # both a WebSocket and an HTTP request are open.
    model.faults = Faults(
        ws_mode="silent", gen_time=gen_time(emulator, 30.0), poll_delay=gen_time(emulator, 5.0)
    )
    socket_open, poll_held = trio.Event(), trio.Event()
    ws_accept, poll_fault = model.ws_accept, model.poll_fault

    def on_ws_accept(project_id: str) -> None:
        ws_accept(project_id)
        socket_open.set()

    def on_poll_fault(job: Job) -> str | None:
        poll_held.set()
        return poll_fault(job)

    model.ws_accept = on_ws_accept  # type: ignore[method-assign]
    model.poll_fault = on_poll_fault  # type: ignore[method-assign]
    before = fds_but_server_side(port)
    assert client_side_fds(port) == 0
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, ImageRequest(prompt="a red fox"))
                await socket_open.wait()
                await poll_held.wait()
                open_mid = client_side_fds(port)
                nursery.cancel_scope.cancel()  # trio cancellation, mid-generation
        # Cancelling closed both the socket and the held poll, before the client is closed.
        after_cancel = client_side_fds(port)
    assert open_mid >= 2  # the socket and the held poll were really open
    assert after_cancel == 0
    assert gen.state is State.CANCELLED
    assert client_side_fds(port) == 0
    assert fds_but_server_side(port) <= before


async def start_fault_run(
    emulator: Emulator, fault: str, policy: Policy, retry_after: float | None = None
) -> tuple[Result, list[Retry]]:
    emulator.model.faults = Faults(
        ws_mode="silent",
        gen_time=gen_time(emulator, 0.2),
        start_fault=fault,  # type: ignore[arg-type]
        start_faults=1,
        retry_after=None if retry_after is None else gen_time(emulator, retry_after),
    )
    retries: list[Retry] = []
    async with client_for(emulator) as client:
        client.subscribe(lambda e: retries.append(e) if isinstance(e, Retry) else None)
        with trio.fail_after(LIMIT):
            result = await client.start("a red fox", policy=policy)
    return result, retries


async def test_start_answered_429_with_retry_after_waits_and_is_done(emulator: Emulator) -> None:
    result, retries = await start_fault_run(emulator, "429", DEFAULT.replace(deadline=5.0), 1.0)
    assert result.state is State.DONE
    assert [(r.what, r.attempt) for r in retries] == [("start", 1)]
    assert retries[0].delay == pytest.approx(1.0)  # the server's Retry-After, exactly
    assert result.elapsed >= 1.0
    assert emulator.model.counts["start"] == 2 and len(emulator.model.jobs) == 1


async def test_start_answered_503_is_sent_again_and_done(emulator: Emulator) -> None:
    result, retries = await start_fault_run(emulator, "503", DEFAULT.replace(deadline=5.0))
    assert result.state is State.DONE
    assert [r.what for r in retries] == ["start"]
    assert emulator.model.counts["start"] == 2 and len(emulator.model.jobs) == 1


async def test_start_answered_524_fails_saying_the_job_may_exist(emulator: Emulator) -> None:
    result, retries = await start_fault_run(emulator, "524", DEFAULT.replace(deadline=5.0))
    assert result.state is State.FAILED and retries == []
    assert "HTTP 524 from the server (Cloudflare origin timeout)" in result.reason
    assert "the job may exist" in result.reason
    assert "<" not in result.reason  # no HTML
    assert emulator.model.counts["start"] == 1 and len(emulator.model.jobs) == 1  # it does


async def test_start_answered_524_is_sent_again_when_the_user_opts_in(emulator: Emulator) -> None:
    policy = DEFAULT.replace(deadline=5.0, retry_unsafe_starts=True)
    result, retries = await start_fault_run(emulator, "524", policy)
    assert result.state is State.DONE and [r.what for r in retries] == ["start"]
    assert len(emulator.model.jobs) == 2  # the price of opting in: a second job


async def test_start_answered_422_fails_with_a_readable_reason(emulator: Emulator) -> None:
    result, retries = await start_fault_run(emulator, "422", DEFAULT.replace(deadline=5.0))
    assert result.state is State.FAILED and retries == []
    assert result.reason == (
        "the start request failed: HTTP 422 from the server (Unprocessable "
        "Entity): config.generation_config_name: unknown generation config (emulated)"
    )


async def test_seed_era_body_form_over_real_sockets(emulator: Emulator) -> None:
    emulator.model.faults = Faults(ws_mode="silent", gen_time=gen_time(emulator, 0.2))
    async with client_for(emulator) as client:
        with trio.fail_after(LIMIT):
            result = await client.generate(
                ImageRequest(prompt="a red fox", body_form="legacy", width=512),
                policy=DEFAULT.replace(deadline=5.0),
            )
    assert result.state is State.DONE
    (job,) = emulator.model.jobs.values()
    assert job.width == 512
