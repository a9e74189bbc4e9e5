"""Bad usage that used to pass silently: exit 2 before any job, naming what is allowed.

``--out`` with a suffix that names no image format, or in a folder that does not exist;
``models --type`` with a type the server does not have; ``generate --model`` with a model that
does not make an image from a prompt (video, edit); ``--help``, usage lines and argparse's own
errors wider than 80 columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cli_support import needs_command, run
from hybridgen.cli import build_parser, main

pytestmark = needs_command


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", ["t.txt", "fox.png.bak", "fox.v2"])
def test_an_out_suffix_that_names_no_format_exits_2(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    proc = run("generate", "a fox", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "which names no image format; use .png, .jpeg, .jpg, .webp, .gif" in flat(proc.stderr)
    assert list(tmp_path.iterdir()) == []


def test_out_in_a_folder_that_does_not_exist_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "fox.png"
    proc = run("generate", "a fox", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert f"names a file in {out.parent}, which does not exist; create it first" in flat(
        proc.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_a_batch_creates_its_directory_but_not_the_folders_above(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    proc = run("generate", "--batch", str(prompts), "--out", str(tmp_path / "no" / "images"))
    assert proc.returncode == 2, proc.stderr
    assert "which does not exist; create it first" in flat(proc.stderr)
    assert not (tmp_path / "no").exists()


def test_models_with_an_unknown_type_exits_2_naming_the_valid_ones() -> None:
    proc = run("models", "--type", "text_to_image,bogus")
    assert proc.returncode == 2, proc.stderr
    assert "--type names 'bogus', which is not a model type; valid types: text_to_image," in flat(
        proc.stderr
    )
    assert proc.stdout == ""
    known = run("models", "--type", "video_to_video")  # documented, none listed: not an error
    assert known.returncode == 0, known.stderr


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("azure-openai/sora", "a text_to_video model: for a video, run hybridgen generate --video"),
        ("comfyui/flux-kontext", "an image_to_image model: it edits a source image"),
    ],
)
def test_a_model_that_makes_no_image_from_a_prompt_is_refused(
    tmp_path: Path, model: str, words: str
) -> None:
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--model", model)
    assert proc.returncode == 2, proc.stderr
    assert f"--model names {model!r}, {words}" in flat(proc.stderr)
    assert not out.exists()


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = {"hybridgen": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


@pytest.mark.parametrize("command", sorted(commands()))
def test_help_and_usage_fit_in_80_columns(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Issue 26 point 6: an option with choices shows one word (``--ws-mode MODE``), its help
    lists them; argparse's usage otherwise printed ``{normal,silent,...}`` lines of 88 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    parser = commands()[command]
    for text in (parser.format_usage(), parser.format_help()):
        assert not [line for line in text.splitlines() if len(line) > 80], text
    if command == "generate":
        assert "--ws-mode MODE" in parser.format_usage()
        assert "one of normal, silent, late" in flat(parser.format_help())


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["batch"], "argument COMMAND: invalid choice: 'batch' (choose from 'generate',"),
        (["generate", "x", "-o", "x.png", "--policy", "nope"], "--policy: invalid choice: 'nope'"),
        (["generate", "x"], "the following arguments are required: --out/-o"),
    ],
)
def test_a_usage_error_fits_in_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert says in flat(err)
    assert not [line for line in err.splitlines() if len(line) > 80], err
