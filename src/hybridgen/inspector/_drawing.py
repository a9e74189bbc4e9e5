"""The machine as an inline SVG for the inspector page, laid out in Python from the definition.

No Graphviz: states are placed in columns by their longest distance from the initial state (the
machine has no cycles); the first state of a column sits on the main row, the others below it.
Edges between neighbouring columns of one row are straight, edges that skip columns on one row
arc above it, and edges to another row leave the source downwards (or upwards) and run along the
destination's row. Every state and edge carries ``data-`` attributes for the page's script.
"""

from __future__ import annotations

from html import escape
from typing import Final

from ..machine import INITIAL, TERMINAL, State, edges

COLUMN: Final = 210
ROW: Final = 62
WIDTH: Final = 126
HEIGHT: Final = 38
LEFT: Final = 60
TOP: Final = 92
CORNER: Final = 12


def ranks() -> dict[State, int]:
    """Each state's column: its longest distance (in edges) from the initial state."""
    rank = dict.fromkeys(State, 0)
    for _ in State:  # longest paths settle within |states| rounds in a graph with no cycles
        changed = False
        for source, _trigger, dest in edges():
            if dest is not INITIAL and rank[dest] < rank[source] + 1 <= len(State):
                rank[dest] = rank[source] + 1
                changed = True
        if not changed:
            break
    return rank


def positions() -> dict[State, tuple[float, float]]:
    """The centre of each state's box."""
    rank = ranks()
    rows: dict[int, int] = {}
    placed: dict[State, tuple[float, float]] = {}
    for state in State:  # enum order: the first state of a column takes the main row
        row = rows.get(rank[state], 0)
        rows[rank[state]] = row + 1
        placed[state] = (LEFT + WIDTH / 2 + rank[state] * COLUMN, TOP + row * ROW)
    return placed


def _grouped() -> dict[tuple[State, State], list[str]]:
    grouped: dict[tuple[State, State], list[str]] = {}
    for source, trigger, dest in edges():
        grouped.setdefault((source, dest), []).append(str(trigger))
    return grouped


def _route(
    start: tuple[float, float], end: tuple[float, float]
) -> tuple[str, tuple[float, float], str]:
    """The path of one edge, where its label goes, and the label's text-anchor."""
    (sx, sy), (dx, dy) = start, end
    half_w, half_h = WIDTH / 2, HEIGHT / 2
    if sy == dy and dx - sx <= COLUMN:
        return f"M{sx + half_w},{sy} L{dx - half_w},{dy}", ((sx + dx) / 2, sy - 6), "middle"
    if sy == dy:
        bow = 26 + 10 * (dx - sx) / COLUMN
        top = sy - half_h
        path = f"M{sx},{top} C{sx},{top - bow} {dx},{top - bow} {dx},{top}"
        return path, ((sx + dx) / 2, top - bow * 0.75 - 4), "middle"
    down = 1 if dy > sy else -1
    leave = sy + down * half_h
    turn = dy - down * CORNER
    path = f"M{sx},{leave} L{sx},{turn} Q{sx},{dy} {sx + CORNER},{dy} L{dx - half_w},{dy}"
    return path, (sx + CORNER + 4, dy - 5), "start"


def machine_svg() -> str:
    """The whole machine as one ``<svg>`` element (states, edges, the initial marker)."""
    place = positions()
    width = max(x for x, _ in place.values()) + WIDTH / 2 + 20
    height = max(y for _, y in place.values()) + HEIGHT / 2 + 16
    parts = [
        f'<svg class="machine" viewBox="0 0 {width:g} {height:g}" role="img" '
        'aria-label="the generation state machine">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#8a93a3"/></marker></defs>',
    ]
    ix, iy = place[INITIAL]
    parts.append(
        f'<g class="initial"><circle cx="{ix - WIDTH / 2 - 36:g}" cy="{iy:g}" r="5"/>'
        f'<path d="M{ix - WIDTH / 2 - 31:g},{iy:g} L{ix - WIDTH / 2:g},{iy:g}" '
        'marker-end="url(#arrow)"/></g>'
    )
    for (source, dest), triggers in _grouped().items():
        path, (lx, ly), anchor = _route(place[source], place[dest])
        label = ", ".join(triggers)
        # one trigger a line, the last one nearest the edge
        lines = "".join(
            f'<tspan x="{lx:g}" y="{ly - 12 * (len(triggers) - 1 - i):g}">{escape(t)}</tspan>'
            for i, t in enumerate(triggers)
        )
        parts.append(
            f'<g class="edge" data-from="{source}" data-to="{dest}" '
            f'data-triggers="{escape(" ".join(triggers))}"><title>{source} → {dest}: '
            f'{escape(label)}</title><path d="{path}" marker-end="url(#arrow)"/>'
            f'<text text-anchor="{anchor}">{lines}</text></g>'
        )
    for state in State:
        x, y = place[state]
        left, top = x - WIDTH / 2, y - HEIGHT / 2
        inner = (
            f'<rect class="inner" x="{left + 3:g}" y="{top + 3:g}" width="{WIDTH - 6:g}" '
            f'height="{HEIGHT - 6:g}" rx="6"/>'
            if state in TERMINAL
            else ""
        )
        parts.append(
            f'<g class="state{" terminal" if state in TERMINAL else ""}" data-state="{state}">'
            f'<rect x="{left:g}" y="{top:g}" width="{WIDTH:g}" height="{HEIGHT:g}" rx="9"/>'
            f'{inner}<text x="{x:g}" y="{y + 4:g}" text-anchor="middle">{state}</text>'
            f'<g class="badge"><circle cx="{left + WIDTH:g}" cy="{top:g}" r="11"/>'
            f'<text class="count" x="{left + WIDTH:g}" y="{top + 4:g}" '
            'text-anchor="middle"></text></g></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
