"""The inspector without a browser: the page it serves, ``/events`` (replay, follow, end), the
objects it sends (those ``--json`` prints), its memory cap, its token, and asyncio mounting.

The browser itself is tested in ``tests/test_inspector_browser.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from cli_support import Running, run
from hybridgen import Config, Policy
from hybridgen.aio import AsyncioClient
from hybridgen.driver import Client, Result
from hybridgen.emulator import Emulator, Faults, ServerModel
from hybridgen.events import Event, Transition
from hybridgen.inspector import KEEPALIVE, Inspector, serve_inspector
from hybridgen.inspector._drawing import positions, ranks
from hybridgen.jsonevents import event_json, result_json
from hybridgen.machine import State, edges
from hybridgen.testing import MemoryTransport
from hybridgen.transport import SuperDuperTransport

LIMIT = 30.0
"""No real-socket test body may take longer than this."""


def parse_sse(text: str) -> list[tuple[int, dict[str, object]]]:
    """``(id, object)`` of every message of an SSE body."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            found.append((int(fields["id"]), json.loads(fields["data"])))
    return found


async def messages(response: httpx.Response) -> AsyncIterator[tuple[int, dict[str, object]]]:
    """The messages of a live SSE response as they come.

    A keepalive comment fails the test: these streams are never quiet for KEEPALIVE seconds
    unless a reader missed its wake-up (it would then only see the object with the keepalive).
    """
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        assert block != [": keepalive"], "the reader was not woken by a new object"
        for item in parse_sse("\n".join(block) + "\n\n"):
            yield item
        block = []


def asgi(app: Inspector | Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://inspector")


# -- the page -------------------------------------------------------------------------------------


async def test_the_page_draws_every_state_and_edge_of_the_live_definition() -> None:
    async with asgi(Inspector()) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert sorted(re.findall(r'class="state[^"]*" data-state="(\w+)"', page)) == sorted(State)
    drawn = set(re.findall(r'data-from="(\w+)" data-to="(\w+)" data-triggers="([\w ]+)"', page))
    expected: dict[tuple[str, str], list[str]] = {}
    for source, trigger, dest in edges():
        expected.setdefault((str(source), str(dest)), []).append(str(trigger))
    assert drawn == {(s, d, " ".join(t)) for (s, d), t in expected.items()}
    assert 'new EventSource("events" + location.search)' in page
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_the_layout_puts_every_edge_forward_and_no_two_states_in_one_place() -> None:
    rank = ranks()
    for source, _trigger, dest in edges():
        assert rank[dest] > rank[source], (source, dest)
    assert len(set(positions().values())) == len(State)


# -- /events --------------------------------------------------------------------------------------


async def test_events_replay_everything_then_end_once_closed_and_204_afterwards() -> None:
    inspector = Inspector()
    objects = [{"event": "transition", "id": "g1", "n": k} for k in range(3)]
    for obj in objects:
        inspector.publish(obj)
    inspector.close()
    inspector.publish({"event": "late"})  # after close: dropped
    async with asgi(inspector) as http:
        response = await http.get("/events")
        assert response.headers["content-type"].startswith("text/event-stream")
        got = parse_sse(response.text)
        assert [obj for _, obj in got] == objects
        assert [i for i, _ in got] == [1, 2, 3]
        # EventSource reconnects with the last id it saw: nothing is left, 204 stops it
        again = await http.get("/events", headers={"Last-Event-ID": "3"})
        assert again.status_code == 204
        # a reconnect that missed the last one gets just that one
        resumed = await http.get("/events", headers={"Last-Event-ID": "2"})
        assert parse_sse(resumed.text) == [(3, objects[2])]


async def test_a_late_reader_gets_what_happened_so_far_then_follows() -> None:
    inspector = Inspector()
    inspector.publish({"event": "transition", "id": "a"})
    inspector.publish({"event": "transition", "id": "b"})
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_inspector, inspector)
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
            async with (
                httpx.AsyncClient(timeout=LIMIT) as http,
                http.stream("GET", url + "events") as response,
            ):
                seen = []
                async for item in messages(response):
                    seen.append(item)
                    if len(seen) == 2:  # the past is in; once the reader waits, a new one
                        await trio.testing.wait_all_tasks_blocked(0.05)
                        inspector.publish({"event": "result", "id": "a"})
                    if len(seen) == 3:
                        break
            assert [obj["id"] for _, obj in seen] == ["a", "b", "a"]
            assert seen[-1] == (3, {"event": "result", "id": "a"})
            nursery.cancel_scope.cancel()


async def test_a_reader_wakes_when_an_object_comes_and_sends_keepalives_in_quiet_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inspector = Inspector()
    stream = inspector.follow()
    start = trio.current_time()
    assert await anext(stream) is None  # nothing for KEEPALIVE seconds
    assert trio.current_time() - start == pytest.approx(KEEPALIVE)

    async def publish_later() -> None:
        await trio.sleep(1.0)
        inspector.publish({"event": "x", "id": "1"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_later)
        assert await anext(stream) == (1, '{"event": "x", "id": "1"}')
        assert trio.current_time() - start == pytest.approx(KEEPALIVE + 1.0)  # woken at once
    inspector.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_history_is_capped_oldest_first() -> None:
    inspector = Inspector(history=3)
    for k in range(5):
        inspector.publish({"event": "progress", "id": "g", "k": k})
    assert inspector.published == 5
    assert [json.loads(text)["k"] for _, text in inspector.kept()] == [2, 3, 4]
    with pytest.raises(ValueError, match="history"):
        Inspector(history=0)


# -- what it sends --------------------------------------------------------------------------------


async def test_it_sends_the_objects_json_prints_and_a_result_per_generation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ServerModel(Faults(gen_time=8, ws_mode="silent", poll_fault="503", poll_faults=1))
    inspector = Inspector()
    events: list[Event] = []
    results: list[Result] = []
    async with Client(MemoryTransport(server)) as client:
        inspector.watch(client)
        client.subscribe(events.append)

        async def one(prompt: str, deadline: float) -> None:
            policy = Policy.default().replace(deadline=deadline)
            results.append(await client.start(prompt, policy=policy))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a fox", 60.0)
            nursery.start_soon(one, "too slow", 3.0)
    sent = [json.loads(text) for _, text in inspector.kept()]
    t0: dict[str, float] = {}
    expected = []
    for event in events:
        at = event.monotonic - t0.setdefault(event.generation_id, event.monotonic)
        expected.append(event_json(event, at))
        if isinstance(event, Transition) and event.terminal:
            (result,) = (r for r in results if r.generation_id == event.generation_id)
            expected.append(
                result_json(
                    generation_id=result.generation_id,
                    state=str(result.state),
                    channel=result.channel,
                    url=result.url,
                    path=None,
                    elapsed=at,
                    reason="" if result.state is State.DONE else result.reason,
                )
            )
    assert sent == expected
    kinds = {obj["event"] for obj in sent}
    assert {"transition", "retry", "result"} <= kinds
    ends = {obj["state"]: obj for obj in sent if obj["event"] == "result"}
    assert ends["done"]["channel"] == "polling" and ends["done"]["url"]
    assert "deadline" in str(ends["failed"]["reason"])


def test_an_event_kind_added_later_keeps_its_fields() -> None:
    @attrs.frozen
    class JournalFailed:
        generation_id: str
        reason: str
        attempt: int
        monotonic: float
        wall: float

    obj = event_json(JournalFailed("g", "disk full", 2, 5.0, 1e9), 1.25)  # type: ignore[arg-type]
    assert obj == {
        "event": "journal_failed",
        "id": "g",
        "reason": "disk full",
        "attempt": 2,
        "at": 1.25,
    }


async def test_secrets_are_cut_out_of_everything_sent() -> None:
    inspector = Inspector(secrets=["sk-very-secret"])
    inspector.publish({"event": "result", "id": "g", "reason": "401 for sk-very-secret"})
    inspector.close()
    async with asgi(inspector) as http:
        body = (await http.get("/events")).text
    assert "sk-very-secret" not in body
    assert "401 for ***" in body


# -- access ---------------------------------------------------------------------------------------


async def test_a_token_is_required_when_the_inspector_has_one() -> None:
    inspector = Inspector(token="t0ken")
    inspector.close()
    async with asgi(inspector) as http:
        for path in ("/", "/events"):
            denied = await http.get(path)
            assert denied.status_code == 403
            assert "token" in denied.text
            assert (await http.get(path, params={"token": "wrong"})).status_code == 403
        assert (await http.get("/", params={"token": "t0ken"})).status_code == 200
        assert (await http.get("/events", params={"token": "t0ken"})).status_code == 204


async def test_served_for_a_client_it_follows_a_real_generation_and_never_shows_the_token(
    emulator: Emulator,
) -> None:
    token = "api-token-never-shown"
    emulator.model.token = token
    config = Config(url=emulator.url, token=token)
    policy = Policy.default().scaled(0.02)
    with trio.fail_after(LIMIT):
        async with (
            Client(SuperDuperTransport(config), policy=policy) as client,
            trio.open_nursery() as nursery,
        ):
            url = await nursery.start(serve_inspector, client)
            nursery.start_soon(client.generate, "a red fox")
            async with httpx.AsyncClient(timeout=LIMIT) as http:
                page = (await http.get(url)).text
                seen = []
                async with http.stream("GET", url + "events") as response:
                    async for _, obj in messages(response):
                        seen.append(obj)
                        if obj["event"] == "result":
                            break
            nursery.cancel_scope.cancel()
    assert seen[0]["event"] == "transition" and seen[0]["from"] == "requested"
    assert seen[-1]["state"] == "done"
    assert str(seen[-1]["url"]).endswith(".webp")
    assert token not in page
    assert token not in json.dumps(seen)


# -- asyncio ---------------------------------------------------------------------------------------


def test_mounted_in_a_starlette_app_it_follows_an_asyncio_client() -> None:
    inspector = Inspector()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    app = Starlette(routes=[Mount("/inspector", app=inspector)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def main() -> tuple[list[dict[str, object]], str]:
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        transport = MemoryTransport(ServerModel(Faults(gen_time=0.5)))
        policy = Policy.default().scaled(0.05)
        try:
            async with (
                asyncio.timeout(LIMIT),
                AsyncioClient(lambda: transport, policy=policy) as client,
                httpx.AsyncClient(base_url=base, timeout=LIMIT) as http,
            ):
                stop = inspector.watch(client)
                page = (await http.get("/inspector/", follow_redirects=True)).text
                job = asyncio.create_task(client.generate("a fox"))
                seen = []
                async with http.stream("GET", "/inspector/events") as response:
                    async for _, obj in messages(response):
                        seen.append(obj)
                        if obj["event"] == "result":
                            break
                await job
                stop()
                return seen, page
        finally:
            server.should_exit = True
            await serving

    seen, page = asyncio.run(main())
    listener.close()
    assert 'data-state="polling"' in page
    assert [obj["to"] for obj in seen if obj["event"] == "transition"][-1] == "done"
    assert seen[-1]["state"] == "done"


# -- the command line ------------------------------------------------------------------------------


def inspector_url(process: Running) -> str:
    """The URL of ``--inspect``: its line must be the first thing on stderr."""
    first = process.err_line()
    # prefixed like every other line of the command (issue 26 item 11)
    found = re.fullmatch(r"hybridgen: inspector: (http://127\.0\.0\.1:(\d+)/)", first)
    assert found, f"the first stderr line is not the inspector's URL: {first!r}"
    assert int(found[2]) > 0
    return found[1]


def sse_after_the_run(url: str) -> list[dict[str, object]]:
    """``/events`` once the run is over: everything, then the stream ends."""
    response = httpx.get(url + "events", timeout=LIMIT)
    assert response.status_code == 200
    return [obj for _, obj in parse_sse(response.text)]


def test_generate_inspect_serves_the_json_lines_and_lingers(tmp_path: Path, spawn: Any) -> None:
    process: Running = spawn(
        "generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json",
        "--gen-time", "0.5", "--inspect", "0", "--inspect-linger", "120",
    )  # fmt: skip
    url = inspector_url(process)
    page = httpx.get(url, timeout=LIMIT)
    assert page.status_code == 200 and 'data-state="awaiting_ws"' in page.text
    printed = [json.loads(process.line())]
    while printed[-1]["event"] != "result":
        printed.append(json.loads(process.line()))
    assert printed[-1]["state"] == "done"
    assert sse_after_the_run(url) == printed  # the very objects --json printed, in order
    assert process.proc.poll() is None  # lingering: the page is still up
    # a page that has everything is told the run is over (EventSource then stops reconnecting)
    last = {"Last-Event-ID": str(len(printed))}
    assert httpx.get(url + "events", headers=last, timeout=LIMIT).status_code == 204
    process.proc.send_signal(signal.SIGINT)  # Ctrl-C ends the lingering early
    assert process.finish() == 0
    assert "embedded emulator" in "".join(process.stderr)


def test_generate_batch_inspect_serves_every_item_and_the_totals(
    tmp_path: Path, spawn: Any
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na lighthouse\nan owl\n")
    process: Running = spawn(
        "generate", "--batch", str(prompts), "--out", str(tmp_path / "images"), "--json",
        "--gen-time", "0.5", "--inspect", "0", "--inspect-linger", "120",
    )  # fmt: skip
    url = inspector_url(process)
    printed = [json.loads(process.line())]
    while printed[-1]["event"] != "batch":
        printed.append(json.loads(process.line()))
    assert printed[-1]["done"] == 3
    sent = sse_after_the_run(url)
    assert sent == printed
    assert {obj["prompt"] for obj in sent if obj["event"] == "result"} == {
        "a red fox",
        "a lighthouse",
        "an owl",
    }
    process.kill()


def test_bad_inspect_options_are_usage_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "fox.png")
    for args, says in (
        (["--inspect", "many"], "--inspect"),
        (["--inspect", "70000"], "--inspect"),
        (["--inspect-linger", "5"], "--inspect-linger"),
        (["--inspect", "0", "--inspect-linger", "-1"], "--inspect-linger"),
    ):
        done = run("generate", "a fox", "--out", out, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert says in done.stderr
        assert "inspector:" not in done.stderr
