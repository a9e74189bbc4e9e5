"""The output of every benchmark: one JSON object per figure on stdout, a table on stderr."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Literal, TypedDict

__all__ = ["RATIO_MEANS", "Figure", "emit", "figure", "percentile", "ratio", "table"]

RATIO_MEANS = "above 1: ours is better"
"""How to read every ``ratio``, whatever the figure's direction (the table's header says it)."""


class Figure(TypedDict):
    """One measured figure: ``value`` (ours) beside ``baseline``, both in ``unit``.

    ``better`` says which way is better for this figure: ``"lower"`` (times, bytes, requests) or
    ``"higher"`` (rates, fractions done). ``ratio`` is always "how many times better ours is":
    ``baseline / value`` when lower is better, ``value / baseline`` when higher is better, so
    above 1 means ours beats the baseline and below 1 that it does worse; ``None`` when undefined
    (a zero denominator with a non-zero numerator).
    """

    name: str
    value: float | None
    unit: str
    better: Literal["lower", "higher"]
    baseline: float | None
    ratio: float | None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; 1.0 when both are 0, ``None`` when undefined."""
    if numerator is None or denominator is None:
        return None
    if denominator == 0:
        return 1.0 if numerator == 0 else None
    return numerator / denominator


def _clean(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def figure(
    name: str,
    value: float | None,
    unit: str,
    baseline: float | None,
    *,
    higher_is_better: bool = False,
) -> Figure:
    """A :class:`Figure`, its ratio computed so that above 1 means better than the baseline."""
    r = ratio(value, baseline) if higher_is_better else ratio(baseline, value)
    return Figure(
        name=name,
        value=_clean(value),
        unit=unit,
        better="higher" if higher_is_better else "lower",
        baseline=_clean(baseline),
        ratio=_clean(r),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear between closest ranks."""
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:,.3f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def table(figures: Iterable[Figure], title: str = "") -> str:
    """The figures as an aligned text table; each row says which way is better."""
    rows = [("figure", "ours", "baseline", "unit", "better", f"ratio ({RATIO_MEANS})")]
    for f in figures:
        r = "-" if f["ratio"] is None else f"{_fmt(f['ratio'])}x"
        rows.append((f["name"], _fmt(f["value"]), _fmt(f["baseline"]), f["unit"], f["better"], r))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [title] if title else []
    for row in rows:
        lines.append(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:<{widths[3]}}  {row[4]:<{widths[4]}}  {row[5]:>{widths[5]}}"
        )
    return "\n".join(lines)


def emit(figures: Sequence[Figure], title: str = "") -> None:
    """Print each figure as one JSON line on stdout, then the table on stderr."""
    for f in figures:
        print(json.dumps(f), flush=True)
    print(table(figures, title), file=sys.stderr, flush=True)
