"""hybridgen's reader of HTTP/1.1 replies (:mod:`hybridgen._reply`) beside h11, its oracle.

The same bytes (valid replies drawn by a strategy, then mutated into hostile ones) are split at
arbitrary points and fed to both, read as :class:`hybridgen.http1.Pool` reads them (the end of
the bytes is the connection's close); the outcomes must be the same: status, headers, body and
whether the connection is reused, or both refuse the reply. Where the reader is deliberately
stricter than h11 it refuses with its own reason, and the test checks that the reason holds in
the bytes (a bare LF is in them, h11 read a version other than 1.x, ...). The limits and every
hostile case also have a test of their own with the message the caller sees.
"""

from __future__ import annotations

import os
import re
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridgen._reply import MAX_CHUNK_LINE, MAX_HEAD, ReplyError, ReplyReader

EXAMPLES = int(os.environ.get("HYBRIDGEN_EXAMPLES", "150"))
props = settings(
    max_examples=4 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

Outcome = tuple[Any, ...]
"""``("ok", status, headers, body, reused)``, or ``("error", why)``."""
NO_REPLY = "the server closed the connection without a reply"


def ours(method: str, pieces: list[bytes]) -> Outcome:
    """Read one reply as the pool does; the end of ``pieces`` is the connection's close."""
    reader = ReplyReader()
    reader.start(method == "HEAD")
    feed = iter(pieces)
    closed = False

    def more() -> None:
        nonlocal closed
        piece = next(feed, None)
        if piece is not None:
            reader.feed(piece)
            return
        assert not closed, "asked for more bytes after the close"
        if reader.waiting:
            raise ReplyError(NO_REPLY)
        closed = True
        reader.eof()

    try:
        head = reader.head()
        while head is None:
            more()
            head = reader.head()
        status, headers = head
        body = b""
        while True:
            piece = reader.body()
            if piece is None:
                more()
            elif not piece:
                break
            else:
                body += piece
    except ReplyError as exc:
        return ("error", str(exc))
    for piece in feed:  # what came after the reply, read before the next request
        reader.feed(piece)
    return ("ok", status, headers, body, reader.reusable())


def oracle(method: str, pieces: list[bytes]) -> tuple[Outcome, list[h11.Event]]:
    """The same with h11, as the pool read replies before (and its events); a connection is
    reused when h11 says both sides are done, nothing came after the reply and it is open."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "-")]))
    conn.send(h11.EndOfMessage())
    feed = iter(pieces)
    closed = False
    events: list[h11.Event] = []

    def event() -> Any:
        nonlocal closed
        while True:
            e = conn.next_event()
            if e is not h11.NEED_DATA:
                events.append(e)
                return e
            piece = next(feed, None)
            if piece is None:
                if conn.their_state is h11.SEND_RESPONSE:
                    raise h11.RemoteProtocolError(NO_REPLY)
                closed = True
            conn.receive_data(piece or b"")

    try:
        e = event()
        while isinstance(e, h11.InformationalResponse):
            e = event()
        if not isinstance(e, h11.Response):
            return ("error", NO_REPLY), events
        headers: dict[str, str] = {}
        for name, value in e.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        body = b""
        while isinstance(d := event(), h11.Data):
            body += d.data
    except h11.RemoteProtocolError as exc:
        return ("error", str(exc)), events
    for piece in feed:
        conn.receive_data(piece)
    reused = (
        conn.our_state is h11.DONE
        and conn.their_state is h11.DONE
        and not conn.trailing_data[0]
        and not closed
    )
    return ("ok", e.status_code, headers, body, reused), events


BARE_LF = re.compile(rb"(?<!\r)\n")


def check_same(method: str, data: bytes, cuts: list[int]) -> Outcome:
    """Both readers on ``data`` cut at ``cuts``: the same outcome, or a documented difference."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    pieces = [p for p in pieces if p]
    mine = ours(method, pieces)
    whole = ours(method, [data] if data else [])
    assert whole == mine or whole[0] == mine[0] == "error", "the split changed the outcome"
    theirs, events = oracle(method, pieces)
    if mine[0] == "error" and theirs[0] == "ok":
        why = mine[1]
        heads = [e for e in events if isinstance(e, h11.Response | h11.InformationalResponse)]
        if "bare LF" in why:
            assert BARE_LF.search(data), why
        elif "HTTP/1.x" in why:
            assert any(not h.http_version.startswith(b"1.") for h in heads), why
        elif "both Content-Length and Transfer-Encoding" in why:
            final = dict(heads[-1].headers)
            assert b"content-length" in final and b"transfer-encoding" in final
        else:
            raise AssertionError(f"only ours refused: {why} (h11: {theirs})")
        return mine
    if mine[0] == "error":
        assert theirs[0] == "error", f"ours refused ({mine[1]}), h11 read {theirs}"
        return mine
    assert mine == theirs
    return mine


# -- replies drawn at random ------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes([*range(0x21, 0x7F), *range(0x80, 0x100), 1, 2, 0x1F, 0x7F])
"""Bytes h11 takes in a field value (control bytes but NUL, CR, LF, VT, FF: RFC 9110 §5.5)."""
names = st.text(TOKEN, min_size=1, max_size=8).map(str.encode)
words = st.binary(min_size=1, max_size=6).map(lambda b: bytes(VCHAR[x % len(VCHAR)] for x in b))
ows = st.sampled_from([b"", b"", b" ", b"\t", b"  "])


@st.composite
def values(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(words, max_size=3))
    inner = b"".join(p + draw(st.sampled_from([b" ", b"\t", b" \t "])) for p in parts).rstrip()
    return draw(ows) + inner + draw(ows)


@st.composite
def header_lines(draw: st.DrawFn) -> list[bytes]:
    lines = [n + b":" + v for n, v in draw(st.lists(st.tuples(names, values()), max_size=4))]
    if lines and draw(st.booleans()):  # an obs-fold: h11 and the reader join it
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] += b"\r\n" + draw(st.sampled_from([b" ", b"\t", b"  "])) + draw(values())
    return lines


def case(name: bytes, draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from([name, name.upper(), name.title()]))


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid reply (h11 reads it), maybe after 1xx replies, maybe with bytes after it."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "HEAD"]))
    out = b""
    for status in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
        out += b"HTTP/1.1 %d Info\r\n" % status + b"".join(
            line + b"\r\n" for line in draw(header_lines())
        )
        out += b"\r\n"
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 304, 404, 429, 500]) | st.integers(200, 999))
    reason = draw(st.sampled_from([b"", b" ", b" OK", b" Not Found", b" \tx\x80y"]))
    lines = draw(header_lines())
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close"]))
    connection = draw(st.sampled_from([None, None, b"close", b"keep-alive", b"Upgrade, CLOSE"]))
    if connection is not None:
        lines.insert(
            draw(st.integers(0, len(lines))), case(b"connection", draw) + b": " + connection
        )
    payload = b""
    if framing == "length":
        length = b"%d" % len(body)
        value = draw(st.sampled_from([length, b" " + length + b" ", length + b", " + length]))
        lines.insert(draw(st.integers(0, len(lines))), case(b"content-length", draw) + b":" + value)
        payload = body
        if draw(st.booleans()):  # the same length again, in a header of its own
            lines.append(b"Content-Length: " + length)
    elif framing == "chunked":
        coding = draw(st.sampled_from([b"chunked", b"Chunked", b" CHUNKED "]))
        lines.insert(
            draw(st.integers(0, len(lines))), case(b"transfer-encoding", draw) + b":" + coding
        )
        rest = body
        while rest:
            n = draw(st.integers(1, len(rest)))
            size = draw(st.sampled_from([b"%x", b"%X", b"00%x"])) % n
            ext = draw(st.sampled_from([b"", b"", b";a=b", b'; q="x"', b" ", b";\r"]))
            payload += size + ext + b"\r\n" + rest[:n] + b"\r\n"
            rest = rest[n:]
        payload += b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n"
        payload += b"".join(line + b"\r\n" for line in draw(header_lines())) + b"\r\n"
    else:
        payload = body
    out += b"HTTP/" + version + b" %d" % status + reason + b"\r\n"
    out += b"".join(line + b"\r\n" for line in lines) + b"\r\n" + payload
    if framing != "close" and draw(st.integers(0, 4)) == 0:  # bytes after the reply
        out += draw(st.sampled_from([b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]))
    return method, out


cuts = st.lists(st.integers(0, 400), max_size=6)


@props
@given(replies(), cuts)
def test_valid_replies_read_as_h11_reads_them_however_split(
    reply: tuple[str, bytes], points: list[int]
) -> None:
    method, data = reply
    outcome = check_same(method, data, points)
    assert outcome[0] == "ok", outcome  # a valid reply is read (h11 agreeing)


INSERTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\x0b",
    b" ",
    b"\t",
    b":",
    b",",
    b"0",
    b"f",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/2.0 ",
    b"HTTP/1.1 099",
    b"ffffffffffffffffffffff\r\n",
    b"\r\n ",
    b" x\r\n",
]


HEADERS = [
    b"Content-Length: 3\r\n",
    b"Content-Length: 1, 2\r\n",
    b"Content-Length:\r\n",
    b"Content-Length: 0x10\r\n",
    b"Content-Length: 1 2\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
    b"Transfer-Encoding:  Chunked \r\n",
    b"Connection: close\r\n",
    b" folded\r\n",
    b"X: a\x00b\r\n",
    b"X: a\x01b\r\n",
    b"X:\x7f\xff\r\n",
    b"X : y\r\n",
    b"X:y\r\n",
    b":y\r\n",
    b"X\r\n",
    b"X: y\r\n\r\n",
]
"""Header lines, hostile or not, put where headers are."""
BODIES = [b"0\r\n\r\n", b"ffffffffffffffffffff\r\n", b"1;ext\r\n", b"zz\r\n", b"0\r\nX: 1\r\n"]
"""Bytes put into a body: chunk-size lines, an end, a trailer."""


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid reply with up to three changes: bytes inserted (anywhere, as a header line after
    a status line, into the body), replaced or cut, the end cut off, CRLFs made bare LFs."""
    method, data = draw(replies())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):  # as often from the end (Hypothesis likes 0: the status line)
            at = len(data) - at
        kinds = ["insert", "replace", "delete", "cut", "lf", "header", "header", "body", "body"]
        kind = draw(st.sampled_from(kinds))
        if kind == "header":
            at = data.find(b"\r\n") + 2 if b"\r\n" in data else at
            kind, data = "done", data[:at] + draw(st.sampled_from(HEADERS)) + data[at:]
        elif kind == "body":
            end = data.find(b"\r\n\r\n")
            at = draw(st.integers(end + 4, len(data))) if end >= 0 else at
            kind = "insert"
        if kind == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS + BODIES)) + data[at:]
        elif kind == "replace" and at < len(data):
            byte = draw(st.sampled_from(INSERTS[:11]) | st.binary(min_size=1, max_size=1))
            data = data[:at] + byte + data[at + 1 :]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 4)) :]
        elif kind == "cut":
            data = data[:at]
        elif kind == "lf":
            data = data.replace(b"\r\n", b"\n", draw(st.integers(1, 3)))
    return method, data


@props
@given(mutated(), cuts)
@example(("GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"), [])
@example(("GET", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), [5])
@example(("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"), [])
def test_hostile_replies_are_refused_as_h11_refuses_them_or_for_a_documented_reason(
    reply: tuple[str, bytes], points: list[int]
) -> None:
    method, data = reply
    check_same(method, data, points)


# -- each hostile case, with the message the caller sees -----------------------------------


def one(data: bytes, method: str = "GET") -> Outcome:
    return ours(method, [data])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "Content-Length is not a number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\xb2\r\n\r\nok", "Content-Length is not a number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 21 + b"\r\n\r\n", "not a number"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "other than chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "other than chunked"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "other than chunked (once)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", "not a chunk-size line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "not a chunk-size line"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 21 + b"\r\n",
            "not a chunk-size line",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            "a chunk's data does not end with CRLF",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * MAX_CHUNK_LINE,
            f"a chunk-size line over {MAX_CHUNK_LINE} bytes",
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\n\r\nok", "bare LF"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\n",
            "a line of the trailers ends with a bare LF",
        ),
        (b"HTTP/1.1 200 OK\r\n X: folded first\r\n\r\n", "obs-fold) before any header"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n", "NUL, VT or FF"),
        (b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", "a CR that does not end"),
        (b"HTTP/1.1 200 OK\r\nX a: b\r\nContent-Length: 0\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\nX\r\nContent-Length: 0\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\n: b\r\n\r\n", "not a header line"),
        (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/1.x"),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not an HTTP/1.x status line"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "no upgrade was asked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "(received 2 bytes, expected 10)"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
            "peer closed connection without sending complete message body (incomplete chunked",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Le", NO_REPLY),
        (b"", NO_REPLY),
    ],
)
def test_a_hostile_reply_is_refused_saying_what_is_wrong(data: bytes, why: str) -> None:
    outcome = one(data)
    assert outcome[0] == "error" and why in outcome[1], outcome


@pytest.mark.parametrize("size", [MAX_HEAD - 100, MAX_HEAD + 100])
@pytest.mark.parametrize("split", [False, True], ids=["one read", "in 1 KiB reads"])
def test_the_head_limit_holds_however_the_bytes_come(size: int, split: bool) -> None:
    """h11 checked only what it had buffered while waiting; the reader checks the head."""
    head = b"HTTP/1.1 200 OK\r\nX: " + b"j" * (size - 40) + b"\r\nContent-Length: 2\r\n\r\n"
    data = head + b"ok"
    pieces = [data[i : i + 1024] for i in range(0, len(data), 1024)] if split else [data]
    outcome = ours("GET", pieces)
    if len(head) <= MAX_HEAD:
        assert outcome[:4] == ("ok", 200, outcome[2], b"ok")
    else:
        assert outcome == ("error", f"the head is over {MAX_HEAD} bytes")


def test_a_huge_trailer_and_a_huge_informational_head_are_refused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    trailer = b"X: " + b"t" * MAX_HEAD + b"\r\n\r\n"
    assert one(chunked + trailer) == ("error", f"the trailers are over {MAX_HEAD} bytes")
    info = b"HTTP/1.1 100 Continue\r\nX: " + b"i" * MAX_HEAD + b"\r\n\r\n"
    assert one(info + b"HTTP/1.1 204 \r\n\r\n") == ("error", f"the head is over {MAX_HEAD} bytes")


@pytest.mark.parametrize(
    ("data", "method", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", "GET", False),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Upgrade , Close\r\nContent-Length: 0\r\n\r\n",
            "GET",
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "GET", False),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the close", "GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", "GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", True),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", True),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", "GET", True),
    ],
    ids=[
        "kept alive",
        "Connection: close",
        "close among other tokens",
        "HTTP/1.0",
        "HTTP/1.0 keep-alive (h11 closes too)",
        "ends with the connection",
        "bytes after the reply",
        "HEAD: no body",
        "204: no body",
        "304: no body",
        "trailers",
    ],
)
def test_the_reuse_decision(data: bytes, method: str, reused: bool) -> None:
    outcome = check_same(method, data, [])
    assert outcome[0] == "ok" and outcome[4] is reused, outcome


def test_informational_replies_are_skipped_and_headers_joined_as_before() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a:  2 \r\nX-F: one\r\n \t two\r\n"
        b"Content-Length: 3, 3\r\nCONTENT-LENGTH: 3\r\n\r\nabc"
    )
    outcome = check_same("GET", data, [1, 30, 70])
    assert outcome == (
        "ok",
        200,
        {"x-a": "1, 2", "x-f": "one two", "content-length": "3"},
        b"abc",
        True,
    )


def test_the_reader_reads_the_next_reply_on_the_same_connection() -> None:
    reader = ReplyReader()
    for body in (b"one", b"two"):
        reader.start()
        reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert reader.head() == (200, {"transfer-encoding": "chunked"})
        assert reader.body() is None
        reader.feed(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert reader.body() == body
        assert reader.body() == b""
        assert reader.reusable()
