"""Hypothesis strategies for hybridgen's inputs: policies, server behaviours, whole scenarios.

Use them to property-test your own code against flaky generation servers, e.g.::

    from hypothesis import given
    from hybridgen.testing import check_invariants, run_scenario
    from hybridgen.testing.strategies import scenarios

    @given(scenarios())
    def test_my_use(scenario):
        check_invariants(run_scenario(scenario))
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as exc:  # installed without the extra
    raise ImportError(
        "hybridgen.testing.strategies needs Hypothesis, which plain hybridgen does not install: "
        "pip install 'hybridgen[testing]'",
        name=exc.name,
    ) from exc

from ..emulator.model import POLL_FAULTS, SSE_MODES, WS_MODES, Faults
from ..policy import Policy
from ..wire import PUSH_CHANNELS
from .scenario import Scenario

__all__ = ["faults", "policies", "scenarios", "seconds"]


def seconds(low: float, high: float) -> st.SearchStrategy[float]:
    """Durations in ``[low, high]`` seconds, at millisecond resolution (exact ties stay rare)."""
    return st.integers(round(low * 1000), round(high * 1000)).map(lambda ms: ms / 1000)


@st.composite
def policies(draw: st.DrawFn, *, max_deadline: float = 200.0) -> Policy:
    """Any valid :class:`~hybridgen.policy.Policy`."""
    push_timeout = draw(seconds(0.1, 40.0))
    poll_interval = draw(seconds(0.1, 10.0))
    return Policy(
        push_timeout=push_timeout,
        poll_interval=poll_interval,
        backoff_factor=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
        backoff_cap=poll_interval + draw(seconds(0.0, 20.0)),
        reconnect_delay=(reconnect_delay := draw(seconds(0.05, 5.0))),
        reconnect_cap=reconnect_delay + draw(seconds(0.0, 40.0)),
        reconnect_jitter=draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
        jitter=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5])),
        deadline=push_timeout + draw(seconds(0.5, max_deadline)),
        push=tuple(draw(st.permutations(PUSH_CHANNELS))[: draw(st.integers(0, 2))]),
        push_fallback=draw(st.booleans()),
        push_quiet=draw(st.none() | seconds(0.1, 60.0)),
        keep_push_open=draw(st.booleans()),
        push_reconnect=draw(st.booleans()),
        retry_budget=draw(st.none() | st.integers(0, 10)),
        honour_retry_after=draw(st.booleans()),
        request_timeout=draw(seconds(0.5, 20.0)),
        adaptive=draw(st.booleans()),
        history_wait=draw(st.none() | seconds(0.1, 60.0)),
        trust_live_socket=draw(st.booleans()),
        sparse_interval=poll_interval + draw(seconds(0.0, 30.0)),
        push_alive=draw(st.none() | seconds(0.1, 60.0)),
        lively_interval=poll_interval + draw(seconds(0.0, 40.0)),
    )


@st.composite
def faults(draw: st.DrawFn, *, max_gen_time: float = 200.0) -> Faults:
    """Any server behaviour the emulator can play: push modes (WebSocket and SSE), poll faults,
    job timings, the status word of a failed job."""
    return Faults(
        ws_mode=draw(st.sampled_from(WS_MODES)),
        sse_mode=draw(st.sampled_from(SSE_MODES)),
        late_by=draw(seconds(0.0, 60.0)),
        ws_drops=draw(st.integers(0, 3)),
        ws_drop_after=draw(seconds(0.0, 60.0)),
        poll_fault=draw(st.none() | st.sampled_from(POLL_FAULTS)),
        poll_faults=draw(st.none() | st.integers(0, 5)),
        poll_fault_rate=draw(st.sampled_from([1.0, 0.5, 0.1])),
        retry_after=draw(st.none() | seconds(0.0, 20.0)),
        poll_delay=draw(st.sampled_from([0.0, 0.0, 0.05, 1.0, 30.0])),
        gen_time=draw(seconds(0.0, max_gen_time)),
        job_fails=draw(st.booleans().map(lambda b: b and draw(st.booleans()))),
        fail_status=draw(st.sampled_from(["error", "failed", "FAILED", "canceled", "timeout"])),
        progress_steps=draw(st.integers(0, 3)),
        sse_keepalive=draw(st.sampled_from([0.0, 0.0, 1.0, 7.0, 30.0])),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    policy: st.SearchStrategy[Policy] | None = None,
    server: st.SearchStrategy[Faults] | None = None,
    cancel: bool = True,
) -> Scenario:
    """A whole :class:`~hybridgen.testing.Scenario`: server, policy, and maybe a cancel."""
    chosen = draw(policy if policy is not None else policies())
    cancel_at = draw(st.none() | seconds(0.0, chosen.deadline)) if cancel else None
    return Scenario(
        faults=draw(server if server is not None else faults()),
        policy=chosen,
        cancel_at=cancel_at,
        cancel_by=draw(st.sampled_from(["scope", "handle"])),
    )
