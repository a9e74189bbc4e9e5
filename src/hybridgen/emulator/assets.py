"""The emulator's fixed content: its model list, the sample video, and the noise it can send."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Final

__all__ = [
    "GENERATION_CONFIGS",
    "OVERSIZED_MESSAGE_BYTES",
    "SAMPLE_MP4",
    "UPLOAD_BODY_LIMIT",
    "VIDEO_CONFIGS",
]

OVERSIZED_MESSAGE_BYTES: Final = 2**20 + 2**16
"""The size of the ``oversized`` noise message: above trio-websocket's default 1 MiB limit."""


GENERATION_CONFIGS: Final = (
    {
        "name": "comfyui/flux",
        "label": "Flux",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 1.0},
        "vip_required": False,
    },
    {
        "name": "comfyui/flux-dev",
        "label": "Flux Dev",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 2.0},
        "vip_required": False,
    },
    {
        "name": "comfyui/sdxl",
        "label": "Stable Diffusion XL",
        "type": "text_to_image",
        "source": "comfyui",
        "params": {"price": 0.5},
        "vip_required": False,
    },
    {
        "name": "comfyui/flux-kontext",
        "label": "Flux Kontext (edit)",
        "type": "image_to_image",
        "source": "comfyui",
        "params": {"price": 2.5},
        "vip_required": True,
    },
    {
        "name": "google-cloud/veo3-text2video",
        "label": "Veo 3",
        "type": "text_to_video",
        "source": "google-cloud",
        "params": {
            "price_per_second": 2.0,
            "available_durations": [5, 8],
            "supported_aspect_ratios": ["16:9", "9:16"],
        },
        "vip_required": True,
    },
    {
        "name": "azure-openai/sora",
        "label": "Sora",
        "type": "text_to_video",
        "source": "azure-openai",
        "params": {"price_per_second": 0.5, "available_durations": [5, 10, 15, 20]},
        "vip_required": False,
    },
    {
        "name": "comfyui/ltx",
        "label": "LTX",
        "type": "image_to_video",
        "source": "comfyui",
        "params": {"price_per_second": 0.4, "available_durations": [5, 10]},
        "vip_required": False,
    },
    {
        "name": "fal-ai/kling-video/v2.1",
        "label": "Kling 2.1",
        "type": "image_to_video",
        "source": "fal-ai",
        "params": {"price_per_second": 0.28, "available_durations": [5, 10]},
        "vip_required": False,
    },
    {
        "name": "comfyui/lip-sync",
        "label": "Lip sync",
        "type": "video_to_video",
        "source": "comfyui",
        "params": {"price_per_second": 0.3, "max_duration": 30},
        "vip_required": False,
    },
)
"""The emulator's generation configs (``GET /api/v1/generation-config``): a small, realistic list
in the real server's shape (``params`` carry prices; video ones a price per second and their
allowed durations, none per generation)."""

VIDEO_CONFIGS: Final[dict[str, dict[str, Any]]] = {
    str(c["name"]): c for c in GENERATION_CONFIGS if str(c["type"]).endswith("video")
}
"""The video models of :data:`GENERATION_CONFIGS`, by name."""

SAMPLE_MP4: Final = (Path(__file__).parent / "assets" / "sample.mp4").read_bytes()
"""Every video job's result: a real, playable 2 s H.264 MP4 of 128x72 (``assets/make_sample.sh``
made it once with ffmpeg; the emulator needs no ffmpeg)."""
UPLOAD_BODY_LIMIT: Final = 32 * 2**20
"""The largest upload (bytes) the emulator takes; a longer one gets HTTP 413."""


def junk_messages(project_id: str) -> list[str]:
    """Messages a client must log and ignore (``ws_noise``)."""
    other = str(uuid.uuid5(uuid.NAMESPACE_URL, project_id))
    return [
        "this is not JSON {",
        "[1, 2, 3]",
        json.dumps({"type": "mystery", "object": {"file_id": other}}),
        json.dumps({"type": "render_progress", "object": {"file_id": 42}}),
        json.dumps({"type": "render_progress", "object": {"file_id": other, "progress": "x"}}),
        json.dumps({"type": "file", "object": {"url": 5}}),
        json.dumps({"type": "file", "object": {"id": other, "url": "http://elsewhere/x.png"}}),
        json.dumps({"type": "file"}),
    ]


def oversized_message() -> str:
    """One valid JSON message of an unknown type, :data:`OVERSIZED_MESSAGE_BYTES` long."""
    head, tail = '{"type": "padding", "object": "', '"}'
    return head + "x" * (OVERSIZED_MESSAGE_BYTES - len(head) - len(tail)) + tail


def huge_mp4_head(size: int) -> bytes:
    """The start of a ``huge`` video of ``size`` bytes: the sample MP4, then the header of a
    ``free`` box (64-bit size) whose zeros fill the rest, so the whole file is a valid MP4."""
    rest = size - len(SAMPLE_MP4)
    if rest < 16:
        return SAMPLE_MP4[:size]
    return SAMPLE_MP4 + (1).to_bytes(4, "big") + b"free" + rest.to_bytes(8, "big")
