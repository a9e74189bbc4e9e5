"""Result files as they are: formats from the bytes, conversion on request, bounded downloads.

Real-socket tests use the loopback emulator (files on their own origin) and, for bodies no
emulator should send, a hostile HTTP server written here on trio's sockets. The slow-body test
runs on trio's virtual clock, so its bound is checked exactly without waiting.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from PIL import Image

from hybridgen import Client, DownloadError, Policy, SavedFile
from hybridgen.api import Config
from hybridgen.emulator import Emulator, Faults, ServerModel, running
from hybridgen.errors import ConfigError
from hybridgen.files import DOWNLOAD_LIMIT, check_destination, format_for_suffix, save, sniff
from hybridgen.testing import MemoryTransport
from hybridgen.transport import SuperDuperTransport

TOKEN = "test-token-123"
SCALE = 0.02
FAST = Policy.default().scaled(SCALE).replace(request_timeout=5.0, deadline=10.0)
"""Scaled timings, but requests and generations bounded generously (a loaded machine)."""
LIMIT = 20.0
"""No test body may take longer than this (seconds): nothing can hang."""


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (8, 6), (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def listing(folder: Path) -> list[str]:
    """The names in ``folder``, sorted (temporary files included)."""
    return sorted(p.name for p in folder.iterdir())


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def pillow_format(path: Path) -> str | None:
    with Image.open(path) as image:
        image.load()
        return image.format


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.lowlevel.checkpoint()
        yield part


# -- formats from the bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_sniff_reads_the_format_from_the_bytes(fmt: str, content_type: str) -> None:
    assert sniff(encoded(fmt)[:32]) == content_type


def test_sniff_knows_avif_and_heic_by_their_brand() -> None:
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") == "image/avif"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "image/heic"
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00") is None  # an MP4 video


@pytest.mark.parametrize(
    "body", [b"<!DOCTYPE html><html>", b'{"detail": "x"}', b"", b"RIFF\x00\x00\x00\x00WAVE", b"GIF"]
)
def test_sniff_refuses_what_is_not_an_image(body: bytes) -> None:
    assert sniff(body) is None


def test_format_for_suffix() -> None:
    assert format_for_suffix("fox.PNG") == "png"
    assert format_for_suffix("a/fox.jpeg") == "jpeg"
    assert format_for_suffix("fox") is None
    assert format_for_suffix("fox.v2") is None


# -- where a file may go ------------------------------------------------------------------------


def test_check_destination_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused = {"/dev/null": "a device", str(fifo): "a FIFO", str(tmp_path): "a directory"}
    for path, kind in refused.items():
        with pytest.raises(ConfigError) as info:
            check_destination(path)
        assert info.value.field == "out" and kind in str(info.value)
    (tmp_path / "old.png").write_bytes(b"old")
    check_destination(tmp_path / "old.png")  # a regular file is replaced
    check_destination(tmp_path / "new" / "new.png")  # a new file
    assert not (tmp_path / "new").exists()  # nothing created


async def test_save_never_writes_a_device_or_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/null", fifo):
        with pytest.raises(DownloadError) as info:
            await save(chunks_of(encoded("PNG")), path, url="http://cdn/x")
        assert info.value.kind == "disk" and info.value.url == "http://cdn/x"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert listing(tmp_path) == ["fifo"]


# -- saving a body ------------------------------------------------------------------------------


async def test_save_keeps_the_bytes_and_adds_the_true_suffix(tmp_path: Path) -> None:
    webp = encoded("WEBP")
    saved = await save(chunks_of(webp[:5], webp[5:]), tmp_path / "fox", url="http://cdn/x.png")
    assert saved == SavedFile(
        str(tmp_path / "fox.webp"), "image/webp", len(webp), "http://cdn/x.png", "image/webp"
    )
    assert read(tmp_path / "fox.webp") == webp and not saved.converted
    assert stat.S_IMODE(os.stat(saved.path).st_mode) == 0o644


@pytest.mark.parametrize(("convert", "fmt"), [("png", "PNG"), ("jpeg", "JPEG"), ("gif", "GIF")])
async def test_save_converts_only_when_asked(tmp_path: Path, convert: str, fmt: str) -> None:
    webp = encoded("WEBP", "RGBA")
    saved = await save(chunks_of(webp), tmp_path / "fox", url="u", convert=convert)
    assert saved.converted and saved.source_type == "image/webp"
    assert Path(saved.path).suffix == {"png": ".png", "jpeg": ".jpg", "gif": ".gif"}[convert]
    assert pillow_format(Path(saved.path)) == fmt
    assert saved.size == len(read(saved.path))
    # a file already in the asked format is kept byte for byte
    png = encoded("PNG")
    same = await save(chunks_of(png), tmp_path / "same.png", url="u", convert="png")
    assert not same.converted and read(same.path) == png


async def test_save_refuses_an_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await save(chunks_of(encoded("PNG")), tmp_path / "x", url="u", convert="bmpx")
    assert info.value.field == "convert"
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"<html><body>502 Bad Gateway</body></html>" * 3, "not_an_image", "HTML"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "not_an_image", "not a valid image/png"),
        (b"", "not_an_image", "empty"),
    ],
)
async def test_save_fails_what_is_not_an_image(
    tmp_path: Path, body: bytes, kind: str, words: str
) -> None:
    (tmp_path / "fox.png").write_bytes(b"the previous image")
    with pytest.raises(DownloadError) as info:
        await save(chunks_of(body), tmp_path / "fox.png", url="http://cdn/f.webp")
    assert info.value.kind == kind and info.value.url == "http://cdn/f.webp"
    assert words in str(info.value) and "http://cdn/f.webp" in str(info.value)
    # the old file is untouched and no temporary file is left
    assert listing(tmp_path) == ["fox.png"]
    assert read(tmp_path / "fox.png") == b"the previous image"


async def test_save_stops_at_the_limit(tmp_path: Path) -> None:
    png = encoded("PNG")
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield png
        while True:
            sent.append(1)
            yield bytes(1000)

    with pytest.raises(DownloadError) as info:
        await save(endless(), tmp_path / "fox.png", url="u", limit=10_000)
    assert info.value.kind == "too_large" and "10000 bytes" in str(info.value)
    assert len(sent) <= 10  # it read no more than the limit (and one chunk)
    assert listing(tmp_path) == []


# -- the client, against the emulator -----------------------------------------------------------


async def emulator_client(emulator: Emulator, **policy: float) -> Client:
    transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
    return Client(transport, policy=FAST.replace(**policy))


@pytest.mark.parametrize("mode", ["webp", "png"])
async def test_a_result_saved_as_png_is_a_real_png(tmp_path: Path, mode: str) -> None:
    faults = Faults(gen_time=1.0, file_mode=mode)  # type: ignore[arg-type]
    with trio.fail_after(LIMIT):
        async with (
            running(faults, time_scale=SCALE, token=TOKEN) as emulator,
            await emulator_client(emulator) as client,
        ):
            result = await client.generate("a red fox")
            saved = await client.download(result, tmp_path / "fox.png", convert="png")
            kept = await client.download(result, tmp_path / "kept")
    assert result.url is not None and result.url.startswith(emulator.files_url)
    assert saved.path == str(tmp_path / "fox.png") and saved.content_type == "image/png"
    assert pillow_format(tmp_path / "fox.png") == "PNG"
    assert saved.converted is (mode == "webp")
    assert kept.path == str(tmp_path / f"kept.{mode}") and kept.content_type == f"image/{mode}"
    assert pillow_format(Path(kept.path)) == mode.upper()
    assert emulator.model.counts["download"] == 2


async def test_an_html_page_fails_the_download_and_keeps_the_url(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with (
            running(Faults(gen_time=1.0, file_mode="html"), time_scale=SCALE) as emulator,
            await emulator_client(emulator) as client,
        ):
            result = await client.generate("a red fox")
            with pytest.raises(DownloadError) as info:
                await client.download(result, tmp_path / "fox.png", convert="png")
    assert result.url and info.value.url == result.url and result.url in str(info.value)
    assert info.value.kind == "not_an_image" and "HTML" in str(info.value)
    assert listing(tmp_path) == []


async def test_a_huge_body_is_cut_at_the_limit(tmp_path: Path) -> None:
    faults = Faults(gen_time=1.0, file_mode="huge", file_bytes=2**31)
    with trio.fail_after(LIMIT):
        async with (
            running(faults, time_scale=SCALE) as emulator,
            await emulator_client(emulator) as client,
        ):
            result = await client.generate("a red fox")
            with pytest.raises(DownloadError) as info:
                await client.download(result, tmp_path / "fox.png", limit=2**20)
    assert info.value.kind == "too_large" and info.value.url == result.url
    assert listing(tmp_path) == []


async def test_a_slow_body_ends_by_the_download_timeout(tmp_path: Path) -> None:
    # real sockets, tiny scaled timings: one byte every 0.02 s against a 0.3 s timeout
    with trio.fail_after(LIMIT):
        async with (
            running(Faults(gen_time=1.0, file_mode="slow"), time_scale=SCALE) as emulator,
            await emulator_client(emulator, download_timeout=0.3) as client,
        ):
            result = await client.generate("a red fox")
            with pytest.raises(DownloadError) as info:
                await client.download(result, tmp_path / "fox.png")
    assert info.value.kind == "timeout" and "download_timeout" in str(info.value)
    assert listing(tmp_path) == []


def test_a_slow_body_ends_at_the_scaled_timeout_on_the_virtual_clock(tmp_path: Path) -> None:
    # In memory on trio's MockClock: 1 byte per second, the default policy scaled by 0.5.
    clock = trio.testing.MockClock(autojump_threshold=0)
    policy = Policy.default().scaled(0.5)
    times: list[float] = []

    async def main() -> None:
        transport = MemoryTransport(ServerModel(Faults(gen_time=10, file_mode="slow")))
        async with Client(transport, policy=policy) as client:
            result = await client.generate("a red fox")
            began = trio.current_time()
            with pytest.raises(DownloadError) as info:
                await client.download(result, tmp_path / "fox.png")
            times.append(trio.current_time() - began)
            assert info.value.kind == "timeout"

    trio.run(main, clock=clock)
    assert policy.download_timeout == 30.0
    assert times == [pytest.approx(30.0, abs=0.01)]


async def test_save_of_a_result_without_url_says_so(tmp_path: Path) -> None:
    transport = MemoryTransport(ServerModel(Faults(gen_time=0.1, job_fails=True), time_scale=SCALE))
    async with Client(transport, policy=FAST) as client:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(client.start, "a red fox")
            result = gen.result()
        with pytest.raises(DownloadError) as info:
            await client.download(result, tmp_path / "fox.png")
    assert info.value.kind == "no_result" and "failed" in str(info.value)


# -- a hostile server ---------------------------------------------------------------------------


async def hostile_server(
    nursery: trio.Nursery, head: bytes, body_bytes: int, chunk: int = 2**16
) -> str:
    """Serve every request with ``head`` (status line and headers) then ``body_bytes`` bytes: a
    PNG signature and zeros, until the client leaves. Returns its base URL."""
    zeros = bytes(chunk)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            await stream.send_all(head + b"\x89PNG\r\n\x1a\n")
            left = body_bytes - 8
            while left > 0:
                await stream.send_all(zeros[: min(chunk, left)])
                left -= chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_2gb_body_keeps_memory_flat(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"
    config = Config(url="http://127.0.0.1:9", token=TOKEN)
    tracemalloc.start()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                base = await hostile_server(nursery, head, 2**31)
                async with Client(SuperDuperTransport(config)) as client:
                    tracemalloc.reset_peak()
                    with pytest.raises(DownloadError) as info:
                        await client.download(f"{base}/files/x.png", tmp_path / "x.png")
                    _, peak = tracemalloc.get_traced_memory()
                nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "too_large" and str(DOWNLOAD_LIMIT) in str(info.value)
    # a 64 MiB download held in memory would show here; streamed, a few MiB at most
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert listing(tmp_path) == []


async def test_an_announced_huge_body_fails_before_it_is_read(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 2147483648\r\n\r\n"
    config = Config(url="http://127.0.0.1:9", token=TOKEN)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            base = await hostile_server(nursery, head, 2**31)
            async with Client(SuperDuperTransport(config)) as client:
                with pytest.raises(DownloadError) as info:
                    await client.download(f"{base}/x.png", tmp_path / "x.png", limit=2**20)
            nursery.cancel_scope.cancel()
    assert info.value.kind == "too_large" and "announced 2147483648" in str(info.value)
