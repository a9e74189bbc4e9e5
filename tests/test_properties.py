"""Property tests of the timeout and fallback invariants, on trio's virtual clock.

Each property runs random server behaviours x random valid policies through the real driver and
core, over the in-memory transport (the emulator's model without sockets). A 2-minute scenario
takes milliseconds: every wait is a trio sleep that ``MockClock(autojump_threshold=0)`` skips.
"""

from __future__ import annotations

import math
import os

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import Machine, MachineError

from hybridgen.core import Result
from hybridgen.driver import Client
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.machine import DEFINITION, INITIAL, TABLE, State, Trigger, build_definition
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport, Scenario, run_scenario, run_virtual
from hybridgen.testing.harness import (
    EPSILON,
    check_cancel,
    check_deadline,
    check_done_iff_learnable,
    check_edges,
    check_no_internal_error,
    check_one_terminal,
    check_polls,
    check_retries_bounded,
)
from hybridgen.testing.strategies import faults, policies, scenarios, seconds

EXAMPLES = int(os.environ.get("HYBRIDGEN_EXAMPLES", "150"))
props = settings(max_examples=EXAMPLES, deadline=None)


@props
@given(scenarios())
def test_exactly_one_terminal_event_and_nothing_after(scenario: Scenario) -> None:
    check_one_terminal(run_scenario(scenario))


@props
@given(scenarios())
def test_terminal_by_the_deadline(scenario: Scenario) -> None:
    check_deadline(run_scenario(scenario))


@props
@given(scenarios())
def test_no_generation_ends_by_an_internal_error(scenario: Scenario) -> None:
    check_no_internal_error(run_scenario(scenario))


@props
@given(scenarios())
def test_done_iff_the_result_was_ready_and_learnable(scenario: Scenario) -> None:
    check_done_iff_learnable(run_scenario(scenario))


@props
@given(scenarios())
def test_never_polls_before_the_policy_says_so(scenario: Scenario) -> None:
    check_polls(run_scenario(scenario))


@props
@given(scenarios())
def test_every_transition_is_an_edge_of_the_definition(scenario: Scenario) -> None:
    check_edges(run_scenario(scenario))


@props
@given(scenarios())
def test_poll_retries_stay_within_the_budget(scenario: Scenario) -> None:
    check_retries_bounded(run_scenario(scenario))


@props
@given(scenarios(), seconds(0.0, 200.0), st.sampled_from(["scope", "handle"]))
def test_cancel_at_any_moment_ends_cancelled_with_nothing_left(
    scenario: Scenario, cancel_at: float, how: str
) -> None:
    from attrs import evolve

    scenario = evolve(scenario, cancel_at=min(cancel_at, scenario.policy.deadline), cancel_by=how)
    trace = run_scenario(scenario)
    # cancelled exactly at cancel_at unless already terminal by then; no task or socket left
    check_cancel(trace)


@props
@given(seconds(0.0, 160.0), st.sampled_from(["normal", "silent"]))
def test_seed_preset_replays_the_seed_timeline(gen_time: float, ws_mode: str) -> None:
    """30 s on the socket (closed then), then a poll every 2 s, 150 s in all."""
    seed = Policy.seed()
    trace = run_scenario(Scenario(faults=Faults(ws_mode=ws_mode, gen_time=gen_time), policy=seed))
    result = trace.result
    ready = gen_time
    if ready == 0:  # the start reply already carries the url: no need to wait at all
        assert result.state is State.DONE and result.elapsed == 0 and trace.polls == []
        return
    if ws_mode == "normal" and ready < seed.push_timeout:
        assert result.state is State.DONE and result.channel == "websocket"
        assert math.isclose(result.elapsed, ready, abs_tol=EPSILON)
        assert trace.polls == []
        return
    polls = trace.polls
    expected = [seed.push_timeout + 2.0 * k for k in range(len(polls))]
    assert polls == pytest.approx(expected, abs=1e-6)
    # the socket was opened once and closed at the fallback: no push after 30 s
    assert [what for _, what in trace.calls].count("ws_connect") == 1
    learned = seed.push_timeout + 2.0 * math.ceil(max(ready - seed.push_timeout, 0.0) / 2.0 - 1e-9)
    if learned < seed.deadline - EPSILON:
        assert result.state is State.DONE and result.channel == "polling"
        assert math.isclose(result.elapsed, learned, abs_tol=1e-6)
        return
    # a poll due exactly at the deadline may or may not be sent: the deadline ends it
    if result.state is State.DONE:
        assert math.isclose(learned, seed.deadline, abs_tol=EPSILON)
        return
    assert result.state is State.FAILED
    assert math.isclose(result.elapsed, seed.deadline, abs_tol=1e-6)


@props
@given(seconds(0.0, 110.0), st.sampled_from([0.0, 0.1, 0.25]))
def test_default_preset_silent_socket_costs_about_one_poll_interval(
    gen_time: float, jitter: float
) -> None:
    policy = Policy.default().replace(jitter=jitter)
    trace = run_scenario(
        Scenario(faults=Faults(ws_mode="silent", gen_time=gen_time), policy=policy)
    )
    assert trace.result.state is State.DONE
    assert trace.result.channel == "polling"
    cost = trace.result.elapsed - max(gen_time, policy.push_timeout)
    assert cost <= policy.poll_interval * (1 + jitter) + EPSILON


@props
@given(seconds(0.0, 110.0), policies(), st.sampled_from(["websocket", "sse"]))
def test_working_push_delivers_at_once_while_listening(
    gen_time: float, policy: Policy, channel: str
) -> None:
    faults = Faults(
        ws_mode="normal" if channel == "websocket" else "silent",
        sse_mode="normal" if channel == "sse" else "silent",
        gen_time=gen_time,
    )
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    # with push_fallback, the first channel connects (silent or not) and keeps the others closed
    opened = channel in policy.push and (not policy.push_fallback or policy.push[0] == channel)
    listening = opened and (policy.keep_push_open or gen_time < policy.push_timeout)
    if gen_time < policy.deadline and listening:
        assert trace.result.state is State.DONE
        assert trace.result.elapsed == pytest.approx(gen_time, abs=EPSILON)
        if gen_time > 0:  # (at 0 the start reply already carries the url)
            assert trace.result.channel in (channel, "polling")


@props
@given(faults(), policies())
def test_a_failed_job_never_ends_done(server: Faults, policy: Policy) -> None:
    trace = run_scenario(Scenario(faults=server.replace(job_fails=True), policy=policy))
    assert trace.result.state is State.FAILED
    if trace.transitions[-1].trigger is Trigger.ERROR and "job failed" in trace.result.reason:
        assert trace.result.elapsed >= server.gen_time - EPSILON


# -- the compiled table is the transitions definition -----------------------------------------


def test_table_has_every_edge_of_the_definition() -> None:
    count = sum(
        len(ts) for event in DEFINITION.events.values() for ts in event.transitions.values()
    )
    assert len(TABLE) == count == 17


class _Model:
    state: str


@props
@given(st.lists(st.sampled_from(list(Trigger)), max_size=8))
def test_table_behaves_like_a_per_object_transitions_machine(triggers: list[Trigger]) -> None:
    model = _Model()
    Machine(model=model, **_definition_kwargs())
    state = INITIAL
    for trigger in triggers:
        expected: State | None
        try:
            model.trigger(str(trigger))  # type: ignore[attr-defined]
            expected = State(model.state)
        except MachineError:
            expected = None
        got = TABLE.get((state, trigger))
        assert got is expected
        if got is not None:
            state = got


def _definition_kwargs() -> dict[str, object]:
    fresh = build_definition()
    return {
        "states": list(fresh.states),
        "transitions": [
            {"trigger": name, "source": src, "dest": t.dest}
            for name, event in fresh.events.items()
            for src, ts in event.transitions.items()
            for t in ts
        ],
        "initial": fresh.initial,
        "auto_transitions": False,
    }


# -- trust: a push channel earns it by delivering a result on this client -----------------------

PUSH_MODES = ["normal", "silent", "progress", "late", "drop", "refuse"]


async def _one_client(
    policy: Policy, servers: list[Faults]
) -> list[tuple[set[str], float, Result]]:
    """Run one generation per server behaviour, one after another, through ONE client; for each:
    the channels the client trusted before it, when its result was ready, and its result."""
    model = ServerModel(seed=0)
    outcomes = []
    async with Client(MemoryTransport(model), policy=policy) as client:
        for server in servers:
            model.faults = server
            trusted = set(client.trusted)
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, "a red fox")
            job = model.jobs[gen.file_id] if gen.file_id else None
            ready = math.inf if job is None else job.ready_at - t0
            outcomes.append((trusted, ready, gen.result()))
    return outcomes


@props
@given(
    policies().map(lambda p: p.replace(adaptive=False, trust_live_socket=True, push_alive=None)),
    st.lists(
        st.builds(
            lambda ws, sse, gen_time, steps: Faults(
                ws_mode=ws, sse_mode=sse, gen_time=gen_time, progress_steps=steps
            ),
            st.sampled_from(PUSH_MODES),
            st.sampled_from(PUSH_MODES),
            seconds(0.0, 100.0),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_an_untrusted_channel_never_delays_a_result_by_more_than_one_poll_interval(
    policy: Policy, servers: list[Faults]
) -> None:
    """Without ``push_alive``, progress (or silence) from a channel that has not delivered a
    result on this client yet does not space polls out: the result comes at most one poll
    interval after it is ready (after the push-only wait). A channel that delivered is trusted.
    (A lively channel's own bounds: tests/test_life.py.)"""
    for trusted, ready, result in run_virtual(lambda: _one_client(policy, servers)):
        if result.state is State.DONE and result.channel in ("websocket", "sse"):
            assert result.channel in policy.push
        if trusted & set(policy.push):
            continue  # trust was earned: polls may be a sparse safety net
        bound = max(ready, policy.push_timeout) + policy.poll_interval * (1 + policy.jitter)
        if bound < policy.deadline - 1e-3:
            assert result.state is State.DONE, result
            assert result.elapsed <= bound + EPSILON, (result, ready, bound)


def test_trust_is_remembered_per_client_and_only_after_a_result() -> None:
    policy = Policy.default().replace(jitter=0.0)
    progress_only = Faults(ws_mode="progress", sse_mode="progress", gen_time=35.0)
    today = Faults(ws_mode="silent", sse_mode="normal", gen_time=35.0)
    outcomes = run_virtual(lambda: _one_client(policy, [progress_only, today, today]))
    (t1, _, r1), (t2, _, r2), (t3, _, r3) = outcomes
    assert (t1, r1.channel) == (set(), "polling")
    assert (t2, r2.channel) == (set(), "sse")
    assert (t3, r3.channel) == ({"sse"}, "sse")
    # trusted, the SSE channel turns polls into a sparse safety net: no more than the seed's
    assert r3.polls < r2.polls and r3.polls <= 4


# -- push_fallback (Policy.lean): one push connection per generation ---------------------------


@props
@given(seconds(0.5, 100.0), st.sampled_from(["normal", "silent", "progress"]))
def test_lean_opens_one_channel_while_sse_is_up(gen_time: float, sse_mode: str) -> None:
    policy = Policy.lean()
    faults = Faults(ws_mode="normal", sse_mode=sse_mode, gen_time=gen_time)  # type: ignore[arg-type]
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    connects = [what for _, what in trace.calls if what.endswith("_connect")]
    assert connects == ["sse_connect"]  # the WebSocket was never opened
    assert trace.result.state is State.DONE
    if sse_mode == "normal":
        assert trace.result.channel == "sse"
        assert trace.result.elapsed == pytest.approx(gen_time, abs=EPSILON)
    else:  # a silent first channel keeps the fallback closed: polling delivers
        assert trace.result.channel == "polling"
        assert (
            trace.result.elapsed
            <= max(gen_time, policy.push_timeout)
            + policy.poll_interval * (1 + policy.jitter)
            + EPSILON
        )


@props
@given(seconds(0.5, 100.0), st.sampled_from(["refuse", "drop"]))
def test_lean_falls_back_to_the_websocket_while_sse_is_down(gen_time: float, sse_mode: str) -> None:
    """SSE refused (HTTP 524) or dropped: the legacy socket opens and delivers at once."""
    faults = Faults(
        ws_mode="normal",
        sse_mode=sse_mode,  # type: ignore[arg-type]
        ws_drops=1000,
        ws_drop_after=0.1,
        gen_time=gen_time,
    )
    trace = run_scenario(Scenario(faults=faults, policy=Policy.lean()))
    connects = [what for _, what in trace.calls if what.endswith("_connect")]
    assert connects[0] == "sse_connect" and "ws_connect" in connects
    assert trace.result.state is State.DONE
    assert trace.result.channel in ("websocket", "sse")
    assert trace.result.elapsed == pytest.approx(gen_time, abs=EPSILON)


@props
@given(seconds(0.5, 100.0), seconds(0.5, 30.0))
def test_a_quiet_first_channel_opens_the_next_which_delivers_at_once(
    gen_time: float, quiet: float
) -> None:
    """push_quiet: SSE connects and stays silent (the seed-era API); after ``quiet`` seconds the
    WebSocket opens too and delivers at once; before that, only SSE is open."""
    policy = Policy.lean().replace(push_quiet=quiet)
    faults = Faults(ws_mode="normal", sse_mode="silent", gen_time=gen_time)
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    connects = [(t, what) for t, what in trace.calls if what.endswith("_connect")]
    assert connects[0][1] == "sse_connect"
    opened = connects[0][0]
    assert all(t >= opened + quiet - EPSILON for t, what in connects if what == "ws_connect")
    assert trace.result.state is State.DONE
    if gen_time > quiet + 0.1:
        assert [what for _, what in connects] == ["sse_connect", "ws_connect"]
        assert trace.result.channel in ("websocket", "polling")
        assert trace.result.elapsed == pytest.approx(gen_time, abs=EPSILON)


@props
@given(seconds(0.5, 100.0), seconds(0.5, 30.0))
def test_a_first_channel_that_speaks_keeps_the_next_closed(gen_time: float, quiet: float) -> None:
    """push_quiet: an SSE stream that sends progress before ``quiet`` is not quiet."""
    policy = Policy.lean().replace(push_quiet=quiet)
    steps = math.ceil(gen_time / quiet) + 1  # a message at least every ``quiet`` seconds
    faults = Faults(ws_mode="normal", sse_mode="normal", gen_time=gen_time, progress_steps=steps)
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    connects = [what for _, what in trace.calls if what.endswith("_connect")]
    assert connects == ["sse_connect"]
    assert trace.result.channel == "sse"
    assert trace.result.elapsed == pytest.approx(gen_time, abs=EPSILON)
