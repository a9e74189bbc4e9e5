"""The docs stay true: every ``python`` code block runs, every link and anchor resolves, the
generated parts (API reference, policy table) match the code, and nothing public is undocumented.

Blocks tagged ``py`` are fragments (shown, not run); ``python`` blocks must be whole programs. A
``python`` block whose first line is ``# test_NAME.py`` is a test module: it is written to a
temporary directory and run by pytest in a subprocess (the installed hybridgen plugin included).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

import hybridgen
from hybridgen.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
TEST_MODULE = re.compile(r"# (test_\w+\.py)\n")
REGENERATE = "run `python docs/generate.py` and commit the result"


def rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((rel(page), line, match.group(1)))
    return found


def load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = load_generator()


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings (outside code blocks), ``-1`` for repeats."""
    seen: Counter[str] = Counter()
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', text))
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = generate.slug(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading))
        anchors.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return anchors


# -- code blocks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "line", "code"), blocks(), ids=lambda v: str(v)[:24])
def test_code_block_runs(page: str, line: int, code: str, tmp_path: Path) -> None:
    module = TEST_MODULE.match(code)
    if module is None:
        exec(compile(code, f"{page}:{line}", "exec"), {"__name__": f"docs_{line}"})
        return
    (tmp_path / module.group(1)).write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", module.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{page}:{line}\n{done.stdout}\n{done.stderr}"
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout


def test_docs_have_code_that_runs() -> None:
    by_page = Counter(page for page, _, _ in blocks())
    for page in (
        "quickstart",
        "concepts",
        "embedding",
        "testing",
        "configuration",
        "troubleshooting",
    ):
        assert by_page[f"docs/{page}.md"] >= 1, f"docs/{page}.md has no python block"


# -- links ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_and_anchors_resolve(page: Path) -> None:
    text = page.read_text()
    for target in LINK.findall(FENCE.sub("", text)):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{rel(page)}: broken link {target}"
        if anchor:
            assert linked.suffix == ".md", f"{rel(page)}: anchor into a non-Markdown file {target}"
            assert anchor in github_anchors(linked.read_text()), (
                f"{rel(page)}: no heading for #{anchor} in {linked.name}"
            )


def test_anchor_rules_match_github() -> None:
    text = "# A `b.c`: d's E\n```\n# not a heading\n```\n## A `b.c`: d's E\n### Why 2x, 16 s?\n"
    assert github_anchors(text) == {"a-bc-ds-e", "a-bc-ds-e-1", "why-2x-16-s"}


def test_index_links_every_page_and_the_readme_links_the_index() -> None:
    index = (DOCS / "index.md").read_text()
    linked = {target.partition("#")[0] for target in LINK.findall(index)}
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert page.name in linked, f"docs/index.md does not link {page.name}"
    assert "docs/index.md" in (ROOT / "README.md").read_text()


# -- the machine diagram --------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["README.md", "docs/concepts.md"])
def test_inline_diagram_is_the_live_definition(page: str) -> None:
    from hybridgen.diagram import render

    assert render("mermaid").strip() in (ROOT / page).read_text(), (
        f"{page}: paste the output of `hybridgen diagram --format mermaid`"
    )


# -- generated parts ------------------------------------------------------------------------------


def test_api_reference_is_generated_from_the_code() -> None:
    fresh = generate.Reference().render()
    assert (DOCS / "api.md").read_text() == fresh, f"docs/api.md is stale: {REGENERATE}"


def test_policy_table_is_generated_from_the_code() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert generate.with_policy_table(text) == text, f"the policy table is stale: {REGENERATE}"
    table = generate.policy_table()
    import attrs

    from hybridgen import Policy

    for field in attrs.fields(Policy):
        assert f"| `{field.name}` |" in table
    assert "| field | `Policy.default()` | `Policy.seed()` |" in table
    assert "| `push_timeout` | 2 s | 30 s |" in table


def test_every_public_name_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text()
    anchors = github_anchors(text)
    sections = re.split(r"^## ", text, flags=re.M)
    for module_name in generate.public_modules():
        assert generate.slug(module_name) in anchors, f"api.md: no section for {module_name}"
        module = importlib.import_module(module_name)  # not only if another test imported it
        (section,) = [s for s in sections if s.startswith(f"`{module_name}`\n")]
        for name in generate.public_names(module):
            documented = generate.slug(f"{module_name}.{name}") in anchors
            listed = f"| `{name}` | [`" in section
            assert documented or listed, f"api.md: {module_name}.{name} is missing; {REGENERATE}"
    for name in hybridgen.__all__:
        assert f"| `{name}` |" in sections[1] or f"### `hybridgen.{name}`" in text, name


def test_every_public_module_is_found() -> None:
    modules = generate.public_modules()
    for expected in (
        "hybridgen",
        "hybridgen.api",
        "hybridgen.diagram",
        "hybridgen.driver",
        "hybridgen.emulator",
        "hybridgen.testing",
        "hybridgen.testing.pytest_plugin",
        "hybridgen.transport",
    ):
        assert expected in modules
    assert "hybridgen.__main__" not in modules
    assert not [m for m in modules if "._" in m]


# -- configuration and command line ---------------------------------------------------------------


def test_every_environment_variable_is_documented() -> None:
    used = set()
    for source in (ROOT / "src").rglob("*.py"):
        used |= set(re.findall(r"\b((?:SUPERDUPERAI|HYBRIDGEN)_[A-Z_]+)\b", source.read_text()))
    assert {"SUPERDUPERAI_URL", "SUPERDUPERAI_TOKEN", "HYBRIDGEN_LOG"} <= used
    table = (DOCS / "configuration.md").read_text()
    for name in sorted(used):
        assert f"| `{name}` |" in table, f"docs/configuration.md does not document {name}"


def test_every_command_and_option_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert isinstance(commands.choices, dict)
    for name, sub in commands.choices.items():
        assert f"## hybridgen {name}" in text, f"docs/cli.md has no section for {name}"
        if name == "bench":  # its options are documented with the benchmarks
            continue
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in text, f"docs/cli.md does not document {name} {option}"
