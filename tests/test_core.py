"""The sans-IO core, fed by hand: decisions without any I/O or clock."""

from __future__ import annotations

import pytest

from hybridgen import FileStatus, Policy, State
from hybridgen.api import Push
from hybridgen.core import Core, Probes, push_from_file
from hybridgen.errors import AuthError, PermanentError, TransientError
from hybridgen.events import Event, Progress, Retry, Transition


def make(policy: Policy | None = None) -> tuple[Core, list[Event]]:
    events: list[Event] = []
    core = Core("g1", policy or Policy.default().replace(jitter=0.0), events.append, 100.0)
    return core, events


def ws_message(core: Core, file: FileStatus, now: float) -> None:
    """A WebSocket message about ``file``, as the driver hands it over."""
    core.push("websocket", push_from_file(file), now)


def transitions(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.source, e.trigger, e.dest) for e in events if isinstance(e, Transition)]


def test_ws_timeout_then_poll_result() -> None:
    core, events = make()
    core.accepted(FileStatus("f1"), 100.1)
    assert core.state is State.AWAITING_WS and core.file_id == "f1"
    assert core.next_timer() == 102.0
    core.advance(101.9)
    assert core.state is State.AWAITING_WS
    core.advance(102.0)
    assert core.state is State.POLLING and core.poll_due(102.0)
    core.poll_sent(102.0)
    assert not core.poll_due(102.0)
    core.poll_reply(FileStatus("f1"), 102.1)
    assert core.next_poll == pytest.approx(104.1)
    core.poll_sent(104.1)
    core.poll_reply(FileStatus("f1", url="http://x/y.png"), 104.2)
    assert core.state is State.DONE
    result = core.result()
    assert (result.channel, result.url, result.polls) == ("polling", "http://x/y.png", 2)
    assert result.elapsed == pytest.approx(4.2)
    assert transitions(events) == [
        ("requested", "start", "awaiting_ws"),
        ("awaiting_ws", "ws_timeout", "polling"),
        ("polling", "poll_result", "done"),
    ]


def test_nothing_happens_after_the_terminal_state() -> None:
    core, events = make()
    core.accepted(FileStatus("f1"), 100.0)
    ws_message(core, FileStatus("f1", url="u"), 101.0)
    n = len(events)
    ws_message(core, FileStatus("f1", url="other"), 101.5)
    core.advance(1000.0)
    core.push_down("websocket", "gone", 1001.0)
    core.poll_error(AuthError("no"), 1002.0)
    core.cancel("late", 1003.0)
    core.fail("late", 1003.0)
    assert len(events) == n and core.url == "u" and core.state is State.DONE


def test_push_before_the_file_id_is_known_is_kept() -> None:
    core, _ = make()
    ws_message(core, FileStatus("f1", url="u1"), 100.05)
    ws_message(core, FileStatus("other", url="u2"), 100.06)
    core.accepted(FileStatus("f1"), 100.1)
    assert core.state is State.DONE and core.url == "u1" and core.channel == "websocket"


def test_messages_for_other_files_are_ignored_and_progress_reported() -> None:
    core, events = make()
    core.accepted(FileStatus("f1"), 100.0)
    ws_message(core, FileStatus("f2", url="u2"), 101.0)
    ws_message(core, FileStatus("f1", progress=0.5), 101.0)
    ws_message(core, FileStatus("f1", progress=0.5), 101.1)
    assert core.state is State.AWAITING_WS
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(p.fraction, p.via) for p in progress] == [(0.5, "websocket")]


def test_ws_failure_falls_back_at_once_and_reconnects_with_backoff() -> None:
    policy = Policy(
        push=("websocket",),
        reconnect_jitter=0.0,
        reconnect_delay=2.0,
        backoff_factor=2.0,
        reconnect_cap=5,
    )
    core, events = make(policy)
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("websocket", 100.0)
    core.push_down("websocket", "dropped", 100.5)
    assert core.state is State.POLLING and core.poll_due(100.5)
    assert core.connect_at("websocket") == pytest.approx(102.5)
    core.push_down("websocket", "refused", 102.5)
    assert core.connect_at("websocket") == pytest.approx(106.5)
    core.push_up("websocket", 106.5)  # connected, but it brings nothing new: the backoff grows on
    core.push("websocket", Push("other-file", "progress", progress=0.5), 107.0)
    core.push_down("websocket", "the server closed the WebSocket", 107.0)
    assert core.connect_at("websocket") == pytest.approx(112.0)  # capped at 5 s
    core.push_up("websocket", 112.0)
    core.push("websocket", Push("f1", "progress", progress=0.5), 113.0)  # news: count again
    core.push_down("websocket", "the server closed the WebSocket", 113.5)
    assert core.connect_at("websocket") == pytest.approx(115.5)
    retries = [e for e in events if isinstance(e, Retry)]
    assert [(r.what, r.attempt, r.delay) for r in retries] == [
        ("websocket", 1, 2.0),
        ("websocket", 2, 4.0),
        ("websocket", 3, 5.0),
        ("websocket", 4, 2.0),
    ]


def test_reconnect_jitter_only_shortens_the_delay() -> None:
    policy = Policy(push=("sse",), reconnect_delay=1.0, reconnect_cap=8.0, reconnect_jitter=0.5)
    for rand, expected in ((0.0, 8.0), (0.999999, 4.0)):
        core = Core("g", policy, lambda e: None, 100.0, rand=lambda r=rand: r)
        core.accepted(FileStatus("f1"), 100.0)
        for _ in range(10):
            core.push_down("sse", "SSE connect timed out", 100.0)
        assert core.connect_at("sse") == pytest.approx(100.0 + expected, abs=1e-4)


def test_polling_begins_early_only_when_no_push_channel_can_deliver() -> None:
    core, events = make()
    core.push_up("websocket", 100.0)
    core.accepted(FileStatus("f1"), 100.0)
    assert core.wants("sse") and core.connect_at("sse") == 100.0  # SSE opens once the file is known
    core.push_down("sse", "SSE connect: HTTP 524 from the server", 100.2)
    assert core.state is State.AWAITING_WS  # the socket still listens
    core.push_down("websocket", "dropped", 100.3)
    assert core.state is State.POLLING and core.poll_due(100.3)
    retries = [(e.what, e.attempt) for e in events if isinstance(e, Retry)]
    assert retries == [("sse", 1), ("websocket", 1)]


def test_seed_closes_the_socket_at_fallback() -> None:
    core, _ = make(Policy.seed())
    core.accepted(FileStatus("f1"), 100.0)
    assert core.wants("websocket")
    core.advance(130.0)
    assert core.state is State.POLLING and not core.wants("websocket")
    assert core.connect_at("websocket") is None


def test_ws_failure_before_acceptance_polls_from_acceptance() -> None:
    core, events = make(Policy.seed())
    core.push_down("websocket", "refused", 100.01)
    assert core.state is State.REQUESTED
    core.accepted(FileStatus("f1"), 100.2)
    # the start reply has just said "not ready": the first poll comes one interval later
    assert core.state is State.POLLING and not core.poll_due(102.19) and core.poll_due(102.2)
    assert transitions(events)[-1] == ("awaiting_ws", "ws_failed", "polling")


def test_a_start_accepted_after_the_push_only_wait_is_not_polled_at_once() -> None:
    # a busy client's start waited its turn: the push-only wait (2 s) ended before the reply
    core, _ = make(Policy.default().replace(jitter=0.0, push=()))
    core.advance(103.0)
    core.accepted(FileStatus("f1"), 105.0)
    assert core.state is State.POLLING
    assert not core.poll_due(106.99) and core.poll_due(107.0)


def test_a_quiet_sse_stream_opens_the_socket_beside_it_until_it_speaks() -> None:
    core, _ = make()  # the default: SSE first, push_quiet 15 s
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("sse", 100.5)
    assert core.wants("sse") and not core.wants("websocket")
    core.advance(102.0)  # polling begins; the socket is still not wanted
    assert core.state is State.POLLING and not core.wants("websocket")
    assert core.next_timer() == 115.5  # the quiet moment, before the deadline
    core.advance(115.4)
    assert not core.wants("websocket")
    core.advance(115.5)
    assert core.wants("websocket") and core.connect_at("websocket") is not None
    core.push("sse", Push("f1", "progress", progress=0.4), 116.0)
    assert not core.wants("websocket") and core.next_timer() == core.deadline_at
    # it brought news: a gap before its reconnect opens nothing
    core.push_down("sse", "the server ended the SSE stream", 117.0)
    assert not core.wants("websocket")
    core.push_up("sse", 118.0)  # a new connection is given its own quiet time
    assert not core.wants("websocket") and core.next_timer() == 133.0
    # a stream that ends without news: SSE counts as unavailable, the socket opens...
    core.push("sse", Push("f1", "progress", progress=0.4), 118.5)  # a repeat is no news
    core.push_down("sse", "the server ended the SSE stream", 119.0)
    assert core.wants("websocket")
    core.push_up("sse", 121.0)
    assert core.wants("websocket")  # ... and stays open while SSE only reconnects
    core.push("sse", Push("f1", "progress", progress=0.6), 122.0)
    assert not core.wants("websocket")  # news on SSE: the socket closes again


def test_a_quiet_stream_opens_the_socket_on_one_generation_of_a_client_until_it_speaks() -> None:
    probes = Probes()
    policy = Policy.default().replace(jitter=0.0)
    cores = [Core(f"g{i}", policy, [].append, 100.0, probes=probes) for i in range(3)]
    for i, core in enumerate(cores):
        core.accepted(FileStatus(f"f{i}"), 100.0)
        core.push_up("sse", 100.5)
        core.advance(115.5)  # SSE quiet on all three
    assert [c.wants("websocket") for c in cores] == [True, False, False]
    assert probes.trying == {"websocket": "g0"}
    cores[0].poll_reply(FileStatus("f0", url="https://cdn/f0.webp"), 116.0)  # the probe ends
    assert cores[0].terminal and probes.trying == {}
    cores[1].advance(116.5)  # its next input: it takes the probe
    assert [c.wants("websocket") for c in cores[1:]] == [True, False]
    cores[1].push_up("websocket", 117.0)
    cores[1].push("websocket", Push("f1", "progress", progress=0.5), 118.0)  # the socket speaks
    assert "websocket" in probes.heard
    cores[2].advance(118.5)
    assert cores[2].wants("websocket") and probes.trying == {}
    cores[2].push_up("websocket", 119.0)
    cores[2].poll_reply(FileStatus("f2", url="https://cdn/f2.webp"), 120.0)
    assert "websocket" not in probes.heard  # silent on a generation a poll found: probe again
    # a generation on its own is its own probe, as before
    alone, _ = make()
    alone.accepted(FileStatus("f9"), 100.0)
    alone.push_up("sse", 100.5)
    alone.advance(115.5)
    assert alone.wants("websocket")


def test_answered_poll_errors_wait_one_interval_and_only_unanswered_ones_spend_the_budget() -> None:
    policy = Policy(
        jitter=0.0, poll_interval=1.0, backoff_factor=2.0, backoff_cap=8, retry_budget=2
    )
    core, _ = make(policy)
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_error(TransientError("503", status=503), 102.0)
    # no backoff past the interval: a fixed poller's next poll would come then
    assert core.next_poll == pytest.approx(103.0)
    core.poll_sent(103.0)
    core.poll_error(TransientError("429", status=429, retry_after=7.0), 103.0)
    # no push may deliver: Retry-After holds the poll back up to poll_retry_after_cap (2 s)
    assert core.next_poll == pytest.approx(105.0)
    now = 105.0
    for _ in range(40):  # answered errors, far past the budget: polled through
        core.poll_sent(now)
        core.poll_error(TransientError("HTTP 500", status=500), now)
        assert core.state is State.POLLING and core.next_poll == pytest.approx(now + 1.0)
        now += 1.0
    for _ in range(2):  # no answer: these spend the budget, backing off
        core.poll_sent(now)
        core.poll_error(TransientError("reset"), now)
        assert core.state is State.POLLING
        now = core.next_poll or now
    core.poll_sent(now)
    core.poll_error(TransientError("reset"), now)
    assert core.state is State.FAILED
    assert "gave up after 3 polls without an answer" in core.reason and "reset" in core.reason
    assert core.result().poll_errors == 45


def test_a_storm_of_answered_errors_fails_at_the_deadline_naming_the_last_error() -> None:
    core, _ = make(Policy(jitter=0.0))
    core.accepted(FileStatus("f1"), 100.0)
    now = 102.0
    while now < core.deadline_at:
        core.advance(now)
        assert core.poll_due(now)
        core.poll_sent(now)
        core.poll_error(TransientError("poll: HTTP 503", status=503, retry_after=5.0), now)
        now = core.next_poll or now
    core.advance(core.deadline_at)
    assert core.state is State.FAILED and core.ended == core.deadline_at
    assert core.reason == (
        "no result within the 120 s deadline; the last 59 polls failed (poll: HTTP 503)"
    )


def test_seed_ignores_retry_after_and_never_gives_up_on_transient_errors() -> None:
    core, _ = make(Policy.seed())
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(130.0)
    for k in range(50):
        core.poll_sent(130.0 + 2 * k)
        core.poll_error(TransientError("429", retry_after=60.0), 130.0 + 2 * k)
        assert core.next_poll == pytest.approx(132.0 + 2 * k)
    assert core.state is State.POLLING


def test_permanent_poll_error_fails_at_once() -> None:
    core, _ = make()
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_error(AuthError("check SUPERDUPERAI_TOKEN", status=401), 102.1)
    assert core.state is State.FAILED and "SUPERDUPERAI_TOKEN" in core.reason


def test_server_reported_failure_fails() -> None:
    core, _ = make()
    core.accepted(FileStatus("f1"), 100.0)
    ws_message(core, FileStatus("f1", failed=True, error="GPU on fire"), 105.0)
    assert core.state is State.FAILED and "GPU on fire" in core.reason


def test_deadline_wins_over_everything_at_its_time() -> None:
    core, _ = make(Policy(deadline=10))
    core.advance(109.99)
    assert core.state is State.REQUESTED
    core.advance(110.0)
    assert core.state is State.FAILED and "10 s deadline" in core.reason
    assert core.result().elapsed == pytest.approx(10.0)


def test_core_is_small() -> None:
    import sys

    core, _ = make()
    assert not hasattr(core, "__dict__")
    assert sys.getsizeof(core) < 400


def test_adaptive_polls_sparsely_then_halves_towards_the_expected_moment() -> None:
    policy = Policy(
        jitter=0.0, adaptive=True, poll_interval=2.0, sparse_interval=10.0, history_wait=None
    )
    core, _ = make(policy)
    core.expected = 35.0  # from recent generations: ready 35 s after the start
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    times = []
    now = 102.0
    for _ in range(8):
        core.poll_sent(now)
        core.poll_reply(FileStatus("f1"), now)
        times.append(core.next_poll)
        now = core.next_poll
    # 10 s while far off, then half the remaining way, then every poll_interval
    assert times == pytest.approx([112.0, 122.0, 128.5, 131.75, 133.75, 135.75, 137.75, 139.75])


def test_adaptive_trusts_the_jobs_own_progress_over_history() -> None:
    policy = Policy(jitter=0.0, adaptive=True)
    core, _ = make(policy)
    core.expected = 100.0
    core.accepted(FileStatus("f1"), 100.0)
    ws_message(core, FileStatus("f1", progress=0.5), 110.0)  # half done after 10 s
    # a whole-percent report may be half a percent behind: the predicted end is never late
    assert core.expected == pytest.approx(10.0 / 0.505)


def test_not_adaptive_ignores_the_expected_moment() -> None:
    core, _ = make(Policy(jitter=0.0, history_wait=None))
    core.expected = 35.0
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_reply(FileStatus("f1"), 102.0)
    assert core.next_poll == pytest.approx(104.0)


def test_a_channel_that_delivered_before_turns_polls_into_a_sparse_safety_net() -> None:
    trusted: set[str] = set()
    first = Core("g1", Policy(jitter=0.0), lambda e: None, 100.0, trusted=trusted)
    first.accepted(FileStatus("f1"), 100.0)
    first.push_up("sse", 100.0)
    first.push("sse", Push("f1", "result", url="u"), 130.0)
    assert first.channel == "sse" and trusted == {"sse"}

    core = Core("g2", Policy(jitter=0.0), lambda e: None, 200.0, trusted=trusted)
    core.accepted(FileStatus("f2"), 200.0)
    core.advance(202.0)
    core.poll_sent(202.0)
    core.poll_reply(FileStatus("f2"), 202.0)
    assert core.next_poll == pytest.approx(204.0)  # the trusted channel is not connected yet
    core.push_up("sse", 203.0)
    core.poll_sent(204.0)
    core.poll_reply(FileStatus("f2"), 204.0)
    assert core.next_poll == pytest.approx(214.0)  # it listens: every sparse_interval
    core.push_down("sse", "the server ended the SSE stream", 205.0)
    assert core.next_poll == pytest.approx(207.0)  # it dropped: one interval from now
    core.poll_sent(207.0)
    core.poll_reply(FileStatus("f2", url="v"), 207.5)
    assert core.channel == "polling" and trusted == {"sse"}  # it was down: no blame


@pytest.mark.parametrize("lifeless", ["push_alive=None", "dropped"])
def test_progress_from_a_channel_that_shows_no_life_does_not_space_polls(lifeless: str) -> None:
    # A prediction from progress can be late (a job queued, then fast; a job failing half-way):
    # without a channel that shows life (and so can deliver meanwhile), polls keep the cadence.
    policy = Policy(jitter=0.0, push_alive=None if lifeless == "push_alive=None" else 20.0)
    core, _ = make(policy)
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("websocket", 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_reply(FileStatus("f1"), 102.0)
    assert core.next_poll == pytest.approx(104.0)
    core.push("websocket", Push("f1", "progress", progress=0.1), 103.0)  # predicts about 129.7
    if lifeless == "dropped":
        core.push_down("websocket", "the server closed the WebSocket", 103.5)
    assert core.expected is not None
    times = []
    now = 104.0
    while now < 140.0:
        core.poll_sent(now)
        core.poll_reply(FileStatus("f1"), now)
        times.append(core.next_poll)
        now = core.next_poll
    gaps = [b - a for a, b in zip([104.0, *times], times, strict=False)]
    assert gaps == pytest.approx([2.0] * len(gaps))  # was 10 s apart while "far off", then less


def test_a_trusted_channel_that_misses_a_result_loses_the_trust() -> None:
    trusted = {"websocket"}
    core = Core("g1", Policy(jitter=0.0), lambda e: None, 100.0, trusted=trusted)
    core.push_up("websocket", 100.0)
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    core.poll_sent(102.0)
    core.poll_reply(FileStatus("f1", url="u"), 102.1)
    assert core.channel == "polling" and trusted == set()


def test_push_messages_of_every_kind() -> None:
    core, events = make()
    core.accepted(FileStatus("f1"), 100.0)
    core.push("sse", Push("f1", "completed"), 100.5)  # done, no url: poll at once
    assert core.state is State.POLLING and core.poll_due(100.5)
    core.poll_sent(100.5)
    core.push("sse", Push("f1", "completed"), 100.6)  # a poll is in flight: again at its reply
    core.poll_reply(FileStatus("f1"), 100.7)
    assert core.next_poll == pytest.approx(100.7)
    core.push("sse", Push("other", "failed", reason="not ours"), 100.8)
    assert core.state is State.POLLING
    core.push("sse", Push("f1", "failed", reason="GPU on fire"), 101.0)
    assert core.state is State.FAILED and core.reason.endswith("job failed: GPU on fire")
    assert transitions(events)[1] == ("awaiting_ws", "push_completed", "polling")


def test_retry_after_is_followed_instead_of_backing_off() -> None:
    policy = Policy(jitter=0.0, poll_interval=2.0, backoff_factor=2.0, poll_retry_after_cap=None)
    core, _ = make(policy)
    core.accepted(FileStatus("f1"), 100.0)
    core.advance(102.0)
    for k, now in enumerate((102.0, 105.0, 108.0)):
        core.poll_sent(now)
        core.poll_error(TransientError("503", status=503, retry_after=3.0), now)
        assert core.next_poll == pytest.approx(now + 3.0), k
    core.poll_sent(111.0)
    core.poll_error(TransientError("503", status=503, retry_after=0.5), 111.0)
    assert core.next_poll == pytest.approx(113.0)  # never sooner than poll_interval


def test_adaptive_schedule_wins_over_a_live_socket_near_the_expected_moment() -> None:
    core, _ = make(Policy(jitter=0.0, adaptive=True))
    core.expected = 35.0
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("websocket", 100.0)
    ws_message(core, FileStatus("f1", progress=0.5), 117.5)  # alive, and half done at 17.5 s
    core.advance(131.0)
    core.poll_sent(131.0)
    core.poll_reply(FileStatus("f1"), 131.0)
    assert core.next_poll == pytest.approx(133.0)  # dense near 135 s, not the live-socket 10 s


def test_a_start_the_server_did_not_process_is_sent_again() -> None:
    core, events = make()
    core.start_failed(TransientError("429", retry_after=1.0, maybe_processed=False), 100.0)
    assert core.state is State.REQUESTED and core.next_start == pytest.approx(101.0)
    core.start_failed(TransientError("refused", maybe_processed=False), 101.0)
    assert core.next_start == pytest.approx(105.0)  # no Retry-After: 2nd failure, 2 s x 2
    retries = [e for e in events if isinstance(e, Retry)]
    assert [(r.what, r.attempt) for r in retries] == [("start", 1), ("start", 2)]
    core.accepted(FileStatus("f1"), 105.1)
    assert core.state is State.POLLING and core.next_start is None  # past ws_timeout: poll


@pytest.mark.parametrize("status", [500, 502, 504, 524, None])
def test_a_start_that_may_have_made_a_job_fails_saying_so(status: int | None) -> None:
    core, events = make()
    core.start_failed(TransientError(f"HTTP {status}", status=status), 100.0)
    assert core.state is State.FAILED and core.next_start is None
    assert "the job may exist on the server" in core.reason
    assert "retry_unsafe_starts" in core.reason
    assert not [e for e in events if isinstance(e, Retry)]


def test_unsafe_start_retries_are_opt_in() -> None:
    core, _ = make(Policy.default().replace(jitter=0.0, retry_unsafe_starts=True, start_retries=1))
    core.start_failed(TransientError("HTTP 524", status=524), 100.0)
    assert core.state is State.REQUESTED and core.next_start == pytest.approx(102.0)
    core.start_failed(TransientError("HTTP 524", status=524), 102.0)
    assert core.state is State.FAILED
    assert "after 2 attempts" in core.reason and "may exist" in core.reason


def test_start_retries_stay_inside_the_deadline_and_the_count() -> None:
    core, _ = make()
    core.start_failed(TransientError("503", retry_after=500.0, maybe_processed=False), 100.0)
    assert core.state is State.FAILED and "no time left" in core.reason
    core, _ = make(Policy.default().replace(start_retries=0))
    core.start_failed(TransientError("429", maybe_processed=False), 100.0)
    assert core.state is State.FAILED and "after 1 attempt)" in core.reason
    core, _ = make(Policy.seed())
    core.start_failed(TransientError("429", retry_after=1.0, maybe_processed=False), 100.0)
    assert core.state is State.FAILED  # the seed never sent a start twice
    core, _ = make()
    core.start_failed(PermanentError("HTTP 422 ..."), 100.0)
    assert core.state is State.FAILED and "may exist" not in core.reason
