"""Every status word the API uses: one table (``api.TASK_STATUSES``), read the same by the poll
parser and the push parser; a failure or cancel word, or an error text, fails the generation at
once with the server's words; an unknown word is warned about once and never taken for done."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen import parse
from hybridgen.api import (
    TASK_STATUSES,
    Config,
    FileStatus,
    Push,
    failure_reason,
    parse_file,
    parse_push,
    status_meaning,
)
from hybridgen.driver import Client, Result
from hybridgen.emulator import Emulator
from hybridgen.emulator.model import BadRequest, Faults
from hybridgen.errors import GenerationFailed
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.testing import Scenario, run_scenario
from hybridgen.transport import SuperDuperTransport

TOKEN = "test-token-123"
NSFW = "NSFW content detected"
FAILURE_WORDS = [word for word, meaning in TASK_STATUSES.items() if meaning == "failed"]
CANCEL_WORDS = [word for word, meaning in TASK_STATUSES.items() if meaning == "cancelled"]


def file_with(**task: object) -> dict[str, object]:
    """A file object of today's API whose one task is ``task``."""
    return {
        "id": "f1",
        "url": None,
        "type": "image",
        "tasks": [{"type": "image-generation-flow", "id": 7, "file_id": "f1", **task}],
    }


def push(kind: str, **obj: object) -> Push | None:
    return parse_push(json.dumps({"type": kind, "object": obj}))


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "_warned", set())


# -- the table --------------------------------------------------------------------------------


def test_the_apis_own_words_in_every_case() -> None:
    # file tasks say in_progress / error; project tasks and SSE task_status in upper case
    for word, meaning in [
        ("in_progress", "running"),
        ("IN_PROGRESS", "running"),
        ("error", "failed"),
        ("ERROR", "failed"),
        ("completed", "completed"),
        ("COMPLETED", "completed"),
        ("failed", "failed"),
        ("Canceled", "cancelled"),
        ("cancelled", "cancelled"),
        ("pending", "running"),
        ("in-progress", "running"),
        (None, "running"),
        ("", "running"),
    ]:
        assert status_meaning(word) == meaning, word


def test_every_word_of_the_table_is_normalised_and_has_a_meaning() -> None:
    for word, meaning in TASK_STATUSES.items():
        assert word == word.lower().replace("-", "_").replace(" ", "_")
        assert meaning in ("running", "completed", "failed", "cancelled")
        assert status_meaning(word.upper()) == meaning


def test_an_unknown_word_is_warned_once_and_read_as_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hybridgen.api"):
        for _ in range(3):
            file = parse_file(file_with(status="kaput"))
            assert push("task", file_id="f1", status="KAPUT") is None
        assert not file.failed and not file.ready  # never done, never failed on an unknown word
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'kaput'" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hybridgen.api"):
        status_meaning("zombie")
    assert len(caplog.records) == 1  # once per word: another word is warned about too


def test_a_flood_of_unknown_words_is_warned_about_boundedly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hybridgen.api"):
        for n in range(1000):
            status_meaning(f"word{n}")
    assert len(caplog.records) <= parse._WARN_LIMIT + 1
    assert "no more are logged" in caplog.records[-1].getMessage()


_WORDS = st.one_of(
    st.sampled_from(sorted(TASK_STATUSES)).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w.title(), w.replace("_", "-"), f" {w}\t"])
    ),
    st.none(),
    st.text(max_size=12),
    st.integers(),
)


@settings(max_examples=300, deadline=None)
@given(status=_WORDS, error=st.sampled_from([None, "", "   ", NSFW]))
def test_poll_reads_every_status_as_the_table_says_with_or_without_an_error_text(
    status: object, error: str | None
) -> None:
    # the parser's shortcut for a word exactly as the table has it must not change any outcome
    # the long way: every value made one printable word, then looked up (unknown: running)
    word = "" if status is None else parse._clip(str(status), 40)
    meaning = TASK_STATUSES.get(word.lower().replace("-", "_").replace(" ", "_"), "running")
    assert status_meaning(status) == meaning
    file = parse_file(file_with(status=status, error=error))
    with_text = bool(error and error.strip())
    fails = meaning in ("failed", "cancelled") or (meaning == "running" and with_text)
    assert file.failed is fails
    assert file.error == (NSFW if fails and with_text else None)
    assert file.status == (word if fails and status is not None and str(status) else None)


def test_failure_reason_keeps_the_servers_words() -> None:
    assert failure_reason("failed", NSFW) == (
        f"the server reports the job failed (status 'failed'): {NSFW}"
    )
    assert failure_reason("error", "GPU") == "the server reports the job failed: GPU"
    assert failure_reason("canceled", None) == "the server cancelled the job (status 'canceled')"
    assert failure_reason(None, None) == "the server reports the job failed"


# -- the poll parser --------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["failed", "FAILED", "error", "timeout", "canceled", "revoked"])
def test_poll_a_failure_word_fails_with_the_text(word: str) -> None:
    file = parse_file(file_with(status=word, error=NSFW))
    assert file == FileStatus("f1", failed=True, error=NSFW, status=word)


def test_poll_an_error_text_fails_unless_the_task_completed() -> None:
    assert parse_file(file_with(status="in_progress", error=NSFW)).failed
    assert parse_file(file_with(status="kaput", error_message=NSFW)).error == NSFW
    assert not parse_file(file_with(status="completed", error=NSFW)).failed
    # a 'message' is not an error text on its own (it may be a progress note) ...
    assert not parse_file(file_with(status="in_progress", message="rendering")).failed
    # ... but it is the reason of a failed task
    assert parse_file(file_with(status="failed", message=NSFW)).error == NSFW


def test_poll_a_status_on_the_file_itself_counts_too() -> None:
    file = parse_file({"id": "f1", "url": None, "status": "FAILED", "error": NSFW})
    assert (file.failed, file.error, file.status) == (True, NSFW, "FAILED")


def test_poll_any_failed_task_of_several_fails_the_file() -> None:
    obj = file_with(status="in_progress")
    obj["tasks"].append({"type": "x", "status": "failed", "error": NSFW})  # type: ignore[attr-defined]
    assert parse_file(obj).error == NSFW


# -- the push parser --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["task", "task_status"])
def test_push_task_messages_read_the_table(kind: str) -> None:
    assert push(kind, id="t", file_id="f", status="failed", error=NSFW) == Push(
        "f", "failed", reason=NSFW, status="failed"
    )
    assert push(kind, file_id="f", status="ERROR") == Push("f", "failed", status="ERROR")
    assert push(kind, file_id="f", status="CANCELED") == Push("f", "failed", status="CANCELED")
    assert push(kind, file_id="f", status="COMPLETED") == Push("f", "completed")
    assert push(kind, file_id="f", status="done") == Push("f", "completed")
    assert push(kind, file_id="f", status="IN_PROGRESS") is None
    assert push(kind, file_id="f", status="in_progress", error=NSFW) == Push(
        "f", "failed", reason=NSFW, status="in_progress"
    )


def test_push_on_the_files_own_stream_a_task_without_file_id_is_about_that_file() -> None:
    text = json.dumps({"type": "task_status", "object": {"id": "t", "status": "FAILED"}})
    assert parse_push(text) is None  # whose? on a project channel nobody can tell
    assert parse_push(text, "f9") == Push("f9", "failed", status="FAILED")


def test_push_render_result_may_carry_file_url() -> None:
    assert push("render_result", file_id="f", file_url="http://cdn/x.webp") == Push(
        "f", "result", url="http://cdn/x.webp"
    )


def test_push_file_message_with_a_failed_task() -> None:
    text = json.dumps({"type": "file", "object": file_with(status="failed", error=NSFW)})
    assert parse_push(text) == Push("f1", "failed", reason=NSFW, status="failed")


# -- whole generations ------------------------------------------------------------------------


def test_the_start_reply_saying_failed_fails_at_once() -> None:
    from hybridgen.core import Core

    core = Core("g", Policy.default(), lambda event: None, 100.0)
    core.accepted(FileStatus("f1", failed=True, error=NSFW, status="failed"), 100.2)
    assert core.state is State.FAILED and core.reason.endswith(NSFW)
    assert core.ended == 100.2


@settings(max_examples=60, deadline=None)
@given(
    word=st.sampled_from(["failed", "canceled", *sorted({*FAILURE_WORDS, *CANCEL_WORDS})]).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w.capitalize()])
    ),
    reason=st.sampled_from(["", NSFW, "GPU on fire", "quota exceeded: 0 credits left"]),
    sse_mode=st.sampled_from(["normal", "silent", "oneshot", "progress"]),
    ws_mode=st.sampled_from(["normal", "silent", "oneshot"]),
    preset=st.sampled_from(["default", "seed", "eager", "lean", "polling"]),
    gen_time=st.floats(0.5, 60.0),
)
def test_a_failure_status_in_push_or_poll_always_fails_at_once_with_the_servers_text(
    word: str, reason: str, sse_mode: str, ws_mode: str, preset: str, gen_time: float
) -> None:
    from hybridgen.policy import PRESETS

    policy = PRESETS[preset]()
    faults = Faults(
        gen_time=gen_time,
        job_fails=True,
        fail_status=word,
        fail_reason=reason,
        sse_mode=sse_mode,  # type: ignore[arg-type]
        ws_mode=ws_mode,  # type: ignore[arg-type]
    )
    trace = run_scenario(Scenario(faults=faults, policy=policy))
    result = trace.result
    assert result.state is State.FAILED
    assert reason in result.reason
    assert word.lower() == "error" or repr(word) in result.reason
    assert "deadline" not in result.reason
    # at once: when the failure is known, by the first poll after it at the latest
    assert trace.ready_at is not None
    first_poll = max(trace.ready_at, policy.push_timeout)
    latest = first_poll + policy.poll_interval * (1 + policy.jitter) + 1e-6
    assert trace.ready_at - 1e-6 <= result.elapsed <= latest
    assert result.elapsed < policy.deadline


@pytest.mark.parametrize("sse_mode", ["normal", "silent"])
async def test_failed_nsfw_over_real_sockets(emulator: Emulator, sse_mode: str) -> None:
    """The issue's server: status ``failed`` and "NSFW content detected" in the file's tasks and
    the SSE task message; the generation fails when the job does, with those words."""
    ready_in = 0.3
    emulator.model.faults = Faults(
        gen_time=ready_in / emulator.model.time_scale,
        job_fails=True,
        fail_status="failed",
        fail_reason=NSFW,
        sse_mode=sse_mode,  # type: ignore[arg-type]
        ws_mode="silent",
    )
    policy = Policy.default().scaled(0.05)
    transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
    async with Client(transport, policy=policy) as client:
        with trio.fail_after(8.0):
            result = await _failed(client)
    assert result.state is State.FAILED
    assert result.reason == f"the server reports the job failed (status 'failed'): {NSFW}"
    one_poll = policy.poll_interval * (1 + policy.jitter)
    assert ready_in <= result.elapsed <= ready_in + one_poll + 0.5
    assert result.elapsed < policy.deadline


async def _failed(client: Client) -> Result:
    with pytest.raises(GenerationFailed) as info:
        await client.generate("a red fox")
    return info.value.result


def test_emulator_failure_switches_are_checked() -> None:
    with pytest.raises(BadRequest, match="fail_status"):
        Faults(fail_status="bad!word")
    with pytest.raises(BadRequest, match="fail_reason"):
        Faults(fail_reason="x" * 301)
    assert Faults(fail_reason="").fail_reason == ""
