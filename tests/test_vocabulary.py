"""The push vocabulary (issue 23 item 4): the Channel enum, and the old ws_* names kept as
deprecated aliases for one release."""

from __future__ import annotations

import json
import pickle
import warnings

import attrs
import pytest

import hybridgen
from hybridgen import Channel, FileStatus, Policy, Result, State
from hybridgen.api import Push
from hybridgen.core import Core
from hybridgen.events import Event, Progress, Transition
from hybridgen.jsonevents import result_json
from hybridgen.testing import Scenario, run_scenario


def test_channel_is_a_str_enum_equal_to_its_value() -> None:
    assert [c.value for c in Channel] == ["sse", "websocket", "polling"]
    assert Channel.SSE == "sse" and Channel.WEBSOCKET == "websocket"
    assert f"{Channel.POLLING}" == str(Channel.POLLING) == "polling"
    assert json.dumps({"channel": Channel.SSE}) == '{"channel": "sse"}'
    assert hybridgen.Channel is Channel and "Channel" in hybridgen.__all__


def test_policy_push_holds_channels_and_refuses_polling() -> None:
    assert Policy.default().push == (Channel.SSE, Channel.WEBSOCKET)
    assert all(type(c) is Channel for c in Policy(push="websocket, sse").push)
    with pytest.raises(hybridgen.ConfigError, match="unknown channel 'polling'"):
        Policy(push=("polling",))


def _core(policy: Policy) -> tuple[Core, list[Event]]:
    events: list[Event] = []
    return Core("g", policy.replace(jitter=0.0), events.append, 0.0), events


@pytest.mark.parametrize("name", ["sse", "websocket"])
def test_a_push_result_names_its_channel_as_a_channel(name: str) -> None:
    core, events = _core(Policy.eager())
    core.accepted(FileStatus("f"), 0.1)
    core.push(name, Push("f", "progress", progress=0.5), 0.2)  # a plain string is accepted
    core.push(name, Push("f", "result", url="u"), 0.3)
    result = core.result()
    assert type(result.channel) is Channel and result.channel == name
    last = events[-1]
    assert isinstance(last, Transition) and type(last.channel) is Channel
    (progress,) = (e for e in events if isinstance(e, Progress))
    assert type(progress.via) is Channel and progress.via == name
    line = result_json(
        generation_id="g",
        state=result.state,
        channel=result.channel,
        url=result.url,
        path=None,
        elapsed=result.elapsed,
        reason=result.reason,
    )
    assert json.loads(json.dumps(line))["channel"] == name


def test_a_poll_result_says_polling() -> None:
    core, _ = _core(Policy.polling())
    core.accepted(FileStatus("f"), 0.0)
    core.advance(core.next_timer())
    core.poll_sent(2.0)
    core.poll_reply(FileStatus("f", url="u"), 2.1)
    assert core.result().channel is Channel.POLLING


OLD_POLICY = [
    ("ws_timeout", "push_timeout", 3.0),
    ("keep_ws_open", "keep_push_open", False),
    ("ws_reconnect", "push_reconnect", False),
]


@pytest.mark.parametrize(("old", "new", "value"), OLD_POLICY)
def test_old_policy_names_still_work_and_warn(old: str, new: str, value: object) -> None:
    with pytest.warns(DeprecationWarning, match=f"Policy.{old} is deprecated, use Policy.{new}"):
        policy = Policy(**{old: value})
    assert getattr(policy, new) == value
    with pytest.warns(DeprecationWarning, match=f"Policy.{old}"):
        assert getattr(policy, old) == value
    with pytest.warns(DeprecationWarning, match=f"Policy.{old}"):
        replaced = Policy.default().replace(**{old: value})
    assert replaced == policy
    with pytest.raises(TypeError, match=f"both {old}= and {new}="):
        Policy(**{old: value, new: value})


def test_new_policy_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = Policy(push_timeout=3.0, keep_push_open=False, push_reconnect=False)
        assert policy.replace(push_timeout=4.0).push_timeout == 4.0
        assert pickle.loads(pickle.dumps(policy)) == policy
        Policy.seed()
        Policy.video()


def test_a_journal_row_of_the_old_names_reads_back() -> None:
    """Rows written before the rename hold ``ws_timeout``: they still make the same policy."""
    row = {"ws_timeout" if k == "push_timeout" else k: v for k, v in _fields(Policy.seed()).items()}
    with pytest.warns(DeprecationWarning, match="Policy.ws_timeout"):
        assert Policy(**row) == Policy.seed()


def _fields(policy: Policy) -> dict[str, object]:
    return json.loads(json.dumps(attrs.asdict(policy)))


def test_old_result_and_core_names_warn() -> None:
    core, _ = _core(Policy.eager())
    core.accepted(FileStatus("f"), 0.0)
    with pytest.warns(DeprecationWarning, match="Core.ws_timeout_at"):
        assert core.ws_timeout_at == core.push_timeout_at
    with pytest.warns(DeprecationWarning, match="Core.wants_ws"):
        assert core.wants_ws
    with pytest.warns(DeprecationWarning, match="Core.ws_connect_at"):
        assert core.ws_connect_at == core.connect_at("websocket")
    with pytest.warns(DeprecationWarning, match="Core.ws_up"):
        core.ws_up(0.1)
    with pytest.warns(DeprecationWarning, match="Core.ws_down"):
        core.ws_down("dropped", 0.2)
    with pytest.warns(DeprecationWarning, match="Core.ws_message"):
        core.ws_message(FileStatus("f", url="u"), 0.3)
    result = core.result()
    assert result.state is State.DONE and result.push_failures == 1
    with pytest.warns(DeprecationWarning, match="Result.ws_failures"):
        assert result.ws_failures == 1
    fields = {
        "generation_id": "g",
        "state": State.DONE,
        "file_id": "f",
        "url": "u",
        "channel": Channel.SSE,
        "reason": "",
        "elapsed": 1.0,
        "polls": 0,
        "poll_errors": 0,
    }
    with pytest.warns(DeprecationWarning, match="Result.ws_failures"):
        old = Result(**fields, ws_failures=2)  # type: ignore[call-arg]
    assert old == Result(**fields, push_failures=2)


def test_a_driven_generation_reports_a_channel() -> None:
    trace = run_scenario(Scenario())  # the emulator's default faults: SSE silent, WebSocket works
    assert trace.result.channel is Channel.WEBSOCKET
    assert trace.transitions[-1].channel is Channel.WEBSOCKET
