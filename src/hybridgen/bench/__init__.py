"""hybridgen's benchmarks: every figure is a comparison measured in the same run.

Each benchmark module has ``run(smoke=False) -> list[Figure]``; :func:`main` (``hybridgen bench``
and ``python -m hybridgen.bench``) runs the named ones and prints one JSON object per figure on
stdout (``name``, ``value``, ``unit``, ``better``, ``baseline``, ``ratio``; a ratio above 1
always means ours is better) and a table per benchmark on stderr.
``--smoke`` runs each at a size that takes seconds (what CI runs); see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ._report import Figure, emit

__all__ = ["BENCHMARKS", "Figure", "main", "run"]

BENCHMARKS: Final = {
    "latency": "figures 1-2: time to result after ready and requests per generation, vs the seed",
    "scale": "figure 3: N concurrent generations vs a hand-written aiohttp client, same run",
    "machine": "figure 4: machine build + run vs a transitions.Machine per object",
    "events": "figure 5: transitions/s through the subscriber fan-out",
    "virtual": "virtual time: real ms per scenario, property examples per second",
    "journal": "journal under a lock held by another process: longest event-loop stall",
    "queue": "job queue: jobs/s, journal CPU and round trips per job, 1/2/4 workers, PG vs SQLite",
    "replies": "reading recorded replies (start, poll, SSE): hybridgen's own reader vs h11",
}
"""Benchmark names and what each measures, in the order they run."""


def run(
    name: str, *, smoke: bool = False, plot: str | None = None, dsn: str | None = None
) -> list[Figure]:
    """Run the benchmark ``name`` and return its figures (``plot``: latency's or scale's PNG;
    ``dsn``: queue's PostgreSQL database)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    module = importlib.import_module(f"{__name__}.{name}")
    if name in ("latency", "scale"):
        return list(module.run(smoke=smoke, plot=plot))
    if name == "queue":
        return list(module.run(smoke=smoke, dsn=dsn))
    return list(module.run(smoke=smoke))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``hybridgen bench`` and ``python -m hybridgen.bench`` take."""
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (seconds in total): checks, not figures"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="latency, scale: also draw the plot to this file (scale's gets -scale with both)",
    )
    parser.add_argument(
        "--dsn",
        metavar="URL",
        help="queue: the PostgreSQL database (default: HYBRIDGEN_TEST_POSTGRES, else a "
        "throwaway cluster in a temporary directory)",
    )


def run_names(names: Sequence[str], smoke: bool, plot: str | None, dsn: str | None = None) -> int:
    """Run ``names`` (all when empty), printing each benchmark's figures as it ends.

    Raises ``ValueError`` naming an unknown benchmark before anything runs.
    """
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    names = list(names or BENCHMARKS)
    for name in names:
        path = plot
        if plot is not None and name == "scale" and "latency" in names:
            path = str(Path(plot).with_name(f"{Path(plot).stem}-scale{Path(plot).suffix}"))
        figures = run(name, smoke=smoke, plot=path, dsn=dsn)
        emit(figures, title=f"# {name}: {BENCHMARKS[name]}")
        summary = getattr(importlib.import_module(f"{__name__}.{name}"), "summary", None)
        if summary is not None:  # a benchmark's own reading of its figures
            print(summary(figures), file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybridgen.bench [NAME...] [--smoke] [--plot PNG]``."""
    parser = argparse.ArgumentParser(prog="python -m hybridgen.bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return run_names(args.names, args.smoke, args.plot, args.dsn)
