"""The docs stay true: every ``python`` code block runs, every relative link resolves.

Blocks tagged ``py`` are fragments (shown, not run); ``python`` blocks must be whole programs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((page.name, line, match.group(1)))
    return found


@pytest.mark.parametrize(("page", "line", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_code_block_runs(page: str, line: int, code: str) -> None:
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": f"docs_{page}_{line}"})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", ["README.md", "docs/concepts.md"])
def test_inline_diagram_is_the_live_definition(page: str) -> None:
    from hybridgen.diagram import render

    assert render("mermaid").strip() in (ROOT / page).read_text(), (
        f"{page}: paste the output of `hybridgen diagram --format mermaid`"
    )
