"""The committed diagrams are generated from the live definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridgen.diagram import render, render_path, write_all
from hybridgen.emulator.model import Faults
from hybridgen.machine import TABLE
from hybridgen.testing import Scenario, run_scenario

ROOT = Path(__file__).resolve().parent.parent


def test_committed_diagrams_match_the_definition(tmp_path: Path) -> None:
    for fresh in write_all(tmp_path):
        committed = ROOT / "diagrams" / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is stale: run `python -m hybridgen.diagram diagrams`"
        )


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_every_edge_is_drawn(fmt: str) -> None:
    text = render(fmt)
    for (source, trigger), dest in TABLE.items():
        line = next(ln for ln in text.splitlines() if f"{source} -" in ln and f"> {dest}" in ln)
        assert str(trigger) in line


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="mermaid, dot"):
        render("png")


def test_path_of_one_generation() -> None:
    trace = run_scenario(Scenario(faults=Faults(ws_mode="silent", gen_time=5)))
    text = render_path(trace.transitions, t0=0.0)
    assert "awaiting_ws --> polling: ws_timeout @ 2.00s" in text
    assert "polling --> done: poll_result" in text
