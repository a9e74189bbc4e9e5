"""The machine definition, its compiled table, and policy validation."""

from __future__ import annotations

import itertools

import pytest

from hybridgen import ConfigError, InvalidTransition, Policy, State, Trigger
from hybridgen.machine import DEFINITION, TABLE, TERMINAL, edges, fire
from hybridgen.policy import DURATIONS, PRESETS


def test_states_and_triggers_are_the_definitions() -> None:
    assert set(DEFINITION.states) == {s.value for s in State}
    assert set(DEFINITION.events) == {t.value for t in Trigger}


@pytest.mark.parametrize("state", sorted(TERMINAL))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_terminal_states_have_no_way_out(state: State, trigger: Trigger) -> None:
    with pytest.raises(InvalidTransition) as info:
        fire(state, trigger)
    assert info.value.state == state and info.value.trigger == trigger
    assert f"{trigger.value!r}" in str(info.value) and f"{state.value!r}" in str(info.value)


def test_the_main_path() -> None:
    state = fire(State.REQUESTED, Trigger.START)
    assert state is State.AWAITING_WS
    assert fire(state, Trigger.WS_TIMEOUT) is State.POLLING
    assert fire(State.POLLING, Trigger.POLL_RESULT) is State.DONE
    assert fire(State.AWAITING_WS, Trigger.PUSH_RESULT) is State.DONE
    assert fire(State.POLLING, Trigger.PUSH_RESULT) is State.DONE


def test_invalid_trigger_in_live_state_names_both() -> None:
    with pytest.raises(InvalidTransition, match="'ws_timeout'.*'polling'"):
        fire(State.POLLING, Trigger.WS_TIMEOUT)


def test_every_live_state_can_fail_and_be_cancelled() -> None:
    for state in (State.REQUESTED, State.AWAITING_WS, State.POLLING):
        assert TABLE[state, Trigger.CANCEL] is State.CANCELLED
        assert TABLE[state, Trigger.DEADLINE] is State.FAILED
        assert TABLE[state, Trigger.ERROR] is State.FAILED
    assert len(edges()) == len(TABLE)


def test_seed_preset_is_the_seed() -> None:
    seed = Policy.seed()
    assert (seed.push_timeout, seed.poll_interval, seed.deadline) == (30.0, 2.0, 150.0)
    assert not seed.keep_push_open and seed.jitter == 0 and seed.backoff_factor == 1
    assert PRESETS["seed"]() == seed and PRESETS["default"]() == Policy()


def test_default_preset_listens_while_polling_from_one_interval() -> None:
    default = Policy.default()
    assert default.keep_push_open and default.push_reconnect
    assert default.push_timeout <= default.poll_interval


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("push_timeout", 0),
        ("push_timeout", -1.0),
        ("poll_interval", float("nan")),
        ("deadline", float("inf")),
        ("jitter", 1.0),
        ("jitter", -0.1),
        ("backoff_factor", 0.5),
        ("retry_budget", -1),
        ("retry_budget", 1.5),
        ("keep_push_open", "yes"),
        ("request_timeout", 0),
        ("push_quiet", 0),
        ("push_quiet", float("nan")),
        ("push_fallback", "yes"),
    ],
)
def test_invalid_policy_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_deadline_must_exceed_ws_timeout() -> None:
    with pytest.raises(ConfigError, match="deadline.*push_timeout"):
        Policy(push_timeout=30, deadline=20)


def test_backoff_cap_at_least_interval() -> None:
    with pytest.raises(ConfigError) as info:
        Policy(poll_interval=5, backoff_cap=1)
    assert info.value.field == "backoff_cap"


def test_scaled_multiplies_every_duration_only() -> None:
    seed = Policy.seed()
    fast = seed.scaled(0.05)
    for name in DURATIONS:
        value = getattr(seed, name)
        assert getattr(fast, name) == (None if value is None else pytest.approx(value * 0.05))
    assert Policy.default().scaled(0.05).history_wait == pytest.approx(1.5)
    assert fast.jitter == seed.jitter and fast.keep_push_open == seed.keep_push_open
    assert Policy.lean().scaled(0.05).push_quiet is None  # "never" stays never
    with pytest.raises(ConfigError, match="time_scale"):
        seed.scaled(0)


def test_polling_preset_opens_no_push_channel_and_polls_every_interval() -> None:
    from hybridgen.emulator.model import Faults
    from hybridgen.testing import Scenario, run_scenario

    policy = PRESETS["polling"]()
    assert policy.push == () and policy == Policy.default().replace(push=())
    # a server whose push channels both work: the polling preset must not even open them
    trace = run_scenario(
        Scenario(faults=Faults(ws_mode="normal", sse_mode="normal", gen_time=7.0), policy=policy)
    )
    assert trace.result.state is State.DONE and trace.result.channel == "polling"
    kinds = [what for _, what in trace.calls]
    assert "ws_connect" not in kinds and "sse_connect" not in kinds
    polls = [at for at, what in trace.calls if what == "poll"]
    assert polls[0] == pytest.approx(policy.push_timeout, abs=0.01)
    assert all(
        b - a >= policy.poll_interval * (1 - policy.jitter) for a, b in itertools.pairwise(polls)
    )
