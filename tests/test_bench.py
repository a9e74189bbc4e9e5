"""The benchmarks run, at smoke size, and print what they promise: one JSON object per figure.

Only the output's shape is checked, never a timing or a goal: benchmarks are not unit tests, and
this shared 2-core machine makes absolute times noise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hybridgen.bench import BENCHMARKS
from hybridgen.bench._report import figure, percentile, table
from hybridgen.bench.scale import STEP_BOUND

BIN = shutil.which("hybridgen", path=os.path.dirname(sys.executable)) or shutil.which("hybridgen")
KEYS = {"name", "value", "unit", "better", "baseline", "ratio"}
TIMEOUT = 120.0
PREFIXES = {
    "latency": (
        "latency.virtual.",
        "latency.real.",
        "load.virtual.",
        "load.real.",
        "done.",
        "issue7.virtual.",
        "video.virtual.",
    ),
    "scale": ("scale.normal.", "scale.silent."),
    "machine": ("machine.",),
    "events": ("events.sync.", "events.async."),
    "virtual": ("virtual.",),
    "journal": ("journal.lock.",),
    "queue": ("queue.",),
    "replies": ("replies.",),
}
GENERIC = [name for name in BENCHMARKS if name != "queue"]
"""queue needs a PostgreSQL: tests/test_bench_queue.py runs it against the tests' server."""


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [BIN, "bench"] if BIN else [sys.executable, "-m", "hybridgen", "bench"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def figures_of(stdout: str) -> list[dict[str, Any]]:
    lines = stdout.splitlines()
    assert lines, "no figures on stdout"
    out = [json.loads(line) for line in lines]
    for f in out:
        assert set(f) == KEYS, f
        assert isinstance(f["name"], str) and f["name"]
        assert isinstance(f["unit"], str) and f["unit"]
        for key in ("value", "baseline", "ratio"):
            assert f[key] is None or isinstance(f[key], int | float), f
        assert f["better"] in ("lower", "higher"), f
        if f["ratio"] is not None and f["value"] and f["baseline"]:
            ours_over_base = f["value"] / f["baseline"]
            expected = ours_over_base if f["better"] == "higher" else 1 / ours_over_base
            assert f["ratio"] == pytest.approx(expected, rel=1e-4), f  # above 1: ours is better
    names = [f["name"] for f in out]
    assert len(set(names)) == len(names), "a figure name appears twice"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", GENERIC)
def test_smoke_run_prints_one_json_object_per_figure(name: str, tmp_path: Path) -> None:
    plot = tmp_path / f"{name}.png"
    extra = ["--plot", str(plot)] if name in ("latency", "scale") else []
    done = bench(name, "--smoke", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = figures_of(done.stdout)
    for f in figures:
        assert f["name"].startswith(PREFIXES[name]), f["name"]
        assert f["name"] in done.stderr  # the human table names every figure
    if name == "latency":
        names = {f["name"] for f in figures}
        for kind in ("virtual", "real"):
            for who in ("default", "adaptive"):  # each beside the seed, its baseline
                key = f"{kind}.push_silent.{who}"
                assert {
                    f"latency.{key}.median",
                    f"load.{key}.http_requests",
                    f"done.{key}",
                } <= names
        for scenario in ("push_works", "push_silent"):  # beside the hand-written aiohttp loop
            loop = next(
                f
                for f in figures
                if f["name"] == f"load.real.{scenario}.default_vs_loop.http_requests"
            )
            assert loop["baseline"] is not None and loop["baseline"] >= 1  # its start, at least
        for kind in ("virtual", "real"):  # issue 25's poll-fault row, beside the seed
            assert {
                f"latency.{kind}.poll_503.default.median",
                f"load.{kind}.poll_503.default.http_requests",
            } <= names
        assert any(n.startswith("issue7.virtual.") and "http_requests" in n for n in names)
        for scenario in ("todays_api", "push_silent"):  # issue 24's video row
            key = f"video.virtual.{scenario}.video_vs_seed_timings"
            assert {f"{key}.latency.median", f"{key}.http_requests", f"{key}.done"} <= names
    if name == "scale":  # every figure beside the hand-written aiohttp client of the same run
        names = {f["name"] for f in figures}
        for mode in ("normal", "silent"):
            for what in ("client_cpu_per_generation", "lost", "requests_per_generation"):
                assert f"scale.{mode}.n20.{what}" in names
        own = {"task_steps_per_generation", "tasks_per_generation"}  # no asyncio count
        assert all(
            f["baseline"] is not None for f in figures if f["name"].split(".")[-1] not in own
        )
        for mode in ("normal", "silent"):  # the guard: no wake-up loop, no task per change
            steps = next(
                f for f in figures if f["name"] == f"scale.{mode}.n20.task_steps_per_generation"
            )
            assert 0 < steps["value"] < STEP_BOUND, steps
            tasks = next(
                f for f in figures if f["name"] == f"scale.{mode}.n20.tasks_per_generation"
            )
            assert 1 <= tasks["value"] <= 3, tasks
        assert "hybridgen CPU/gen ÷ aiohttp CPU/gen" in done.stderr
        assert "hybridgen task steps/gen" in done.stderr
    if extra:
        with Image.open(plot) as img:
            assert img.format == "PNG" and img.width >= 400


def test_python_dash_m_entry_point_agrees() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hybridgen.bench", "machine", "--smoke"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert [f["name"] for f in figures_of(done.stdout)] == [
        "machine.cpu_per_generation",
        "machine.bytes_per_generation",
    ]


def test_poll_fault_rows_pooled_over_seeds_stand_beside_the_seed() -> None:
    from hybridgen.bench import latency

    figures = latency.pooled(2, ("poll_503",), n=3)
    names = {f["name"]: f for f in figures}
    for who in ("default", "adaptive"):
        key = f"pooled.virtual.poll_503.{who}"
        for name in (f"latency.{key}.median", f"latency.{key}.mean", f"load.{key}.http_requests"):
            assert names[name]["baseline"] is not None, name  # the seed's, pooled the same way
        assert names[f"done.{key}"]["value"] == 1.0
    with pytest.raises(SystemExit):
        latency.main(["--pooled", "0"])


def test_unknown_benchmark_is_a_usage_error() -> None:
    done = bench("nope")
    assert done.returncode == 2
    assert "unknown benchmark 'nope'" in done.stderr
    assert done.stdout == ""


def test_figure_ratio_means_better_above_one() -> None:
    assert figure("t", 2.0, "s", 6.0)["ratio"] == 3.0
    assert figure("r", 2.0, "1/s", 6.0, higher_is_better=True)["ratio"] == pytest.approx(1 / 3)
    assert figure("z", 0.0, "s", 0.0)["ratio"] == 1.0
    assert figure("u", 0.0, "s", 1.0)["ratio"] is None
    assert figure("n", float("nan"), "s", 1.0)["value"] is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert figure("t", 2.0, "s", 6.0)["better"] == "lower"
    assert figure("r", 2.0, "1/s", 6.0, higher_is_better=True)["better"] == "higher"


def test_the_table_states_each_figures_direction() -> None:
    text = table(
        [figure("time.t", 2.0, "s", 6.0), figure("rate.r", 2.0, "1/s", 6.0, higher_is_better=True)]
    )
    header, lower, higher = text.splitlines()
    assert header.split()[:5] == ["figure", "ours", "baseline", "unit", "better"]
    assert "ratio (above 1: ours is better)" in header
    assert lower.split() == ["time.t", "2", "6", "s", "lower", "3x"]
    assert higher.split() == ["rate.r", "2", "6", "1/s", "higher", "0.333x"]


def test_scale_summary_sets_drain_requests_and_flatness_beside_the_loop() -> None:
    from hybridgen.bench.scale import summary

    figures = []
    for n, ours, base in ((1000, 2.0, 2.5), (5000, 2.2, 2.4)):
        key = f"scale.silent.n{n}"
        figures += [
            figure(f"{key}.client_cpu_per_generation", ours, "ms", base),
            figure(f"{key}.drain", 10.0 * n / 1000, "s", 8.0 * n / 1000),
            figure(f"{key}.requests_per_generation", 3.0, "requests", 2.5),
            figure(f"{key}.lost", 0, "generations", 0 if n == 1000 else 2498),
        ]
    text = summary(figures)
    assert "scale.silent.n1000: 0.80x, drain 10s / 8s (1.25x), requests/gen 3 / 2.5" in text
    assert "scale.silent.n5000: 0.92x, drain 50s / 40s (1.25x)" in text
    assert "LOST 0 / 2498: the CPU per generation is not like for like" in text
    assert text.count("LOST") == 1  # none lost at 1,000
    assert "flat in N (silent): hybridgen CPU/gen at N=5000 ÷ at N=1000: 1.10x" in text
