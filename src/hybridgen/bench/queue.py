"""The job queue's journal: PostgreSQL beside SQLite, for 1, 2 and 4 workers, in one run.

Each round submits the same jobs to a fresh journal, then runs ``N`` :class:`~hybridgen.worker.
Worker` objects at once in one trio run (each with its own journal object and client, as
separate processes would have; ``concurrency`` jobs each) against one in-memory server (real
clock, short jobs), until no job needs work. Per round:

- ``jobs_per_s``: jobs done and saved per second of the workers' run;
- ``journal_cpu_ms_per_gen``: CPU spent inside the journal per job: every journal call made by
  the client or the worker (on the event loop or in its worker threads, by ``time.thread_time``)
  plus the CPU of the journal's own threads (its writer; PostgreSQL's pool workers);
- ``round_trips_per_gen``: database round trips per job (PostgreSQL: every wait for the server,
  by psycopg's ``Connection.wait``, including ``BEGIN``/``COMMIT`` and the pool's connection
  checks; SQLite: every statement, which is a call into the library, not a trip);
- ``max_loop_stall_ms``: the event loop's longest stall (a 10 ms timer's extra delay, the
  workers' own watch).

Each figure is PostgreSQL's, its baseline the SQLite journal's in the same run (the ratio above 1:
PostgreSQL does better). The PostgreSQL server is ``--dsn``, else ``HYBRIDGEN_TEST_POSTGRES``,
else a throwaway cluster this benchmark starts (``initdb`` in a temporary directory, a unix
socket, no TCP port) and stops; each round uses a schema of its own, dropped afterwards::

    python -m hybridgen.bench queue [--smoke] [--dsn postgresql://...]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..driver import Client
from ..emulator.model import Faults, ServerModel
from ..errors import ConfigError
from ..journal import SQLiteJournal
from ..policy import Policy
from ..testing import MemoryTransport
from ..wire import ImageRequest
from ..worker import Worker
from ._report import Figure, figure

__all__ = ["Round", "run", "summary"]

WORKERS: Final = (1, 2, 4)
"""The worker counts compared."""
CONCURRENCY: Final = 4
"""Jobs each worker runs at once."""
GEN_TIME: Final = 0.05
"""Seconds each job takes on the in-memory server."""
POLICY: Final = Policy.default().scaled(0.05).replace(deadline=60.0)
"""The jobs' timings: today's default at 1/20 (a 0.1 s push wait and poll interval), a long
deadline (a slow round is measured, not failed)."""

_METERED: Final = (
    "begin", "record", "delivered", "undelivered", "fail", "claim", "pending", "flush",
    "submit", "lease_next", "mark_sending", "begin_download", "release", "needs_work",
)  # fmt: skip


@attrs.define
class _Meter:
    """CPU seconds inside journal calls and round trips, counted from any thread."""

    cpu: float = 0.0
    trips: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, cpu: float = 0.0, trips: int = 0) -> None:
        with self.lock:
            self.cpu += cpu
            self.trips += trips

    def wrap(self, journal: Any) -> None:
        """Meter every journal call (an instance attribute shadows each method)."""
        for name in _METERED:
            method = getattr(journal, name, None)
            if method is not None:
                setattr(journal, name, self._metered(method))

    def _metered(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def metered(*args: Any, **kwargs: Any) -> Any:
            before = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.add(cpu=time.thread_time() - before)

        return metered


@attrs.frozen
class Round:
    """One round's measurements."""

    backend: str
    workers: int
    jobs: int
    done: int
    seconds: float
    journal_cpu: float
    round_trips: int
    max_stall: float

    @property
    def jobs_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def per_gen(self, total: float) -> float:
        return total / self.jobs if self.jobs else 0.0


def _journal_threads_cpu(before: set[int]) -> float:
    """CPU seconds of the journal threads started since ``before`` (Linux thread clocks)."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith("hybridgen-journal") and thread.ident not in before:
            with contextlib.suppress(OSError, AttributeError, TypeError):
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
    return total


@contextlib.contextmanager
def _counting_trips(meter: _Meter) -> Iterator[None]:
    """Count every psycopg wait for the server and every SQLite statement while open."""
    from .. import journal as sqlite_module

    connect = sqlite_module._connect

    def traced(path: Path, busy_timeout: float) -> Any:
        db = connect(path, busy_timeout)
        db.set_trace_callback(lambda statement: meter.add(trips=1))
        return db

    sqlite_module._connect = traced
    wait = None
    try:
        import psycopg

        wait = psycopg.Connection.wait

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            meter.add(trips=1)
            return wait(self, *args, **kwargs)

        psycopg.Connection.wait = counted  # type: ignore[method-assign]
    except ImportError:
        pass
    try:
        yield
    finally:
        sqlite_module._connect = connect
        if wait is not None:
            import psycopg

            psycopg.Connection.wait = wait  # type: ignore[method-assign]


def _round(
    backend: str, open_journal: Callable[[], Any], workers: int, jobs: int, out: Path
) -> Round:
    first = open_journal()
    try:
        for i in range(jobs):
            first.submit(ImageRequest(prompt=f"a fox number {i}"), POLICY)
    finally:
        first.close()
    meter = _Meter()
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    model = ServerModel(Faults(gen_time=GEN_TIME))
    with _counting_trips(meter):
        journals = [open_journal() for _ in range(workers)]
        for journal in journals:
            meter.wrap(journal)
        done = 0
        stall = 0.0
        last = 0.0

        def ended(outcome: object) -> None:
            nonlocal last
            last = time.perf_counter()

        async def main() -> float:
            nonlocal done, stall
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(Client(MemoryTransport(model), journal=j))
                    for j in journals
                ]
                runners = [
                    Worker(c, out_dir=out, concurrency=CONCURRENCY, exit_when_idle=True,
                           on_outcome=ended)
                    for c in clients
                ]  # fmt: skip
                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for worker in runners:
                        nursery.start_soon(worker.run)
                seconds = last - t0  # to the last job's end, not the workers' idle exit
            for worker in runners:
                done += worker.summary.outcomes.get("done", 0)
                stall = max(stall, worker.summary.longest_stall)
            return seconds

        try:
            seconds = trio.run(main)
            for journal in journals:
                journal.flush(30)
            cpu = meter.cpu + _journal_threads_cpu(before)
            trips = meter.trips
        finally:
            for journal in journals:
                journal.close(timeout=10)
    return Round(backend, workers, jobs, done, seconds, cpu, trips, stall)


@contextlib.contextmanager
def _throwaway_cluster() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary directory (a unix socket, no TCP port), as
    ``.ci/postgres`` starts one for the tests; its DSN. Stopped and removed afterwards."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    path = os.pathsep.join([str(bindir[-1])] if bindir else []) + os.pathsep + os.environ["PATH"]
    env = {**os.environ, "PATH": path}
    if shutil.which("initdb", path=path) is None:
        raise ConfigError(
            "--dsn",
            "the queue benchmark needs PostgreSQL: give --dsn postgresql://..., set "
            "HYBRIDGEN_TEST_POSTGRES, or install PostgreSQL (initdb) for a throwaway cluster",
        )
    as_owner = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="hgbench."))  # short: a socket path has 107 bytes
    data, log = directory / "data", directory / "log"
    if as_owner:
        shutil.chown(directory, "nobody")
    directory.chmod(0o700)

    def call(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, env=env, capture_output=True, timeout=120)

    try:
        call("initdb", "-D", str(data), "-U", "hybridgen", "--auth=trust", "-E", "UTF8",
             "--no-sync")  # fmt: skip
        options = f"-c listen_addresses='' -k {directory} -c fsync=off -c synchronous_commit=off"
        call("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start")
        try:
            yield f"postgresql://hybridgen@/postgres?host={directory}"
        finally:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                call("pg_ctl", "-D", str(data), "-w", "-t", "30", "-m", "fast", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _postgres(dsn: str | None) -> Iterator[str]:
    given = dsn or os.environ.get("HYBRIDGEN_TEST_POSTGRES")
    if given:
        yield given
        return
    with _throwaway_cluster() as started:
        yield started


def _pg_opener(dsn: str, schemas: list[str]) -> Callable[[], Any]:
    from ..journal_pg import PostgresJournal

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    schemas.append(schema)
    return lambda: PostgresJournal(dsn, schema=schema)


def _drop(dsn: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        for schema in schemas:
            db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def rounds(smoke: bool = False, dsn: str | None = None) -> list[Round]:
    """Every round: SQLite then PostgreSQL for each worker count, one after the other."""
    jobs = 8 if smoke else 160
    measured: list[Round] = []
    with _postgres(dsn) as where, tempfile.TemporaryDirectory() as tmp:
        schemas: list[str] = []
        try:
            for workers in WORKERS:
                path = Path(tmp) / f"queue-{workers}.sqlite"
                sqlite = lambda path=path: SQLiteJournal(path)  # noqa: E731
                for backend, opener in (
                    ("sqlite", sqlite),
                    ("postgres", _pg_opener(where, schemas)),
                ):
                    out = Path(tmp) / f"{backend}-{workers}"
                    measured.append(_round(backend, opener, workers, jobs, out))
        finally:
            _drop(where, schemas)
    return measured


def run(smoke: bool = False, dsn: str | None = None) -> list[Figure]:
    """The figures: per worker count, PostgreSQL's beside SQLite's."""
    found = rounds(smoke, dsn)
    by = {(r.backend, r.workers): r for r in found}
    figures: list[Figure] = []
    for workers in WORKERS:
        pg, lite = by[("postgres", workers)], by[("sqlite", workers)]
        key = f"queue.n{workers}"
        figures += [
            figure(f"{key}.done", pg.done, "jobs", lite.done, higher_is_better=True),
            figure(f"{key}.jobs_per_s", pg.jobs_per_s, "jobs/s", lite.jobs_per_s,
                   higher_is_better=True),
            figure(f"{key}.journal_cpu_ms_per_gen", pg.per_gen(pg.journal_cpu) * 1000, "ms",
                   lite.per_gen(lite.journal_cpu) * 1000),
            figure(f"{key}.round_trips_per_gen", pg.per_gen(pg.round_trips), "round trips",
                   lite.per_gen(lite.round_trips)),
            figure(f"{key}.max_loop_stall_ms", pg.max_stall * 1000, "ms", lite.max_stall * 1000),
        ]  # fmt: skip
    return figures


def summary(figures: list[Figure]) -> str:
    """The reading of the figures: ours is PostgreSQL, the baseline SQLite."""
    return (
        "(ours: PostgresJournal; baseline: SQLiteJournal, same jobs, same in-memory server; "
        f"{CONCURRENCY} jobs per worker at once, {GEN_TIME * 1000:g} ms jobs, ratios within "
        "the same run)"
    )
