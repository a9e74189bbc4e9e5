"""The plots of ``docs/performance.md`` (latency, scale), drawn with Pillow (``[convert]``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import MissingExtra

try:
    from PIL import Image, ImageDraw, ImageFont
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "the benchmarks' plots", extra="convert") from None

__all__ = ["latency_plot", "scale_plot"]

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


def scale_plot(
    curves: Mapping[tuple[str, str], Sequence[tuple[int, float]]],
    path: str,
    *,
    title: str = "Client CPU per generation (ms) against N concurrent generations",
) -> None:
    """Draw one line per ``(client, mode)`` of ``(N, ms)`` points; N on a log axis.

    Each client has its color, each mode its dash (``normal`` solid, ``silent`` dashed).
    """
    font = ImageFont.load_default()
    width, height = 760, 420
    left, right, top, bottom = 60, 20, 60 + 12 * ((len(curves) - 1) // 3), 50
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for curve in curves.values() for p in curve]
    ns = sorted({n for n, _ in points}) or [1]
    lo, hi = math.log10(min(ns)), math.log10(max(ns))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    top_value = max([v for _, v in points if math.isfinite(v)] + [1.0])
    step = _nice_step(top_value / 5)
    top_value = step * math.ceil(top_value / step)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    def xy(n: float, v: float) -> tuple[float, float]:
        x = left + plot_w * (math.log10(n) - lo) / (hi - lo)
        return x, top + plot_h * (1 - min(v, top_value) / top_value)

    draw.text((left, 10), title, fill="black", font=font)
    tick = 0.0
    while tick <= top_value + 1e-9:
        y = xy(ns[0], tick)[1]
        draw.line((left, y, left + plot_w, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"{tick:g}", fill=GREY, font=font)
        tick += step
    for n in ns:
        x = xy(n, 0)[0]
        draw.line((x, top, x, top + plot_h), fill=(235, 235, 235))
        draw.text((x - 12, top + plot_h + 6), f"{n:,}", fill=GREY, font=font)
    draw.text((left + plot_w // 2 - 60, height - 20), "N (log scale)", fill=GREY, font=font)
    clients = list(dict.fromkeys(client for client, _ in curves))
    lx, ly = left, 35  # the legend, in as many rows as it takes, above the plot
    for index, ((client, mode), curve) in enumerate(curves.items()):
        color = COLORS[clients.index(client) % len(COLORS)]
        pts = [xy(n, v) for n, v in sorted(curve) if math.isfinite(v)]
        for a, b in itertools.pairwise(pts):
            _segment(draw, a, b, color, dashed=mode != "normal")
        for x, y in pts:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        label = f"{client}, push {'works' if mode == 'normal' else mode}"
        if index and lx + 30 + draw.textlength(label, font=font) > width - right:
            lx, ly = left, ly + 12
        _segment(draw, (lx, ly), (lx + 24, ly), color, dashed=mode != "normal")
        draw.text((lx + 30, ly - 6), label, fill="black", font=font)
        lx += 30 + int(draw.textlength(label, font=font)) + 16
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)


def _segment(
    draw: ImageDraw.ImageDraw,
    a: tuple[float, float],
    b: tuple[float, float],
    color: tuple[int, int, int],
    *,
    dashed: bool,
) -> None:
    if not dashed:
        draw.line((*a, *b), fill=color, width=2)
        return
    length = math.dist(a, b)
    dashes = max(1, int(length // 8))
    for i in range(0, dashes, 2):
        t0, t1 = i / dashes, min(1.0, (i + 1) / dashes)
        draw.line(
            (
                a[0] + (b[0] - a[0]) * t0,
                a[1] + (b[1] - a[1]) * t0,
                a[0] + (b[0] - a[0]) * t1,
                a[1] + (b[1] - a[1]) * t1,
            ),
            fill=color,
            width=2,
        )


def _nice_step(raw: float) -> float:
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * exp >= raw:
            return m * exp
    return 10 * exp
