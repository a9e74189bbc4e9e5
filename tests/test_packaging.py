"""The package builds and installs: a wheel from a clean copy of the tree gives a working command.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, with the setuptools of
the test extra) from a copy of the tree without build leftovers, then installed without its
dependencies into a directory of its own, where the ``hybridgen`` command and the pytest plugin
must be found.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Final

import pytest
from packaging.requirements import Requirement

from hybridgen import __version__

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180.0
LEFTOVERS = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.png",
)


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of the tree."""
    base = tmp_path_factory.mktemp("packaging")
    tree = base / "checkout"
    shutil.copytree(ROOT, tree, ignore=LEFTOVERS)
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist"), ".", cwd=tree)
    (built,) = (base / "dist").glob("hybridgen-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """The wheel installed (without dependencies) into a directory of its own."""
    target = wheel.parent.parent / "site"
    pip("install", "--no-deps", "-q", "--target", str(target), str(wheel), cwd=wheel.parent)
    return target


def dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(f"hybridgen-{__version__}.dist-info/{name}").decode()


def test_the_version_is_defined_once() -> None:
    text = (ROOT / "src/hybridgen/_version.py").read_text()
    assert re.search(rf'^__version__ = "{re.escape(__version__)}"$', text, re.M)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "hybridgen._version.__version__"
    hits = [
        p.relative_to(ROOT)
        for p in (ROOT / "src").rglob("*.py")
        if re.search(r"^__version__ = ['\"]", p.read_text(), re.M)
    ]
    assert hits == [Path("src/hybridgen/_version.py")]


def test_wheel_holds_every_module_and_the_typing_marker(wheel: Path) -> None:
    assert wheel.name == f"hybridgen-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "hybridgen/py.typed" in names
    assert "hybridgen/inspector/page.html" in names  # the inspector's page is package data
    assert "hybridgen/emulator/assets/sample.mp4" in names  # the emulator's video result
    for package in ("hybridgen/emulator", "hybridgen/testing"):
        assert f"{package}/__init__.py" in names
    assert "hybridgen/testing/pytest_plugin.py" in names
    assert "hybridgen/emulator/server.py" in names
    source = {
        p.relative_to(ROOT / "src").as_posix()
        for p in (ROOT / "src/hybridgen").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert source <= names, f"missing from the wheel: {sorted(source - names)}"
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]


def test_wheel_metadata(wheel: Path) -> None:
    metadata = email.parser.Parser().parsestr(dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "hybridgen"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    required = set(metadata.get_all("Requires-Dist", []))
    for dependency in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        assert dependency in required
    body = metadata.get_payload()
    assert isinstance(body, str)
    assert body.startswith("# hybridgen"), "the README is the long description"


def test_wheel_entry_points(wheel: Path) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"hybridgen": "hybridgen.cli:main"}
    assert dict(entry_points["pytest11"]) == {"hybridgen": "hybridgen.testing.pytest_plugin"}


def test_installed_wheel_gives_a_working_command(installed: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(installed))
    where = subprocess.run(
        [sys.executable, "-c", "import hybridgen; print(hybridgen.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed), "imported the wrong copy"
    command = installed / "bin" / "hybridgen"
    version = subprocess.run(
        [str(command), "--version"], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"hybridgen {__version__}"
    diagram = subprocess.run(
        [str(command), "diagram", "--format", "mermaid"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert diagram.returncode == 0, diagram.stderr
    assert diagram.stdout.startswith("stateDiagram-v2\n")


def test_installed_wheel_registers_the_pytest_plugin(installed: Path) -> None:
    (dist,) = importlib.metadata.distributions(name="hybridgen", path=[str(installed)])
    assert dist.version == __version__
    plugins = {ep.name: ep.value for ep in dist.entry_points if ep.group == "pytest11"}
    assert plugins == {"hybridgen": "hybridgen.testing.pytest_plugin"}
    assert (installed / "hybridgen" / "py.typed").exists()


BASE: Final = {
    "attrs",
    "transitions",
    "trio",
    "outcome",
    "trio-websocket",
    "wsproto",
    "h11",
    "httpx",
}
"""What ``pip install hybridgen`` asks for: the client alone."""
SERVERS_AND_UI: Final = {"hypercorn", "starlette", "h2", "rich", "pygments", "pillow", "aiohttp"}
"""Distributions of the extras that the base install must never bring, even indirectly."""


def requirements(wheel: Path) -> dict[str, set[str]]:
    """The wheel's ``Requires-Dist`` by extra (``""``: the base install), as written."""
    metadata = email.parser.Parser().parsestr(dist_info(wheel, "METADATA"))
    found: dict[str, set[str]] = {extra: set() for extra in metadata.get_all("Provides-Extra", [])}
    found[""] = set()
    for line in metadata.get_all("Requires-Dist", []):
        requirement = Requirement(line)
        extras = [
            e
            for e in found
            if e and requirement.marker and requirement.marker.evaluate({"extra": e})
        ]
        for extra in extras or [""]:
            found[extra].add(str(requirement).split(";")[0].strip())
    return found


def names(requirements: set[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_the_base_install_is_the_client_alone(wheel: Path) -> None:
    base = requirements(wheel)[""]
    assert names(base) == BASE, base
    assert all(re.search(r">=\d", r) for r in base), f"every dependency has a lower bound: {base}"


def closure(wanted: set[str]) -> set[str]:
    """The distributions ``wanted`` needs, read from what is installed here (offline)."""
    seen: set[str] = set()
    todo = [canonical(n) for n in wanted]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return seen


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_base_install_stays_small() -> None:
    """At most 18 distributions besides hybridgen, pip and setuptools; no server, no UI."""
    needed = closure(BASE)
    assert len(needed) <= 18, sorted(needed)
    assert not needed & SERVERS_AND_UI, sorted(needed & SERVERS_AND_UI)


def test_the_extras_bring_each_feature(wheel: Path) -> None:
    extras = requirements(wheel)
    assert {"cli", "emulator", "inspector", "convert", "testing", "otel", "postgres"} <= set(extras)
    assert names(extras["testing"]) == {"hybridgen", "hypothesis", "pytest", "pytest-trio"}
    assert names(extras["emulator"]) == {"hypercorn", "starlette", "pillow"}
    assert names(extras["inspector"]) == {"hypercorn", "starlette", "anyio", "sniffio"}
    assert names(extras["convert"]) == {"pillow"}
    assert names(extras["otel"]) == {"opentelemetry-api"}
    assert names(extras["postgres"]) == {"psycopg", "psycopg-pool"}
    assert names(extras["cli"]) == {"hybridgen", "rich"}
    assert any(Requirement(r).extras == {"convert", "emulator", "inspector"} for r in extras["cli"])
    assert any(Requirement(r).extras == {"emulator"} for r in extras["testing"])


def test_the_test_extra_pulls_every_extra(wheel: Path) -> None:
    """``pip install -e '.[test]'`` (what .ci/run does) gives the suite everything it imports."""
    extras = requirements(wheel)
    pulled, todo = set(), ["test"]
    while todo:  # the extras named by hybridgen[...] in an extra, and in those, ...
        for r in extras[todo.pop()]:
            if Requirement(r).name == "hybridgen":
                todo += Requirement(r).extras - pulled
                pulled |= Requirement(r).extras
    assert pulled == set(extras) - {"", "test"}
    assert "opentelemetry-sdk" in names(extras["test"])


BLOCK_HYPOTHESIS = """
import sys

sys.modules["hypothesis"] = None  # as if it were not installed

from hybridgen.testing import MemoryTransport, Scenario, check_invariants, run_scenario

check_invariants(run_scenario(Scenario()))
try:
    import hybridgen.testing.strategies
except ImportError as exc:
    print(exc)
else:
    raise SystemExit("hybridgen.testing.strategies imported without Hypothesis")
"""


def test_without_hypothesis_the_strategies_name_the_extra() -> None:
    """``pip install hybridgen`` alone: the harness works, the strategies say what to install."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_HYPOTHESIS],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install 'hybridgen[testing]'" in done.stdout
