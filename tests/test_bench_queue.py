"""``bench queue`` at smoke size against a real PostgreSQL: the report's shape and counts.

Never a timing: the figures are compared in docs/performance.md, not asserted here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pg_support import Cluster, new_database
from test_bench import TIMEOUT, figures_of

pytestmark = pytest.mark.slow

METRICS = ("done", "jobs_per_s", "journal_cpu_ms_per_gen", "round_trips_per_gen",
           "max_loop_stall_ms")  # fmt: skip


def test_smoke_run_reports_every_worker_count_beside_sqlite(postgres: Cluster) -> None:
    dsn = new_database(postgres)
    done = subprocess.run(
        [sys.executable, "-m", "hybridgen.bench", "queue", "--smoke", "--dsn", dsn],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {f["name"]: f for f in figures_of(done.stdout)}
    assert list(figures) == [f"queue.n{n}.{m}" for n in (1, 2, 4) for m in METRICS]
    for n in (1, 2, 4):
        count = figures[f"queue.n{n}.done"]
        assert count["value"] == count["baseline"] == 8  # every job done, on both journals
        for metric in METRICS[1:]:
            f = figures[f"queue.n{n}.{metric}"]
            assert f["value"] is not None and f["baseline"] is not None and f["value"] >= 0, f
        assert figures[f"queue.n{n}.round_trips_per_gen"]["value"] > 0
        assert figures[f"queue.n{n}.journal_cpu_ms_per_gen"]["value"] > 0
    assert "baseline: SQLiteJournal" in done.stderr
    import psycopg

    with psycopg.connect(dsn) as db:  # each round's schema is dropped afterwards
        left = db.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench_%'"
        ).fetchone()
    assert left == (0,)
