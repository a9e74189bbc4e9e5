"""A real PostgreSQL server for the tests: the one .ci/run started, or a throwaway cluster.

``HYBRIDGEN_TEST_POSTGRES`` (a DSN) names a running server (``HYBRIDGEN_TEST_POSTGRES_DIR``, its
cluster directory, is informative: it is shared by every test process, so no test restarts it).
Without it, a cluster is started by ``.ci/postgres`` in a temporary directory when ``initdb`` is
there. A test that restarts its server gets a cluster of its own (:func:`throwaway_cluster`). In
CI (``CI=true``) a test that has neither fails instead of being skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "postgres"


def _initdb() -> bool:
    if shutil.which("initdb"):
        return True
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


class Cluster:
    """A PostgreSQL server; :meth:`schema` gives each test its own tables."""

    def __init__(self, dsn: str, directory: Path | None, owned: bool) -> None:
        self.dsn = dsn
        self.directory = directory
        self.owned = owned

    @staticmethod
    def schema() -> str:
        """A fresh schema name (hybridgen creates it)."""
        return f"t_{uuid.uuid4().hex[:12]}"

    def restart(self) -> None:
        """``pg_ctl restart`` (fast): every connection is cut. Only a cluster of the test's own
        (:func:`throwaway_cluster`, the ``own_postgres`` fixture) may be restarted."""
        if not self.owned:
            raise AssertionError("restarting the shared server would cut other tests' connections")
        if self.directory is None:
            pytest.skip("HYBRIDGEN_TEST_POSTGRES_DIR is not set: cannot restart the server")
        subprocess.run([str(SCRIPT), "restart", str(self.directory)], check=True, timeout=60)

    def stop(self) -> None:
        if self.owned and self.directory is not None:
            subprocess.run([str(SCRIPT), "stop", str(self.directory)], check=False, timeout=60)
            shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster() -> Cluster | str:
    """The server to test against, or why there is none."""
    dsn = os.environ.get("HYBRIDGEN_TEST_POSTGRES")
    if dsn:
        directory = os.environ.get("HYBRIDGEN_TEST_POSTGRES_DIR")
        return Cluster(dsn, Path(directory) if directory else None, owned=False)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return throwaway_cluster()


def throwaway_cluster() -> Cluster | str:
    """A new cluster of its own in a temporary directory (stopped by :meth:`Cluster.stop`), or
    why there is none: for a test that restarts its server, which would cut the connections of
    every other test process sharing the session's server."""
    if not _initdb():
        return "no PostgreSQL here: install Debian's postgresql or set HYBRIDGEN_TEST_POSTGRES"
    directory = Path(tempfile.mkdtemp(prefix="hgpg."))  # short: a socket path has 107 bytes
    try:
        out = subprocess.run(
            [str(SCRIPT), "start", str(directory)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        return f"could not start a PostgreSQL cluster with {SCRIPT}: {exc}"
    return Cluster(out.strip().splitlines()[-1], directory, owned=True)


def unavailable(reason: str) -> None:
    """Skip, or fail in CI: in CI no PostgreSQL test is skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


def new_database(cluster: Cluster) -> str:
    """A fresh, empty database on ``cluster``: its ``postgresql://`` URL."""
    import urllib.parse

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(cluster.dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until ``check()`` is true, asking every 50 ms, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)
