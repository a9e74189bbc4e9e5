"""``hybridgen serve``'s CDN and redirect faults, over real sockets: the flags reach the emulator
(its counters say the faults were served) and ``generate`` still saves the image; a flag given
without the one it qualifies, or out of range, is refused naming it (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli_support import (
    assert_png,
    emulator_stats,
    flat,
    json_lines,
    needs_command,
    run,
    serve_emulator,
)

FAST = ("--time-scale", "0.02")
TOKEN = "tok-serve-faults-123"

pytestmark = needs_command


def test_cdn_refusal_and_redirect_to_another_origin_still_save_the_image(
    tmp_path: Path, spawn: Any
) -> None:
    """The result URL names the API's origin, which redirects (307) to the files origin, whose
    first two answers are a CDN's 403: the download follows and retries, and saves it."""
    url, env = serve_emulator(
        spawn, TOKEN, "--file-fault", "403", "--file-faults", "2",
        "--file-redirect", "307", "--file-redirect-to", "origin", *FAST,
    )  # fmt: skip
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--json", *FAST, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["state"] == "done"
    assert_png(out)
    stats = emulator_stats(url, TOKEN)
    assert stats["file_fault"] == 2 and stats["download"] == 1
    assert stats["redirect"] == 3  # every request of the file came by the API's origin


def test_redirected_polls_and_path_hops_are_followed(tmp_path: Path, spawn: Any) -> None:
    """Push silent, so polling delivers: each poll is redirected once (302), and the file
    hops twice on the files origin."""
    url, env = serve_emulator(
        spawn, TOKEN, "--sse-mode", "silent", "--poll-redirect", "302",
        "--file-redirect", "308", "--file-redirect-hops", "2", *FAST,
    )  # fmt: skip
    out = tmp_path / "fox.png"
    proc = run("generate", "a fox", "--out", str(out), "--json", *FAST, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert (result["state"], result["channel"]) == ("done", "polling")
    assert_png(out)
    stats = emulator_stats(url, TOKEN)
    assert stats["download"] == 1 and stats["poll"] >= 1
    assert stats["redirect"] == stats["poll"] + 2


def test_a_redirect_loop_on_the_file_ends_done_but_unsaved(tmp_path: Path, spawn: Any) -> None:
    _, env = serve_emulator(
        spawn, TOKEN, "--file-redirect", "302", "--file-redirect-to", "loop", *FAST
    )
    proc = run("generate", "a fox", "--out", str(tmp_path / "f.png"), "--json", *FAST, env=env)
    assert proc.returncode == 3, proc.stderr
    result = json_lines(proc.stdout)[-1]
    assert result["state"] == "done" and result["saved"] is False and result["url"]
    assert "redirect" in result["reason"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--file-faults", "2"), "--file-faults goes with --file-fault"),
        (("--file-redirect-to", "origin"), "--file-redirect-to goes with --file-redirect"),
        (("--poll-fault-rate", "0.5"), "--poll-fault-rate goes with --poll-fault"),
        (
            ("--file-redirect", "302", "--file-redirect-to", "loop", "--file-redirect-hops", "2"),
            "--file-redirect-hops counts the hops of --file-redirect-to path",
        ),
        (("--file-fault", "403", "--file-faults", "-1"), "--file-faults must be a whole number"),
        (("--file-redirect", "302", "--file-redirect-hops", "101"), "in 0..100, got 101"),
        (("--poll-fault", "503", "--poll-fault-rate", "2"), "--poll-fault-rate must be a"),
        (("--file-fault", "418"), "invalid choice: '418'"),
        (("--poll-redirect", "300"), "invalid choice: '300'"),
    ],
)
def test_bad_fault_flags_are_refused_naming_the_flag(args: tuple[str, ...], says: str) -> None:
    proc = run("serve", "--port", "0", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert says in flat(proc.stderr)


def test_download_retries_name_their_generation(tmp_path: Path, spawn: Any) -> None:
    """Every item's first download is refused (503): each retry line of ``generate --batch
    --json`` and of ``generate --json`` names the generation it retries for (it said ``""``)."""
    url, env = serve_emulator(spawn, TOKEN, "--file-fault", "503", "--file-faults", "1", *FAST)
    (tmp_path / "p.txt").write_text("a fox\na whale\n")
    batch = run(
        "generate", "--batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"),
        "--json", *FAST, env=env,
    )  # fmt: skip
    single = run("generate", "a cat", "--out", str(tmp_path / "cat.png"), "--json", *FAST, env=env)
    for proc, items in ((batch, 2), (single, 1)):
        assert proc.returncode == 0, proc.stderr
        lines = json_lines(proc.stdout)
        ids = {line["id"] for line in lines if line["event"] == "result"}
        retries = [line for line in lines if line["event"] == "retry"]
        assert len(ids) == items
        assert {line["id"] for line in retries if line["what"] == "download"} == ids, retries
    assert emulator_stats(url, TOKEN)["file_fault"] == 3
