"""The code stays typed and lint-clean: ``mypy --strict`` and ``ruff``, run as tests; and one
concern per module: none too long, no private name imported from a sibling."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed; pip install -e '.[test]'"
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["ruff", "check", "src", "tests"],
        ["ruff", "format", "--check", "src", "tests"],
        ["mypy", "src"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_clean(args: list[str]) -> None:
    done = subprocess.run(
        [tool(args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


SRC = ROOT / "src" / "hybridgen"
SPLIT: tuple[str, ...] = ("api.py", "config.py", "wire.py", "parse.py", "emulator/*.py")
"""The modules split by concern: none over 600 lines."""


def test_modules_split_by_concern_stay_short() -> None:
    for pattern in SPLIT:
        for path in SRC.glob(pattern):
            lines = len(path.read_text().splitlines())
            assert lines <= 600, f"{path.relative_to(ROOT)}: {lines} lines; split it by concern"


def test_no_private_name_is_imported_across_the_command_line_modules() -> None:
    """What cli/ modules share has a public-in-package name in its one home."""
    crossing = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                crossing += [
                    f"{path.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert not crossing, crossing
