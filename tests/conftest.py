"""Shared fixtures: a real emulator on loopback and a real-socket transport talking to it.

The fixtures themselves live in :mod:`hybridgen.testing.pytest_plugin` (installed for users too);
here we only pick the timings of our own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_support import Running, clean_env
from hybridgen.emulator import Emulator
from hybridgen.transport import SuperDuperTransport
from pg_support import Cluster, start_cluster, throwaway_cluster, unavailable

TOKEN = "test-token-123"
TIME_SCALE = 0.02
"""Server-side time scale of the real-socket tests: a 35 s job takes 0.7 s."""


@pytest.fixture
def hybridgen_time_scale() -> float:
    return TIME_SCALE


@pytest.fixture
def hybridgen_token() -> str:
    return TOKEN


@pytest.fixture
def emulator(hybridgen_emulator: Emulator) -> Emulator:
    """A real emulator on a free loopback port (token ``TOKEN``, time scale ``TIME_SCALE``)."""
    return hybridgen_emulator


@pytest.fixture
def real_transport(hybridgen_transport: SuperDuperTransport) -> SuperDuperTransport:
    """A :class:`SuperDuperTransport` for ``emulator``."""
    return hybridgen_transport


@pytest.fixture
def spawn() -> Iterator[Callable[..., Running]]:
    """Start ``hybridgen ARGS`` in the background; every process is killed after the test."""
    started: list[Running] = []

    def spawn(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Running:
        process = Running(*args, env=clean_env() if env is None else env, cwd=cwd)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster | str]:
    """The session's PostgreSQL server (see ``pg_support``), or why there is none."""
    found = start_cluster()
    yield found
    if isinstance(found, Cluster):
        found.stop()


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own, which it may restart (skipped, failed in CI,
    when there is none)."""
    found = throwaway_cluster()
    if isinstance(found, str):
        unavailable(found)
    assert isinstance(found, Cluster)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def postgres(postgres_cluster: Cluster | str) -> Cluster:
    """A real PostgreSQL server; skipped (failed in CI) when there is none."""
    if isinstance(postgres_cluster, str):
        unavailable(postgres_cluster)
    assert isinstance(postgres_cluster, Cluster)
    return postgres_cluster
