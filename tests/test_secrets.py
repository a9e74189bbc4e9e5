"""Secrets and bad input: the token never shows, and invalid input never reaches the network.

- Whole generations over real sockets with DEBUG logging on every logger (hybridgen, httpx,
  httpcore, hypercorn, trio-websocket) and a distinctive token, on the success path and every
  failure path: no log record, event, repr or exception (with its whole chain) holds the token.
- Error bodies that echo the token are redacted; the token goes only to the API's own origin and
  no redirect is followed.
- Plain ``http://`` only for loopback hosts unless explicitly allowed; the emulator binds loopback
  and checks the bearer token when it has one.
- Bad configuration and bad requests are typed errors naming the field, raised before any network
  I/O (a recording transport proves no call was made). ``tests/test_api.py`` covers the bulk of
  the field checks and fuzzes the parsers; these tests add the cases it does not.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import pickle
import socket
import ssl
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from hybridgen import Config, ConfigError, ImageRequest, RequestError
from hybridgen.driver import Client
from hybridgen.emulator import Emulator, Faults, running
from hybridgen.errors import (
    AuthError,
    GenerationFailed,
    HybridgenError,
    PermanentError,
    TransientError,
)
from hybridgen.events import Event, LoggingSubscriber, Transition
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.transport import SuperDuperTransport

SECRET = "tok-HGsecret-7Qz9xY2wPL"
WRONG = "tok-HGwrong-3Kd8Vn5qRT"
FRAGMENTS = [SECRET, WRONG, SECRET[4:16], WRONG[4:16]]
"""What must never appear: the tokens, or a recognisable piece of them."""
SCALE = 0.02
POLICY = Policy.eager().scaled(SCALE)  # both push channels: both libraries log
LIMIT = 8.0
LOGGERS = ["", "hybridgen", "httpx", "httpcore", "hypercorn", "trio-websocket", "asyncio"]


class Collect(logging.Handler):
    """Keeps every record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.names.add(record.name)


@contextlib.contextmanager
def debug_everywhere() -> Iterator[Collect]:
    """DEBUG on every logger (existing and the libraries' own), collected by one handler."""
    handler = Collect()
    names = set(LOGGERS) | set(logging.root.manager.loggerDict)
    saved = {name: logging.getLogger(name).level for name in names}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and the printed traceback of ``exc`` and of every exception chained to it."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(getattr(current, "args", ()))]
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
    return texts


def assert_secret_free(texts: list[str], what: str) -> None:
    for text in texts:
        for fragment in FRAGMENTS:
            assert fragment not in text, f"{what} shows a token: {text[:300]!r}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


GEN = 0.3 / SCALE
PATHS: dict[str, tuple[Faults, str, State]] = {
    "done": (Faults(gen_time=GEN), SECRET, State.DONE),
    "wrong token (401)": (Faults(gen_time=GEN), WRONG, State.FAILED),
    "forbidden (403)": (Faults(gen_time=GEN, forbidden=True), SECRET, State.FAILED),
    "unknown file (404)": (
        Faults(ws_mode="silent", gen_time=GEN, poll_fault="404"),
        SECRET,
        State.FAILED,
    ),
    "server errors, then done": (
        Faults(ws_mode="refuse", gen_time=GEN, poll_fault="503", poll_faults=2, retry_after=1),
        SECRET,
        State.DONE,
    ),
    "reset and garbage, then done": (
        Faults(ws_mode="drop", ws_drop_after=1, gen_time=GEN, poll_fault="reset", poll_faults=1),
        SECRET,
        State.DONE,
    ),
    "job failed": (Faults(gen_time=GEN, job_fails=True), SECRET, State.FAILED),
    "deadline": (Faults(ws_mode="silent", gen_time=1000 / SCALE), SECRET, State.FAILED),
    "unreachable": (Faults(), SECRET, State.FAILED),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_the_token_never_shows(path: str, tmp_path: Path) -> None:
    faults, token, state = PATHS[path]
    texts: list[str] = []
    events: list[Event] = []
    policy = POLICY.replace(deadline=0.5) if path == "deadline" else POLICY
    with debug_everywhere() as logs:
        async with running(faults, time_scale=SCALE, token=SECRET) as emulator:
            url = f"http://127.0.0.1:{closed_port()}" if path == "unreachable" else emulator.url
            config = Config(url=url, token=token)
            transport = SuperDuperTransport(config)
            async with Client(transport, policy=policy) as client:
                client.subscribe(events.append)
                client.subscribe(LoggingSubscriber())
                request = ImageRequest(prompt="a red fox")
                with trio.fail_after(LIMIT):
                    try:
                        result = await client.generate(request)
                    except GenerationFailed as exc:
                        result = exc.result
                        texts += exception_texts(exc)
                    if result.state is State.DONE:
                        assert result.url is not None
                        saved = await client.download(result, tmp_path / "fox")
                        assert saved.content_type == "image/webp"
                    else:
                        # the transport's own errors, raised directly
                        try:
                            await transport.poll(str(uuid.uuid4()))
                        except HybridgenError as exc:
                            texts += exception_texts(exc)
                        else:
                            pytest.fail("polling an unknown file must fail")
                texts += [repr(x) for x in (config, config.token, transport, client, result)]
                texts += [str(config), str(config.token), repr(request), repr(policy)]
            texts += [repr(e) for e in events] + [str(e) for e in events]
    assert result.state is state, result
    # the last transition ends the generation (a download retried afterwards, as under load,
    # emits Retry events after it)
    assert [e for e in events if isinstance(e, Transition)][-1].terminal
    # the libraries really logged at DEBUG, so the scan saw their records
    assert {"hybridgen.http", "hybridgen.events"} <= logs.names, logs.names
    if path != "unreachable":
        assert "trio-websocket" in logs.names
    assert_secret_free(logs.texts, f"a log record ({path})")
    assert_secret_free(texts, f"an event, repr or error ({path})")


# -- what the server sends back -----------------------------------------------------------------


def mock_client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
async def test_an_error_body_echoing_the_token_is_redacted(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echo = request.headers["authorization"]
        return httpx.Response(status, json={"detail": f"bad request with header {echo}"})

    config = Config(url="https://api.example.com", token=SECRET)
    async with mock_client(handler) as http:
        transport = SuperDuperTransport(config, http=http)
        with pytest.raises((PermanentError, TransientError)) as info:
            await transport.poll("f1")
    assert_secret_free(exception_texts(info.value), "an error")
    if status not in (401, 403):
        assert "***" in str(info.value)  # the echoed detail is kept, the token masked


async def test_the_token_goes_only_to_the_api_origin() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(200, content=b"\x89PNG...")  # read in memory: streamed too

    config = Config(url="https://api.example.com", token=SECRET)
    async with mock_client(handler) as http:
        transport = SuperDuperTransport(config, http=http)
        for url in (
            "https://api.example.com/files/a.png",
            "https://cdn.example.net/files/a.png",
            "http://api.example.com/files/a.png",  # not the same origin
            "https://api.example.com:8443/files/a.png",
        ):
            async with transport.fetch(url, limit=2**20) as chunks:
                assert b"".join([chunk async for chunk in chunks]) == b"\x89PNG..."
    assert seen[0][1] == f"Bearer {SECRET}"
    assert [auth for _, auth in seen[1:]] == [None, None, None]


async def test_a_redirect_to_another_origin_never_carries_the_token() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "api.example.com":
            return httpx.Response(302, headers={"location": "https://evil.example.org/steal"})
        return httpx.Response(401, json={"detail": "who are you?"})

    config = Config(url="https://api.example.com", token=SECRET)
    async with mock_client(handler) as http:
        transport = SuperDuperTransport(config, http=http)
        with pytest.raises(PermanentError) as info:
            await transport.poll("f1")
    assert seen == [("api.example.com", f"Bearer {SECRET}"), ("evil.example.org", None)]
    # no token went there: not "check SUPERDUPERAI_TOKEN", and the host is named
    assert not isinstance(info.value, AuthError) and info.value.status == 401
    assert "evil.example.org" in str(info.value) and "SUPERDUPERAI_TOKEN" not in str(info.value)
    assert_secret_free(exception_texts(info.value), "an error")


# -- where the token may travel ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_token_is_never_pickled(protocol: int) -> None:
    """A pickle would carry the token in clear: pickling a Config (or a Secret) is refused."""
    config = Config(url="https://api.example", token=TOKEN_FOR_PICKLE)
    with pytest.raises(TypeError, match="cannot be pickled") as caught:
        pickle.dumps(config, protocol=protocol)
    assert TOKEN_FOR_PICKLE not in str(caught.value)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(config.token, protocol=protocol)
    # copies in the process keep working (and keep the one token object)
    assert copy.deepcopy(config) == config and copy.copy(config).token is config.token


TOKEN_FOR_PICKLE = "tok-Pickle-9f3Kq2"


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com",
        "http://10.0.0.7:8000",
        "http://0.0.0.0:8000",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "http://[2001:db8::1]:8000",
    ],
)
def test_plain_http_needs_a_loopback_host(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(url=url, token=SECRET)
    assert info.value.field == "SUPERDUPERAI_URL" and "https://" in str(info.value)
    env = {"SUPERDUPERAI_URL": url, "SUPERDUPERAI_TOKEN": SECRET, "HYBRIDGEN_ALLOW_INSECURE": "0"}
    with pytest.raises(ConfigError):
        Config.from_env(env)
    assert Config(url=url, token=SECRET, allow_insecure=True).url == url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://127.9.9.9", "http://localhost:1", "http://[::1]:8000"],
)
def test_plain_http_is_fine_on_loopback(url: str) -> None:
    config = Config(url=url, token=SECRET)
    assert config.ws_url("/x").startswith("ws://")
    assert Config(url="https://api.example.com", token=SECRET).ws_url("/x").startswith("wss://")


async def test_wss_checks_the_server_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def no_network(host: str, port: int, **kwargs: Any) -> Any:
        seen.update(host=host, port=port, **kwargs)
        raise OSError("no network in this test")

    monkeypatch.setattr(trio, "open_ssl_over_tcp_stream", no_network)
    transport = SuperDuperTransport(Config(url="https://api.example.com", token=SECRET))
    with trio.fail_after(LIMIT), pytest.raises(TransientError) as info:
        async with transport.listen(str(uuid.uuid4())):
            pass  # pragma: no cover
    await transport.aclose()
    assert (seen["host"], seen["port"]) == ("api.example.com", 443)
    context = seen["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert_secret_free(exception_texts(info.value), "a WebSocket connect error")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_a_generation_over_ipv6_loopback() -> None:
    async with running(Faults(gen_time=GEN), time_scale=SCALE, token=SECRET, host="::1") as emu:
        assert emu.url.startswith("http://[::1]:")
        policy = POLICY.replace(push_timeout=2.0, deadline=3.0)  # only the socket can deliver
        async with Client(SuperDuperTransport(Config(url=emu.url, token=SECRET))) as client:
            with trio.fail_after(LIMIT):
                result = await client.generate("a red fox", policy=policy)
    assert result.state is State.DONE and result.channel == "websocket"


def test_the_emulator_binds_loopback_by_default() -> None:
    for fn in (running, inspect.unwrap(running)):
        host = inspect.signature(fn).parameters["host"].default
        assert host == "127.0.0.1"


@contextlib.asynccontextmanager
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=LIMIT) as http:
        yield http


async def test_the_emulator_checks_the_bearer_token(emulator: Emulator) -> None:
    assert emulator.url.startswith("http://127.0.0.1:")
    body = ImageRequest(prompt="a red fox").to_json()
    start = f"{emulator.url}/api/v1/file/generate-image"
    with trio.fail_after(LIMIT):
        async with http_client() as http:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "test"}):
                assert (await http.post(start, json=body, headers=headers)).status_code == 401
                poll = await http.get(f"{emulator.url}/api/v1/file/x", headers=headers)
                assert poll.status_code == 401
            ok = await http.post(
                start, json=body, headers={"Authorization": "Bearer test-token-123"}
            )
            assert ok.status_code == 200
    assert emulator.model.counts["start"] == 1
    # the socket checks it too
    config = Config(url=emulator.url, token="not-the-token")
    transport = SuperDuperTransport(config)
    try:
        with trio.fail_after(LIMIT), pytest.raises(PermanentError) as info:
            async with transport.listen(str(uuid.uuid4())):
                pass
    finally:
        await transport.aclose()
    assert info.value.status == 401 and "SUPERDUPERAI_TOKEN" in str(info.value)


# -- bad input: typed errors before any network I/O ---------------------------------------------


class Recording:
    """A transport that records every call and fails the test if anything is sent."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self, request: ImageRequest) -> Any:
        self.calls.append("start")
        raise AssertionError("no request may be sent")

    async def poll(self, file_id: str) -> Any:
        self.calls.append("poll")
        raise AssertionError("no request may be sent")

    @contextlib.asynccontextmanager
    async def listen(self, project_id: str) -> AsyncIterator[AsyncIterator[str]]:
        self.calls.append("listen")
        raise AssertionError("no socket may be opened")
        yield  # pragma: no cover

    async def aclose(self) -> None:
        self.calls.append("aclose")


BAD_PROMPTS = [
    ("", "empty"),
    (" \t\n ", "empty"),
    ("x" * 4001, "4000"),
    ("ok \udcff not UTF-8", "UTF-8"),
    ("nul \x00 inside", "control"),
    ("escape \x1b[31m red", "control"),
    (b"bytes", "text"),
    (None, "text"),
    (42, "text"),
]


@pytest.mark.parametrize(("prompt", "words"), BAD_PROMPTS)
async def test_a_bad_prompt_fails_before_any_network_io(prompt: Any, words: str) -> None:
    transport = Recording()
    async with Client(transport) as client:  # type: ignore[arg-type]
        with pytest.raises(RequestError) as info:
            await client.generate(prompt)
        assert info.value.field == "prompt" and words in str(info.value)
        with pytest.RaisesGroup(RequestError, flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.start, prompt)
    assert transport.calls == ["aclose"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seed": 2**53}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "42"}, "seed"),
        ({"seed": None}, "seed"),
        # model names: only their form is checked (the server knows which models exist)
        ({"model": ""}, "model"),
        ({"model": "x" * 129}, "model"),
        ({"model": "flux\nX-Injected: 1"}, "model"),
        ({"model": "../../etc/passwd"}, "model"),
        ({"model": "-flag"}, "model"),
        ({"model": None}, "model"),
        ({"style_name": "a b"}, "style_name"),
        ({"width": 1024.0}, "width"),
        ({"project_id": ""}, "project_id"),
    ],
)
def test_a_bad_request_field_is_named(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as info:
        ImageRequest(prompt="a red fox", **kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_well_formed_model_names_pass() -> None:
    for name in ("comfyui/flux", "fal-ai/flux-pro:v1.1", "sdxl_turbo", "a" * 128):
        assert ImageRequest(prompt="x", model=name).to_json()["config"]["generation_config_name"]


@pytest.mark.parametrize(
    ("url", "token", "field"),
    [
        ("https://api.example.com", "", "SUPERDUPERAI_TOKEN"),
        ("https://api.example.com", f"{SECRET}\r\nX-Evil: 1", "SUPERDUPERAI_TOKEN"),
        ("https://api.example.com", f"{SECRET}\n", "SUPERDUPERAI_TOKEN"),
        ("https://api.example.com", f'"{SECRET}"', "SUPERDUPERAI_TOKEN"),
        ("https://api.example.com", f"Bearer {SECRET}", "SUPERDUPERAI_TOKEN"),
        ("", SECRET, "SUPERDUPERAI_URL"),
        ("   ", SECRET, "SUPERDUPERAI_URL"),
        ("api.example.com", SECRET, "SUPERDUPERAI_URL"),
        ("//api.example.com", SECRET, "SUPERDUPERAI_URL"),
        ("ws://api.example.com", SECRET, "SUPERDUPERAI_URL"),
        ("file:///etc/passwd", SECRET, "SUPERDUPERAI_URL"),
        ("javascript:alert(1)", SECRET, "SUPERDUPERAI_URL"),
        ("https://api.example.com/?x=1", SECRET, "SUPERDUPERAI_URL"),
        ("https://api. example.com", SECRET, "SUPERDUPERAI_URL"),
        ("https://api.example.com/base/", SECRET, "SUPERDUPERAI_URL"),
    ],
)
def test_bad_config_is_named_and_never_shows_the_token(url: str, token: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(url=url, token=token)
    assert info.value.field == field
    assert_secret_free(exception_texts(info.value), "a config error")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com///", "https://api.example.com"),
        ("  https://api.example.com/  ", "https://api.example.com"),
    ],
)
def test_trailing_slashes_and_spaces_are_trimmed(url: str, expected: str) -> None:
    config = Config(url=url, token=SECRET)
    assert config.url == expected
    assert config.api_url("/api/v1/file/x") == f"{expected}/api/v1/file/x"
