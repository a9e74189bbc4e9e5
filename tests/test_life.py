"""Polls relax while a connected push shows life, and come back the moment it goes quiet or drops
(``Policy.push_alive``); failed polls wait one interval, or ``Retry-After`` when it asks for more.

Core-level examples (exact, jitter off), then Hypothesis properties on trio's virtual clock, then
the emulator over real sockets counting the polls it saw.
"""

from __future__ import annotations

import pytest

from hybridgen.api import FileStatus, Push
from hybridgen.core import Core
from hybridgen.errors import TransientError
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.sse import HEARTBEAT, sse_messages

QUIET = Policy.default().replace(
    jitter=0.0, push_quiet=None
)  # poll 2, sparse 10, alive 20, lively 30


def polling_core(policy: Policy = QUIET, missed: set[str] | None = None) -> Core:
    """A core at 102 s: accepted at 100 s, SSE up, its first poll answered "not ready"."""
    core = Core("g1", policy, lambda e: None, 100.0, missed=missed if missed is not None else set())
    core.accepted(FileStatus("f1"), 100.0)
    core.push_up("sse", 100.0)
    core.advance(102.0)
    assert core.poll_due(102.0)
    core.poll_sent(102.0)
    core.poll_reply(FileStatus("f1"), 102.0)
    return core


def test_a_keep_alive_spaces_the_pending_poll_to_the_sparse_interval() -> None:
    core = polling_core()
    assert core.next_poll == pytest.approx(104.0)  # nothing heard yet: the full cadence
    assert core.push_heartbeat("sse", 103.0)  # the schedule moved
    assert core.next_poll == pytest.approx(112.0)  # 10 s after the last reply
    assert not core.push_heartbeat("sse", 105.0)  # still alive: nothing moves


def test_when_the_push_goes_quiet_the_next_poll_comes_within_one_interval() -> None:
    core = polling_core()
    core.push_heartbeat("sse", 103.0)  # alive until 123 s
    core.poll_sent(112.0)
    core.poll_reply(FileStatus("f1"), 112.0)
    assert core.next_poll == pytest.approx(122.0)
    core.poll_sent(122.0)
    core.poll_reply(FileStatus("f1"), 122.0)
    assert core.next_poll == pytest.approx(132.0)  # still alive at 122 s
    assert core.next_timer() == pytest.approx(123.0)  # the moment it goes quiet
    core.advance(123.0)
    assert core.next_poll == pytest.approx(125.0)  # one poll_interval later, not 132 s


def test_when_the_push_drops_the_next_poll_comes_within_one_interval() -> None:
    core = polling_core()
    core.push_heartbeat("sse", 103.0)
    core.push_down("sse", "the server ended the SSE stream", 106.0)
    assert core.next_poll == pytest.approx(108.0)


def test_progress_puts_the_poll_one_interval_after_the_expected_end() -> None:
    core = polling_core()
    core.push("sse", Push("f1", "progress", progress=0.25), 108.75)
    end = 100.0 + 8.75 / 0.255  # the expected end, never later than the true one
    assert core.next_poll == pytest.approx(min(102.0 + 30.0, end + 2.0))
    core.poll_sent(core.next_poll)
    core.poll_reply(FileStatus("f1"), end + 2.0)
    assert core.next_poll == pytest.approx(end + 4.0)  # overdue: the full cadence


def test_a_channel_whose_life_missed_a_result_relaxes_polls_no_more() -> None:
    missed: set[str] = set()
    core = polling_core(missed=missed)
    core.push_heartbeat("sse", 103.0)
    core.poll_sent(112.0)
    core.poll_reply(FileStatus("f1", url="https://cdn/x.webp"), 112.0)
    assert core.state is State.DONE and missed == {"sse"}
    again = polling_core(missed=missed)
    assert not again.push_heartbeat("sse", 103.0)
    assert again.next_poll == pytest.approx(104.0)
    again.push("sse", Push("f1", "result", url="https://cdn/x.webp"), 105.0)
    assert missed == set()  # it delivered: its life counts again


def test_life_does_not_relax_polls_without_push_alive_or_with_adaptive() -> None:
    for policy in (QUIET.replace(push_alive=None), QUIET.replace(adaptive=True)):
        core = polling_core(policy)
        assert not core.push_heartbeat("sse", 103.0)
        assert core.next_poll == pytest.approx(104.0)


def test_a_failed_poll_waits_one_interval_or_retry_after_even_while_alive() -> None:
    core = polling_core()
    core.poll_sent(104.0)
    core.poll_error(TransientError("HTTP 503", status=503), 104.0)
    assert core.next_poll == pytest.approx(106.0)  # no backoff past the interval
    core.poll_sent(106.0)
    core.poll_error(TransientError("HTTP 429", status=429, retry_after=5.0), 106.0)
    # no push shows life: Retry-After holds the poll back up to poll_retry_after_cap (2 s)
    assert core.next_poll == pytest.approx(108.0)
    core.push_heartbeat("sse", 107.0)  # life spaces it out, from the reply
    assert core.next_poll == pytest.approx(116.0)
    core.poll_sent(116.0)
    core.poll_error(TransientError("HTTP 429", status=429, retry_after=25.0), 116.0)
    assert core.next_poll == pytest.approx(141.0)  # alive: the server's word in full
    core.push_down("sse", "dropped", 120.0)  # life lost, but never before Retry-After
    assert core.next_poll == pytest.approx(141.0)


async def _chunks(*parts: bytes):  # type: ignore[no-untyped-def]
    for part in parts:
        yield part


async def test_sse_reports_keep_alives_but_not_the_first_comment() -> None:
    body = b": connected\n\ndata: one\n\n: keep-alive\n\nevent: ping\n\ndata: two\n\n"
    got = [text async for text in sse_messages(_chunks(body), heartbeats=True)]
    assert got == ["one", HEARTBEAT, HEARTBEAT, "two"]
    assert [text async for text in sse_messages(_chunks(body))] == ["one", "two"]
