"""Every shell command in the docs runs as written.

Each ``bash``, ``sh`` and ``console`` block of README.md and docs/*.md is run by bash in a fresh
temporary directory that looks like a checkout (``pyproject.toml``, ``src``, ``.ci``), with no
``SUPERDUPERAI_*`` or ``HYBRIDGEN_*`` variables and ``COLUMNS=80``; a ``bash``/``sh`` block must
exit 0, and in a ``console`` block every ``$`` command must exit 0 and print the lines shown
under it (numbers, ports and file ids may differ; a ``…`` line stands for lines left out).

- A block that creates a venv (``python3 -m venv``) starts with no ``hybridgen`` on ``PATH``:
  it must make the command callable the way the page's later blocks call it. Other blocks run as
  a reader who followed the quickstart would: ``hybridgen`` on ``PATH``.
- ``python3 -m venv DIR`` makes a venv without pip that sees this test's installed packages, and
  its ``pip install`` checks what is installed (``.`` from a checkout or ``hybridgen``, with
  extras the package has) instead of downloading it, then adds the ``hybridgen`` command.
- A block after an HTML comment ``<!-- needs: token -->`` (or ``network``, …) needs a real
  server: it is checked by ``bash -n``, and each ``hybridgen``/``python -m`` command in it by its
  own argument parser (the flags it uses are accepted). So are benchmarks (``hybridgen bench``,
  ``python -m hybridgen.bench…``: minutes each; tests/test_bench.py runs their ``--smoke``).
- ``bash .ci/run`` is the suite itself (this test runs inside it): checked by ``bash -n``.
- ``hybridgen serve`` in a console block keeps running while the block's later commands run,
  then gets Ctrl-C (SIGINT) and must exit 0.

Blocks run side by side (the generations against the embedded emulator take 35 s each); a bash
block made only of ``hybridgen`` commands runs them side by side too, each in its own directory.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import io
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import tomllib
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hybridgen.cli import main as hybridgen_main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|console)\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"<!--\s*needs:\s*([^>]*?)\s*-->\s*\Z")
DEADLINE = 150.0
"""Seconds a block may take (a generation against the embedded emulator takes 35 s)."""
CHECKOUT = ("pyproject.toml", "src", ".ci", "README.md")
SEPARATORS = {"&&", "||", ";", "|", "&", "\n"}


@dataclass
class Block:
    """One fenced shell block of a page."""

    page: str
    line: int
    lang: str
    text: str
    needs: str
    commands: list[str] = field(default_factory=list)
    outputs: list[list[str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def logical_lines(text: str) -> list[str]:
    """The block's command lines: continuations joined, blank and comment lines dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def parse_blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n")
            needs = NEEDS.search(before)
            block = Block(
                page=page.relative_to(ROOT).as_posix(),
                line=text[: match.start()].count("\n") + 1,
                lang=match.group(1),
                text=match.group(2),
                needs=needs.group(1) if needs else "",
            )
            if block.lang == "console":
                for line in block.text.splitlines():
                    if line.startswith("$ "):
                        block.commands.append(line[2:])
                        block.outputs.append([])
                    elif block.outputs:
                        block.outputs[-1].append(line)
            else:
                block.commands = logical_lines(block.text)
            found.append(block)
    return found


BLOCKS = parse_blocks()


# -- reading commands -----------------------------------------------------------------------------


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, leading ``NAME=value`` assignments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            commands.append([])
        elif commands[-1] or not re.fullmatch(r"[A-Za-z_]\w*=.*", token):
            commands[-1].append(token)
    return [command for command in commands if command]


def program(words: list[str]) -> tuple[str, list[str]] | None:
    """``("hybridgen", args)`` or ``(module, args)`` for ``python -m module``; else None."""
    if Path(words[0]).name == "hybridgen":
        return "hybridgen", words[1:]
    python = Path(words[0]).name in {"python", "python3"} and words[1:2] == ["-m"]
    if python and len(words) > 2 and words[2].startswith("hybridgen"):
        return words[2], words[3:]
    return None


def is_bench(words: list[str]) -> bool:
    found = program(words)
    return found is not None and (
        found[0].startswith("hybridgen.bench")
        or (found[0] == "hybridgen" and found[1][:1] == ["bench"])
    )


def is_suite(words: list[str]) -> bool:
    return words[:2] == ["bash", ".ci/run"]


FLAGS_LOCK = threading.Lock()
"""Checking flags patches argparse and redirects stdio: one check at a time."""


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once the arguments parsed."""


def flags_problem(words: list[str]) -> str | None:
    """Why the command's own parser refuses its arguments, or None when it accepts them."""
    found = program(words)
    if found is None:
        return None
    with FLAGS_LOCK:
        return _parse_only(*found)


def _parse_only(name: str, args: list[str]) -> str | None:
    errors = io.StringIO()
    argv = sys.argv
    original = argparse.ArgumentParser.parse_args

    def parse(self: argparse.ArgumentParser, *a: object, **k: object) -> object:
        original(self, *a, **k)  # type: ignore[arg-type]
        raise _Parsed

    try:
        argparse.ArgumentParser.parse_args = parse  # type: ignore[assignment,method-assign]
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            if name == "hybridgen":
                hybridgen_main(args)
            else:
                sys.argv = [name, *args]  # what `python -m` runs: the module's main()
                importlib.import_module(name).main(args)
    except _Parsed:
        return None
    except SystemExit as exit:
        return None if exit.code in (0, None) else f"exit {exit.code}: {errors.getvalue()}"
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        sys.argv = argv
    return "ran without parsing its arguments"


# -- the environment ------------------------------------------------------------------------------


PYTHON3_SHIM = """#!{python}
import os, shutil, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "venv"] and len(args) > 2:
    target = args[-1]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target], check=True)
    {make_venv}
    sys.exit(0)
if args[:2] == ["-m", "pip"]:
    sys.exit("python3 -m pip (docs test): not in a venv: this would install into the system Python")
rest = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != {shims!r})
real = shutil.which("python3", path=rest)
os.execv(real, [real, *args])
"""

MAKE_VENV = """
import pathlib, sysconfig
venv = pathlib.Path(target).resolve()
site = venv / pathlib.Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
site.mkdir(parents=True, exist_ok=True)
(site / "_docs_test.pth").write_text("import site; site.addsitedir(%r)\\n" % {site!r})
pip = venv / "bin" / "pip"
pip.write_text({pip!r}.replace("@PYTHON@", str(venv / "bin" / "python")))
pip.chmod(0o755)
(venv / "bin" / "pip3").symlink_to("pip")
"""

PIP_SHIM = """#!@PYTHON@
import pathlib, re, sys
EXTRAS = {extras!r}
SCRIPT = "#!%s\\nimport sys\\nfrom {module} import {function}\\nsys.exit({function}())\\n"
args = sys.argv[1:]
if args[:1] != ["install"]:
    sys.exit("pip (docs test): only `pip install` is known, not %r" % args)
specs = [a for a in args[1:] if a not in ("-q", "--quiet", "-e", "--editable", "-U", "--upgrade")]
if len(specs) != 1 or any(a.startswith("-") for a in specs):
    sys.exit("pip (docs test): one package expected after the options, got %r" % specs)
match = re.fullmatch(r"(\\.|hybridgen)(?:\\[([\\w,-]+)\\])?", specs[0])
if match is None:
    sys.exit("pip (docs test): %r is neither `.` nor `hybridgen`" % specs[0])
if match.group(1) == "." and 'name = "hybridgen"' not in pathlib.Path("pyproject.toml").read_text():
    sys.exit("pip (docs test): `.` is not a hybridgen checkout here")
unknown = set((match.group(2) or "").split(",")) - set(EXTRAS) - {{""}}
if unknown:
    sys.exit("pip (docs test): hybridgen has no extra %s" % sorted(unknown))
command = pathlib.Path(sys.executable).parent / "hybridgen"
command.write_text(SCRIPT % sys.executable)
command.chmod(0o755)
"""


@dataclass
class Shell:
    """The environment blocks run in: the shims, and a reader's venv with ``hybridgen``."""

    root: Path
    shims: Path
    reader: Path

    def checkout(self) -> Path:
        """A fresh directory that looks like a checkout of the project."""
        where = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))  # blocks run side by side
        for name in CHECKOUT:
            (where / name).symlink_to(ROOT / name)
        return where

    def env(self, with_hybridgen: bool) -> dict[str, str]:
        own = Path(sys.executable).parent
        path = [
            p
            for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and Path(p) != own and not (Path(p) / "hybridgen").exists()
        ]
        path.insert(0, str(self.shims))
        if with_hybridgen:
            path.insert(0, str(self.reader / "bin"))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SUPERDUPERAI_", "HYBRIDGEN_", "PYTEST_"))
            and k not in {"VIRTUAL_ENV", "PYTHONPATH"}
        }
        env.update(PATH=os.pathsep.join(path), COLUMNS="80")
        if with_hybridgen:
            env["VIRTUAL_ENV"] = str(self.reader)
        return env


def make_shell(root: Path) -> Shell:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, function = project["scripts"]["hybridgen"].split(":")
    pip = PIP_SHIM.format(
        extras=sorted(project["optional-dependencies"]), module=module, function=function
    )
    make_venv = MAKE_VENV.format(site=sysconfig.get_path("purelib"), pip=pip)
    shims = root / "shims"
    shims.mkdir()
    python3 = shims / "python3"
    python3.write_text(
        PYTHON3_SHIM.format(
            python=sys.executable,
            make_venv=make_venv.strip().replace("\n", "\n    "),
            shims=str(shims),
        )
    )
    python3.chmod(0o755)
    for name in ("pip", "pip3", "python"):  # outside a venv: never the system's
        shim = shims / name
        shim.write_text(f"#!/bin/sh\necho '{name} (docs test): not in a venv' >&2\nexit 127\n")
        shim.chmod(0o755)
    shell = Shell(root=root, shims=shims, reader=root / "reader")
    setup = f"python3 -m venv {shell.reader} && {shell.reader}/bin/pip install -q '.[cli]'"
    subprocess.run(
        ["bash", "-ec", setup], cwd=shell.checkout(), env=shell.env(False), check=True, timeout=60
    )
    return shell


# -- running blocks -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What running one block did: a problem per failed command, what each command printed."""

    problems: list[str] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)


def run(script: str, cwd: Path, env: dict[str, str]) -> tuple[int | None, str]:
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        return None, str(expired.output or "")
    return done.returncode, done.stdout


def creates_venv(block: Block) -> bool:
    return any(
        program(w) is None and w[1:3] == ["-m", "venv"]
        for c in block.commands
        for w in simple_commands(c)
    )


def calls_bare_hybridgen_later(block: Block) -> bool:
    later = [b for b in BLOCKS if b.page == block.page and b.line > block.line]
    return any(w[0] == "hybridgen" for b in later for c in b.commands for w in simple_commands(c))


def checked_only(block: Block) -> Outcome:
    """A block that needs a real server: its syntax and its commands' flags."""
    outcome = Outcome()
    syntax = subprocess.run(
        ["bash", "-n"], input="\n".join(block.commands), text=True, capture_output=True
    )
    if syntax.returncode:
        outcome.problems.append(f"bash -n: {syntax.stderr}")
    for command in block.commands:
        for words in simple_commands(command):
            problem = flags_problem(words)
            if problem:
                outcome.problems.append(f"{command!r}: {problem}")
    return outcome


def prepared(command: str) -> tuple[str, list[str]]:
    """The command as bash runs it here, and the flag problems of what is only checked."""
    problems = []
    for words in simple_commands(command):
        if is_bench(words) and (problem := flags_problem(words)):
            problems.append(f"{command!r}: {problem}")
    words_list = simple_commands(command)
    if any(is_suite(w) for w in words_list):
        return "bash -n .ci/run", problems
    if any(is_bench(w) for w in words_list):
        return "true", problems
    return command, problems


def run_script(block: Block, shell: Shell) -> Outcome:
    outcome = Outcome()
    lines = []
    for command in block.commands:
        line, problems = prepared(command)
        outcome.problems += problems
        lines.append(line)
    venv = creates_venv(block)
    if venv and calls_bare_hybridgen_later(block):
        lines.append("hybridgen --version >/dev/null  # the page's next blocks call `hybridgen`")
    env = shell.env(with_hybridgen=not venv)
    alone = all(
        program(w) == ("hybridgen", w[1:]) for c in block.commands for w in simple_commands(c)
    )
    scripts = lines if alone and len(lines) > 1 else ["\n".join(lines)]
    with ThreadPoolExecutor(len(scripts)) as pool:
        results = list(pool.map(lambda s: (s, *run(s, shell.checkout(), env)), scripts))
    for script, code, printed in results:
        outcome.printed.append(printed)
        if code != 0:
            outcome.problems.append(f"exit {code}: {script}\n{printed}")
    return outcome


def normal(text: str) -> list[str]:
    """Lines with numbers, ids and runs of spaces made alike."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"\d+(?:\.\d+)?", "#", text)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def missing_lines(shown: list[str], printed: str) -> list[str]:
    have = set(normal(printed))
    return [line for line in shown if line.strip() not in ("", "…") and normal(line)[0] not in have]


def run_console(block: Block, shell: Shell) -> Outcome:
    outcome = Outcome()
    cwd, env = shell.checkout(), shell.env(with_hybridgen=True)
    with contextlib.ExitStack() as stack:
        servers: list[tuple[subprocess.Popen[bytes], list[str], str]] = []
        for command, shown in zip(block.commands, block.outputs, strict=True):
            words = simple_commands(command)
            if words and words[0][:2] == ["hybridgen", "serve"]:
                stack.enter_context(port_lock(words[0]))
                server = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                stack.callback(server.kill)
                first = first_line(server)
                if not first:
                    outcome.problems.append(f"{command!r} printed no URL in {DEADLINE} s")
                    return outcome
                servers.append((server, shown, first))
                continue
            code, printed = run(command, cwd, env)
            outcome.printed.append(printed)
            if code != 0:
                outcome.problems.append(f"exit {code}: {command}\n{printed}")
            elif missing := missing_lines(shown, printed):
                outcome.problems.append(
                    f"{command!r} did not print {missing}; it printed:\n{printed}"
                )
        for server, shown, first in servers:
            server.send_signal(signal.SIGINT)
            try:
                rest, _ = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                outcome.problems.append(f"{server.args} did not stop on SIGINT in 30 s")
                continue
            printed = first + rest.decode()
            if server.returncode != 0:
                outcome.problems.append(
                    f"{server.args} exited {server.returncode} on SIGINT:\n{printed}"
                )
            elif missing := missing_lines(shown, printed):
                outcome.problems.append(
                    f"{server.args} did not print {missing}; it printed:\n{printed}"
                )
    return outcome


@contextlib.contextmanager
def port_lock(words: list[str]) -> Iterator[None]:
    """Hold the machine-wide lock of the port a ``serve --port N`` binds: two runs of this suite
    at once (on a shared machine) take turns; each holder ends within its block's deadlines."""
    port = words[words.index("--port") + 1] if "--port" in words else "default"
    with open(Path(tempfile.gettempdir()) / f"hybridgen-docs-port-{port}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def first_line(process: subprocess.Popen[bytes]) -> str:
    """What the process printed up to its first newline (empty if nothing by the deadline)."""
    assert process.stdout is not None
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in seen and selector.select(DEADLINE):
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen.decode() if b"\n" in seen else ""


def run_block(block: Block, shell: Shell) -> Outcome:
    try:
        return run_block_unguarded(block, shell)
    except Exception:  # one block's error is its test's failure, not the fixture's
        return Outcome(problems=[traceback.format_exc()])


def run_block_unguarded(block: Block, shell: Shell) -> Outcome:
    if block.needs:
        return checked_only(block)
    if block.lang == "console":
        return run_console(block, shell)
    return run_script(block, shell)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every block run once, side by side (blocks that are only checked run first, here)."""
    root = tmp_path_factory.mktemp("docs-commands")
    shell = make_shell(root)
    checked = {b.name: checked_only(b) for b in BLOCKS if b.needs}
    ran = [b for b in BLOCKS if not b.needs]
    with ThreadPoolExecutor(max(1, len(ran))) as pool:
        results = dict(
            zip((b.name for b in ran), pool.map(lambda b: run_block(b, shell), ran), strict=True)
        )
    yield checked | results
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_docs_command_runs_as_written(block: Block, outcomes: dict[str, Outcome]) -> None:
    problems = outcomes[block.name].problems
    assert not problems, f"{block.name} ({block.lang} block):\n" + "\n".join(problems)


def test_every_shell_block_is_found() -> None:
    by_page = {b.page for b in BLOCKS}
    assert {"README.md", "docs/quickstart.md", "docs/cli.md", "docs/troubleshooting.md"} <= by_page
    assert all(b.commands for b in BLOCKS), [b.name for b in BLOCKS if not b.commands]


@pytest.mark.parametrize(
    ("words", "refused"),
    [
        (["hybridgen", "generate", "x", "--out", "x.png"], False),
        (["hybridgen", "generate", "x", "--no-such-flag"], True),
        (["python", "-m", "hybridgen.bench.scale", "--sizes", "100"], False),
        (["python", "-m", "hybridgen.bench.scale", "--no-such-flag"], True),
        (["hybridgen", "--help"], False),
    ],
)
def test_flags_are_checked_by_the_commands_own_parser(words: list[str], refused: bool) -> None:
    assert (flags_problem(words) is not None) is refused
