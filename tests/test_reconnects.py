"""Push reconnects back off: exponentially with jitter up to a cap, per channel; a connection
that brings no news counts as a failed attempt, one that brings news starts the count again;
the legacy WebSocket is not opened for every short gap of SSE; retry events name the channel
and the delay."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen.api import Config
from hybridgen.driver import Client
from hybridgen.emulator import Emulator
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.errors import ConfigError
from hybridgen.events import Event, Retry
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport, run_virtual
from hybridgen.testing.strategies import seconds
from hybridgen.transport import SuperDuperTransport

TOKEN = "test-token-123"
NEVER = 10_000.0
"""A generation time no test waits for."""


def connects(counts: dict[str, int]) -> tuple[int, int]:
    return counts["sse_connect"], counts["ws_connect"]


def run_storm(faults: Faults, policy: Policy) -> tuple[ServerModel, list[Event]]:
    model = ServerModel(faults, seed=0)
    events: list[Event] = []

    async def main() -> None:
        async with Client(MemoryTransport(model), policy=policy) as client:
            client.subscribe(events.append)
            await client.start("a red fox")

    run_virtual(main)
    return model, events


def attempts_bound(policy: Policy, span: float, episodes: int) -> float:
    """The most connects of one channel within ``span`` seconds split into ``episodes`` runs
    without news: per run one connect at its start plus the growing delays below the cap
    (``log_factor(cap / delay)`` of them), then one per (jittered) cap."""
    growing = math.ceil(
        math.log(policy.reconnect_cap / policy.reconnect_delay, policy.backoff_factor)
    )
    shortest_cap = policy.reconnect_cap * (1 - policy.reconnect_jitter)
    return episodes * (growing + 2) + span / shortest_cap


# -- the policy fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reconnect_delay", 0),
        ("reconnect_delay", math.inf),
        ("reconnect_cap", -1),
        ("reconnect_jitter", 1.0),
        ("reconnect_jitter", -0.1),
    ],
)
def test_reconnect_fields_are_validated(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        Policy(**{field: value})


def test_the_cap_is_at_least_the_first_delay() -> None:
    with pytest.raises(ConfigError, match="reconnect_cap.*reconnect_delay"):
        Policy(reconnect_delay=5.0, reconnect_cap=2.0)
    assert Policy.default().scaled(0.1).reconnect_cap == pytest.approx(3.0)  # a duration


# -- virtual time -----------------------------------------------------------------------------


def test_the_issues_storm_is_a_handful_of_connects() -> None:
    """The issue: a server that ends each SSE stream after one message, the scaled default
    policy, 8 s: 78 SSE and 78 WebSocket connects. Now the backoff grows; the WebSocket opens
    once, beside an SSE stream that brings nothing new, and stays."""
    policy = Policy.default().scaled(0.05).replace(deadline=8.0)
    model, events = run_storm(Faults(sse_mode="oneshot", ws_mode="silent", gen_time=NEVER), policy)
    sse, ws = connects(model.counts)
    assert ws == 1
    assert sse <= attempts_bound(policy, 8.0, episodes=1)
    retries = [e for e in events if isinstance(e, Retry)]
    assert {r.what for r in retries} == {"sse"}
    delays = [r.delay for r in retries]
    assert max(delays) <= policy.reconnect_cap and delays[3] > delays[0]


@settings(max_examples=80, deadline=None)
@given(
    sse_mode=st.sampled_from(["oneshot", "drop", "refuse", "silent"]),
    ws_mode=st.sampled_from(["oneshot", "drop", "refuse", "silent"]),
    reconnect_delay=seconds(0.05, 3.0),
    cap_over=seconds(0.0, 40.0),
    factor=st.sampled_from([1.5, 2.0, 3.0]),
    jitter=st.sampled_from([0.0, 0.5, 0.9]),
    deadline=seconds(5.0, 900.0),
    progress_steps=st.integers(0, 3),
    fallback=st.booleans(),
)
def test_connect_attempts_per_channel_grow_at_most_logarithmically_with_time(
    sse_mode: str,
    ws_mode: str,
    reconnect_delay: float,
    cap_over: float,
    factor: float,
    jitter: float,
    deadline: float,
    progress_steps: int,
    fallback: bool,
) -> None:
    """Whatever the server does to each connection (ends it after one message, drops it,
    refuses it, keeps it silent), each channel's connects within the generation stay below
    ``log_factor(cap / delay)`` per run without news, plus one per cap (linear once the cap is
    reached, as a cap means), with one more run per piece of news (at most one per progress
    step, plus the first message)."""
    policy = Policy(
        reconnect_delay=reconnect_delay,
        reconnect_cap=reconnect_delay + cap_over,
        backoff_factor=factor,
        reconnect_jitter=jitter,
        deadline=deadline,
        push_fallback=fallback,
    )
    faults = Faults(
        sse_mode=sse_mode,  # type: ignore[arg-type]
        ws_mode=ws_mode,  # type: ignore[arg-type]
        ws_drops=10**6,
        ws_drop_after=0.01,
        gen_time=deadline * 2,
        progress_steps=progress_steps,
    )
    model, _ = run_storm(faults, policy)
    episodes = progress_steps + 2  # each step's news, the first message, the start
    bound = attempts_bound(policy, deadline, episodes)
    for channel, count in zip(("sse", "websocket"), connects(model.counts), strict=True):
        assert count <= bound, f"{channel}: {count} connects > {bound:.1f} in {deadline} s"


def test_a_stream_that_brought_news_reconnects_without_opening_the_socket() -> None:
    """SSE ends once after its first progress message (today's API through a proxy): it comes
    back after reconnect_delay and delivers; the legacy socket is never opened."""
    policy = Policy.default()
    faults = Faults(sse_mode="drop", ws_drops=1, ws_drop_after=12.0, gen_time=35.0)
    model, events = run_storm(faults, policy)
    assert connects(model.counts) == (2, 0)
    retries = [e for e in events if isinstance(e, Retry)]
    assert [(r.what, r.attempt) for r in retries] == [("sse", 1)]
    assert policy.reconnect_delay * (1 - policy.reconnect_jitter) <= retries[0].delay
    assert retries[0].delay <= policy.reconnect_delay


def test_a_refused_sse_opens_the_socket_at_once_and_keeps_it() -> None:
    """SSE refused (HTTP 524): the socket opens at once and stays open while SSE backs off."""
    model, events = run_storm(Faults(sse_mode="refuse", gen_time=35.0), Policy.default())
    sse, ws = connects(model.counts)
    assert ws == 1 and 2 <= sse <= attempts_bound(Policy.default(), 35.0, 1)
    states = [e for e in events if getattr(e, "dest", None) is State.DONE]
    assert states and states[0].channel == "websocket"


# -- real sockets -----------------------------------------------------------------------------


async def test_storm_over_real_sockets(emulator: Emulator) -> None:
    """Both channels end each connection after one message, over loopback: connects per
    channel stay within the backoff's bound and retry events name the channel and the delay."""
    emulator.model.faults = Faults(sse_mode="oneshot", ws_mode="oneshot", gen_time=NEVER)
    policy = Policy.default().scaled(0.05).replace(deadline=3.0)
    retries: list[Retry] = []
    transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
    async with Client(transport, policy=policy) as client:
        client.subscribe(lambda e: retries.append(e) if isinstance(e, Retry) else None)
        with trio.fail_after(8.0):
            result = await client.start("a red fox")
    assert result.state is State.FAILED and "deadline" in result.reason
    sse, ws = connects(emulator.model.counts)
    bound = attempts_bound(policy, policy.deadline, episodes=2)
    assert 2 <= sse <= bound and 1 <= ws <= bound  # the seed-era default: 30 of each
    pushed = [r for r in retries if r.what in ("sse", "websocket")]
    assert {r.what for r in pushed} == {"sse", "websocket"}
    for channel in ("sse", "websocket"):
        delays = [r.delay for r in pushed if r.what == channel]
        assert all(0 < d <= policy.reconnect_cap for d in delays)
    assert "ended" in pushed[0].reason or "closed" in pushed[0].reason


async def test_a_short_sse_gap_opens_no_socket_over_real_sockets(emulator: Emulator) -> None:
    scale = emulator.model.time_scale
    emulator.model.faults = Faults(
        sse_mode="drop", ws_drops=1, ws_drop_after=12.0, gen_time=35.0, ws_mode="normal"
    )
    # each connect bounded by 2 s and a quiet stream by 5 s, not the scaled 0.2 s and 0.3 s: on a
    # loaded machine a reconnect that timed out (a failed connect) or a stream slow to speak
    # rightly opens the socket, which is not what this test is about
    policy = Policy.default().scaled(scale).replace(request_timeout=2.0, push_quiet=5.0)
    transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
    async with Client(transport, policy=policy) as client:
        with trio.fail_after(8.0):
            result = await client.generate("a red fox")
    assert result.state is State.DONE and result.channel == "sse"
    assert connects(emulator.model.counts) == (2, 0)
