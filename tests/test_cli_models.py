"""``hybridgen models`` and ``generate --model``: the server's generation configs, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cli_support import Running, clean_env, emulator_stats, flat, json_lines, needs_command, run
from hybridgen.emulator.model import GENERATION_CONFIGS
from hybridgen.journal import SQLiteJournal

pytestmark = needs_command

TOKEN = "tok-ModelsSecret-7788"
FAST = ("--time-scale", "0.02")


def serve(spawn: Callable[..., Running]) -> tuple[str, dict[str, str]]:
    server = spawn("serve", "--port", "0", "--token", TOKEN, *FAST)
    url = server.line(timeout=15)
    return url, clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=TOKEN)


def stats(url: str) -> dict[str, int]:
    return emulator_stats(url, TOKEN)


def test_models_lists_the_embedded_emulators_configs() -> None:
    proc = run("models", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json_lines(proc.stdout)
    assert [m["name"] for m in listed] == [c["name"] for c in GENERATION_CONFIGS]
    assert set(listed[0]) == {
        "name",
        "label",
        "type",
        "price",
        "vip",
        "durations",
        "max_duration",
        "aspect_ratios",
        "price_per_second",
    }
    table = run("models", "--type", "image_to_image")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "LABEL", "TYPE", "PRICE", "VIP"]
    assert [row.split()[0] for row in rows] == ["comfyui/flux-kontext"]
    assert rows[0].split()[-1] == "yes"  # VIP only
    assert "embedded emulator" in table.stderr


def test_models_against_a_server(spawn: Callable[..., Running]) -> None:
    url, env = serve(spawn)
    proc = run("models", "--json", "--type", "text_to_image", env=env)
    assert proc.returncode == 0, proc.stderr
    assert {m["type"] for m in json_lines(proc.stdout)} == {"text_to_image"}
    assert stats(url)["models"] == 1 and stats(url)["start"] == 0
    wrong = clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN="tok-Wrong-0000")
    rejected = run("models", env=wrong)
    assert rejected.returncode == 2  # a rejected token is bad configuration
    assert "SUPERDUPERAI_TOKEN" in rejected.stderr and "tok-Wrong-0000" not in rejected.stderr


def test_unknown_model_exits_2_naming_close_matches(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve(spawn)
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--model", "comfyui/flx", env=env)
    assert proc.returncode == 2
    assert "--model" in proc.stderr and "'comfyui/flx'" in proc.stderr
    assert "close matches: comfyui/flux" in flat(proc.stderr)
    assert "hybridgen models" in proc.stderr
    assert stats(url)["start"] == 0 and not out.exists()


def test_a_known_model_is_fetched_once_and_used(
    tmp_path: Path, spawn: Callable[..., Running]
) -> None:
    url, env = serve(spawn)
    (tmp_path / "p.txt").write_text("a fox\na cat\n")
    proc = run(
        *("generate", "--batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out")),
        *("--model", "comfyui/sdxl", "--json", "--journal", str(tmp_path / "j.sqlite"), *FAST),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert stats(url)["models"] == 1 and stats(url)["start"] == 2
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    try:
        entries = journal.entries()
    finally:
        journal.close()
    assert [e.request.model for e in entries] == ["comfyui/sdxl", "comfyui/sdxl"]
