"""Issue 25's poll faults: under 503 and 429 on polls the default is never behind the seed.

Two rules make it so (``Policy.poll_retry_after_cap`` and ``Policy.retry_budget``): while no
push channel may deliver, a poll the server refused comes again within one ``poll_interval``,
whatever its ``Retry-After`` says (the seed's next poll would come then); and polls the server
answered with an error never spend the retry budget, so a storm of them ends a generation at
its deadline, as the seed's, not 40 s in. While a push shows life, ``Retry-After`` is honoured
in full. Properties on trio's virtual clock (whole generations over ``MemoryTransport``) and on
the sans-IO core.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen.api import FileStatus
from hybridgen.core import Core
from hybridgen.emulator import Faults
from hybridgen.errors import TransientError
from hybridgen.machine import State, Trigger
from hybridgen.policy import Policy
from hybridgen.testing import Scenario, check_invariants, run_scenario

EPSILON = 1e-6
ANSWERED = st.sampled_from(["500", "502", "503", "504", "429"])
props = settings(max_examples=40, deadline=None)


@props
@given(
    fault=ANSWERED,
    rate=st.floats(0.05, 1.0),
    retry_after=st.none() | st.floats(0.0, 600.0),
    gen_time=st.floats(1.0, 100.0),
)
def test_with_a_silent_push_a_refused_poll_comes_again_within_one_interval(
    fault: str, rate: float, retry_after: float | None, gen_time: float
) -> None:
    """Push silent, polls refused at any rate with any Retry-After: no two polls are more than
    one (jittered) interval apart, and the generation ends done, or failed at its deadline
    (never by a spent budget)."""
    policy = Policy.default()
    faults = Faults(
        ws_mode="silent",
        gen_time=gen_time,
        poll_fault=fault,  # type: ignore[arg-type]
        poll_fault_rate=rate,
        retry_after=retry_after,
    )
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    check_invariants(trace)
    polls = trace.polls
    longest = policy.poll_interval * (1 + policy.jitter) + EPSILON
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(gap <= longest for gap in gaps), (max(gaps), longest)
    result = trace.result
    if result.state is not State.DONE:
        assert result.state is State.FAILED, result
        end = trace.transitions[-1]
        assert end.trigger is Trigger.DEADLINE, result.reason
        assert math.isclose(end.monotonic, policy.deadline, abs_tol=EPSILON)
        assert "polls failed (poll: HTTP" in result.reason or rate < 1, result.reason
    else:
        assert trace.ready_at is not None
        after_ready = trace.transitions[-1].monotonic - trace.ready_at
        # the first poll after ready that the server answered found it
        assert after_ready <= (result.poll_errors + 1) * longest, after_ready


@props
@given(fault=ANSWERED, retry_after=st.floats(0.0, 600.0))
def test_a_storm_of_refused_polls_ends_at_the_deadline_for_default_and_seed(
    fault: str, retry_after: float
) -> None:
    """Every poll refused: both presets poll until their own deadline (the default's budget is
    not spent by answers), and the reason names the last error."""
    faults = Faults(ws_mode="silent", gen_time=35.0, poll_fault=fault, retry_after=retry_after)  # type: ignore[arg-type]
    for policy in (Policy.default(), Policy.seed()):
        trace = run_scenario(Scenario(faults=faults, policy=policy))
        check_invariants(trace)
        result = trace.result
        assert result.state is State.FAILED and trace.transitions[-1].trigger is Trigger.DEADLINE
        assert f"polls failed (poll: HTTP {fault}" in result.reason, result.reason
        # polling went on to the end: its last poll within one interval of the deadline
        assert trace.polls[-1] >= policy.deadline - policy.poll_interval * (1 + policy.jitter) - 1


def polling_core(policy: Policy) -> Core:
    """A core polling at 102 s (accepted at 100 s, SSE up), its first poll answered."""
    core = Core("g1", policy, lambda e: None, 100.0)
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("sse", 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_reply(FileStatus("f1"), 102.0)
    return core


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([429, 503]),
    retry_after=st.floats(0.0, 3600.0),
    cap=st.none() | st.floats(0.01, 60.0),
    alive=st.booleans(),
)
def test_retry_after_is_capped_only_while_no_push_may_deliver(
    status: int, retry_after: float, cap: float | None, alive: bool
) -> None:
    policy = Policy.default().replace(jitter=0.0, poll_retry_after_cap=cap)
    core = polling_core(policy)
    now = core.next_poll or 0.0
    if alive:
        core.push_heartbeat("sse", now - 0.5)  # a keep-alive: the push shows life
    core.poll_sent(now)
    core.poll_error(TransientError("poll: HTTP", status=status, retry_after=retry_after), now)
    assert core.state is State.POLLING
    wait = (core.next_poll or math.inf) - now
    assert wait >= policy.poll_interval - EPSILON  # never sooner than a fixed poller
    if alive or cap is None:
        assert wait >= retry_after - EPSILON  # the server's word, in full
    else:
        assert wait <= max(policy.poll_interval, min(retry_after, cap)) + EPSILON


def test_the_seed_is_unchanged_it_ignores_retry_after_and_has_no_budget() -> None:
    seed = Policy.seed()
    assert not seed.honour_retry_after and seed.retry_budget is None
    assert Policy.default().poll_retry_after_cap == Policy.default().poll_interval == 2.0
    assert Policy.default().scaled(0.5).poll_retry_after_cap == 1.0
