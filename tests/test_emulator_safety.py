"""The emulator is safe to run on a network: token on every route, bounded bodies, checked switches.

Over real sockets against the loopback emulator (token ``TOKEN``). Huge bodies are sent through a
raw TCP stream so the test controls how much is written and can see when the server stops reading.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
import trio
from starlette.routing import Route

from cli_support import Running, clean_env, needs_command
from hybridgen.api import ImageRequest
from hybridgen.emulator import Emulator, Faults, ServerModel
from hybridgen.emulator import model as model_module
from hybridgen.emulator.model import MAX_COUNT, MAX_PROGRESS_STEPS, MAX_SECONDS
from hybridgen.emulator.server import (
    CONTROL_BODY_LIMIT,
    START_BODY_LIMIT,
    create_app,
    is_loopback,
)
from hybridgen.testing.sockets import port_of

TOKEN = "test-token-123"
LIMIT = 10.0
"""No test body may take longer than this."""
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer nope"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
    {"Authorization": f"bearer {TOKEN[:-1]}"},
]
PROJECT = "0b9c7c2e-5d0e-4b7e-9a51-2f1d8c3e4a10"
HUGE = 600 * 2**20
"""A body size the emulator must never read: 600 MiB."""


def control_requests(url: str) -> list[tuple[str, str, Any]]:
    """Every fault-control route: ``(method, URL, JSON body)``."""
    project = str(uuid.uuid4())
    return [
        ("GET", f"{url}/_emulator/stats", None),
        ("PUT", f"{url}/_emulator/faults", {"gen_time": 1.0}),
        ("PUT", f"{url}/_emulator/projects/{project}/faults", {"gen_time": 1.0}),
    ]


# -- the token -----------------------------------------------------------------------------------


async def test_every_control_route_needs_the_token(emulator: Emulator) -> None:
    before = emulator.model.faults
    with trio.fail_after(LIMIT):
        async with httpx.AsyncClient(timeout=LIMIT) as http:
            for method, url, body in control_requests(emulator.url):
                for headers in BAD_AUTH:
                    reply = await http.request(method, url, json=body, headers=headers)
                    assert reply.status_code == 401, (method, url, headers, reply.text)
                    assert reply.headers["www-authenticate"] == "Bearer"
            assert emulator.model.faults is before and emulator.model.project_faults == {}
            for method, url, body in control_requests(emulator.url):
                reply = await http.request(method, url, json=body, headers=AUTH)
                assert reply.status_code == 200, (method, url, reply.text)
    assert emulator.model.faults.gen_time == 1.0
    assert [f.gen_time for f in emulator.model.project_faults.values()] == [1.0]


async def test_every_route_but_the_result_files_needs_the_token(emulator: Emulator) -> None:
    """Whatever routes the app has (new ones included), only the result files are public."""
    checked = []
    with trio.fail_after(LIMIT):
        async with httpx.AsyncClient(timeout=LIMIT) as http:
            for route in create_app(emulator.model).routes:
                if not isinstance(route, Route) or route.path.startswith("/files/"):
                    continue
                path = re.sub(r"\{[^}]+\}", PROJECT, route.path)
                for method in sorted((route.methods or set()) - {"HEAD"}):
                    reply = await http.request(method, emulator.url + path, json={})
                    assert reply.status_code == 401, (method, path, reply.text)
                    checked.append(f"{method} {route.path}")
    assert {"GET /_emulator/stats", "PUT /_emulator/faults", "GET /api/v1/file/{file_id}"} <= set(
        checked
    )


async def test_the_result_file_stays_public(emulator: Emulator) -> None:
    emulator.model.faults = Faults(gen_time=0.0)
    body = ImageRequest(prompt="a red fox").to_json()
    with trio.fail_after(LIMIT):
        async with httpx.AsyncClient(timeout=LIMIT) as http:
            start = await http.post(
                f"{emulator.url}/api/v1/file/generate-image", json=body, headers=AUTH
            )
            assert start.status_code == 200
            (job,) = emulator.model.jobs.values()
            image = await http.get(emulator.model.url_of(job))  # no token: like a CDN
    assert image.status_code == 200 and len(image.content) > 100


async def test_without_a_token_the_control_api_is_open() -> None:
    from hybridgen.emulator import running

    async with running(Faults(), time_scale=0.05) as emulator:
        with trio.fail_after(LIMIT):
            async with httpx.AsyncClient(timeout=LIMIT) as http:
                for method, url, body in control_requests(emulator.url):
                    reply = await http.request(method, url, json=body)
                    assert reply.status_code == 200, (method, url, reply.text)


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = model_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(model_module.hmac, "compare_digest", spy)
    model = ServerModel(token=TOKEN)
    assert model.authorized(f"Bearer {TOKEN}")
    assert not model.authorized(f"Bearer {TOKEN[:-1]}")
    assert not model.authorized(None)
    assert not model.authorized("Bearer \udcff")  # not UTF-8: still a clean refusal
    assert len(compared) == 4
    assert compared[0] == (f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode())
    assert ServerModel().authorized(None)  # no token: anything goes


# -- bounded bodies --------------------------------------------------------------------------------


async def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers) and ``body`` on a fresh TCP stream.

    Returns the reply's status and everything the server sent until it closed.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
    async with stream:
        await stream.send_all(head.encode() + b"\r\n" + body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.split(b"\r\n\r\n", 1)[1]:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply


def head(method: str, url: str, path: str, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port_of(url)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n"


ENDPOINTS = [
    ("PUT", "/_emulator/faults", CONTROL_BODY_LIMIT),
    ("PUT", f"/_emulator/projects/{PROJECT}/faults", CONTROL_BODY_LIMIT),
    ("POST", "/api/v1/file/generate-image", START_BODY_LIMIT),
]


@pytest.mark.parametrize(("method", "path", "limit"), ENDPOINTS)
async def test_a_declared_huge_body_is_refused_unread(
    emulator: Emulator, method: str, path: str, limit: int
) -> None:
    """A Content-Length of 600 MiB gets 413 before a byte of the body is sent."""
    text = head(method, emulator.url, path, Authorization=f"Bearer {TOKEN}")
    text += f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n"
    with trio.fail_after(LIMIT):
        status, reply = await raw_request(emulator.url, text)
    assert status == 413, reply
    assert str(limit).encode() in reply
    assert emulator.model.counts["start"] == 0


async def send_chunked(url: str, text: str, budget: int) -> tuple[int, int | None]:
    """Stream a chunked body of up to ``budget`` bytes while reading the reply.

    Returns the bytes sent and the reply's status (``None`` if the server cut the connection
    without one). Stops sending once a reply came or the server stopped taking data.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
    sent = 0
    status: int | None = None
    chunk = b"[" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    async def read_reply(cancel: trio.CancelScope) -> None:
        nonlocal status
        reply = b""
        try:
            while b"\r\n" not in reply:
                data = await stream.receive_some(4096)
                if not data:
                    break
                reply += data
        except trio.BrokenResourceError:
            pass
        if reply.startswith(b"HTTP/1.1 "):
            status = int(reply.split(b" ", 2)[1])
        cancel.cancel()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(read_reply, nursery.cancel_scope)
        try:
            await stream.send_all(text.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
            while sent < budget:
                await stream.send_all(framed)
                sent += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.sleep_forever()  # until the reply (or the cut) is read
    return sent, status


@pytest.mark.parametrize(("method", "path", "limit"), ENDPOINTS)
async def test_a_streamed_huge_body_is_cut_at_the_limit(
    emulator: Emulator, method: str, path: str, limit: int
) -> None:
    """No length announced: the server stops reading past the limit and answers 413 (or cuts).

    Were it to read on, it would take the whole 64 MiB and answer 422 (not JSON).
    """
    budget = 64 * 2**20
    text = head(method, emulator.url, path, Authorization=f"Bearer {TOKEN}")
    with trio.fail_after(LIMIT):
        sent, status = await send_chunked(emulator.url, text, budget)
        assert status in (413, None), status
        assert sent < budget
        async with httpx.AsyncClient(timeout=LIMIT) as http:  # and it still serves
            reply = await http.get(f"{emulator.url}/_emulator/stats", headers=AUTH)
    assert reply.status_code == 200 and reply.json()["start"] == 0


# -- checked switches ------------------------------------------------------------------------------

BAD_SWITCHES: list[tuple[Any, str]] = [
    ({"progress_steps": 5_000_000}, "progress_steps"),
    ({"progress_steps": MAX_PROGRESS_STEPS + 1}, "progress_steps"),
    ({"progress_steps": 2.5}, "progress_steps"),
    ({"gen_time": MAX_SECONDS + 1}, "gen_time"),
    ({"gen_time": -1}, "gen_time"),
    ({"gen_time": "35"}, "gen_time"),
    ({"late_by": 1e300}, "late_by"),
    ({"poll_delay": 10**400}, "poll_delay"),
    ({"retry_after": True}, "retry_after"),
    ({"ws_drop_after": [1]}, "ws_drop_after"),
    ({"ws_drops": MAX_COUNT + 1}, "ws_drops"),
    ({"poll_faults": -1}, "poll_faults"),
    ({"empty_url_polls": 1.5}, "empty_url_polls"),
    ({"poll_fault_rate": 2}, "poll_fault_rate"),
    ({"job_fails": "yes"}, "job_fails"),
    ({"forbidden": 1}, "forbidden"),
    ({"ws_mode": "chaos"}, "ws_mode"),
    ({"poll_fault": 500}, "poll_fault"),
    ({"ws_noise": ["junk"]}, "ws_noise"),
    ({"gen_time": 1, "no_such_switch": 1}, "no_such_switch"),
    ([1, 2], "body"),
    ("[" * 50_000, "body"),  # deep JSON inside the size limit
]


def encode(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode()
    text = json.dumps(body) if not isinstance(body, dict) or "poll_delay" not in body else None
    # json.dumps cannot write a 400-digit float; write the number by hand
    return (text or '{"poll_delay": ' + "9" * 400 + "}").encode()


async def test_switches_out_of_range_get_422_naming_the_switch(emulator: Emulator) -> None:
    before = emulator.model.faults
    project = str(uuid.uuid4())
    urls = [
        f"{emulator.url}/_emulator/faults",
        f"{emulator.url}/_emulator/projects/{project}/faults",
    ]
    with trio.fail_after(LIMIT):
        async with httpx.AsyncClient(timeout=LIMIT) as http:
            for body, field in BAD_SWITCHES:
                for url in urls:
                    reply = await http.put(url, content=encode(body), headers=AUTH)
                    assert reply.status_code == 422, (body, reply.text)
                    (detail,) = reply.json()["detail"]
                    # FastAPI names a whole-body error ["body"], a field ["body", field]
                    loc = ["body"] if field == "body" else ["body", field]
                    assert detail["loc"] == loc, (body, detail)
                    assert len(reply.content) < 1000  # the rejected value is not echoed whole
    assert emulator.model.faults is before and emulator.model.project_faults == {}


def test_the_bounds_hold_for_faults_built_in_python() -> None:
    for body, field in BAD_SWITCHES:
        if isinstance(body, dict) and field in body and field != "no_such_switch":
            with pytest.raises(model_module.BadRequest) as info:
                Faults(**body)
            assert info.value.field == field
    most = Faults(
        progress_steps=MAX_PROGRESS_STEPS,
        gen_time=MAX_SECONDS,
        ws_drops=MAX_COUNT,
        poll_faults=MAX_COUNT,
        poll_fault_rate=1,
    )
    assert most.progress_steps == MAX_PROGRESS_STEPS


# -- binding ---------------------------------------------------------------------------------------


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host


@needs_command
@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_warns_when_bound_beyond_loopback(host: str, warned: bool) -> None:
    server = Running("serve", "--host", host, "--port", "0", "--token", TOKEN, env=clean_env())
    try:
        url = server.line(timeout=15)
        port = port_of(url)
        reply = httpx.get(f"http://127.0.0.1:{port}/_emulator/stats", headers=AUTH, timeout=10)
        assert reply.status_code == 200
    finally:
        server.proc.terminate()
        server.finish(timeout=15)
    stderr = "".join(server.stderr)
    assert ("not loopback" in stderr) is warned, stderr
    assert TOKEN not in stderr
