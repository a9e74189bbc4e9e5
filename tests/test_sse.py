"""The SSE reader: whole events of bounded size, however the bytes are cut into chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen.errors import OversizedMessage, TransientError
from hybridgen.http1 import HTTPFailure
from hybridgen.sse import sse_messages

STREAM = (
    b": connected\r\n\r\n"
    b"data: one\r\n\r\n"
    b"event: x\ndata: two\ndata: lines\n\n"
    b"id: 3\rdata: three\r\r"
    b"data: " + b"x" * 300 + b"\n\n"
    b"data: four\n\n"
    b"data: cut off at the end"
)
EXPECTED = ["one", "two\nlines", "three", "<oversized>", "four"]


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        await trio.lowlevel.checkpoint()
        if cut > previous:
            yield data[previous:cut]
            previous = cut


async def _read(data: bytes, cuts: list[int], limit: int) -> list[str]:
    got: list[str] = []
    messages = sse_messages(_chunks(data, cuts), limit)
    while True:
        try:
            got.append(await messages.__anext__())
        except StopAsyncIteration:
            return got
        except OversizedMessage:
            got.append("<oversized>")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_events_are_the_same_however_the_stream_is_chunked(cuts: list[int]) -> None:
    assert trio.run(_read, STREAM, cuts, 200) == EXPECTED


def test_a_dropped_connection_is_a_transient_error() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        raise HTTPFailure("connection lost (peer reset)", sent=True)

    async def main() -> tuple[str, str]:
        messages = sse_messages(broken())
        first = await messages.__anext__()
        try:
            await messages.__anext__()
        except TransientError as exc:
            return first, str(exc)
        raise AssertionError("no error")

    first, error = trio.run(main)
    assert first == "one" and "SSE connection lost" in error


RULES = (
    b"\xef\xbb\xbfdata:no space\n\n"  # a byte-order mark first; no space after the colon
    b"data\n\n"  # a data field without a value: nothing to dispatch
    b"dataX: not data\nevent: only\n\n"  # another field, and an event without data
    b": a comment\ndata:  two spaces\n\n"  # only the first space is dropped
    b"data: caf\xc3\xa9 \xff\n\n"  # UTF-8, and an invalid byte replaced
    b"data: a\r\ndata:\r\ndata: b\r\n\r\n"  # an empty data line keeps its line
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(RULES)), max_size=8))
def test_the_standards_field_rules_hold_however_the_stream_is_chunked(cuts: list[int]) -> None:
    got = trio.run(_read, RULES, cuts, 200)
    assert got == ["no space", " two spaces", "café \ufffd", "a\n\nb"]
