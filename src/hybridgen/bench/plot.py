"""The latency plot of ``docs/performance.md``, drawn with Pillow (already a dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["latency_plot"]

OURS = (31, 119, 180)
SEED = (214, 100, 40)
GREY = (120, 120, 120)


def latency_plot(rows: Sequence[tuple[str, float, float, float, float]], path: str) -> None:
    """Draw D - R per scenario: a bar per policy at the median, a whisker to the p99.

    ``rows`` are ``(scenario, ours median, ours p99, seed median, seed p99)`` in seconds.
    """
    font = ImageFont.load_default()
    label_w, left_pad, right_pad, top, row_h, bar_h = 130, 10, 30, 60, 44, 14
    width = 900
    plot_w = width - label_w - left_pad - right_pad
    height = top + row_h * len(rows) + 50
    finite = [v for r in rows for v in r[1:] if math.isfinite(v)]
    top_value = max([*finite, 1.0])
    step = _nice_step(top_value / 6)
    top_value = step * math.ceil(top_value / step)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0 = label_w + left_pad

    def x(v: float) -> float:
        return x0 + plot_w * min(v, top_value) / top_value

    draw.text(
        (x0, 10),
        "Time from result ready to done (D - R), virtual time, seconds: median bar, p99 whisker",
        fill="black",
        font=font,
    )
    draw.rectangle((x0, 30, x0 + 12, 40), fill=OURS)
    draw.text((x0 + 18, 29), "hybridgen default policy", fill="black", font=font)
    draw.rectangle((x0 + 200, 30, x0 + 212, 40), fill=SEED)
    draw.text((x0 + 218, 29), "seed (Policy.seed())", fill="black", font=font)
    bottom = top + row_h * len(rows)
    tick = 0.0
    while tick <= top_value + 1e-9:
        draw.line((x(tick), top - 4, x(tick), bottom), fill=(225, 225, 225))
        draw.text((x(tick) - 6, bottom + 6), f"{tick:g}", fill=GREY, font=font)
        tick += step
    draw.text((x0 + plot_w // 2 - 30, bottom + 24), "seconds after ready", fill=GREY, font=font)
    for i, (name, o_med, o_p99, s_med, s_p99) in enumerate(rows):
        y = top + i * row_h
        draw.text((left_pad, y + bar_h - 4), name, fill="black", font=font)
        for j, (med, p99, color) in enumerate(((o_med, o_p99, OURS), (s_med, s_p99, SEED))):
            yb = y + 4 + j * (bar_h + 2)
            if math.isfinite(med):
                draw.rectangle((x0, yb, max(x(med), x0 + 1), yb + bar_h), fill=color)
                draw.text((max(x(p99), x(med)) + 6, yb + 1), f"{med:.2f}", fill=color, font=font)
            if math.isfinite(p99) and p99 > med:
                mid = yb + bar_h // 2
                draw.line((x(med), mid, x(p99), mid), fill="black")
                draw.line((x(p99), yb + 2, x(p99), yb + bar_h - 2), fill="black")
    draw.line((x0, top - 4, x0, bottom), fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


def _nice_step(raw: float) -> float:
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * exp >= raw:
            return m * exp
    return 10 * exp
