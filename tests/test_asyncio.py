"""hybridgen from asyncio: a real Starlette app under uvicorn streams generations as SSE.

The app never touches trio: it uses :class:`hybridgen.aio.AsyncioClient`, which runs trio as a
guest on uvicorn's asyncio loop. The emulator runs as a separate ``hybridgen serve`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import httpx
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from hybridgen import Config, DownloadError, Policy, SavedFile
from hybridgen.aio import AsyncioClient
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.testing import MemoryTransport
from hybridgen.transport import SuperDuperTransport

TOKEN = "asyncio-token-42"


@pytest.fixture
def emulator_url() -> Iterator[str]:
    command = [
        str(Path(sys.executable).parent / "hybridgen"),
        "serve",
        "--port",
        "0",
        "--time-scale",
        "0.02",
        "--token",
        TOKEN,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()  # the contract: the URL is the first line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_app(url: str) -> Starlette:
    clients: list[AsyncioClient] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        config = Config(url=url, token=TOKEN)
        policy = Policy.default().scaled(0.02)
        async with AsyncioClient(lambda: SuperDuperTransport(config), policy=policy) as client:
            clients.append(client)
            yield

    async def generate(request: Request) -> StreamingResponse:
        prompt = request.query_params["prompt"]

        async def sse() -> AsyncIterator[str]:
            async for event in clients[0].stream(prompt):
                data = json.dumps(attrs.asdict(event))
                yield f"event: {type(event).__name__.lower()}\ndata: {data}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return Starlette(routes=[Route("/generate", generate)], lifespan=lifespan)


async def read_sse(base: str, prompt: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        http.stream("GET", "/generate", params={"prompt": prompt}) as response,
    ):
        assert response.status_code == 200
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def test_starlette_app_streams_generations_as_server_sent_events(emulator_url: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(make_app(emulator_url), log_level="warning"))

    async def main() -> list[list[tuple[str, dict[str, object]]]]:
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            async with asyncio.timeout(60):
                return list(await asyncio.gather(*(read_sse(base, f"fox {k}") for k in range(3))))
        finally:
            server.should_exit = True
            await serving

    streams = asyncio.run(main())
    for events in streams:
        transitions = [data for kind, data in events if kind == "transition"]
        assert transitions[0]["source"] == "requested"
        assert transitions[-1]["dest"] == "done"
        assert str(transitions[-1]["url"]).endswith(".webp")
        assert sum(1 for t in transitions if t["dest"] in ("done", "failed", "cancelled")) == 1
    assert len({events[-1][1]["generation_id"] for events in streams}) == 3
    listener.close()


async def _cancel_one() -> tuple[str, int]:
    model = ServerModel(Faults(gen_time=60))
    transport = MemoryTransport(model)
    async with AsyncioClient(lambda: transport) as client:
        task = asyncio.create_task(client.generate("slow"))
        stream = client.stream("watched")
        first = await anext(stream)  # the generation is under way
        await stream.aclose()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return str(getattr(first, "dest", "")), transport.open_sockets


def test_cancelling_the_asyncio_task_cancels_the_generation() -> None:
    dest, sockets_left = asyncio.run(_cancel_one())
    assert dest == "awaiting_ws"
    assert sockets_left == 0


def test_generate_outside_the_context_manager_is_a_clear_error() -> None:
    async def main() -> None:
        client = AsyncioClient(lambda: MemoryTransport())
        with pytest.raises(Exception, match="async with AsyncioClient"):
            await client.generate("x")

    asyncio.run(main())


def test_download_from_asyncio_saves_a_real_png(tmp_path: Path) -> None:
    async def main() -> tuple[SavedFile, str]:
        model = ServerModel(Faults(gen_time=0.05, file_mode="webp"))
        async with AsyncioClient(lambda: MemoryTransport(model)) as client:
            result = await client.generate("a red fox")
            saved = await client.download(result, tmp_path / "fox.png", convert="png")
            model.faults = Faults(gen_time=0.05, file_mode="html")
            broken = await client.generate("a broken cdn")
            with pytest.raises(DownloadError) as info:
                await client.download(broken, tmp_path / "broken")
            return saved, info.value.kind

    saved, kind = asyncio.run(main())
    assert saved.content_type == "image/png" and saved.source_type == "image/webp"
    with Image.open(saved.path) as image:
        assert image.format == "PNG"
    assert kind == "not_an_image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.png"]
