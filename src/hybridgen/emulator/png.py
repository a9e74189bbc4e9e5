"""Real, small images for the emulator's results (WEBP or PNG), deterministic for a prompt and
seed."""

from __future__ import annotations

import functools
import io
import random
import textwrap
from typing import Final

from ..errors import MissingExtra

try:
    from PIL import Image, ImageDraw, ImageFont
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the emulator's images", extra="emulator") from None

__all__ = ["MAX_SIDE", "render_image", "render_png"]

MAX_SIDE: Final = 256
"""The longest side of a rendered image, in pixels (the requested aspect ratio is kept)."""


def _fit(width: int, height: int) -> tuple[int, int]:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A PNG for ``(prompt, seed)`` at the requested aspect ratio, at most 256 pixels a side.

    The same arguments always give the same bytes: a seeded gradient with a few shapes and the
    prompt written on it.
    """
    return _render(prompt, seed, *_fit(width, height), "PNG")


def render_image(prompt: str, seed: int, width: int, height: int, fmt: str = "WEBP") -> bytes:
    """The image of :func:`render_png` encoded as ``fmt`` (``"WEBP"``, as the real CDN serves,
    or ``"PNG"``, as seed-era servers did)."""
    return _render(prompt, seed, *_fit(width, height), fmt)


@functools.lru_cache(maxsize=64)
def _render(prompt: str, seed: int, width: int, height: int, fmt: str) -> bytes:
    rng = random.Random(f"{seed}\x00{prompt}")
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=colour)
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        size = rng.randint(max(2, min(width, height) // 10), max(3, min(width, height) // 3))
        fill = tuple(rng.randrange(256) for _ in range(3))
        box = [(x0, y0), (x0 + size, y0 + size)]
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
    font = ImageFont.load_default()
    lines = textwrap.wrap(prompt, width=max(8, width // 7))[: max(1, height // 14)]
    y = 4
    for line in lines:
        draw.text((5, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y += 14
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, format="PNG", optimize=False)
    else:
        image.save(out, format=fmt, quality=80)
    return out.getvalue()
