"""Draw the generation machine from its live definition (never by hand).

:func:`render` gives Mermaid (``stateDiagram-v2``, rendered by GitHub with no native tool) or
Graphviz DOT text; both read :func:`hybridgen.machine.edges`, which is compiled from the
``transitions`` definition. :func:`render_path` draws one actual generation's path from its events.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .events import Transition
from .machine import INITIAL, TERMINAL, State, edges

__all__ = ["FORMATS", "render", "render_path", "write_all"]

FORMATS = ("mermaid", "dot")


def _grouped() -> list[tuple[State, State, list[str]]]:
    grouped: dict[tuple[State, State], list[str]] = {}
    for source, trigger, dest in edges():
        grouped.setdefault((source, dest), []).append(str(trigger))
    return [(s, d, t) for (s, d), t in grouped.items()]


def render(fmt: str = "mermaid") -> str:
    """The generation machine as Mermaid or DOT text (``fmt`` is ``"mermaid"`` or ``"dot"``)."""
    if fmt == "mermaid":
        lines = ["stateDiagram-v2", f"    [*] --> {INITIAL}"]
        lines += [f"    {s} --> {d}: {', '.join(t)}" for s, d, t in _grouped()]
        lines += [f"    {s} --> [*]" for s in State if s in TERMINAL]
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = [
            "digraph generation {",
            "    rankdir=LR;",
            '    node [shape=box, style=rounded, fontname="Helvetica"];',
            '    edge [fontname="Helvetica", fontsize=10];',
            "    __start [shape=point];",
            f"    __start -> {INITIAL};",
        ]
        lines += [f"    {s} [peripheries=2];" for s in State if s in TERMINAL]
        lines += [f'    {s} -> {d} [label="{", ".join(t)}"];' for s, d, t in _grouped()]
        lines.append("}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def render_path(transitions: Iterable[Transition], t0: float | None = None) -> str:
    """One generation's actual path as Mermaid: the states it visited, with times since start."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL}"]
    start = t0
    for t in transitions:
        if start is None:
            start = t.monotonic
        lines.append(f"    {t.source} --> {t.dest}: {t.trigger} @ {t.monotonic - start:.2f}s")
        if t.terminal:
            lines.append(f"    {t.dest} --> [*]")
    return "\n".join(lines) + "\n"


def write_all(directory: str | Path) -> list[Path]:
    """Write ``generation.mmd`` and ``generation.dot`` into ``directory``; return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, suffix in (("mermaid", "mmd"), ("dot", "dot")):
        path = out / f"generation.{suffix}"
        path.write_text(render(fmt))
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m hybridgen.diagram [DIR]: regenerate the committed files
    import sys

    for written in write_all(sys.argv[1] if len(sys.argv) > 1 else "diagrams"):
        print(written)
