"""A server that is not there fails at once, with the fix; one that answered before is retried.

Real loopback sockets: a port nobody listens on refuses the connection; a tiny server that
answers one request and then goes away shows that a refusal after a reply stays transient (the
server may be restarting: a running, paid job is never given up for it).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import trio

from cli_support import clean_env, needs_command, run
from hybridgen.api import Config, ImageRequest
from hybridgen.driver import Client
from hybridgen.errors import TransientError, Unreachable
from hybridgen.events import Retry
from hybridgen.machine import State
from hybridgen.policy import Policy
from hybridgen.transport import SuperDuperTransport

TOKEN = "tok-FirstContact-4242"


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_first_start_is_unreachable_with_the_fix() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    transport = SuperDuperTransport(Config(url=url, token=TOKEN))
    try:
        with pytest.raises(Unreachable) as caught:
            await transport.start(ImageRequest(prompt="a fox"))
        with pytest.raises(Unreachable):
            await transport.models()
        with pytest.raises(TransientError) as polled:  # a poll is mid-job: never final
            await transport.poll("some-file")
    finally:
        await transport.aclose()
    assert str(caught.value) == (
        f"cannot connect to {url} (connection refused): is the server running? "
        "check SUPERDUPERAI_URL"
    )
    assert polled.value.maybe_processed is False


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    transport = SuperDuperTransport(Config(url="https://nonexistent.invalid", token=TOKEN))
    try:
        with pytest.raises(Unreachable, match=r"does not resolve\): check the spelling"):
            await transport.start(ImageRequest(prompt="a fox"))
    finally:
        await transport.aclose()


async def test_a_refusal_after_the_server_answered_is_retried() -> None:
    """The server answers one start (503), then is gone: the next start is a transient error."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def answer_once(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        await stream.aclose()

    transport = SuperDuperTransport(Config(url=f"http://127.0.0.1:{port}", token=TOKEN))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, answer_once, listeners)
            with pytest.raises(TransientError, match="HTTP 503"):
                await transport.start(ImageRequest(prompt="a fox"))
            nursery.cancel_scope.cancel()
        with pytest.raises(TransientError) as caught:
            await transport.start(ImageRequest(prompt="a fox"))
    finally:
        await transport.aclose()
    assert not isinstance(caught.value, Unreachable)
    assert caught.value.maybe_processed is False  # not sent: safe to send again


async def test_an_unreachable_server_fails_the_generation_at_once_without_retries() -> None:
    transport = SuperDuperTransport(Config(url=f"http://127.0.0.1:{closed_port()}", token=TOKEN))
    retries: list[Retry] = []
    async with Client(transport, policy=Policy.default().replace(push=())) as client:
        client.subscribe(lambda e: retries.append(e) if isinstance(e, Retry) else None)
        async with trio.open_nursery() as nursery:
            gen = await nursery.start(client.start, ImageRequest(prompt="a fox"))
    result = gen.result()
    assert result.state is State.FAILED
    assert result.reason.startswith("the start request failed: cannot connect to http://")
    assert retries == []


@needs_command
@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"http://127.0.0.1:{closed_port()}", "(connection refused): is the server running?"),
        ("https://nonexistent.invalid", "does not resolve): check the spelling"),
    ],
    ids=["refused", "unresolvable"],  # the port differs per collection
)
def test_generate_against_nothing_fails_at_once(tmp_path: Path, url: str, words: str) -> None:
    env = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=TOKEN)
    t0 = time.monotonic()
    proc = run("generate", "a fox", "--out", str(tmp_path / "fox.png"), env=env)
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    flat = " ".join(proc.stderr.split())
    assert f"failed: the start request failed: cannot connect to {url}" in flat
    assert words in flat
    assert "retry" not in flat  # one attempt: nothing to retry
    assert took < 10  # it took 47.7 s (six attempts) before: the bound is only against a hang
