"""The base install is the client alone: features of an extra say what to install, and the heavy
modules load when used, not when ``hybridgen`` or its command is imported.

Each check runs in a fresh interpreter: a ``sys.meta_path`` finder makes the extras' modules
missing as if they were not installed, and ``sys.modules`` shows what an import really loaded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Final

import pytest

from cli_support import unwrap

TIMEOUT: Final = 120.0

BLOCK: Final = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

EXTRA_MODULES: Final = (
    "hypercorn",
    "starlette",
    "PIL",
    "rich",
    "anyio",
    "opentelemetry",
    "psycopg",
    "psycopg_pool",
)
"""What none of the base install's distributions provides (anyio comes with httpx, but the
inspector's wait must not be taken for granted)."""


def run(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = BLOCK.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT
    )


def ok(code: str, *, blocked: tuple[str, ...] = ()) -> str:
    done = run(code, blocked=blocked)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("from hybridgen.emulator import running", "emulator"),
        ("import hybridgen.emulator.server", "emulator"),
        ("import hybridgen.inspector", "inspector"),
        ("hybridgen.files.convert_target('png')", "convert"),
        ("import hybridgen.bench.plot", "convert"),
        ("import hybridgen.journal_pg", "postgres"),
        ("import hybridgen.otel", "otel"),
        ("from hybridgen.cli._live import RichReporter; RichReporter()", "cli"),
    ],
)
def test_a_feature_without_its_extra_names_the_extra(code: str, extra: str) -> None:
    out = ok(
        f"""
        import hybridgen.files
        from hybridgen import MissingExtra
        try:
            {code}
        except MissingExtra as exc:
            assert isinstance(exc, ImportError) and isinstance(exc, hybridgen.ConfigError)
            print(exc)
        else:
            raise SystemExit("no MissingExtra")
        """,
        blocked=EXTRA_MODULES,
    )
    assert out.count("\n") == 1, out  # one line
    assert out.rstrip().endswith(f"pip install 'hybridgen[{extra}]'"), out


def test_the_client_runs_without_any_extra() -> None:
    """Every name of ``hybridgen.__all__`` imports, and a generation runs to ``done``."""
    out = ok(
        """
        from hybridgen import *
        import hybridgen
        from hybridgen.emulator import Faults, ServerModel
        from hybridgen.testing import MemoryTransport, run_virtual

        for name in hybridgen.__all__:
            getattr(hybridgen, name)

        async def main():
            async with Client(MemoryTransport(ServerModel(Faults(gen_time=5)))) as client:
                print((await client.generate("a red fox")).state)

        run_virtual(main)
        """,
        blocked=EXTRA_MODULES,
    )
    assert out == "done\n"


def test_a_saved_file_without_pillow_is_checked_by_its_magic_number() -> None:
    """Plain hybridgen saves what the server sent (no conversion asked) without Pillow."""
    out = ok(
        """
        import tempfile
        from pathlib import Path

        import trio
        from hybridgen.files import save

        async def body():
            yield b"\\x89PNG\\r\\n\\x1a\\n" + bytes(64)

        async def main():
            path = Path(tempfile.mkdtemp()) / "x"
            saved = await save(body(), path, url="http://cdn/x")
            print(saved.content_type, Path(saved.path).name)

        trio.run(main)
        """,
        blocked=EXTRA_MODULES,
    )
    assert out == "image/png x.png\n"


def test_the_command_without_the_cli_extra_says_what_to_install(tmp_path: object) -> None:
    """``hybridgen generate`` with no server set needs the embedded emulator: one line, exit 2."""
    done = run(
        f"""
        import os, sys
        os.environ.pop("SUPERDUPERAI_URL", None)
        from hybridgen.cli import main
        sys.exit(main(["generate", "a red fox", "--out", {str(tmp_path)!r} + "/fox"]))
        """,
        blocked=EXTRA_MODULES,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = unwrap(done.stderr.strip())  # one message, wrapped at 80 columns
    assert len(lines) == 1, done.stderr
    assert "pip install 'hybridgen[emulator]'" in lines[0]


HEAVY: Final = (
    "hypercorn",
    "starlette",
    "PIL",
    "rich",
    "httpx",
    "trio_websocket",
    "opentelemetry",
    "hybridgen.emulator.server",
    "hybridgen.driver",
    "hybridgen.transport",
)


def loaded(code: str) -> set[str]:
    out = ok(textwrap.dedent(code) + "\nprint(' '.join(sorted(sys.modules)))\n")
    return set(out.split())


def test_import_hybridgen_loads_almost_nothing() -> None:
    modules = loaded("import hybridgen")
    assert not {m for m in modules if m.split(".")[0] in ("trio", "attrs", "attr", "transitions")}
    assert {m for m in modules if m.startswith("hybridgen")} == {"hybridgen", "hybridgen._version"}


def test_a_name_loads_its_module_and_no_transport() -> None:
    modules = loaded("import hybridgen\nhybridgen.Client\nhybridgen.Policy")
    assert "hybridgen.driver" in modules
    assert not modules & {"httpx", "trio_websocket", "hybridgen.transport"}


def test_the_command_and_its_help_load_no_server_client_or_ui() -> None:
    """``hybridgen --help`` (issue 26): the parser is built without the emulator's server, the
    client, httpx or rich; each command's module loads when that command runs."""
    modules = loaded(
        """
        import contextlib, io
        from hybridgen.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["generate", "--help"])
        """
    )
    assert not {m for m in modules if m.startswith(HEAVY)}, sorted(
        m for m in modules if m.startswith(HEAVY)
    )


def test_help_loads_neither_trio_nor_the_emulators_model() -> None:
    """``hybridgen --help`` (issue 26 point 12): the emulator's switches come from
    ``emulator.faults``; its ``ServerModel`` (and trio with it) load when a command runs."""
    modules = loaded(
        """
        import contextlib, io
        from hybridgen.cli import main
        for argv in (["--help"], ["generate", "--help"], ["serve", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        """
    )
    assert not {m for m in modules if m.split(".")[0] == "trio"}
    assert "hybridgen.emulator.model" not in modules
    assert "hybridgen.emulator.faults" in modules  # the choices of --ws-mode and the like
