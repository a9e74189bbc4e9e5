"""hybridgen's own reader of HTTP/1.1 replies: sans-IO, strict, and cheap where replies are plain.

:class:`ReplyReader` is fed a connection's bytes as they arrive and gives back the reply's status
and headers (:meth:`~ReplyReader.head`), then its body piece by piece (:meth:`~ReplyReader.body`),
then whether the connection may carry another request (:meth:`~ReplyReader.reusable`). It
replaced h11 on the client's reading path: a reply whose head and body are in one read costs one
``bytes.find`` for the head's end, one ``split`` for its lines, a dictionary look-up per header
name and one slice for a ``Content-Length`` body (h11's events, state machine and regular
expressions per line were 16 % of the client's CPU at a thousand generations).

It reads what h11 reads, as h11 reads it (``tests/test_reply.py`` feeds the same bytes, split
anywhere, to both), except where it is deliberately stricter:

- Lines end with CRLF only: a bare LF (h11 accepts it) is an error, in a head, a chunk-size line
  or the trailers (RFC 9112 §2.2 lets a recipient accept it; accepting it lets two readers of the
  same bytes disagree about where a reply ends).
- The status line is ``HTTP/1.x`` (h11 takes any ``HTTP/d.d``).
- A reply with both ``Content-Length`` and ``Transfer-Encoding`` is an error (h11 lets chunked
  win; RFC 9112 §6.3 calls it a sign of response splitting; llhttp, aiohttp's parser, refuses it).
- Size limits hold however the bytes are split: a head (each 1xx one too) or the trailers over
  :data:`MAX_HEAD`, a chunk-size line over :data:`MAX_CHUNK_LINE` (h11 checks only what is
  buffered while it waits, so a large head that comes in one read passes).
- A connection is not reused when bytes came after the reply's end (h11 would read them as the
  next reply: a server may not answer a request not yet sent) or when its body ended with the
  connection (h11's state says done).

Like h11 it takes an obs-fold (a header line that begins with a space or tab continues the one
before, joined by a space: RFC 9112 §5.2 asks that of a user agent), control bytes other than
NUL, CR, LF, VT and FF in field values (RFC 9110 §5.5 allows keeping them), any chunk extension,
a 1xx reply before the final one (skipped; a 101 is an error, no upgrade being asked), and no
body after ``HEAD``, a 204 or a 304 whatever the headers say.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_CHUNK_LINE", "MAX_HEAD", "ReplyError", "ReplyReader"]

MAX_HEAD: Final = 64 * 1024
"""The largest status line plus headers accepted (bytes, the blank line included); also the
largest trailers."""
MAX_CHUNK_LINE: Final = 4096
"""The longest chunk-size line accepted (size, extensions and CRLF), as Go's net/http."""

_HEAD: Final = 0  # waiting for (the rest of) a head
_LENGTH: Final = 1  # a Content-Length body: self._left bytes to go
_SIZE: Final = 2  # waiting for a chunk-size line
_DATA: Final = 3  # inside a chunk: self._left bytes to go
_CRLF: Final = 4  # the CRLF after a chunk's data: self._left bytes of it to go
_TRAILER: Final = 5  # after the last chunk: the trailers and the blank line
_CLOSE: Final = 6  # a body that ends with the connection
_DONE: Final = 7
_FAILED: Final = 8

_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_CHUNK: Final = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
"""A chunk-size line without its CRLF, as h11 reads it (extensions are skipped, unchecked)."""
_BAD: Final = re.compile(rb"[\x00\x0b\x0c]")
"""Bytes no line of a head may hold (besides CR and LF outside a CRLF)."""
_STATUS_LINE: Final = rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [^\x00\x0b\x0c\r\n]*)?"
_PLAIN: Final = re.compile(_STATUS_LINE + rb"(?:\r\n[^\x00\x0b\x0c\r\n \t][^\x00\x0b\x0c\r\n]*)*")
"""A head with no byte it may not hold, no obs-fold and an HTTP/1.x status line (h11 takes any
byte in a reason phrase or a field value but these: NUL, CR, LF, VT, FF)."""
_STATUS: Final = re.compile(_STATUS_LINE)
_BLANK: Final = re.compile(rb"\n\r?\n")
"""A blank line as h11 finds one (bare LFs allowed): one in a head we wait on is an error."""
_NAMES: dict[bytes, str] = {}
"""Header names seen and found valid, by their bytes: their lower-case text."""
_NAMES_KEPT: Final = 512
_PREFIX: Final = b"HTTP/1."
_NO_BODY: Final = frozenset({204, 304})


class ReplyError(Exception):
    """The bytes break HTTP/1.1 (or one of the limits); the message says how."""


class ReplyReader:
    """One connection's replies, read from the bytes :meth:`feed` gives it.

    :meth:`start` before each request's reply (``head``: the request was ``HEAD``, so the reply
    has no body); then :meth:`head` until it returns the status and headers, then :meth:`body`
    until it returns ``b""`` (the end); ``None`` from either means more bytes are needed (or
    :meth:`eof`, once the connection is closed). Any :class:`ReplyError` leaves it failed.
    """

    __slots__ = ("_buf", "_closed", "_is_head", "_keep", "_left", "_mode", "_scan", "_total")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._scan = 0  # where the search for a line's end resumes
        self._mode = _DONE
        self._left = 0
        self._total = 0
        self._keep = False
        self._is_head = False
        self._closed = False

    def start(self, head: bool = False) -> None:
        """Expect the reply to the request just sent (``head``: a ``HEAD`` request)."""
        self._mode = _HEAD
        self._is_head = head
        self._scan = 0

    @property
    def waiting(self) -> bool:
        """True while no final reply's head has been read (and nothing failed)."""
        return self._mode == _HEAD

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes read from the connection."""
        buf = self._buf
        if not buf:
            self._buf = data
        elif type(buf) is bytes:  # a second piece of one line: gather in O(n), not O(n^2)
            self._buf = bytearray(buf)
            self._buf += data
        else:
            buf += data

    def eof(self) -> None:
        """The connection was closed by the server: no byte comes after what was fed."""
        self._closed = True

    def reusable(self) -> bool:
        """Whether the reply ended and the connection can carry the next request: kept alive,
        not closed, and no byte came after the reply."""
        return self._mode == _DONE and self._keep and not self._buf and not self._closed

    def _fail(self, why: str) -> ReplyError:
        self._mode = _FAILED
        return ReplyError(why)

    def head(self) -> tuple[int, dict[str, str]] | None:
        """The final reply's status and headers (names in lower case, repeated ones joined by
        ``", "``), 1xx replies skipped; ``None`` while they are incomplete."""
        while True:
            buf = self._buf
            if not buf:  # as right after the request went out
                return None
            end = buf.find(b"\r\n\r\n", self._scan)
            if end < 0:
                self._waiting_head(buf)
                return None
            if end + 4 > MAX_HEAD:
                raise self._fail(f"the head is over {MAX_HEAD} bytes")
            if type(buf) is not bytes:
                buf = bytes(buf)
            head = buf[:end]
            self._buf = buf[end + 4 :]
            self._scan = 0
            status, headers, version = self._parse(head)
            if status >= 200:
                break
            if status == 101:
                raise self._fail("a 101 Switching Protocols reply, but no upgrade was asked")
            # other 1xx: informational, skipped (their headers checked as h11 checks them)
        self._frame(status, headers, version)
        return status, headers

    def _waiting_head(self, buf: bytes | bytearray) -> None:
        """The head is not complete yet: fail now if it never can be, the limit aside."""
        n = len(buf)
        if buf[:7] != _PREFIX[:n]:
            raise self._fail(f"not an HTTP/1.x status line: {bytes(buf[:40])!r}")
        if _BLANK.search(buf, max(0, self._scan - 1)):
            raise self._fail("a line of the head ends with a bare LF, not CRLF")
        if n >= MAX_HEAD:
            raise self._fail(f"the head is over {MAX_HEAD} bytes")
        self._scan = max(0, n - 3)

    def _parse(self, head: bytes, trailers: bool = False) -> tuple[int, dict[str, str], int]:
        """``(status, headers, minor version)`` of a head (its blank line left out)."""
        match = _PLAIN.fullmatch(head)
        if match is not None:  # the usual head: one pass of the expression checks every byte
            lines = head.split(b"\r\n")
            status = int(match[2])
            minor = match[1][0] - 48
        else:
            status, minor, lines = self._unusual(head)
        if status < 100:
            raise self._fail(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
        headers: dict[str, str] = {}
        names = _NAMES
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            key = names.get(name)
            if key is None:
                if not colon or not _TOKEN.fullmatch(name):
                    raise self._fail(f"not a header line: {line[:40]!r}")
                key = name.lower().decode("ascii")
                if len(names) < _NAMES_KEPT:
                    names[name] = key
            elif not colon:  # a valid name alone, no colon
                raise self._fail(f"not a header line: {line[:40]!r}")
            text = value.strip(b" \t").decode("latin-1")
            if key in headers:
                headers[key] = f"{headers[key]}, {text}"
            else:
                headers[key] = text
        if "content-length" in headers or "transfer-encoding" in headers:
            self._check_framing(headers, trailers)
        return status, headers, minor

    def _unusual(self, head: bytes) -> tuple[int, int, list[bytes]]:
        """``(status, minor version, lines)`` of a head the quick check refused: what is wrong
        with it, or its lines with each obs-fold joined to the line before by a space (as h11
        joins them)."""
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            if head.count(b"\n") > crlf:
                raise self._fail("a line of the head ends with a bare LF, not CRLF")
            raise self._fail("the head holds a CR that does not end a line")
        if _BAD.search(head):
            raise self._fail("the head holds a NUL, VT or FF byte")
        lines = head.split(b"\r\n")
        match = _STATUS.fullmatch(lines[0])
        if match is None:
            raise self._fail(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
        out = [lines[0]]
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                if len(out) == 1:
                    raise self._fail("a continuation line (obs-fold) before any header")
                out[-1] = out[-1] + b" " + line.lstrip(b" \t")
            else:
                out.append(line)
        return int(match[2]), match[1][0] - 48, out

    def _check_framing(self, headers: dict[str, str], trailers: bool) -> None:
        """``Content-Length`` one number (repeats allowed if equal), ``Transfer-Encoding``
        chunked and once (as h11 checks them); both at once is an error."""
        length = headers.get("content-length")
        if length is not None and not (len(length) <= 20 and length.isdigit() and length.isascii()):
            values = {v.strip(" \t") for v in length.split(",")}
            if len(values) != 1:
                raise self._fail(f"conflicting Content-Length values: {length[:40]!r}")
            (length,) = values
            if not (0 < len(length) <= 20 and length.isdigit() and length.isascii()):
                raise self._fail(f"Content-Length is not a number: {length[:40]!r}")
            headers["content-length"] = length
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":
                raise self._fail(f"Transfer-Encoding other than chunked (once): {coding[:40]!r}")
            headers["transfer-encoding"] = "chunked"
            if length is not None and not trailers:
                raise self._fail("both Content-Length and Transfer-Encoding")

    def _frame(self, status: int, headers: dict[str, str], minor: int) -> None:
        """Set how the body is read, and whether the connection may be kept."""
        connection = headers.get("connection")
        self._keep = minor >= 1 and (
            connection is None
            or "close" not in [t.strip(" \t") for t in connection.lower().split(",")]
        )
        self._total = 0
        if self._is_head or status in _NO_BODY:
            self._mode, self._left = _LENGTH, 0
        elif "transfer-encoding" in headers:
            self._mode = _SIZE
        elif (length := headers.get("content-length")) is not None:
            self._mode, self._left = _LENGTH, int(length)
            self._total = self._left
        else:
            self._mode = _CLOSE

    def body(self) -> bytes | None:
        """The body's next bytes, ``b""`` at its end, ``None`` when more are needed."""
        mode = self._mode
        if mode == _LENGTH:
            left = self._left
            if not left:
                self._mode = _DONE
                return b""
            buf = self._buf
            if not buf:
                if self._closed:
                    raise self._fail(
                        "peer closed connection without sending complete message body "
                        f"(received {self._total - left} bytes, expected {self._total})"
                    )
                return None
            if type(buf) is not bytes:
                buf = bytes(buf)
            if len(buf) <= left:
                self._left = left - len(buf)
                self._buf = b""
                return buf
            self._left = 0
            self._buf = buf[left:]
            return buf[:left]
        if mode == _CLOSE:
            buf = self._buf
            if buf:
                self._buf = b""
                return bytes(buf)
            if self._closed:
                self._mode = _DONE
                self._keep = False
                return b""
            return None
        if mode == _DONE:
            return b""
        if mode in (_HEAD, _FAILED):
            raise self._fail("the body was asked for before a head was read")
        return self._chunked()

    def _chunked(self) -> bytes | None:
        while True:
            mode = self._mode
            buf = self._buf
            if mode == _DATA:
                if not buf:
                    self._need()
                    return None
                if type(buf) is not bytes:
                    buf = bytes(buf)
                left = self._left
                if len(buf) < left:
                    self._left = left - len(buf)
                    self._buf = b""
                    return buf
                self._mode, self._left = _CRLF, 2
                self._buf = buf[left:]
                return buf[:left]
            if mode == _CRLF:
                have = buf[: self._left]
                if not have:
                    self._need()
                    return None
                if have != b"\r\n"[2 - self._left :][: len(have)]:
                    raise self._fail(f"a chunk's data does not end with CRLF: {bytes(have)!r}")
                self._left -= len(have)
                self._buf = buf[len(have) :]
                if self._left:
                    self._need()
                    return None
                self._mode = _SIZE
                continue
            if mode == _SIZE:
                end = buf.find(b"\r\n", self._scan)
                if end < 0:
                    if len(buf) >= MAX_CHUNK_LINE:
                        raise self._fail(f"a chunk-size line over {MAX_CHUNK_LINE} bytes")
                    self._scan = max(0, len(buf) - 1)
                    self._need()
                    return None
                if end + 2 > MAX_CHUNK_LINE:
                    raise self._fail(f"a chunk-size line over {MAX_CHUNK_LINE} bytes")
                match = _CHUNK.fullmatch(buf, 0, end)
                if match is None:
                    raise self._fail(f"not a chunk-size line: {bytes(buf[: min(end, 40)])!r}")
                size = int(match[1], 16)
                self._buf = buf[end + 2 :]
                self._scan = 0
                if size:
                    self._mode, self._left = _DATA, size
                else:
                    self._mode = _TRAILER
                continue
            if mode == _TRAILER:
                return self._trailers(buf)
            return b""  # _DONE

    def _trailers(self, buf: bytes | bytearray) -> bytes | None:
        if buf[:2] == b"\r\n":  # no trailers: the usual end
            self._buf = buf[2:]
            self._mode = _DONE
            return b""
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if buf[:1] == b"\n" or _BLANK.search(buf, max(0, self._scan - 1)):
                raise self._fail("a line of the trailers ends with a bare LF, not CRLF")
            if len(buf) >= MAX_HEAD:
                raise self._fail(f"the trailers are over {MAX_HEAD} bytes")
            self._scan = max(0, len(buf) - 3)
            self._need()
            return None
        if end + 4 > MAX_HEAD:
            raise self._fail(f"the trailers are over {MAX_HEAD} bytes")
        # checked as a head's headers are (h11 does), then dropped
        self._parse(b"HTTP/1.1 200 \r\n" + bytes(buf[:end]), trailers=True)
        self._buf = buf[end + 4 :]
        self._scan = 0
        self._mode = _DONE
        return b""

    def _need(self) -> None:
        if self._closed:
            raise self._fail(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            )
