"""The front door: ``Client.from_env()`` and ``AsyncioClient.from_env()`` talk to the server the
environment names, over real sockets; ``hybridgen.__all__`` holds every name a user needs."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest
import trio

import hybridgen
from hybridgen import AsyncioClient, Client, ConfigError, Policy, SuperDuperTransport
from hybridgen.emulator import Emulator

TOKEN = "test-token-123"  # the conftest emulator's


def env_of(emulator: Emulator) -> dict[str, str]:
    return {"SUPERDUPERAI_URL": emulator.url, "SUPERDUPERAI_TOKEN": TOKEN}


async def test_client_from_env_generates_and_downloads_on_the_named_server(
    emulator: Emulator, tmp_path: Path
) -> None:
    policy = Policy.default().replace(deadline=30.0)
    async with Client.from_env(env_of(emulator), policy=policy, max_requests=4) as client:
        assert isinstance(client.transport, SuperDuperTransport)
        assert client.transport.config.url == emulator.url
        assert client.policy is policy
        result = await client.generate("a red fox")
        saved = await client.download(result, tmp_path / "fox")
    assert result.state == "done"
    assert emulator.model.jobs, "the job was started on the emulator named by the environment"
    assert saved.path == str(tmp_path / "fox.webp")  # the emulator serves WEBP


async def test_asyncio_client_from_env_generates_on_the_named_server(emulator: Emulator) -> None:
    async def main() -> str:
        async with AsyncioClient.from_env(env_of(emulator)) as client:
            return (await client.generate("a lighthouse")).state

    # asyncio (and trio as its guest) in a worker thread; the emulator stays on this trio run
    state = await trio.to_thread.run_sync(asyncio.run, main())
    assert state == "done"
    assert emulator.model.jobs


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "SUPERDUPERAI_URL"),
        ({"SUPERDUPERAI_URL": "http://127.0.0.1:9"}, "SUPERDUPERAI_TOKEN"),
        ({"SUPERDUPERAI_URL": "ftp://x", "SUPERDUPERAI_TOKEN": "t"}, "SUPERDUPERAI_URL"),
    ],
)
def test_from_env_without_a_server_says_what_to_set(env: dict[str, str], field: str) -> None:
    for make in (Client.from_env, AsyncioClient.from_env):
        with pytest.raises(ConfigError) as caught:
            make(env)
        assert caught.value.field == field


def test_every_exported_name_is_its_module_s_own() -> None:
    """Each name resolves (lazily) to the object its home module defines, with a docstring."""
    assert len(set(hybridgen.__all__)) == len(hybridgen.__all__)
    for name in hybridgen.__all__:
        if name == "__version__":
            continue
        value = getattr(hybridgen, name)
        home = importlib.import_module(f"hybridgen.{hybridgen._HOMES[name]}")
        assert getattr(home, name) is value, name
    assert set(dir(hybridgen)) >= set(hybridgen.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = hybridgen.Nope  # type: ignore[attr-defined]


def test_the_front_door_names_are_exported() -> None:
    needed = {"Client", "AsyncioClient", "SuperDuperTransport", "SQLiteJournal", "run_batch"}
    needed |= {"Config", "Policy", "Result", "Transition", "MissingExtra", "HybridgenError"}
    needed |= {"Unreachable", "RedirectError", "AuthError", "TransientError", "PermanentError"}
    needed |= {"Secret", "Worker"}
    assert needed <= set(hybridgen.__all__)


def test_observe_hands_over_each_generation_before_its_first_event() -> None:
    from hybridgen import Event, Generation, ImageRequest
    from hybridgen.emulator import Faults, ServerModel
    from hybridgen.testing import MemoryTransport, run_virtual

    seen: list[tuple[Generation, list[Event]]] = []

    def observer(gen: Generation) -> None:
        events: list[Event] = []
        gen.subscribe(events.append)
        seen.append((gen, events))

    def broken(gen: Generation) -> None:
        raise RuntimeError("an observer with a bug")

    request = ImageRequest(prompt="a red fox", model="comfyui/sdxl")

    async def main() -> None:
        async with Client(MemoryTransport(ServerModel(Faults(gen_time=5)))) as client:
            client.observe(broken)  # logged and detached: the generations go on
            stop = client.observe(observer)
            result = await client.generate(request)
            assert result.file_id is not None
            await client.resume(result.file_id, request.project_id)
            stop()
            await client.generate("not observed")

    run_virtual(main)
    assert [gen.request for gen, _ in seen] == [request, None]  # None: resumed
    for _, events in seen:
        assert events[-1].terminal
    assert len(seen[0][1]) >= 2 and seen[0][1][0].source == "requested"  # type: ignore[union-attr]
