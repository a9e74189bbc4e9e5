"""Quiet polling from the client's history (``Policy.history_wait``, issue 25's requests).

Once a client knows how long its recent generations took (``Client.durations``, after 3), a
generation whose push is silent polls once per ``history_wait`` at most until the expected moment
(the shortest recent duration), then at the full cadence from that moment, give or take half an
interval. The bounds, as properties on the sans-IO core and on whole generations in virtual time:
no poll before the expected moment but the safety polls; a job no shorter than history is found
within one interval of ready; one shorter than history (or one that fails early) within
``history_wait``; jobs grown faster than history are measured again within a few generations.
"""

from __future__ import annotations

import itertools
import math

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen.core import Core
from hybridgen.driver import UNSURE, Client, Durations, duration_key
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.errors import TransientError
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import MemoryTransport, run_virtual
from hybridgen.testing.strategies import seconds
from hybridgen.video import StartRequest, VideoRequest
from hybridgen.wire import FileStatus, ImageRequest

EPSILON = 1e-6
T0 = 100.0
props = settings(max_examples=150, deadline=None)

FOX = duration_key(ImageRequest(prompt="a red fox"))
"""The kind of job of the generations these tests start (an image of the default model)."""


def drive(
    policy: Policy, expected: float, ready: float, refused: list[bool], retry_after: float | None
) -> tuple[Core, list[float]]:
    """One generation on the core alone: accepted at ``T0``, the result ready ``ready`` s after
    the start, each poll refused (503) while ``refused`` says so; returns the core, the moment
    polling starts (the end of the push-only wait) and then each poll's."""
    core = Core("g1", policy, lambda e: None, T0, expected=expected)
    core.accepted(FileStatus("f1"), T0)
    asked = [core.push_timeout_at]
    core.advance(core.push_timeout_at)
    faults = iter(refused)
    while not core.terminal:
        now = core.next_poll
        assert now is not None and now >= asked[-1] - EPSILON
        core.advance(now)
        if core.terminal:
            break
        core.poll_sent(now)
        asked.append(now)
        if next(faults, False):
            error = TransientError("poll: HTTP 503", status=503, retry_after=retry_after)
            core.poll_error(error, now)
        elif now >= T0 + ready:
            core.poll_reply(FileStatus("f1", url="https://cdn/f1.webp"), now)
        else:
            core.poll_reply(FileStatus("f1"), now)
    return core, asked


def quiet_policies() -> st.SearchStrategy[Policy]:
    return st.builds(
        lambda interval, wait, jitter, push_timeout: Policy(
            poll_interval=interval,
            history_wait=wait,
            jitter=jitter,
            push_timeout=push_timeout,
            deadline=400.0,
            backoff_cap=max(16.0, interval),
            sparse_interval=max(10.0, interval),
            lively_interval=max(30.0, interval),
        ),
        seconds(0.5, 5.0),
        seconds(0.5, 60.0),
        st.sampled_from([0.0, 0.1, 0.25]),
        seconds(0.1, 5.0),
    )


@props
@given(policy=quiet_policies(), expected=seconds(0.0, 200.0), ready=seconds(0.0, 300.0))
def test_no_poll_before_the_expected_moment_but_the_safety_polls(
    policy: Policy, expected: float, ready: float
) -> None:
    """Clean polls: none is more than ``history_wait`` after the one before; before the expected
    moment (less half an interval) only the safety polls, evenly spaced; a job no shorter than
    that is found within one (jittered) interval of ready, a shorter one within
    ``history_wait``."""
    core, asked = drive(policy, expected, ready, [], None)
    assert core.state is State.DONE
    interval, wait = policy.poll_interval, max(policy.history_wait or 0.0, policy.poll_interval)
    # (a jittered safety poll may bring the expected moment's poll forward by its jitter)
    dense = T0 + expected - interval / 2 - policy.jitter * wait
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert max(gaps) <= max(wait, interval * (1 + policy.jitter)) + EPSILON
    first = T0 + policy.push_timeout
    early = [t for t in asked[1:] if t < dense - EPSILON]
    if dense - first > interval:
        safety = math.ceil((T0 + expected - first) / wait - 1e-9) - 1
        assert len(early) <= max(safety, 0), (early, safety)
    found = asked[-1] - max(T0 + ready, first)
    if ready >= expected - interval / 2:
        assert found <= interval * (1 + policy.jitter) + EPSILON
    else:
        assert found <= max(wait, interval * (1 + policy.jitter)) + EPSILON


@props
@given(
    policy=quiet_policies(),
    expected=seconds(10.0, 200.0),
    ready=seconds(0.0, 300.0),
    refused=st.lists(st.booleans(), max_size=60),
    retry_after=st.none() | seconds(0.0, 120.0),
)
def test_a_refused_poll_before_the_expected_moment_keeps_the_quiet_schedule(
    policy: Policy,
    expected: float,
    ready: float,
    refused: list[bool],
    retry_after: float | None,
) -> None:
    """503s with any ``Retry-After``: before the expected moment a refused poll adds no poll (the
    next comes as the quiet schedule says, or when ``Retry-After`` ends if that is later and
    still before the expected moment): no more polls than the safety polls; no gap is longer
    than ``history_wait`` but one the server asked for."""
    _core, asked = drive(policy, expected, ready, refused, retry_after)
    interval, wait = policy.poll_interval, max(policy.history_wait or 0.0, policy.poll_interval)
    # (a jittered safety poll may bring the expected moment's poll forward by its jitter)
    dense = T0 + expected - interval / 2 - policy.jitter * wait
    early = [t for t in asked[1:] if t < dense - EPSILON]
    first = T0 + policy.push_timeout
    if dense - first > interval:
        safety = math.ceil((T0 + expected - first) / wait - 1e-9) - 1
        assert len(early) <= max(safety, 0), (early, safety)
    asked_for = retry_after or 0.0
    longest = max(wait, interval * (1 + policy.jitter), asked_for) + EPSILON
    assert all(b - a <= longest for a, b in itertools.pairwise(asked))


def test_a_refused_poll_while_the_result_is_far_off_waits_its_retry_after_in_full() -> None:
    policy = Policy.default().replace(jitter=0.0)
    core = Core("g1", policy, lambda e: None, T0, expected=60.0)
    core.accepted(FileStatus("f1"), T0)
    core.advance(T0 + 2.0)
    assert core.next_poll == pytest.approx(T0 + 31.0)  # the one safety poll, half-way to 60 s
    core.poll_sent(T0 + 31.0)
    core.poll_error(TransientError("503", status=503, retry_after=5.0), T0 + 31.0)
    # not expected before 60 s: the next poll is the quiet schedule's, not one interval later
    assert core.next_poll is not None and core.next_poll >= T0 + 59.0 - EPSILON
    core = Core("g2", policy, lambda e: None, T0, expected=60.0)
    core.accepted(FileStatus("f2"), T0)
    core.advance(T0 + 2.0)
    core.poll_sent(T0 + 31.0)
    core.poll_error(TransientError("503", status=503, retry_after=40.0), T0 + 31.0)
    # it ends after 60 s: the expected moment (give or take half an interval) comes first
    assert core.next_poll == pytest.approx(T0 + 60.0, abs=1.0 + EPSILON)


def run_after_history(
    policy: Policy, history: float, servers: list[Faults]
) -> tuple[list[tuple[float, float, State]], Durations]:
    """A client that remembers 3 generations of ``history`` seconds runs one generation per
    server, one after another: (job's ready or failing moment, elapsed, end state) each."""

    async def main() -> tuple[list[tuple[float, float, State]], Durations]:
        model = ServerModel(servers[0], seed=0)
        transport = MemoryTransport(model)
        outcomes: list[tuple[float, float, State]] = []
        async with Client(transport, policy=policy) as client:
            for _ in range(3):
                client.durations.add(history, key=FOX)
            for server in servers:
                model.faults = server
                async with trio.open_nursery() as nursery:
                    gen = await nursery.start(client.start, "a red fox")
                result = gen.result()
                outcomes.append((server.gen_time, result.elapsed, result.state))
            return outcomes, client.durations

    return run_virtual(main)


@settings(max_examples=60, deadline=None)
@given(
    history=seconds(5.0, 100.0),
    gen_time=seconds(0.0, 100.0),
    fails=st.booleans(),
    jitter=st.sampled_from([0.0, 0.1]),
)
def test_after_warm_up_a_job_is_found_within_history_wait_or_one_interval(
    history: float, gen_time: float, fails: bool, jitter: float
) -> None:
    """Push silent, a client with history: a job no shorter than history (less half an
    interval) is found within one interval of ready; any job, and a failure the server
    reports, within ``history_wait`` (30 s)."""
    policy = Policy.default().replace(jitter=jitter)
    server = Faults(ws_mode="silent", sse_mode="silent", gen_time=gen_time, job_fails=fails)
    ((ready, elapsed, state),), _ = run_after_history(policy, history, [server])
    assert state is (State.FAILED if fails else State.DONE)
    cost = elapsed - max(ready, policy.push_timeout)
    interval = policy.poll_interval * (1 + jitter)
    assert cost <= max(policy.history_wait or 0.0, interval) + EPSILON
    if ready >= history - policy.poll_interval / 2:
        assert cost <= interval + EPSILON


@settings(max_examples=30, deadline=None)
@given(history=seconds(30.0, 90.0), gen_time=seconds(1.0, 20.0))
def test_jobs_grown_faster_than_history_are_measured_again(history: float, gen_time: float) -> None:
    """History holds jobs of ``history`` s, then every job takes ``gen_time``: each is found
    within ``history_wait`` and, within ``UNSURE`` + 1 generations, the client expects them
    at their new duration (within one interval)."""
    policy = Policy.default()
    server = Faults(ws_mode="silent", sse_mode="silent", gen_time=gen_time)
    outcomes, durations = run_after_history(policy, history, [server] * (UNSURE + 1))
    for ready, elapsed, state in outcomes:
        assert state is State.DONE
        assert elapsed - max(ready, policy.push_timeout) <= 30.0 + EPSILON
    expected = durations.expected(FOX)
    assert expected is not None
    assert expected <= max(gen_time, policy.push_timeout) + policy.poll_interval * 1.1 + EPSILON


def test_durations_after_unsure_ones_in_a_row_expect_nothing_once() -> None:
    durations = Durations()
    for seconds_ in (30.0, 31.0, 32.0):
        durations.add(seconds_)
    assert durations.expected() == 30.0
    for _ in range(UNSURE - 1):
        durations.add(29.0, unsure=True)
    assert durations.expected() == 29.0
    durations.add(29.0, unsure=True)
    assert durations.expected() is None  # the next generation measures at the full cadence
    durations.add(12.0)
    assert durations.expected() == 12.0


def test_a_result_found_after_a_quiet_wait_is_recorded_unsure_and_earlier() -> None:
    policy = Policy.default().replace(jitter=0.0)
    core, asked = drive(policy, 30.0, 10.0, [], None)
    assert core.ready_after is not None
    seconds_, unsure = core.ready_after
    # found by the safety poll at 16 s; it may have been ready since the start reply
    assert unsure and seconds_ == pytest.approx(asked[-1] - T0 - policy.poll_interval / 2)
    core, _ = drive(policy, 30.0, 35.0, [], None)
    assert core.ready_after is not None and core.ready_after[1] is False
    assert Policy.seed().history_wait is None


def test_durations_are_kept_per_kind_of_job() -> None:
    """Videos of minutes teach nothing about images: each kind of job (request type, model, a
    video's duration) has its own history."""
    durations = Durations()
    video = duration_key(VideoRequest(prompt="waves", duration=10))
    for _ in range(3):
        durations.add(600.0, key=video)
    assert durations.expected(video) == 600.0
    assert durations.expected(FOX) is None  # no image has ended yet: the full cadence
    for seconds_ in (31.0, 30.0, 33.0):
        durations.add(seconds_, key=FOX)
    assert (durations.expected(FOX), durations.expected(video)) == (30.0, 600.0)
    other = duration_key(ImageRequest(prompt="a red fox", model="comfyui/sdxl"))
    assert other != FOX and durations.expected(other) is None
    assert duration_key(VideoRequest(prompt="waves", duration=5)) != video
    assert duration_key(None) is None


def test_a_client_learns_each_kind_of_job_on_its_own() -> None:
    """Three images ended done give images, not videos, an expected duration."""

    async def main() -> tuple[float | None, float | None]:
        transport = MemoryTransport(ServerModel(Faults(gen_time=30.0), seed=0))
        async with Client(transport) as client:
            for _ in range(3):
                result = await client.generate("a red fox")
                assert result.state is State.DONE
            video = duration_key(VideoRequest(prompt="waves", duration=10))
            return client.durations.expected(FOX), client.durations.expected(video)

    image, video = run_virtual(main)
    assert image is not None and 30.0 <= image < 33.0
    assert video is None


class _HeldStart(MemoryTransport):
    """A transport whose start requests wait until ``release`` is set (a start waiting its
    turn, or a slow server), then reach the model."""

    def __init__(self, model: ServerModel) -> None:
        super().__init__(model)
        self.release = trio.Event()

    async def start(self, request: StartRequest) -> FileStatus:
        await self.release.wait()
        return await super().start(request)


def run_held(hold: float, gen_time: float, history: float | None) -> tuple[Client, list[float]]:
    """One generation whose start reply comes ``hold`` s after it was asked for, the push
    silent, the job ``gen_time`` s from its start reply; ``history`` (3 generations of it) is
    learned while the start is held. Returns the client and the moments of the polls, counted
    from the start reply."""

    async def main() -> tuple[Client, list[float]]:
        server = Faults(ws_mode="silent", sse_mode="silent", gen_time=gen_time)
        transport = _HeldStart(ServerModel(server, seed=0))
        async with Client(
            transport, policy=Policy.default().replace(jitter=0.0, request_timeout=60.0)
        ) as client:
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, "a red fox")
                await trio.sleep(hold)
                if history is not None:
                    for _ in range(3):
                        client.durations.add(history, key=FOX)
                transport.release.set()
                accepted = trio.current_time()
            assert gen.result().state is State.DONE
        polls = [t - accepted for t, call in transport.calls if call == "poll"]
        return client, polls

    return run_virtual(main)


def test_history_learned_while_the_start_waited_counts() -> None:
    """The history of durations is read at the start reply, not when the generation was asked
    for: a generation whose start waited while 3 others of 40 s ended makes no poll before
    40 s but one safety poll (within ``history_wait``), where it would poll every 2 s."""
    _, polls = run_held(hold=50.0, gen_time=40.0, history=40.0)
    early = [t for t in polls if t < 40.0 - 1.0]
    assert len(early) <= 1, polls
    assert polls[-1] <= 40.0 + 2.0 + EPSILON  # found within one interval of ready


def test_durations_count_from_the_start_reply() -> None:
    """A start held 50 s and a job of 40 s: the client records about 40 s (the server's time),
    not the 90 s since the generation was asked for."""
    client, _ = run_held(hold=50.0, gen_time=40.0, history=None)
    ((seconds_, unsure),) = [(b.recent[0], b.unsure_run) for b in client.durations._books.values()]
    assert unsure == 0
    assert 40.0 - EPSILON <= seconds_ <= 40.0 + 2.0 + EPSILON
