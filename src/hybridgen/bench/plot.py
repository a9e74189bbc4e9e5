"""The latency plot of ``docs/performance.md``, drawn with Pillow (already a dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["latency_plot"]

COLORS = ((31, 119, 180), (44, 160, 44), (214, 100, 40), (148, 103, 189))
GREY = (120, 120, 120)
LABELS = {
    "default": "hybridgen default (Policy.default())",
    "adaptive": "hybridgen adaptive (Policy.adaptive_default())",
    "seed": "seed (Policy.seed())",
}


def latency_plot(
    rows: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    path: str,
    series: Sequence[str] = ("default", "adaptive", "seed"),
) -> None:
    """Draw D - R per scenario: a bar per policy at the median, a whisker to the p99.

    ``rows`` are ``(scenario, [(median, p99) per policy])`` in seconds, the policies in the order
    of ``series`` (their names, shown in the legend).
    """
    font = ImageFont.load_default()
    bar_h, gap = 12, 2
    label_w, left_pad, right_pad, top = 130, 10, 40, 60
    row_h = len(series) * (bar_h + gap) + 14
    width = 960
    plot_w = width - label_w - left_pad - right_pad
    height = top + row_h * len(rows) + 50
    finite = [v for _, stats in rows for pair in stats for v in pair if math.isfinite(v)]
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
    lx = x0
    for j, name in enumerate(series):
        color = COLORS[j % len(COLORS)]
        label = LABELS.get(name, name)
        draw.rectangle((lx, 30, lx + 12, 40), fill=color)
        draw.text((lx + 18, 29), label, fill="black", font=font)
        lx += 18 + int(draw.textlength(label, font=font)) + 24
    bottom = top + row_h * len(rows)
    tick = 0.0
    while tick <= top_value + 1e-9:
        draw.line((x(tick), top - 4, x(tick), bottom), fill=(225, 225, 225))
        draw.text((x(tick) - 6, bottom + 6), f"{tick:g}", fill=GREY, font=font)
        tick += step
    draw.text((x0 + plot_w // 2 - 30, bottom + 24), "seconds after ready", fill=GREY, font=font)
    for i, (name, stats) in enumerate(rows):
        y = top + i * row_h
        draw.text((left_pad, y + row_h // 2 - 8), name, fill="black", font=font)
        for j, (med, p99) in enumerate(stats):
            color = COLORS[j % len(COLORS)]
            yb = y + 4 + j * (bar_h + gap)
            if math.isfinite(med):
                draw.rectangle((x0, yb, max(x(med), x0 + 1), yb + bar_h), fill=color)
                end = max(x(p99), x(med)) if math.isfinite(p99) else x(med)
                draw.text((end + 6, yb), f"{med:.2f}", fill=color, font=font)
            if math.isfinite(med) and math.isfinite(p99) and p99 > med:
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
