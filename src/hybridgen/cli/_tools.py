"""``hybridgen diagram`` and ``hybridgen bench``: commands that hand over to a library module.

The drawing is :mod:`hybridgen.diagram`'s and the benchmarks are :mod:`hybridgen.bench`'s; these
functions only pick the format or check the names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._exit import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from ._files import write_atomic
from ._output import say


def _cmd_diagram(args: argparse.Namespace) -> int:
    from ..diagram import SUFFIXES, DiagramError, GraphvizNotFound, render

    fmt = args.format
    if fmt is None:  # from the output's suffix (machine.svg), else Mermaid
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = next((f for f, s in SUFFIXES.items() if s == suffix), "mermaid")
    try:
        text = render(fmt)
    except GraphvizNotFound as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except DiagramError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(Path(args.output), text.encode("utf-8"))
        say(f"wrote {args.output}")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import BENCHMARKS, run_names

    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return run_names(args.names, args.smoke, args.plot, args.dsn)
