"""Video generations: the request, the refusals before any job, the emulator's video jobs, the
same machine over real sockets and on the virtual clock, and the MP4 saved from its bytes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from cli_support import Running, emulator_stats, is_start, json_lines, run, serve_emulator
from hybridgen import Client, Policy
from hybridgen.api import Config, parse_generation_configs, parse_start_reply
from hybridgen.cli._live import RichReporter
from hybridgen.emulator import Faults, ServerModel, running
from hybridgen.emulator.model import GENERATION_CONFIGS, SAMPLE_MP4, BadRequest, parse_upload
from hybridgen.errors import (
    DownloadError,
    GenerationFailed,
    RequestError,
    TransientError,
    VideoRefused,
)
from hybridgen.events import Progress, Retry, Transition
from hybridgen.files import SavedFile, save, sniff, sniff_video
from hybridgen.journal import SQLiteJournal
from hybridgen.machine import State, Trigger
from hybridgen.testing import MemoryTransport, run_virtual
from hybridgen.transport import SuperDuperTransport
from hybridgen.video import (
    GENERATE_VIDEO,
    VideoRequest,
    check_video,
    multipart_body,
    parse_upload_reply,
    request_from_record,
    request_record,
    source_of,
)

TOKEN = "video-token"
MODELS = parse_generation_configs(list(GENERATION_CONFIGS))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
SCALE = 0.001
"""Real-socket tests: a 15-minute job takes 0.9 s."""


def test_the_body_puts_duration_and_aspect_ratio_in_config_params() -> None:
    request = VideoRequest(prompt="waves", model="comfyui/ltx", duration=10, image="abc-1", seed=3)
    body = request.to_json()
    config = body["config"]
    assert config["generation_config_name"] == "comfyui/ltx"
    assert config["params"] == {"duration": 10, "aspect_ratio": "16:9", "seed": 3}
    assert config["references"] == [{"type": "SOURCE", "reference_id": "abc-1"}]
    assert "duration" not in config  # the guide's form, not the client's
    assert "references" not in VideoRequest(prompt="waves").to_json()["config"]


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("duration", {"duration": 0}),
        ("duration", {"duration": True}),
        ("aspect_ratio", {"aspect_ratio": "wide"}),
        ("image", {"image": "../etc/passwd"}),
        ("model", {"model": "bad name"}),
        ("prompt", {"prompt": " "}),
    ],
)
def test_a_bad_field_is_refused_by_name(field: str, changes: dict[str, object]) -> None:
    with pytest.raises(RequestError) as caught:
        VideoRequest(**{"prompt": "waves", **changes})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_models_list_their_kind_durations_and_price_per_second() -> None:
    ltx = next(m for m in MODELS if m.name == "comfyui/ltx")
    assert (ltx.type, ltx.durations, ltx.price_per_second) == ("image_to_video", (5, 10), 0.4)
    assert ltx.video and ltx.needs_source and ltx.cost(10) == pytest.approx(4.0)
    lip = next(m for m in MODELS if m.name == "comfyui/lip-sync")
    assert lip.max_duration == 30 and lip.allows(30) and not lip.allows(31)
    odd = parse_generation_configs(
        [{"name": "x/v", "type": "text_to_video", "params": {"durations": [5, "8", -1, 2.5, 8]}}]
    )
    assert odd[0].durations == (5, 8)


@pytest.mark.parametrize(
    ("request_", "field", "allowed"),
    [
        (
            VideoRequest(prompt="p", model="comfyui/ltx", duration=7, image="f1"),
            "duration",
            (5, 10),
        ),
        (
            VideoRequest(prompt="p", model="comfyui/ltx"),
            "image",
            ("google-cloud/veo3-text2video", "azure-openai/sora"),
        ),
        (
            VideoRequest(prompt="p", model="azure-openai/sora", image="f1"),
            "image",
            ("comfyui/ltx", "fal-ai/kling-video/v2.1"),
        ),
        (
            VideoRequest(prompt="p", model="google-cloud/veo3-text2video", aspect_ratio="1:1"),
            "aspect_ratio",
            ("16:9", "9:16"),
        ),
        (VideoRequest(prompt="p", model="comfyui/flux"), "model", None),
        (VideoRequest(prompt="p", model="nobody/none"), "model", None),
    ],
)
def test_what_the_model_list_rules_out_is_refused_with_the_allowed_values(
    request_: VideoRequest, field: str, allowed: tuple[object, ...] | None
) -> None:
    with pytest.raises(VideoRefused) as caught:
        check_video(request_, MODELS)
    assert caught.value.field == field
    video_models = tuple(m.name for m in MODELS if m.video)
    assert caught.value.allowed == (video_models if allowed is None else allowed)
    for value in caught.value.allowed:
        assert str(value) in str(caught.value)


def test_a_fine_request_gets_its_model() -> None:
    request = VideoRequest(prompt="p", model="azure-openai/sora", duration=15)
    assert check_video(request, MODELS).name == "azure-openai/sora"


async def test_a_video_reply_is_one_object_and_an_error_task_fails_it() -> None:
    model = ServerModel(Faults(gen_time=60))
    body = VideoRequest(prompt="waves", model="azure-openai/sora").to_json()
    job = model.create_video(body)
    reply = model.file_json(job)
    assert reply["type"] == "video" and reply["video_generation_id"] == job.id
    assert reply["video_generation"]["duration"] == 5 and reply["image_generation"] is None
    assert reply["tasks"][0]["type"] == "video-generation-flow"
    status = parse_start_reply(json.dumps(reply).encode())
    assert status.id == job.id and not status.ready
    reply["tasks"][0].update(status="error", error="out of credits")
    failed = parse_start_reply(json.dumps(reply).encode())
    assert failed.failed and failed.error == "out of credits"


async def test_the_emulator_takes_both_placements_and_refuses_what_the_model_does_not_allow() -> (
    None
):
    model = ServerModel()
    flat = {
        "config": {"prompt": "p", "generation_config_name": "azure-openai/sora", "duration": 10}
    }
    assert model.create_video(flat).duration == 10  # their client's form
    with pytest.raises(BadRequest) as caught:
        model.create_video(
            {
                "config": {
                    "prompt": "p",
                    "generation_config_name": "azure-openai/sora",
                    "params": {"duration": 7},
                }
            }
        )
    assert caught.value.field == "config.params.duration"
    with pytest.raises(BadRequest):
        model.create_video({"config": {"prompt": "p", "generation_config_name": "comfyui/flux"}})
    veo = {"prompt": "p", "generation_config_name": "google-cloud/veo3-text2video"}
    with pytest.raises(BadRequest) as caught:
        model.create_video({"config": {**veo, "params": {"aspect_ratio": "1:1"}}})
    assert caught.value.field == "config.params.aspect_ratio"
    ref = {"type": "SOURCE", "reference_id": "missing"}
    with pytest.raises(BadRequest):
        model.create_video(
            {
                "config": {
                    "prompt": "p",
                    "generation_config_name": "comfyui/ltx",
                    "references": [ref],
                }
            }
        )
    # as the real server did: an image-to-video job without its image is made, then fails
    job = model.create_video({"config": {"prompt": "p", "generation_config_name": "comfyui/ltx"}})
    assert job.fails and "needs a source" in job.reason


def test_multipart_upload_round_trips_through_the_emulators_parser() -> None:
    body, kind = multipart_body(PNG, 'we"ird\r\nname.png', "image/png", boundary="b0undary")
    data, name, part_type = parse_upload(body, kind)
    assert (data, part_type) == (PNG, "image/png")
    assert '"' not in name and "\r" not in name
    with pytest.raises(BadRequest):
        parse_upload(body, "application/json")
    other = body.replace(b'name="payload"; filename=', b'name="other"; filename=')
    with pytest.raises(BadRequest):  # a field named otherwise is not the payload
        parse_upload(other, kind)
    assert parse_upload_reply(json.dumps({"id": "f-1", "url": None}).encode()) == "f-1"
    with pytest.raises(TransientError, match="upload reply"):
        parse_upload_reply(b"[]")


def test_a_source_is_a_file_or_an_id(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    assert source_of(image) == image
    assert (
        source_of("3f2c9a4e-0d4f-4a7e-9a43-1f2e3d4c5b6a") == "3f2c9a4e-0d4f-4a7e-9a43-1f2e3d4c5b6a"
    )
    with pytest.raises(RequestError, match="neither an existing file"):
        source_of(tmp_path / "missing.png")
    with pytest.raises(RequestError, match="not a regular file"):
        source_of(tmp_path)


def test_the_journal_records_a_video_as_a_video() -> None:
    request = VideoRequest(prompt="p", model="comfyui/ltx", duration=10, image="f1")
    back = request_from_record(request_record(request))
    assert back == request and isinstance(back, VideoRequest)
    image = request_from_record(json.dumps({"prompt": "old row"}))
    assert not isinstance(image, VideoRequest)


def test_the_sample_is_a_real_mp4() -> None:
    assert sniff_video(SAMPLE_MP4[:64]) == "video/mp4"
    assert sniff(SAMPLE_MP4[:64]) is None  # not an image
    assert sniff_video(PNG) is None
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"
    assert sniff_video(avif) is None
    webm = bytes.fromhex("1a45dfa39f 428681 01 42f781 01 42f281 04 42f381 08 428284") + b"webm"
    assert sniff_video(webm) == "video/webm"


def _ffprobe(path: Path) -> dict[str, object]:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        if os.environ.get("CI"):  # .ci/run installs it: in CI this check is never skipped
            pytest.fail("ffprobe is not installed; .ci/run installs ffmpeg")
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg)")
    done = subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    streams = json.loads(done.stdout)["streams"]
    assert len(streams) == 1
    return dict(streams[0])


def test_policy_video_waits_long_and_polls_sparsely() -> None:
    policy = Policy.video()
    assert policy.deadline >= 15 * 60 and policy.poll_interval >= 5
    assert policy.push and policy.keep_push_open
    assert policy.download_timeout > Policy.default().download_timeout


# -- the same machine, in virtual time --------------------------------------------------------


def _client(model: ServerModel, **kw: object) -> Client:
    return Client(MemoryTransport(model, token=TOKEN), **kw)  # type: ignore[arg-type]


def test_a_fifteen_minute_video_over_sse_in_virtual_time() -> None:
    model = ServerModel(Faults(gen_time=900, ws_mode="silent", sse_mode="normal"), token=TOKEN)
    events: list[object] = []

    async def main() -> tuple[object, float]:
        async with _client(model) as client:
            start = trio.current_time()
            result = await client.generate_video(
                "waves", model="azure-openai/sora", duration=10, on_event=events.append
            )
            return result, trio.current_time() - start

    result, took = run_virtual(main)
    assert result.state is State.DONE and result.channel == "sse"  # type: ignore[attr-defined]
    assert result.url.endswith(".mp4")  # type: ignore[attr-defined]
    assert 900 <= took < 901
    polls = model.counts["poll"]
    assert polls <= 900 / Policy.video().poll_interval + 2  # a poll every 10 s at most
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all(e.remaining is not None for e in progress)
    first = progress[0]
    assert first.remaining == pytest.approx(900 * (1 - first.fraction), rel=0.05)


def test_a_silent_push_is_caught_by_the_sparse_polls() -> None:
    model = ServerModel(Faults(gen_time=600, ws_mode="silent", sse_mode="silent"), token=TOKEN)

    async def main() -> object:
        async with _client(model) as client:
            return await client.generate_video("waves", model="azure-openai/sora")

    result = run_virtual(main)
    assert result.state is State.DONE and result.channel == "polling"  # type: ignore[attr-defined]
    assert result.elapsed <= 600 + Policy.video().poll_interval * 1.2  # type: ignore[attr-defined]


@pytest.mark.parametrize("sse_mode", ["normal", "silent"])
def test_a_failed_video_fails_pushed_or_polled(sse_mode: str) -> None:
    faults = Faults(gen_time=300, ws_mode="silent", sse_mode=sse_mode, job_fails=True)
    model = ServerModel(faults, token=TOKEN)

    async def main() -> GenerationFailed:
        async with _client(model) as client:
            with pytest.raises(GenerationFailed) as caught:
                await client.generate_video("waves", model="azure-openai/sora")
            return caught.value

    error = run_virtual(main)
    assert "job_fails" in (error.result.reason or "")
    assert error.result.channel is None or error.result.channel in ("sse", "polling")


def test_refusals_come_before_any_upload_or_job(tmp_path: Path) -> None:
    model = ServerModel(token=TOKEN)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)

    async def main() -> list[str]:
        fields = []
        async with _client(model) as client:
            for kw in (
                {"model": "comfyui/ltx"},
                {"model": "comfyui/ltx", "image": image, "duration": 7},
                {"model": "azure-openai/sora", "image": image},
                {"model": "azure-openai/sora", "duration": 20, "max_cost": 5.0},
            ):
                with pytest.raises(VideoRefused) as caught:
                    await client.generate_video("waves", **kw)  # type: ignore[arg-type]
                fields.append(caught.value.field)
        return fields

    assert run_virtual(main) == ["image", "duration", "image", "max_cost"]
    assert model.counts["start"] == model.counts["upload"] == 0


def test_a_local_image_is_uploaded_and_referenced(tmp_path: Path) -> None:
    model = ServerModel(Faults(gen_time=120, sse_mode="normal"), token=TOKEN)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)

    async def main() -> object:
        async with _client(model) as client:
            return await client.generate_video(
                "the cat walks", model="comfyui/ltx", image=image, duration=10, max_cost=4.0
            )

    result = run_virtual(main)
    assert result.state is State.DONE  # type: ignore[attr-defined]
    (upload_id,) = model.uploads
    (job,) = model.jobs.values()
    assert job.source == upload_id and model.uploads[upload_id]["type"] == "image"


def test_a_journal_resume_of_a_video_sends_no_second_start(tmp_path: Path) -> None:
    model = ServerModel(Faults(gen_time=600, sse_mode="normal"), token=TOKEN)
    path = tmp_path / "journal.db"

    async def crash() -> None:
        journal = SQLiteJournal(path)
        async with _client(model, journal=journal) as client:
            plan = await client.plan_video("waves", model="azure-openai/sora", duration=10)
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(
                    lambda task_status: client.start(
                        plan.request, policy=Policy.video(), task_status=task_status
                    )
                )
                await trio.sleep(30)
                assert gen.file_id is not None
                nursery.cancel_scope.cancel()  # the process dies mid-job
        journal.close()

    run_virtual(crash)
    assert model.counts["start"] == 1
    journal = SQLiteJournal(path)
    try:
        (entry,) = [e for e in journal.entries() if e.file_id is not None]
        assert isinstance(entry.request, VideoRequest) and entry.request.duration == 10
        assert entry.policy == Policy.video()
    finally:
        journal.close()


# -- over real sockets ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _real(faults: Faults) -> AsyncIterator[tuple[Client, ServerModel]]:
    async with running(faults, time_scale=SCALE, token=TOKEN) as emulator:
        transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN))
        policy = Policy.video().scaled(SCALE * 5)
        async with Client(transport, policy=policy) as client:
            yield client, emulator.model


async def test_a_video_over_real_sockets_is_saved_as_a_playable_mp4(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    await trio.Path(image).write_bytes(PNG)
    with trio.fail_after(30):
        async with _real(Faults(gen_time=900, ws_mode="silent", sse_mode="normal")) as (
            client,
            model,
        ):
            plan = await client.plan_video("a cat", model="comfyui/ltx", image=image)
            assert plan.cost == pytest.approx(2.0) and plan.request.image in model.uploads
            result = await client.generate(plan.request, policy=client.policy)
            assert result.state is State.DONE and result.channel in (
                "sse",
                "polling",
            )  # the push or a poll
            saved = await client.download(result, tmp_path / "cat", media="video")
            with pytest.raises(DownloadError) as caught:  # a video is no image
                await client.download(result, tmp_path / "x.webp")
    assert saved.path.endswith(".mp4") and saved.content_type == "video/mp4"
    assert await trio.Path(saved.path).read_bytes() == SAMPLE_MP4
    assert caught.value.kind == "not_an_image"
    stream = _ffprobe(Path(saved.path))
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (128, 72)


@pytest.mark.parametrize("sse_mode", ["silent", "normal"])
async def test_the_start_goes_to_generate_video_and_failures_are_heard(sse_mode: str) -> None:
    # 1.5 s: time for the SSE stream to open before the failure is pushed, on a loaded machine
    faults = Faults(gen_time=1500, ws_mode="silent", sse_mode=sse_mode, job_fails=True)
    with trio.fail_after(30):
        async with _real(faults) as (client, model):
            # pushed: polling would begin only after 5 s, so the push must bring the failure
            policy = client.policy.replace(push_timeout=5.0) if sse_mode == "normal" else None
            with pytest.raises(GenerationFailed) as caught:
                await client.generate_video(
                    "waves", model="azure-openai/sora", policy=policy or client.policy
                )
    assert caught.value.result.channel is None
    assert "job_fails" in (caught.value.result.reason or "")
    assert caught.value.result.elapsed < 4.5
    polls = model.counts["poll"]
    assert model.counts["start"] == 1 and (polls == 0 if sse_mode == "normal" else polls >= 1)
    (job,) = model.jobs.values()
    assert job.kind == "video"
    assert GENERATE_VIDEO == "/api/v1/file/generate-video"


async def test_an_html_page_is_not_saved_as_a_video(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with _real(Faults(gen_time=60, sse_mode="normal", file_mode="html")) as (
            client,
            _model,
        ):
            result = await client.generate_video(
                "waves", model="azure-openai/sora", policy=client.policy
            )
            with pytest.raises(DownloadError) as caught:
                await client.download(result, tmp_path / "waves.mp4", media="video")
    assert caught.value.kind == "not_a_video" and "HTML" in str(caught.value)
    assert not list(await trio.Path(tmp_path).iterdir())


# -- the command line -------------------------------------------------------------------------

FAST = ("--time-scale", "0.02")


def test_generate_video_saves_the_mp4_and_says_the_price_first(tmp_path: Path) -> None:
    out = tmp_path / "waves"
    proc = run(
        "generate", "--video", "waves", "--out", str(out), "--model", "azure-openai/sora",
        "--duration", "10", "--json", *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert result["state"] == "done" and result["path"] == str(tmp_path / "waves.mp4")
    assert (tmp_path / "waves.mp4").read_bytes() == SAMPLE_MP4
    price = proc.stderr.index("price: $5.00 (azure-openai/sora, 10 s at $0.5/s)")
    assert price < proc.stderr.index("embedded emulator at")  # before the emulator (and job)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--model", "comfyui/ltx"), ["image:", "image_to_video", "azure-openai/sora"]),
        (("--model", "azure-openai/sora", "--duration", "7"), ["duration:", "5s, 10s, 15s, 20s"]),
        (("--model", "azure-openai/sora", "--image", "some-file-id"), ["image:", "comfyui/ltx"]),
        (("--duration", "8", "--max-cost", "10"), ["--max-cost", "$16.00", "durations within"]),
        (("--out-suffix", ".png"), ["--out", "never converted"]),
    ],
)
def test_generate_video_refuses_before_any_job(
    tmp_path: Path, args: tuple[str, ...], words: list[str]
) -> None:
    out = tmp_path / "v.mp4"
    if args[0] == "--out-suffix":
        out, args = tmp_path / f"v{args[1]}", ()
    proc = run("generate", "--video", "waves", "--out", str(out), *args, "--gen-time", "100")
    assert proc.returncode == 2, proc.stderr
    for word in words:
        assert word in proc.stderr
    assert "embedded emulator at" not in proc.stderr  # no server was even started
    assert not list(tmp_path.iterdir())


def test_generate_video_uploads_a_local_image(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    out = tmp_path / "cat.mp4"
    proc = run(
        "generate", "--video", "the cat walks", "--image", str(image), "--model", "comfyui/ltx",
        "--out", str(out), "--json", *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["path"] == str(out)
    assert "price: $2.00" in proc.stderr


def test_models_type_video_shows_kind_durations_and_price_per_second() -> None:
    proc = run("models", "--type", "video")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "DURATIONS", "PRICE/S", "VIP"]
    cells = {row.split()[0]: row.split()[1:4] for row in rows}
    assert cells["comfyui/ltx"] == ["image_to_video", "5,10", "0.4"]
    assert cells["comfyui/lip-sync"] == ["video_to_video", "1-30", "0.3"]
    assert "comfyui/flux" not in cells


# -- downloads: streamed, resumed by range ----------------------------------------------------


async def test_a_broken_download_is_resumed_by_range_over_real_sockets(tmp_path: Path) -> None:
    faults = Faults(gen_time=60, ws_mode="silent", sse_mode="normal", file_cuts=2)
    with trio.fail_after(30):
        async with _real(faults) as (client, model):
            result = await client.generate_video("waves", model="azure-openai/sora")
            saved = await client.download(result, tmp_path / "waves.mp4", media="video")
    assert await trio.Path(saved.path).read_bytes() == SAMPLE_MP4
    assert model.counts["download"] == 3 and model.counts["download_range"] == 2


class _NoRange:
    """A transport whose ``fetch`` takes no ``start``: a broken body cannot be resumed."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def fetch(self, url: str, *, limit: int) -> contextlib.AbstractAsyncContextManager[object]:
        return self.inner.fetch(url, limit=limit)


async def test_without_range_a_broken_download_is_downloaded_again(tmp_path: Path) -> None:
    model = ServerModel(Faults(gen_time=1, sse_mode="normal", file_cuts=1), token=TOKEN)
    events: list[object] = []
    async with Client(_NoRange(MemoryTransport(model, token=TOKEN))) as client:  # type: ignore[arg-type]
        result = await client.generate_video("waves", model="azure-openai/sora")
        saved = await client.download(
            result, tmp_path / "waves.mp4", media="video", on_event=events.append
        )
    # no range to resume from: the whole file again, as the download's second attempt
    assert saved.content_type == "video/mp4" and model.counts["download"] == 2
    (retry,) = events
    assert isinstance(retry, Retry) and retry.what == "download"
    assert "connection failed" in retry.reason


async def test_hundreds_of_megabytes_stream_to_disk_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    size = 200 * 2**20
    faults = Faults(gen_time=1, sse_mode="normal", file_mode="huge", file_bytes=size, file_cuts=1)
    model = ServerModel(faults, token=TOKEN)
    async with _client(model) as client:
        result = await client.generate_video("waves", model="azure-openai/sora")
        tracemalloc.start()
        try:
            saved = await client.download(result, tmp_path / "big", media="video")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert saved.size == size and saved.path.endswith(".mp4")
    assert model.counts["download_range"] == 1  # cut halfway, resumed
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MiB held for a {size / 2**20:.0f} MiB file"
    stream = _ffprobe(Path(saved.path))
    assert stream["codec_name"] == "h264"


@pytest.mark.parametrize(
    ("status", "content_range", "expected"),
    [
        (200, None, SAMPLE_MP4[100:]),  # the range ignored: the whole file, its head skipped
        (206, f"bytes 100-{len(SAMPLE_MP4) - 1}/{len(SAMPLE_MP4)}", SAMPLE_MP4[100:]),
        (206, f"bytes 0-{len(SAMPLE_MP4) - 1}/{len(SAMPLE_MP4)}", None),  # not what was asked
    ],
)
async def test_a_resumed_fetch_takes_what_the_server_sends(
    status: int, content_range: str | None, expected: bytes | None
) -> None:
    asked: list[str | None] = []

    def reply(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("range"))
        whole = status == 200 or str(content_range).startswith("bytes 0")
        body = SAMPLE_MP4 if whole else SAMPLE_MP4[100:]
        headers = {} if content_range is None else {"Content-Range": content_range}
        return httpx.Response(status, content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as http:
        transport = SuperDuperTransport(Config(url="https://api.example", token=TOKEN), http=http)
        url = "https://cdn.example/files/v.mp4"
        if expected is None:
            with pytest.raises(TransientError, match="asked for the bytes from 100"):
                async with transport.fetch(url, limit=2**20, start=100):
                    pass
        else:
            async with transport.fetch(url, limit=2**20, start=100) as chunks:
                got = b"".join([chunk async for chunk in chunks])
            assert got == expected
    assert asked == ["bytes=100-"]


def test_resume_after_sigkill_saves_the_video_without_a_second_job(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve_emulator(spawn, TOKEN, "--time-scale", "0.05", "--gen-time", "4")
    out, journal = tmp_path / "waves.mp4", tmp_path / "j.sqlite"
    client = spawn(
        *("generate", "--video", "waves", "--model", "azure-openai/sora", "--out", str(out)),
        *("--json", "--journal", str(journal)),
        env=env,
    )
    started = client.until(is_start)  # the paid job exists on the server
    client.proc.send_signal(signal.SIGKILL)
    assert client.finish(timeout=10) == -signal.SIGKILL
    proc = run("resume", "--journal", str(journal), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    (result,) = [line for line in json_lines(proc.stdout) if line["event"] == "result"]
    assert (result["id"], result["state"]) == (started["id"], "done")
    assert result["path"] == str(out.resolve()) and out.read_bytes() == SAMPLE_MP4
    counts = emulator_stats(url, TOKEN)
    assert (counts["start"], counts["download"]) == (1, 1)


def test_the_live_line_says_the_time_left_from_the_servers_progress() -> None:
    view = RichReporter()
    view.console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
    view.event(Transition("g1", State.REQUESTED, State.AWAITING_WS, Trigger.START, 1.0, 0.0))
    view.console.print(view)
    assert "left" not in view.console.export_text()  # no progress yet: no estimate
    view.event(Progress("g1", 0.25, "sse", 150.0, 150.0, remaining=450.0))
    view.console.print(view)
    assert "~7m30s left" in view.console.export_text()


def test_an_asyncio_app_makes_a_video(tmp_path: Path) -> None:
    from hybridgen.aio import AsyncioClient

    model = ServerModel(Faults(gen_time=2, sse_mode="normal"), time_scale=0.05)

    async def main() -> SavedFile:
        async with AsyncioClient(lambda: MemoryTransport(model)) as client:
            result = await client.generate_video("waves", model="azure-openai/sora")
            return await client.download(result, tmp_path / "waves", media="video")

    saved = asyncio.run(main())
    assert saved.path.endswith(".mp4") and saved.video


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), name=st.text(max_size=40))
def test_any_upload_round_trips_through_multipart(data: bytes, name: str) -> None:
    body, kind = multipart_body(data, name, "image/png")
    got, filename, part_type = parse_upload(body, kind)
    assert got == data and part_type == "image/png"
    assert filename.isprintable() and '"' not in filename


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(SAMPLE_MP4) - 1), max_size=4))
def test_a_body_broken_anywhere_is_resumed_to_the_same_bytes(cuts: list[int]) -> None:
    """However often and wherever the body breaks, the saved file is the sent one."""
    breaks = sorted(set(cuts))
    asked: list[int] = []

    async def body(start: int) -> AsyncIterator[bytes]:
        asked.append(start)
        stop = next((c for c in breaks if c > start), None)
        for at in range(start, len(SAMPLE_MP4), 1000):
            end = min(at + 1000, len(SAMPLE_MP4))
            if stop is not None and end > stop:
                yield SAMPLE_MP4[at:stop]
                raise TransientError("download: connection failed (emulated)")
            yield SAMPLE_MP4[at:end]

    @contextlib.asynccontextmanager
    async def reopen(start: int) -> AsyncIterator[AsyncIterator[bytes]]:
        yield body(start)

    async def main(directory: str) -> SavedFile:
        return await save(body(0), Path(directory) / "v", url="u", media="video", reopen=reopen)

    with tempfile.TemporaryDirectory() as directory:
        saved = run_virtual(lambda: main(directory))
        assert Path(saved.path).read_bytes() == SAMPLE_MP4
    assert asked == [0, *breaks]


def test_a_cut_download_from_hybridgen_serve_is_resumed(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve_emulator(
        spawn, TOKEN, "--time-scale", "0.02", "--sse-mode", "normal", "--file-cuts", "1"
    )
    out = tmp_path / "waves.mp4"
    proc = run(
        *("generate", "--video", "waves", "--model", "azure-openai/sora", "--out", str(out)),
        *("--json", "--time-scale", "0.02"),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == SAMPLE_MP4
    counts = emulator_stats(url, TOKEN)
    assert (counts["download"], counts["download_range"]) == (2, 1)
