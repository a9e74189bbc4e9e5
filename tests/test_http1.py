"""hybridgen's own HTTP/1.1 client (:mod:`hybridgen.http1`) against a raw loopback server whose
every reply is written by hand: keep-alive, stale connections, retries, limits, cancellation.

The API-level behaviour (statuses, bounded bodies, SSE) is in the transport contract tests, which
run the real transport over this client and over httpx alike."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from hybridgen import http1
from hybridgen.api import Config
from hybridgen.errors import TransientError
from hybridgen.http1 import MAX_HEAD, HTTPFailure, Pool, _Connection, _split
from hybridgen.testing.sockets import client_side_fds
from hybridgen.transport import SuperDuperTransport

LIMIT = 5.0

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A loopback server: ``reply(n)`` gives the bytes for the n-th request (from 0), or a
    callable that gets the stream and does anything; it counts connections and requests."""

    def __init__(self, reply: Callable[[int], Any]) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.raw: list[bytes] = []
        """Each request as it came: head, blank line, body."""
        self.port = 0
        self.hung_up = trio.Event()
        """Set once the server has closed a connection of its own accord."""
        self.ended = trio.Event()
        """Set once a connection has ended, whoever closed it (its requests are counted)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._serve(stream)
        finally:
            self.ended.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                self.raw.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                index = len(self.requests)
                self.requests.append(head.split(b"\r\n")[0])
                action = self.reply(index)
                if callable(action):
                    if await action(stream) == "close":
                        await stream.aclose()
                        self.hung_up.set()
                        return
                else:
                    await stream.send_all(action)


@contextlib.asynccontextmanager
async def serving(reply: Callable[[int], Any]) -> AsyncIterator[Server]:
    server = Server(reply)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def get(pool: Pool, server: Server, path: str = "/x", method: str = "GET") -> bytes:
    body = b"{}" if method == "POST" else None
    url = f"http://127.0.0.1:{server.port}{path}"
    async with pool.request(method, url, [("Accept", "*/*")], body) as response:
        assert response.status == 200
        return b"".join([chunk async for chunk in response.chunks()])


CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@pytest.mark.parametrize(
    ("reply", "connections"),
    [(OK, 1), (CLOSE, 3)],
    ids=["kept alive: one connection", "Connection: close: one each"],
)
async def test_a_kept_alive_connection_is_reused_and_a_closed_one_is_not(
    reply: bytes, connections: int
) -> None:
    async with serving(lambda i: reply) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            for _ in range(3):
                assert await get(pool, server) == b"ok"
        await pool.aclose()
    assert server.connections == connections
    assert server.requests == [b"GET /x HTTP/1.1"] * 3


async def test_a_connection_the_server_closed_while_idle_is_not_taken() -> None:
    async def reply_then_close(stream: trio.SocketStream) -> str:
        await stream.send_all(OK)
        return "close"

    async with serving(lambda i: reply_then_close) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            assert await get(pool, server) == b"ok"
            await server.hung_up.wait()  # on loopback its FIN is in our socket by now
            assert await get(pool, server) == b"ok"
        await pool.aclose()
    assert server.connections == 2
    assert len(server.requests) == 2  # the dead connection was never written to


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_kept_alive_connection_dying_as_a_request_goes_out(method: str) -> None:
    """The second request reaches a connection the server then closes without a reply: a GET
    is sent again on a new connection; a POST fails, saying it may have been processed."""

    async def hang_up(stream: trio.SocketStream) -> str:
        return "close"

    async with serving(lambda i: hang_up if i == 1 else OK) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            assert await get(pool, server, method=method) == b"ok"
            if method == "GET":
                assert await get(pool, server) == b"ok"
            else:
                with pytest.raises(HTTPFailure) as info:
                    await get(pool, server, method=method)
                assert info.value.sent
                assert "closed the connection without a reply" in str(info.value)
        await pool.aclose()
    assert len(server.requests) == (3 if method == "GET" else 2)


async def test_a_refused_connection_was_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = Pool()
    with trio.fail_after(LIMIT), pytest.raises(HTTPFailure) as info:
        async with pool.request("POST", f"http://127.0.0.1:{port}/start", [], b"{}"):
            pass
    assert info.value.sent is False
    assert f"connect to 127.0.0.1:{port}: Connection refused" in str(info.value)


async def test_a_body_left_unread_closes_its_connection() -> None:
    async with serving(lambda i: OK) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            async with pool.request("GET", f"http://127.0.0.1:{server.port}/", []) as response:
                assert response.status == 200  # body not read
            assert await get(pool, server) == b"ok"
        await pool.aclose()
    assert server.connections == 2


async def test_a_head_over_the_limit_is_a_failure() -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * (4 * MAX_HEAD) + b"\r\nContent-Length: 0\r\n\r\n"
    async with serving(lambda i: huge) as server:
        pool = Pool()
        with trio.fail_after(LIMIT), pytest.raises(HTTPFailure) as info:
            await get(pool, server)
        await pool.aclose()
    assert info.value.sent and "breaks HTTP/1.1" in str(info.value)


async def test_informational_replies_and_chunked_bodies_are_read() -> None:
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with serving(lambda i: reply) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            url = f"http://127.0.0.1:{server.port}/"
            async with pool.request("GET", url, []) as response:
                assert response.headers["x-a"] == "1, 2"
                assert b"".join([c async for c in response.chunks()]) == b"abcde"
            assert await get(pool, server) == b"abcde"  # the connection was kept
        await pool.aclose()
    assert server.connections == 1


async def test_a_cancelled_exchange_closes_its_connection_and_leaks_nothing() -> None:
    async def never(stream: trio.SocketStream) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with serving(lambda i: never if i == 0 else OK) as server:
        pool = Pool()
        with trio.move_on_after(0.2) as scope:
            await get(pool, server)
        assert scope.cancelled_caught
        assert client_side_fds(server.port) == 0  # the cancelled exchange's is closed
        with trio.fail_after(LIMIT):
            assert await get(pool, server) == b"ok"
        assert client_side_fds(server.port) == 1  # kept alive
        await pool.aclose()
        assert client_side_fds(server.port) == 0
    assert server.connections == 2


async def test_nothing_is_sent_from_a_cancelled_scope_even_on_a_kept_alive_connection() -> None:
    async with serving(lambda i: OK) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            assert await get(pool, server) == b"ok"  # kept alive: the next send needs no wait
            with trio.CancelScope() as scope:
                scope.cancel()
                await get(pool, server, "/start", "POST")
            assert scope.cancelled_caught
            await server.ended.wait()  # the connection is closed, and all it carried was read
        await pool.aclose()
    assert server.requests == [b"GET /x HTTP/1.1"]


async def test_no_more_than_max_idle_connections_are_kept() -> None:
    async with serving(lambda i: OK) as server:
        pool = Pool(max_idle=2)
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(get, pool, server)
        assert "2 idle" in repr(pool)
        await pool.aclose()
        assert "0 idle" in repr(pool)
    assert server.connections == 5


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http:///nohost", "http://h:port/"])
async def test_a_url_it_cannot_send_to_is_a_failure_before_sending(url: str) -> None:
    pool = Pool()
    with pytest.raises(HTTPFailure) as info:
        async with pool.request("GET", url, []):
            pass
    assert info.value.sent is False


@pytest.mark.parametrize("via", ["http1", "httpx"])
async def test_the_callers_own_error_inside_a_download_passes_through_as_it_is(via: str) -> None:
    """A full disk while saving is the caller's error, not a failed connection."""
    png = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n\x89PNG\r\n\x1a\n"
    async with serving(lambda i: png) as server, httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{server.port}"
        config = Config(url=url, token="t0ken-123", allow_insecure=True)
        transport = SuperDuperTransport(config, http=http if via == "httpx" else None)

        async def save_to_a_full_disk() -> None:
            async with transport.fetch(f"{url}/f.png", limit=1000) as chunks:
                async for _ in chunks:
                    raise OSError(28, "No space left on device")

        with trio.fail_after(LIMIT), pytest.raises(OSError, match="No space left"):
            await save_to_a_full_disk()
        await transport.aclose()


@pytest.mark.parametrize(
    ("path", "headers", "why"),
    [
        ("/x", [("X-Note", "a\r\nX-Smuggled: 1")], "Illegal header value"),
        ("/x", [("Bad Name", "1")], "Illegal header name"),
        ("/x", [("Connection", "close")], "the connection header is the HTTP client's to set"),
        ("/x", [("Content-Length", "5")], "the content-length header is the HTTP client's"),
        ("/x", [(b"Content-Length", b"5")], "the content-length header is the HTTP client's"),
        ("/x", [(b"Transfer-Encoding", b"chunked")], "the transfer-encoding header is the HTTP"),
        ("/x", [("Expect", "100-continue")], "the expect header is the HTTP client's"),
        ("/x", [("Upgrade", "websocket")], "the upgrade header is the HTTP client's"),
    ],
    ids=[
        "CRLF in value",
        "bad name",
        "Connection",
        "Content-Length",
        "bytes Content-Length",
        "bytes Transfer-Encoding",
        "Expect",
        "Upgrade",
    ],
)
async def test_a_request_that_cannot_be_sent_fails_before_any_connection(
    path: str, headers: list[tuple[Any, Any]], why: str
) -> None:
    """The pool writes the request itself: a head h11 would refuse to send, it refuses too."""
    async with serving(lambda i: OK) as server:
        pool = Pool()
        with pytest.raises(HTTPFailure, match=re.escape(why)) as info:
            async with pool.request("GET", f"http://127.0.0.1:{server.port}{path}", headers):
                pass
        assert info.value.sent is False
        assert server.connections == 0
        assert await get(pool, server) == b"ok"  # the pool still works
        await pool.aclose()


async def test_the_request_on_the_wire_is_the_one_asked_for() -> None:
    """Method, target (the fragment dropped), Host, the caller's headers, then the body's length."""
    async with serving(lambda i: OK) as server:
        pool = Pool()
        url = f"http://127.0.0.1:{server.port}/a/b?c=1#frag"
        async with pool.request("POST", url, [("X-One", "1")], b"hi") as response:
            assert response.status == 200
            assert b"".join([chunk async for chunk in response.chunks()]) == b"ok"
        assert await get(pool, server, "/d") == b"ok"  # on the same connection: h11 is in step
        await pool.aclose()
    host = f"127.0.0.1:{server.port}".encode()
    assert server.raw == [
        b"POST /a/b?c=1 HTTP/1.1\r\nHost: " + host + b"\r\nX-One: 1\r\nContent-Length: 2\r\n\r\nhi",
        b"GET /d HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\n\r\n",
    ]
    assert server.connections == 1


@pytest.mark.skipif(os.name != "posix", reason="reads from the descriptor on POSIX only")
async def test_a_reply_whose_bytes_are_always_waiting_still_lets_other_tasks_run() -> None:
    """Reads that find bytes waiting skip the scheduler, but not for ever: a fast sender cannot
    keep the reading task running while every other task waits."""
    raw, b = socket.socketpair()
    a = trio.socket.from_stdlib_socket(raw)
    conn = _Connection(trio.SocketStream(a))
    ran = 0

    async def other_task() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)  # it runs once this task lets the scheduler run
        for _ in range(64):
            b.send(b"x")  # a byte is waiting at every read (sent without a checkpoint)
            assert await conn._receive(a) == b"x"
        nursery.cancel_scope.cancel()
    assert ran > 1  # it ran during the reads (else only once, as the nursery closed)
    a.close()
    b.close()


async def test_a_reply_to_head_has_no_body_and_an_empty_body_is_sent_with_its_length() -> None:
    """h11 is told each request's method: a reply to HEAD announces a length but has no body,
    and the connection goes on with the next request."""
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    async with serving(lambda i: head_reply if i == 0 else OK) as server:
        pool = Pool()
        url = f"http://127.0.0.1:{server.port}/h"
        with trio.fail_after(LIMIT):  # read as a reply to GET, it would wait for 5 bytes
            async with pool.request("HEAD", url, []) as response:
                assert response.headers["content-length"] == "5"
                assert [chunk async for chunk in response.chunks()] == []
        async with pool.request("POST", url, [], b"") as response:
            assert b"".join([chunk async for chunk in response.chunks()]) == b"ok"
        await pool.aclose()
    assert server.connections == 1
    assert server.raw[1].endswith(b"\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("url", "origin", "target", "host"),
    [
        ("http://h/a/b?c=1#d", ("http", "h", 80), "/a/b?c=1", "h"),
        ("HTTP://H:80", ("http", "h", 80), "/", "h"),
        ("https://h:8443?q", ("https", "h", 8443), "/?q", "h:8443"),
        ("https://h#frag", ("https", "h", 443), "/", "h"),
        ("http://[::1]:8080/x", ("http", "::1", 8080), "/x", "[::1]:8080"),
    ],
)
def test_a_url_is_split_as_urlsplit_would(
    url: str, origin: tuple[str, str, int], target: str, host: str
) -> None:
    assert _split(url) == (origin, target, host)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("h/x", "not an http(s) URL"),
        ("http://user:pw@h/x", "a URL with credentials"),
        ("http://h:99999999/x", "not a number from 0 to 65535"),
    ],
)
async def test_a_url_that_cannot_be_requested_fails_unsent_and_hides_a_password(
    url: str, why: str
) -> None:
    with pytest.raises(HTTPFailure, match=re.escape(why)) as info:
        async with Pool().request("GET", url, []):
            pass
    assert info.value.sent is False
    assert "pw" not in str(info.value)


async def test_replies_are_read_through_trio_where_a_socket_is_not_a_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Windows path (trio's recv and send) on this machine."""
    monkeypatch.setattr(http1, "_POSIX", False)
    async with serving(lambda i: OK) as server:
        pool = Pool()
        assert await get(pool, server) == b"ok"
        assert await get(pool, server, method="POST") == b"ok"
        await pool.aclose()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/a b?q=x y", b"/a%20b?q=x%20y"),
        ("/x\r\nX-Smuggled: 1", b"/x%0D%0AX-Smuggled:%201"),
        ("/caf\u00e9/%41", b"/caf%C3%A9/%41"),
        ("/ok/as-is?a=1&b=%2F", b"/ok/as-is?a=1&b=%2F"),
    ],
    ids=["spaces", "CR LF", "non-ASCII, an escape kept", "visible ASCII unchanged"],
)
async def test_a_target_that_is_not_visible_ascii_is_sent_percent_encoded(
    path: str, sent: bytes
) -> None:
    """As httpx and browsers send it: nothing raw can reach the request line."""
    async with serving(lambda i: OK) as server:
        pool = Pool()
        assert await get(pool, server, path) == b"ok"
        await pool.aclose()
    assert server.requests == [b"GET " + sent + b" HTTP/1.1"]


@pytest.mark.parametrize("via", ["http1", "httpx"])
async def test_a_result_url_with_a_port_that_is_not_a_number_is_a_typed_error(via: str) -> None:
    """A hostile server's URL: a transport error naming the port, nothing sent, no token."""
    async with httpx.AsyncClient() as http:
        config = Config(url="http://127.0.0.1:9", token="t0ken-123", allow_insecure=True)
        transport = SuperDuperTransport(config, http=http if via == "httpx" else None)
        with trio.fail_after(LIMIT), pytest.raises(TransientError, match="port") as info:
            async with transport.fetch("https://cdn:abc/x.webp", limit=1000):
                pass
        assert "t0ken-123" not in str(info.value)
        await transport.aclose()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
            "the reply breaks HTTP/1.1 (peer closed connection without sending complete message "
            "body (received 2 bytes, expected 10))",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
            "(incomplete chunked read)",
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "a line of the head ends with a bare LF"),
        (b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", "other than chunked"),
    ],
    ids=["early close, length", "early close, chunked", "bare LF", "HTTP/2.0", "gzip coding"],
)
async def test_a_broken_reply_is_a_failure_that_says_what_broke(reply: bytes, why: str) -> None:
    async def send_and_close(stream: trio.SocketStream) -> str:
        await stream.send_all(reply)
        return "close"

    async with serving(lambda i: send_and_close) as server:
        pool = Pool()
        with trio.fail_after(LIMIT), pytest.raises(HTTPFailure) as info:
            await get(pool, server)
        await pool.aclose()
    assert info.value.sent and why in str(info.value)
    assert "breaks HTTP/1.1" in str(info.value)


async def test_a_connection_with_bytes_after_its_reply_is_not_reused() -> None:
    """A server may not answer a request not yet sent: such bytes are never read as a reply."""
    extra = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"
    async with serving(lambda i: extra if i == 0 else OK) as server:
        pool = Pool()
        with trio.fail_after(LIMIT):
            assert await get(pool, server) == b"ok"
            assert await get(pool, server) == b"ok"
        await pool.aclose()
    assert server.connections == 2
