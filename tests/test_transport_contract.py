"""One contract, two transports: the in-memory one and the real one against the real emulator.

Every test runs twice: over :class:`MemoryTransport` (the model in memory) and over
:class:`SuperDuperTransport` (HTTP + WebSocket on a loopback port), with the same model settings,
on the real clock. Whatever one transport does, the other must do too.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio

from hybridgen.api import (
    Config,
    FileStatus,
    ImageRequest,
    ModelInfo,
    Push,
    parse_push,
    parse_ws_message,
)
from hybridgen.emulator import Faults, ServerModel, running
from hybridgen.emulator.model import GENERATION_CONFIGS, OVERSIZED_MESSAGE_BYTES, BadRequest
from hybridgen.errors import (
    AuthError,
    OversizedMessage,
    PermanentError,
    RedirectError,
    TransientError,
    TransportError,
)
from hybridgen.testing import MemoryTransport
from hybridgen.transport import (
    MAX_REDIRECTS,
    SuperDuperTransport,
    Transport,
    parse_retry_after,
)

TOKEN = "test-token-123"
TIME_SCALE = 0.02
GEN_TIME = 5.0
"""Job length before scaling: 0.1 s of real time."""
READY_IN = GEN_TIME * TIME_SCALE
SSE_GEN_TIME = GEN_TIME * 10
"""SSE opens after the start reply and hears only what is sent after it opened: jobs long enough
that a loaded machine still connects before the first message."""
LIMIT = 5.0
"""Every test body runs under this deadline (seconds), so nothing can hang."""


@attrs.define
class Side:
    """A transport and the model behind it, plus a way to make transports with other tokens."""

    kind: str
    model: ServerModel
    transport: Transport
    with_token: Callable[..., Transport]
    """A transport with another token (and keyword arguments such as ``max_push_message``)."""
    api_url: str = ""


@pytest.fixture(params=["memory", "real", "httpx"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[Side]:
    if request.param == "memory":
        model = ServerModel(time_scale=TIME_SCALE, token=TOKEN)
        yield Side(
            "memory",
            model,
            MemoryTransport(model, token=TOKEN),
            lambda token, **kw: MemoryTransport(model, token=token, **kw),
        )
        return
    async with (
        running(time_scale=TIME_SCALE, token=TOKEN) as emulator,
        contextlib.AsyncExitStack() as stack,
    ):
        # "real": hybridgen's own HTTP client; "httpx": the same transport over a caller's httpx
        http = None
        if request.param == "httpx":
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=None))

        def make(token: str, **kw: int) -> Transport:
            transport = SuperDuperTransport(Config(url=emulator.url, token=token), http=http, **kw)
            stack.push_async_callback(transport.aclose)
            return transport

        yield Side("real", emulator.model, make(TOKEN), make, emulator.url)


def request_for(project_id: str | None = None) -> ImageRequest:
    return ImageRequest(
        prompt="a red fox in the snow",
        project_id=project_id or str(uuid.uuid4()),
        seed=7,
        width=512,
        height=384,
    )


async def start(
    side: Side, faults: Faults | None = None, project_id: str | None = None
) -> FileStatus:
    side.model.faults = faults if faults is not None else Faults(gen_time=GEN_TIME)
    return await side.transport.start(request_for(project_id))


async def until_ready(side: Side, file_id: str) -> None:
    """Sleep until the model's own ready time of the job (a known moment, not a guess)."""
    await trio.sleep_until(side.model.jobs[file_id].ready_at)


async def drain(messages: AsyncIterator[str], into: list[str]) -> None:
    async for text in messages:
        into.append(text)


async def test_start_returns_a_file_without_url(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side)
    assert file.id in side.model.jobs
    assert file.url is None and not file.ready and not file.failed


async def test_poll_gives_the_url_once_ready(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side)
        before = await side.transport.poll(file.id)
        await until_ready(side, file.id)
        after = await side.transport.poll(file.id)
    assert before.id == file.id and before.url is None and not before.failed
    job = side.model.jobs[file.id]
    assert after.ready and after.url == side.model.url_of(job)
    if side.kind == "real":
        assert after.url is not None and after.url.startswith("http://127.0.0.1:")


async def test_failed_job_polls_as_failed(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, job_fails=True))
        await until_ready(side, file.id)
        status = await side.transport.poll(file.id)
    assert status.failed and not status.ready
    assert status.error and "job_fails" in status.error


async def test_unknown_file_is_permanent(side: Side) -> None:
    with trio.fail_after(LIMIT), pytest.raises(PermanentError) as info:
        await side.transport.poll(str(uuid.uuid4()))
    assert not isinstance(info.value, AuthError)
    assert info.value.status == 404


async def test_models_lists_the_generation_configs(side: Side) -> None:
    transport: Any = side.transport  # models() is not part of the Transport protocol
    with trio.fail_after(LIMIT):
        every = await transport.models()
        images = await transport.models(["text_to_image"])
        two = await transport.models(["text_to_image", "image_to_image"])
        with pytest.raises(AuthError):
            await cast(Any, side.with_token("wrong-token")).models()
    assert [m.name for m in every] == [c["name"] for c in GENERATION_CONFIGS]
    assert all(isinstance(m, ModelInfo) for m in every)
    flux = next(m for m in every if m.name == "comfyui/flux")
    assert (flux.label, flux.type, flux.price, flux.vip) == ("Flux", "text_to_image", 1.0, False)
    assert {m.type for m in images} == {"text_to_image"} and len(images) < len(every)
    assert {m.type for m in two} == {"text_to_image", "image_to_image"}
    assert next(m for m in every if m.type == "text_to_video").price is None
    assert side.model.counts["models"] == 3 and side.model.counts["start"] == 0


async def test_wrong_token_is_an_auth_error(side: Side) -> None:
    other = side.with_token("wrong-token")
    with trio.fail_after(LIMIT):
        file = await start(side)
        with pytest.raises(AuthError) as on_start:
            await other.start(request_for())
        with pytest.raises(AuthError) as on_poll:
            await other.poll(file.id)
    for error in (on_start.value, on_poll.value):
        assert error.status == 401
        assert "SUPERDUPERAI_TOKEN" in str(error)
        assert TOKEN not in str(error) and "wrong-token" not in str(error)
    assert side.model.counts["poll"] == 0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_transient(side: Side, status: int) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, poll_fault=str(status), poll_faults=1))  # type: ignore[arg-type]
        with pytest.raises(TransientError) as info:
            await side.transport.poll(file.id)
        recovered = await side.transport.poll(file.id)
    assert info.value.status == status
    assert info.value.retry_after is None
    assert recovered.id == file.id


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_reported(side: Side, status: int) -> None:
    faults = Faults(gen_time=GEN_TIME, poll_fault=str(status), retry_after=12.5)  # type: ignore[arg-type]
    with trio.fail_after(LIMIT):
        file = await start(side, faults)
        with pytest.raises(TransientError) as info:
            await side.transport.poll(file.id)
    assert info.value.status == status
    assert info.value.retry_after == pytest.approx(12.5 * TIME_SCALE, abs=1e-3)


@pytest.mark.parametrize("fault", ["reset", "garbage"])
async def test_broken_replies_are_transient(side: Side, fault: str) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, poll_fault=fault))  # type: ignore[arg-type]
        with pytest.raises(TransientError) as info:
            await side.transport.poll(file.id)
    assert not isinstance(info.value, PermanentError)
    assert TOKEN not in str(info.value)
    if fault == "garbage":  # the same body, the same words on both sides
        assert str(info.value).startswith(
            "malformed poll reply from the server: not JSON (JSONDecodeError: Expecting value"
        )


async def test_poll_fault_404_is_permanent(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, poll_fault="404"))
        with pytest.raises(PermanentError) as info:
            await side.transport.poll(file.id)
    assert info.value.status == 404


async def read_file(side: Side, url: str, limit: int = 2**20) -> bytes:
    body = bytearray()
    async with side.transport.fetch(url, limit=limit) as chunks:
        async for chunk in chunks:
            body += chunk
    return bytes(body)


@pytest.mark.parametrize(
    ("mode", "magic"), [("webp", b"RIFF"), ("png", b"\x89PNG\r\n\x1a\n"), ("html", b"<!DOCTYPE")]
)
async def test_fetch_serves_the_file_in_its_mode(side: Side, mode: str, magic: bytes) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, file_mode=mode))  # type: ignore[arg-type]
        await until_ready(side, file.id)
        url = side.model.url_of(side.model.jobs[file.id])
        body = await read_file(side, url)
        again = await read_file(side, url)
    assert body.startswith(magic) and body == again
    assert side.model.counts["download"] == 2
    if side.kind == "real":  # the files origin is not the API's
        assert urlsplit(url).port != urlsplit(side.api_url).port


async def test_fetch_of_an_unready_or_unknown_file_is_a_404(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side)
        job = side.model.jobs[file.id]
        errors = []
        for url in (side.model.url_of(job), f"{side.model.file_base}/files/{uuid.uuid4()}.webp"):
            with pytest.raises(PermanentError) as info:
                await read_file(side, url)
            errors.append(info.value)
    assert [error.status for error in errors] == [404, 404]
    assert side.model.counts["download"] == 0


async def test_fetch_of_a_huge_file_streams(side: Side) -> None:
    faults = Faults(gen_time=GEN_TIME, file_mode="huge", file_bytes=2**31)
    with trio.fail_after(LIMIT):
        file = await start(side, faults)
        await until_ready(side, file.id)
        size = 0
        async with side.transport.fetch(
            side.model.url_of(side.model.jobs[file.id]), limit=2**20
        ) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > 2**20:
                    break  # the reader stops; the server must let it
    assert size > 2**20


async def test_listen_pushes_progress_then_the_result(side: Side) -> None:
    project_id = str(uuid.uuid4())
    side.model.faults = Faults(gen_time=GEN_TIME, progress_steps=2)
    statuses: list[FileStatus] = []
    with trio.fail_after(LIMIT):
        async with side.transport.listen(project_id) as messages:
            file = await start(side, side.model.faults, project_id)
            async for text in messages:
                status = parse_ws_message(text)
                assert status is not None
                statuses.append(status)
                if status.ready:
                    break
    assert [s.progress for s in statuses[:-1]] == [
        pytest.approx(1 / 3, abs=0.01),
        pytest.approx(2 / 3, abs=0.01),
    ]
    assert statuses[-1].id == file.id
    assert statuses[-1].url == side.model.url_of(side.model.jobs[file.id])
    assert trio.current_time() >= side.model.jobs[file.id].ready_at


async def test_silent_socket_sends_nothing(side: Side) -> None:
    project_id = str(uuid.uuid4())
    received: list[str] = []
    with trio.fail_after(LIMIT):
        async with side.transport.listen(project_id) as messages:
            file = await start(side, Faults(gen_time=GEN_TIME, ws_mode="silent"), project_id)
            # Listen until well after the job is ready: nothing may arrive.
            with trio.move_on_at(side.model.jobs[file.id].ready_at + 3 * READY_IN) as quiet:
                async for text in messages:
                    received.append(text)
    assert quiet.cancelled_caught
    assert received == []


async def test_refused_socket_raises_on_enter(side: Side) -> None:
    side.model.faults = Faults(ws_mode="refuse")
    entered = False
    with trio.fail_after(LIMIT), pytest.raises(TransportError) as info:
        async with side.transport.listen(str(uuid.uuid4())):
            entered = True
    assert not entered
    assert isinstance(info.value, TransientError)
    assert side.model.counts["ws_connect"] == 1


async def test_socket_with_wrong_token_is_an_auth_error(side: Side) -> None:
    other = side.with_token("wrong-token")
    with trio.fail_after(LIMIT), pytest.raises(AuthError) as info:
        async with other.listen(str(uuid.uuid4())):
            pass
    assert "SUPERDUPERAI_TOKEN" in str(info.value) and "wrong-token" not in str(info.value)


async def test_dropped_socket_raises_transient(side: Side) -> None:
    project_id = str(uuid.uuid4())
    side.model.faults = Faults(ws_mode="drop", ws_drop_after=GEN_TIME / 2, gen_time=GEN_TIME * 10)
    received: list[str] = []
    with trio.fail_after(LIMIT):
        async with side.transport.listen(project_id) as messages:
            opened = trio.current_time()
            await start(side, side.model.faults, project_id)
            with pytest.raises(TransientError):
                await drain(messages, received)
            dropped = trio.current_time()
    assert side.model.counts["ws_drop"] == 1
    assert dropped - opened >= GEN_TIME / 2 * TIME_SCALE
    assert all(parse_ws_message(text) is not None for text in received)


# -- Server-Sent Events: GET /api/v1/events/file.{id} ------------------------------------------


async def read_sse(
    side: Side, file_id: str, until: float, transport: Transport | None = None
) -> tuple[list[Push], bool]:
    """Every push message of the file's SSE stream until ``until`` (trio time), and whether the
    stream ended by itself before that."""
    pushes: list[Push] = []
    with trio.move_on_at(until) as quiet:
        async with (transport or side.transport).listen_sse(file_id) as messages:
            async for text in messages:
                push = parse_push(text)
                assert push is not None, text
                pushes.append(push)
                if push.kind == "completed" or push.kind == "failed":
                    return pushes, False  # the last message of a job: stop reading here
            return pushes, True
    assert quiet.cancelled_caught
    return pushes, False


async def test_sse_pushes_progress_then_the_result_then_completed(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=SSE_GEN_TIME, sse_mode="normal", progress_steps=3))
        ready = side.model.jobs[file.id].ready_at
        pushes, _ = await read_sse(side, file.id, ready + 20 * READY_IN)
    url = side.model.url_of(side.model.jobs[file.id])
    assert [p.kind for p in pushes] == ["progress"] * 3 + ["result", "completed"]
    assert [p.progress for p in pushes[:3]] == [0.25, 0.5, 0.75]
    assert pushes[3] == Push(file.id, "result", url=url)
    assert {p.file_id for p in pushes} == {file.id}
    assert trio.current_time() >= ready
    assert side.model.counts["sse_connect"] == 1


async def test_sse_of_a_failed_job_pushes_a_task_error_with_the_reason(side: Side) -> None:
    faults = Faults(gen_time=SSE_GEN_TIME, sse_mode="normal", progress_steps=0, job_fails=True)
    with trio.fail_after(LIMIT):
        file = await start(side, faults)
        pushes, _ = await read_sse(side, file.id, side.model.jobs[file.id].ready_at + 1.0)
    assert [p.kind for p in pushes] == ["failed"]
    assert pushes[0].reason is not None and "job_fails" in pushes[0].reason


@pytest.mark.parametrize("mode", ["silent", "progress"])
async def test_sse_silent_or_progress_only_never_sends_the_result(side: Side, mode: str) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=SSE_GEN_TIME, sse_mode=mode, progress_steps=2))  # type: ignore[arg-type]
        until = side.model.jobs[file.id].ready_at + 3 * READY_IN
        pushes, ended = await read_sse(side, file.id, until)
    assert not ended
    assert [p.kind for p in pushes] == ([] if mode == "silent" else ["progress", "progress"])


async def test_sse_drop_ends_the_stream(side: Side) -> None:
    faults = Faults(sse_mode="drop", ws_drop_after=GEN_TIME / 2, gen_time=GEN_TIME * 10)
    with trio.fail_after(LIMIT):
        file = await start(side, faults)
        opened = trio.current_time()
        pushes, ended = await read_sse(side, file.id, opened + LIMIT / 2)
        # the next stream of the same file is not dropped (one drop per file)
        again, ended_again = await read_sse(side, file.id, trio.current_time() + 2 * READY_IN)
    assert ended and not ended_again
    assert trio.current_time() - opened >= GEN_TIME / 2 * TIME_SCALE
    assert side.model.counts["sse_drop"] == 1 and side.model.counts["sse_connect"] == 2
    assert all(p.kind == "progress" for p in pushes + again)


async def test_sse_refused_is_a_transient_524(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, sse_mode="refuse"))
        with pytest.raises(TransientError) as info:
            await read_sse(side, file.id, trio.current_time() + 1.0)
    assert info.value.status == 524 and "524" in str(info.value)
    assert len(str(info.value)) < 400 and TOKEN not in str(info.value)


async def test_sse_of_an_unknown_file_is_permanent(side: Side) -> None:
    with trio.fail_after(LIMIT), pytest.raises(PermanentError) as info:
        await read_sse(side, str(uuid.uuid4()), trio.current_time() + 1.0)
    assert info.value.status == 404 and not isinstance(info.value, AuthError)


async def test_sse_with_wrong_token_is_an_auth_error(side: Side) -> None:
    other = side.with_token("wrong-token")
    with trio.fail_after(LIMIT):
        file = await start(side)
        with pytest.raises(AuthError) as info:
            await read_sse(side, file.id, trio.current_time() + 1.0, other)
    assert "SUPERDUPERAI_TOKEN" in str(info.value) and "wrong-token" not in str(info.value)


async def test_sse_skips_an_event_over_the_size_limit_and_goes_on(side: Side) -> None:
    small = side.with_token(TOKEN, max_push_message=OVERSIZED_MESSAGE_BYTES // 2)
    faults = Faults(
        gen_time=SSE_GEN_TIME, sse_mode="normal", progress_steps=1, ws_noise="oversized"
    )
    texts: list[str] = []
    skipped = 0
    with trio.fail_after(LIMIT):
        file = await start(side, faults)
        async with small.listen_sse(file.id) as messages:
            while True:
                try:
                    text = await messages.__anext__()
                except OversizedMessage:
                    skipped += 1
                    continue
                texts.append(text)
                if '"render_result"' in text:
                    break
    assert skipped == 1
    assert all(len(text) < OVERSIZED_MESSAGE_BYTES // 2 for text in texts)
    result = parse_push(texts[-1])
    assert result is not None and result.kind == "result" and result.file_id == file.id


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.25", 0.25),
        (" 7 ", 7.0),
        ("-1", None),
        ("soon", None),
        ("nan", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_header_parsing(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_in_the_future() -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=90)
    parsed = parse_retry_after(email.utils.format_datetime(when, usegmt=True))
    assert parsed is not None and 85 <= parsed <= 91


@pytest.mark.parametrize("form", ["config", "legacy"])
async def test_both_body_forms_start_the_same_job(side: Side, form: str) -> None:
    side.model.faults = Faults(gen_time=GEN_TIME)
    request = attrs.evolve(request_for(), body_form=form)
    with trio.fail_after(LIMIT):
        file = await side.transport.start(request)
    job = side.model.jobs[file.id]
    assert (job.prompt, job.seed, job.width, job.height) == ("a red fox in the snow", 7, 512, 384)
    assert job.project_id == request.project_id


START_FAULT_OUTCOMES = [
    # fault, error type, status, words in the reason, whether a job was made
    ("409", PermanentError, 409, "(Conflict): Integrity error, create", False),
    (
        "422",
        PermanentError,
        422,
        "(Unprocessable Entity): config.generation_config_name: unknown generation config",
        False,
    ),
    ("429", TransientError, 429, "(Too Many Requests): Too many requests", False),
    ("503", TransientError, 503, "(Service Unavailable): Service temporarily", False),
    ("524", TransientError, 524, "HTTP 524 from the server (Cloudflare origin timeout)", True),
]


@pytest.mark.parametrize(("fault", "kind", "status", "words", "made"), START_FAULT_OUTCOMES)
async def test_start_faults(
    side: Side, fault: str, kind: type[Exception], status: int, words: str, made: bool
) -> None:
    faults = Faults(gen_time=GEN_TIME, start_fault=fault, start_faults=1, retry_after=50.0)  # type: ignore[arg-type]
    with trio.fail_after(LIMIT):
        with pytest.raises(kind) as info:
            await start(side, faults)
        jobs_after_fault = len(side.model.jobs)
        second = await side.transport.start(request_for())  # the fault hit only the first
    error = info.value
    assert isinstance(error, TransportError)
    assert getattr(error, "status", None) == status
    assert words in str(error)
    assert "<" not in str(error) and len(str(error)) < 400
    assert jobs_after_fault == int(made)
    assert second.id in side.model.jobs
    assert side.model.counts["start"] == 2 and side.model.counts["start_fault"] == 1
    if isinstance(error, TransientError):
        # Only 429 and 503 say that the server did not act on the request.
        assert error.maybe_processed is made
        expected = 50.0 * TIME_SCALE if status in (429, 503) else None
        assert error.retry_after == (pytest.approx(expected) if expected else None)


async def test_start_reply_and_polls_have_todays_fields(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side)
        job = side.model.jobs[file.id]
        # Move the job into its last fifth, for longer than any poll takes: the preview is out.
        job.created, job.ready_at = job.created - 1000.0, job.ready_at + 100.0
        previewed = side.model.file_json(job)
        almost = await side.transport.poll(file.id)
        job.ready_at = trio.current_time()
        done = side.model.file_json(job)
    assert "project_id" not in previewed and previewed["video_generation"] is None
    assert previewed["image_generation"]["prompt"] == job.prompt
    (task,) = previewed["tasks"]
    assert task["status"] == "in_progress" and isinstance(task["id"], int)
    # The thumbnail comes first and is not the result.
    assert previewed["thumbnail_url"] and previewed["url"] is None
    assert not almost.ready and not almost.failed
    assert done["url"] and done["tasks"] == []


PROJECT = str(uuid.uuid4())
BAD_BODIES = [
    (
        {"config": {"generation_config_name": "comfyui/flux"}},
        ["config", "prompt"],
        "field required",
    ),
    ({}, ["config"], "field required"),
    ([], [], "value is not a valid dict"),
    (
        {"config": {"prompt": "a fox", "params": {"width": "512"}}},
        ["config", "params", "width"],
        "value is not a valid integer",
    ),
    (
        {"config": {"prompt": "a fox", "params": {"height": 10**6}}},
        ["config", "params", "height"],
        "ensure this value is in 64..4096",
    ),
    (
        {"config": {"prompt": "a fox", "params": []}},
        ["config", "params"],
        "value is not a valid dict",
    ),
    (
        {"type": "media", "project_id": "nope", "config": {"prompt": "a fox"}},
        ["project_id"],
        "value is not a valid uuid",
    ),
    (
        {"type": "media", "project_id": PROJECT, "config": {"prompt": "a fox", "seed": "x"}},
        ["config", "seed"],
        "value is not a valid integer",
    ),
]


@pytest.mark.parametrize(("body", "loc", "msg"), BAD_BODIES)
async def test_malformed_bodies_get_a_fastapi_422(
    side: Side, body: object, loc: list[str], msg: str
) -> None:
    """The same 422 from the model (what the in-memory transport serves) and over HTTP."""
    if side.kind == "memory":
        with pytest.raises(BadRequest) as info:
            side.model.create(body)
        status, detail = info.value.reply.status, json.loads(info.value.reply.body)
    else:
        url = side.api_url + "/api/v1/file/generate-image"  # file_base is the files origin
        async with httpx.AsyncClient() as http:
            reply = await http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        status, detail = reply.status_code, reply.json()
    assert status == 422
    (item,) = detail["detail"]
    assert item["loc"] == ["body", *loc]
    assert item["msg"] == msg and item["type"]
    assert side.model.jobs == {}


async def test_seed_era_body_with_numbers_as_text_is_accepted(side: Side) -> None:
    body = {
        "type": "media",
        "project_id": PROJECT,
        "config": {"prompt": "a fox", "seed": "12", "width": "640", "height": 512},
    }
    job = side.model.create(body)
    assert (job.seed, job.width, job.height) == (12, 640, 512)


# -- redirects and CDN faults on result files and polls ----------------------------------------


async def ready_file(side: Side, **faults: Any) -> tuple[FileStatus, str]:
    """A finished job with these file switches, and its result URL."""
    file = await start(side, Faults(gen_time=GEN_TIME, **faults))
    await until_ready(side, file.id)
    return file, side.model.url_of(side.model.jobs[file.id])


@pytest.mark.parametrize("status", ["301", "302", "303", "307", "308"])
@pytest.mark.parametrize("hops", [1, MAX_REDIRECTS])
async def test_fetch_follows_redirects_up_to_the_limit(side: Side, status: str, hops: int) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_redirect=status, file_redirect_hops=hops)
        body = await read_file(side, url)
    assert body.startswith(b"RIFF")
    assert side.model.counts["redirect"] == hops and side.model.counts["download"] == 1
    received = list(side.model.received)
    assert len(received) == hops + 1 and received[0][0] == url
    assert all(path.startswith(side.model.file_base + "/stored/") for path, _ in received[1:])
    assert not any(auth for _, auth in received)  # the files origin never gets the token


async def test_a_redirect_from_the_api_origin_to_the_cdn_drops_the_token(side: Side) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_redirect="302", file_redirect_to="origin")
        body = await read_file(side, url)
    assert body.startswith(b"RIFF")
    (first, sent_first), (second, sent_second) = side.model.received
    assert first == url and first.startswith(side.model.api_base + "/files/")
    assert second.startswith(side.model.file_base + "/stored/")
    # what the servers received: the token on the API's origin, none on the other one
    assert (sent_first, sent_second) == (True, False)


async def test_more_than_five_redirects_end_with_an_error_naming_the_count(side: Side) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_redirect="307", file_redirect_hops=MAX_REDIRECTS + 1)
        with pytest.raises(RedirectError) as info:
            await read_file(side, url)
    assert info.value.why == "too_many" and info.value.hops == MAX_REDIRECTS
    assert "more than 5 redirects" in str(info.value) and info.value.status == 307
    assert len(side.model.received) == MAX_REDIRECTS + 1
    assert side.model.counts["download"] == 0


async def test_a_redirect_loop_ends_with_a_clear_error(side: Side) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_redirect="302", file_redirect_to="loop")
        with pytest.raises(RedirectError) as info:
            await read_file(side, url)
    assert info.value.why == "loop" and "redirect loop after 2 redirects" in str(info.value)
    assert len(side.model.received) == 2 and side.model.counts["download"] == 0


@pytest.mark.parametrize("status", ["301", "302", "303", "307", "308"])
async def test_a_poll_follows_a_redirect_on_the_same_origin_with_the_token(
    side: Side, status: str
) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, poll_redirect=status))  # type: ignore[arg-type]
        await until_ready(side, file.id)
        polled = await side.transport.poll(file.id)
    assert polled.ready and polled.url == side.model.url_of(side.model.jobs[file.id])
    (first, sent_first), (second, sent_second) = side.model.received
    assert second == first + "?via=redirect" and sent_first and sent_second
    assert side.model.counts["redirect"] == 1 and side.model.counts["poll"] == 1


async def test_a_poll_redirect_loop_fails_the_poll_for_good(side: Side) -> None:
    with trio.fail_after(LIMIT):
        file = await start(side, Faults(gen_time=GEN_TIME, poll_redirect="loop"))
        with pytest.raises(RedirectError) as info:
            await side.transport.poll(file.id)
    assert isinstance(info.value, PermanentError) and info.value.why == "loop"
    assert side.model.counts["poll"] == 0


@pytest.mark.parametrize("status", [403, 404])
async def test_a_cdn_refusing_a_file_at_first_names_its_host_not_the_token(
    side: Side, status: int
) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_fault=str(status), file_faults=2)
        errors = []
        for _ in range(2):
            with pytest.raises(PermanentError) as info:
                await read_file(side, url)
            errors.append(info.value)
        body = await read_file(side, url)  # the third request is served
    assert body.startswith(b"RIFF")
    host = urlsplit(url).netloc
    for error in errors:
        assert not isinstance(error, AuthError) and error.status == status
        assert f"HTTP {status} from {host}" in str(error)
        assert "SUPERDUPERAI_TOKEN" not in str(error) and TOKEN not in str(error)
    assert side.model.counts["file_fault"] == 2 and side.model.counts["download"] == 1


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_cdn_error_status_is_transient(side: Side, status: int) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_fault=str(status), retry_after=10.0)
        with pytest.raises(TransientError) as info:
            await read_file(side, url)
        assert (await read_file(side, url)).startswith(b"RIFF")
    assert info.value.status == status and urlsplit(url).netloc in str(info.value)
    expected = 10.0 * TIME_SCALE if status != 500 else None
    assert info.value.retry_after == (pytest.approx(expected) if expected else None)


async def test_a_body_cut_short_is_transient(side: Side) -> None:
    with trio.fail_after(LIMIT):
        _, url = await ready_file(side, file_cuts=1)
        received = bytearray()

        async def cut_short() -> None:
            async with side.transport.fetch(url, limit=2**20) as chunks:
                async for chunk in chunks:
                    received.extend(chunk)

        with pytest.raises(TransientError) as info:
            await cut_short()
        whole = await read_file(side, url)
    assert str(info.value).startswith("download: connection failed")
    assert 0 < len(received) < len(whole) and whole.startswith(bytes(received))
