"""What ``hybridgen generate --out`` saves: the format ``--out`` asks for, or the file as it is.

The emulator serves WEBP (like today's CDN) from its own files origin; ``--out x.png`` must give a
real PNG, ``--out x`` the WEBP as ``x.webp``, and an HTML error page a failure that keeps the URL.
``--out`` that is not a regular file path is a usage error before any I/O.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from cli_support import (
    assert_png,
    clean_env,
    flat,
    json_lines,
    needs_command,
    run,
    serving,
)

FAST = ("--time-scale", "0.02")
README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = needs_command


def test_the_readme_first_command_saves_a_real_png(tmp_path: Path) -> None:
    line = next(line for line in README.read_text().splitlines() if "saves fox.png" in line)
    command = README.read_text().split(line, 1)[1].strip().splitlines()[0]
    args = shlex.split(command.rsplit("&& .venv/bin/hybridgen ", 1)[1])
    assert args[:1] == ["generate"] and "--out" in args
    # as written, but 50x faster (the embedded job takes 35 s; only timings change)
    proc = run(*args, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_png(tmp_path / "fox.png")


def test_out_without_suffix_keeps_the_format_and_adds_its_suffix(tmp_path: Path) -> None:
    proc = run("generate", "a red fox", "--out", str(tmp_path / "fox"), "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert result["path"] == str(tmp_path / "fox.webp")
    with Image.open(tmp_path / "fox.webp") as image:
        assert image.format == "WEBP"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.webp"]


def test_out_with_another_suffix_converts_to_it(tmp_path: Path) -> None:
    proc = run("generate", "a red fox", "--out", str(tmp_path / "fox.jpg"), "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["path"] == str(tmp_path / "fox.jpg")
    with Image.open(tmp_path / "fox.jpg") as image:
        assert image.format == "JPEG"


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_out_must_be_a_regular_file_path(tmp_path: Path, kind: str) -> None:
    target = {"device": Path("/dev/full"), "fifo": tmp_path / "fifo", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    before = os.stat(target)
    # --gen-time 100: had a generation started, this would not end within the run's timeout
    proc = run("generate", "a red fox", "--out", str(target), "--json", "--gen-time", "100")
    assert proc.returncode == 2, proc.stderr
    assert "--out" in proc.stderr and "regular file" in proc.stderr
    assert proc.stdout == ""
    after = os.stat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (
        stat.S_IFMT(before.st_mode),
        before.st_ino,
    )


# -- against `hybridgen serve --file-mode ...` ----------------------------------------------------


@pytest.fixture(scope="module")
def html_server() -> Iterator[str]:
    with serving("--file-mode", "html", *FAST) as (_, url):
        yield url


def test_an_html_page_is_not_saved_and_the_url_is_kept(tmp_path: Path, html_server: str) -> None:
    env = clean_env(SUPERDUPERAI_URL=html_server, SUPERDUPERAI_TOKEN="any-token")
    proc = run(
        "generate", "a red fox", "--out", str(tmp_path / "fox.png"), "--json", *FAST, env=env
    )
    assert proc.returncode == 3, proc.stderr  # done on the server, not saved: its own code
    result = json_lines(proc.stdout)[-1]
    assert (result["state"], result["path"], result["saved"]) == ("done", None, False)
    assert result["url"].startswith("http://127.0.0.1:") and not result["url"].startswith(
        html_server
    )
    assert "not an image" in flat(proc.stderr) and "HTML" in proc.stderr
    assert list(tmp_path.iterdir()) == []
