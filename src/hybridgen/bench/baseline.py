"""The hand-written client hybridgen is measured against: plain asyncio + aiohttp.

What a competent user would write instead of hybridgen, as simply as the job allows: per
generation, send the start request, open the project's WebSocket and subscribe, poll the file
every 2 s, and stop at whichever of the two first says the result is ready (or that the job
failed), within an overall deadline. One ``aiohttp.ClientSession`` is shared by every generation,
its connector uncapped (an open WebSocket holds a connection of the pool). No state machine, no
adaptive polling, no retries.

``python -m hybridgen.bench.baseline URL N [SCALE]`` runs N generations at once and prints one JSON
object with the same keys as the hybridgen worker of :mod:`hybridgen.bench.scale` (aiohttp comes
with the ``bench`` and ``test`` extras); ``SCALE`` multiplies its poll interval and deadline (as
``Policy.scaled`` does hybridgen's), for an emulator run with the same ``time_scale``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import resource
import sys
import time
import uuid
from typing import Any, Final

from ..errors import MissingExtra

try:
    import aiohttp
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the benchmark's aiohttp baseline", extra="bench") from None

__all__ = ["POLL_INTERVAL", "run"]

POLL_INTERVAL: Final = 2.0
DEADLINE: Final = 120.0


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Stats:
    def __init__(self) -> None:
        self.live = 0
        self.max_live = 0
        self.polls = 0
        self.reasons: collections.Counter[str] = collections.Counter()


async def _one(
    session: aiohttp.ClientSession, base: str, stats: _Stats, interval: float = POLL_INTERVAL
) -> str:
    """One generation: ``done``, ``failed`` (the server says so) or ``lost`` (anything else)."""
    project_id = str(uuid.uuid4())
    body = {
        "type": "media",
        "project_id": project_id,
        "config": {
            "prompt": "a red fox",
            "seed": str(random.randrange(2**40)),
            "width": "1024",
            "height": "1024",
            "generation_config_name": "comfyui/flux",
        },
    }
    async with session.post(f"{base}/api/v1/file/generate-image", json=body) as response:
        response.raise_for_status()
        file_id = (await response.json())[0]["id"]

    async def listen() -> str:
        ws_url = base.replace("http", "ws", 1) + f"/api/v1/ws/project.{project_id}"
        try:
            async with session.ws_connect(ws_url) as ws:
                subscribe = {"type": "subscribe", "projectId": f"project.{project_id}"}
                await ws.send_str(json.dumps(subscribe))
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(message.data)
                    obj = data.get("object") or {}
                    if data.get("type") == "file" and obj.get("id") == file_id and obj.get("url"):
                        return "done"
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        await asyncio.Event().wait()  # the socket is gone: polling finishes the job
        raise AssertionError("unreachable")

    async def poll() -> str:
        while True:
            await asyncio.sleep(interval)
            stats.polls += 1
            try:
                async with session.get(f"{base}/api/v1/file/{file_id}") as response:
                    if response.status != 200:
                        continue
                    data = await response.json()
            except (aiohttp.ClientError, OSError, ValueError):
                continue
            if data.get("url"):
                return "done"
            tasks = data.get("tasks") or []
            if tasks and tasks[-1].get("status") == "error":
                return "failed"

    listener = asyncio.create_task(listen())
    poller = asyncio.create_task(poll())
    try:
        finished, _ = await asyncio.wait({listener, poller}, return_when=asyncio.FIRST_COMPLETED)
        return finished.pop().result()
    finally:
        listener.cancel()
        poller.cancel()
        await asyncio.gather(listener, poller, return_exceptions=True)


async def _tracked(
    session: aiohttp.ClientSession, base: str, stats: _Stats, scale: float = 1.0
) -> str:
    stats.live += 1
    stats.max_live = max(stats.max_live, stats.live)
    try:
        async with asyncio.timeout(DEADLINE * scale):
            return await _one(session, base, stats, POLL_INTERVAL * scale)
    except Exception as exc:
        stats.reasons[type(exc).__name__] += 1
        return "lost"
    finally:
        stats.live -= 1


async def run(url: str, n: int, token: str = "bench", scale: float = 1.0) -> dict[str, Any]:
    """Run ``n`` generations at once against ``url``; the figures the scale benchmark reads.

    ``scale`` multiplies the poll interval and the deadline."""
    stats = _Stats()
    headers = {"Authorization": f"Bearer {token}"}
    # No connection cap: each open WebSocket holds one of the connector's connections, so the
    # default cap of 100 would leave no connection for the requests of generation 101 on.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        rss0 = _rss_kb("VmRSS")
        cpu0 = _cpu()
        t0 = time.monotonic()
        states = await asyncio.gather(*(_tracked(session, url, stats, scale) for _ in range(n)))
        wall = time.monotonic() - t0
        cpu = _cpu() - cpu0
        hwm = _rss_kb("VmHWM")
    return {
        "n": n,
        "states": collections.Counter(states),
        "reasons": stats.reasons.most_common(3),
        "polls": stats.polls,
        "cpu": cpu,
        "rss0_kb": rss0,
        "hwm_kb": hwm,
        "wall": wall,
        "max_live": stats.max_live,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridgen.bench.baseline URL N [SCALE]``: one JSON line of figures on stdout."""
    url, n, *rest = argv if argv is not None else sys.argv[1:]
    scale = float(rest[0]) if rest else 1.0
    print(json.dumps(asyncio.run(run(url.rstrip("/"), int(n), scale=scale))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
