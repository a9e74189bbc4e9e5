"""Figures 1 and 2: time to result after ready (D - R) and HTTP requests per generation.

The server marks the result ready at R; the client reaches ``done`` at D. For every scenario two
of our presets, :meth:`Policy.default() <hybridgen.policy.Policy.default>` and
:meth:`Policy.adaptive_default() <hybridgen.policy.Policy.adaptive_default>`, run beside
:meth:`Policy.seed() <hybridgen.policy.Policy.seed>` (the baseline of every figure). Each policy
runs its scenario through ONE :class:`~hybridgen.driver.Client`, so the client's history of
durations (what adaptive polling expects) warms up: the first ``WARMUP`` generations run one after
another and are not counted.

- In virtual time, over :class:`~hybridgen.testing.MemoryTransport` (exact): the measured
  generations also run one after another; the random module (the core's jitter) and the server
  model's fault draws are seeded once per scenario.
- Over real loopback sockets against the emulator (:func:`hybridgen.emulator.running`), every
  timing scaled by ``REAL_SCALE`` (the policy by ``.scaled()``, the emulator by ``time_scale``):
  after the sequential warm-up the measured generations run concurrently, a little staggered;
  these D - R figures are real milliseconds as measured, not scaled back.

Figure 2 counts the HTTP requests (start + polls) each measured generation made, from the same
runs, and (``LOOP_SCENARIOS``, real sockets) beside the hand-written asyncio + aiohttp loop of
:mod:`hybridgen.bench.baseline`, run in a subprocess against an emulator of its own with the same
faults and scale: ``load.real.{scenario}.default_vs_loop.http_requests``. The poll-fault
scenarios (``POLL_FAULT_SCENARIOS``) are issue 25's rows: 503 or 429 with ``Retry-After`` on
half the polls, with the push silent and with today's API. ``ISSUE7`` adds issue 7's
comparison: adaptive polling vs a fixed 2 s poller (the default without ``trust_live_socket``)
on silent-socket jobs of varying duration::

    python -m hybridgen.bench latency [--smoke] [--plot docs/latency.png]

:func:`pooled` measures the poll-fault rows again over many seeds (one seed's D - R median
moves by tenths of a second)::

    python -m hybridgen.bench.latency --pooled 16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final

import attrs
import trio

from ..config import Config
from ..driver import Client, Generation
from ..emulator import running
from ..emulator.model import TODAYS_API, Faults, Job, ServerModel
from ..machine import State
from ..policy import Policy
from ..testing import MemoryTransport, run_virtual
from ..transport import SuperDuperTransport
from ..video import StartRequest, VideoRequest
from ..wire import ImageRequest
from ._report import Figure, emit, figure, percentile

__all__ = [
    "GEN_TIMES",
    "ISSUE7",
    "LOOP_SCENARIOS",
    "POLL_FAULT_SAMPLES",
    "POLL_FAULT_SCENARIOS",
    "POLICIES",
    "REAL_SCALE",
    "SCENARIOS",
    "VIDEO",
    "WARMUP",
    "Sample",
    "issue7",
    "loop_requests",
    "main",
    "pooled",
    "video",
    "real_samples",
    "run",
    "virtual_samples",
]

SCENARIOS: Final = {
    "push_works": Faults(ws_mode="normal", gen_time=35),
    "push_silent": Faults(ws_mode="silent", gen_time=35),
    "push_drops": Faults(ws_mode="drop", ws_drops=1, ws_drop_after=1.0, gen_time=35),
    "push_late": Faults(ws_mode="late", gen_time=25, late_by=6),
    "poll_503": Faults(
        ws_mode="silent", gen_time=35, poll_fault="503", poll_fault_rate=0.5, retry_after=5
    ),
    "poll_429": Faults(
        ws_mode="silent", gen_time=35, poll_fault="429", poll_fault_rate=0.5, retry_after=5
    ),
    "silent_gen5": Faults(ws_mode="silent", gen_time=5),
    "silent_gen90": Faults(ws_mode="silent", gen_time=90),
    "todays_api": TODAYS_API,
    "todays_api_503": TODAYS_API.replace(poll_fault="503", poll_fault_rate=0.5, retry_after=5),
    "todays_api_429": TODAYS_API.replace(poll_fault="429", poll_fault_rate=0.5, retry_after=5),
}
"""The scenarios (``push_silent`` is also the 35 s generation; ``push_late``: ready at 25 s,
pushed at 31 s, after the seed closed its socket). Every generation uses a new project, so
``push_drops`` drops each generation's first socket. ``todays_api`` is the API as it is today: the
legacy socket accepts and stays silent, the SSE stream pushes progress and the result, and each
job takes a duration drawn from :data:`GEN_TIMES` (the seed's 30-40 s); ``todays_api_503`` and
``todays_api_429`` are today's API with ``poll_503``'s and ``poll_429``'s poll faults."""

POLL_FAULT_SCENARIOS: Final = ("poll_503", "poll_429", "todays_api_503", "todays_api_429")
"""Issue 25's rows: half the polls answer 503 or 429 with ``Retry-After: 5``, the push silent
(``poll_*``, polls are all there is) or as today's API pushes (``todays_api_*``)."""

GEN_TIMES: Final = {name: (30.0, 40.0) for name in ("todays_api", *POLL_FAULT_SCENARIOS)}
"""Scenarios whose jobs take durations drawn uniformly from a range (seconds), by a seeded RNG.
The poll-fault rows draw them too: with a fixed 35 s job the seed's polls (30, 32, 34, 36 s)
meet the result exactly 1 s after it is ready every time, a phase luck no real job gives."""

POLL_FAULT_SAMPLES: Final = (4, 2)
"""The poll-fault rows measure this many times the generations (virtual, real): their D - R is
heavy-tailed (a geometric number of refused polls), so a median of 100 moves by tenths of a
second from one seed to the next."""

LOOP_SCENARIOS: Final = ("push_works", "push_silent")
"""Scenarios whose requests per generation are also measured for the hand-written aiohttp loop
(its push is the legacy WebSocket: ``push_works`` pushes on it, ``push_silent`` does not)."""

POLICIES: Final[Mapping[str, Callable[[], Policy]]] = {
    "default": Policy.default,
    "adaptive": Policy.adaptive_default,
    "seed": Policy.seed,
}
"""The compared presets; ``seed`` is the baseline of every figure."""

ISSUE7: Final = ("silent_30_40", Faults(ws_mode="silent"), (30.0, 40.0))
"""Issue 7's case: a silent socket and jobs whose durations are drawn uniformly from this range
(seconds) by a seeded RNG; adaptive polling vs the fixed 2 s poller."""

WARMUP: Final = 3
"""Generations each client runs (one after another) before the measured ones."""
SMOKE_SCENARIOS: Final = ("push_works", "push_silent", "todays_api", "poll_503")
REAL_SCALE: Final = 0.05
"""Real-socket runs: every timing (policy and emulator) times this (20x faster)."""
SMOKE_SCALE: Final = 0.01


def _fox() -> StartRequest:
    return ImageRequest(prompt="a red fox")  # a project of its own each time


VIDEO: Final = (
    {"todays_api": TODAYS_API, "push_silent": Faults(ws_mode="silent", sse_mode="silent")},
    (300.0, 900.0),
)
"""Issue 24's video row: today's API (SSE pushes) and a silent push, with jobs of 5-15 minutes
drawn uniformly by a seeded RNG; :meth:`Policy.video` beside the seed's timings (30 s socket,
then a poll every 2 s) with its 2-minute cap lifted to the video deadline so that it can finish
at all (the seed as it is fails every video: its ``done`` fraction is reported too)."""


def _seed_for_video() -> Policy:
    return Policy.seed().replace(deadline=Policy.video().deadline)


def _fixed_2s() -> Policy:
    return Policy.default().replace(trust_live_socket=False, history_wait=None)


@attrs.frozen
class Sample:
    """One generation's outcome: D - R in seconds (``None`` unless done) and its HTTP requests."""

    after_ready: float | None
    requests: float
    ws_connects: float
    failure: str = ""
    """Why the generation did not end ``done`` (empty when it did)."""


def virtual_samples(
    faults: Faults,
    policy: Policy,
    n: int,
    *,
    seed: int = 0,
    gen_times: Sequence[float] | None = None,
    request: Callable[[], StartRequest] = _fox,
) -> list[Sample]:
    """Run ``WARMUP + n`` generations one after another through one client on the virtual clock.

    Returns the last ``n``. ``seed`` seeds the core's jitter (the random module) and the server
    model's fault draws; ``gen_times``, if given, is each generation's job duration in order
    (``WARMUP + n`` of them), else every job takes ``faults.gen_time``. Each generation sends
    a new ``request()`` (an image, of its own project, by default).
    """
    return run_virtual(partial(_virtual_run, faults, policy, n, seed, gen_times, request))


async def _virtual_run(
    faults: Faults,
    policy: Policy,
    n: int,
    seed: int,
    gen_times: Sequence[float] | None,
    request: Callable[[], StartRequest] = _fox,
) -> list[Sample]:
    random.seed(seed)  # the core's jitter draws from the random module
    model = ServerModel(faults, seed=seed)
    transport = MemoryTransport(model)
    samples: list[Sample] = []
    async with Client(transport, policy=policy) as client:
        for i in range(WARMUP + n):
            if gen_times is not None:
                model.faults = faults.replace(gen_time=gen_times[i])
            before = len(transport.calls)
            async with trio.open_nursery() as nursery:
                gen = await nursery.start(partial(client.start, request()))
            whats = [what for _, what in transport.calls[before:]]
            samples.append(
                attrs.evolve(
                    _sample(gen, model.jobs),
                    requests=whats.count("start") + whats.count("poll"),
                    ws_connects=whats.count("ws_connect"),
                )
            )
    return samples[WARMUP:]


def _request(model: ServerModel, faults: Faults, gen_time: float | None) -> ImageRequest:
    """A request of its own project, whose jobs take ``gen_time`` (if given) on ``model``."""
    request = ImageRequest(prompt="a red fox")
    if gen_time is not None:
        model.project_faults[request.project_id] = faults.replace(gen_time=gen_time)
    return request


async def _one(
    client: Client,
    nursery: trio.Nursery,
    at: float,
    samples: list[Sample],
    emulator_jobs: Mapping[str, Job],
    request: ImageRequest,
) -> None:
    await trio.sleep_until(at)
    gen: Generation = await nursery.start(partial(client.start, request))
    await gen.wait()
    samples.append(_sample(gen, emulator_jobs))


def _sample(gen: Generation, jobs: Mapping[str, Job]) -> Sample:
    job = jobs.get(gen.file_id) if gen.file_id else None
    after = None
    if gen.state is State.DONE and job is not None:
        after = gen.history[-1].monotonic - job.ready_at
    return Sample(after, 0, 0, "" if gen.state is State.DONE else gen.result().reason)


async def _real_policy(
    faults: Faults,
    policy: Policy,
    n: int,
    scale: float,
    stagger: float,
    gen_times: Sequence[float] | None = None,
) -> list[Sample]:
    async with running(faults, time_scale=scale) as emulator:
        config = Config(url=emulator.url, token="bench", allow_insecure=True)
        samples: list[Sample] = []
        model = emulator.model
        times: list[float | None] = list(gen_times) if gen_times else [None] * (WARMUP + n)
        async with Client(SuperDuperTransport(config), policy=policy) as client:
            for i in range(WARMUP):
                await client.start(_request(model, faults, times[i]))
            counts0 = dict(model.counts)
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    request = _request(model, faults, times[WARMUP + i])
                    at = t0 + i * stagger
                    nursery.start_soon(_one, client, nursery, at, samples, model.jobs, request)
        counts = emulator.model.counts
        per_gen = (counts["start"] + counts["poll"] - counts0["start"] - counts0["poll"]) / n
        connects = (counts["ws_connect"] - counts0["ws_connect"]) / n
    # the server's counters are per run; spread them over the samples as a per-generation mean
    return [attrs.evolve(s, requests=per_gen, ws_connects=connects) for s in samples]


def real_samples(
    faults: Faults,
    n: int,
    scale: float,
    stagger: float,
    gen_times: Sequence[float] | None = None,
) -> dict[str, list[Sample]]:
    """Per policy (scaled, each against its own emulator, all at once): ``WARMUP`` generations
    one after another, then ``n`` concurrent ones started ``stagger`` seconds apart (job durations
    from ``gen_times``, before scaling, if given)."""
    result: dict[str, list[Sample]] = {}

    async def main() -> None:
        async def one(name: str) -> None:
            policy = POLICIES[name]().scaled(scale)
            result[name] = await _real_policy(faults, policy, n, scale, stagger, gen_times)

        async with trio.open_nursery() as nursery:
            for name in POLICIES:
                nursery.start_soon(one, name)

    trio.run(main)
    return result


def loop_requests(faults: Faults, n: int, scale: float) -> float | None:
    """HTTP requests (start + polls) per generation of the hand-written aiohttp loop
    (:mod:`hybridgen.bench.baseline`, a subprocess): ``n`` generations at once against an
    emulator of its own with ``faults``, its timings and the loop's scaled by ``scale``.
    ``None`` when aiohttp is not installed (the ``bench`` extra)."""
    if importlib.util.find_spec("aiohttp") is None:
        print("# the aiohttp loop needs the bench extra; its rows are left out", file=sys.stderr)
        return None

    async def main() -> float:
        async with running(faults, time_scale=scale) as emulator:
            argv = [sys.executable, "-m", "hybridgen.bench.baseline", emulator.url, str(n)]
            with trio.fail_after(max(60.0, 300 * scale)):
                done = await trio.run_process(
                    [*argv, repr(scale)], capture_stdout=True, capture_stderr=True, check=False
                )
            if done.returncode != 0:
                raise RuntimeError(f"the aiohttp loop failed: {done.stderr.decode()[-2000:]}")
            report = json.loads(done.stdout.decode().splitlines()[-1])
            if report["states"].get("done", 0) != n:
                print(f"# real loop: not all done: {report['states']}", file=sys.stderr)
            counts = emulator.model.counts
            return float(counts["start"] + counts["poll"]) / n

    return trio.run(main)


def _times(samples: Sequence[Sample]) -> list[float]:
    return [s.after_ready for s in samples if s.after_ready is not None]


def _stats(samples: Sequence[Sample]) -> tuple[float, float, float, int]:
    times = _times(samples)
    reqs = statistics.fmean(s.requests for s in samples) if samples else float("nan")
    if not times:
        return float("nan"), float("nan"), reqs, 0
    return statistics.median(times), percentile(times, 99), reqs, len(times)


def _report_failures(kind: str, scenario: str, runs: Mapping[str, Sequence[Sample]]) -> None:
    for who, samples in runs.items():
        for s in samples:
            if s.failure:
                print(f"# {kind} {scenario} {who}: not done: {s.failure}", file=sys.stderr)


def _mean(samples: Sequence[Sample]) -> float:
    times = _times(samples)
    return statistics.fmean(times) if times else float("nan")


def _compare(
    names: tuple[str, str, str],
    ours: Sequence[Sample],
    base: Sequence[Sample],
    unit: str,
    k: float,
    *,
    mean: bool = False,
) -> list[Figure]:
    """Median and p99 of D - R (``names[0]`` + ``.median``/``.p99``, and ``.mean`` if asked),
    requests per generation (``names[1]``) and the ``done`` fraction (``names[2]``): ours beside
    the baseline."""
    o_med, o_p99, o_req, o_done = _stats(ours)
    b_med, b_p99, b_req, b_done = _stats(base)
    means = [figure(f"{names[0]}.mean", _mean(ours) * k, unit, _mean(base) * k)] if mean else []
    return [
        figure(f"{names[0]}.median", o_med * k, unit, b_med * k),
        *means,
        figure(f"{names[0]}.p99", o_p99 * k, unit, b_p99 * k),
        figure(names[1], o_req, "req/gen", b_req),
        figure(names[2], o_done / len(ours), "fraction", b_done / len(base), higher_is_better=True),
    ]


def _figures(
    kind: str, scenario: str, runs: Mapping[str, Sequence[Sample]], unit: str, k: float
) -> list[Figure]:
    _report_failures(kind, scenario, runs)
    figures: list[Figure] = []
    for who in ("default", "adaptive"):
        key = f"{kind}.{scenario}.{who}"
        names = (f"latency.{key}", f"load.{key}.http_requests", f"done.{key}")
        mean = scenario in POLL_FAULT_SCENARIOS  # heavy-tailed: the mean says more than a median
        figures += _compare(names, runs[who], runs["seed"], unit, k, mean=mean)
    return figures


def _draw(name: str, n: int, seed: int = 7) -> list[float] | None:
    """``n`` job durations for scenario ``name`` (``None``: its fixed ``gen_time``)."""
    if name not in GEN_TIMES:
        return None
    low, high = GEN_TIMES[name]
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(n)]


def issue7(n: int, seed: int = 7) -> list[Figure]:
    """Adaptive vs the fixed 2 s poller (baseline) on silent jobs of uniformly drawn durations."""
    name, faults, (low, high) = ISSUE7
    rng = random.Random(seed)
    gen_times = [rng.uniform(low, high) for _ in range(WARMUP + n)]
    runs = {
        "adaptive": virtual_samples(faults, Policy.adaptive_default(), n, gen_times=gen_times),
        "fixed_2s": virtual_samples(faults, _fixed_2s(), n, gen_times=gen_times),
    }
    _report_failures("virtual", name, runs)
    key = f"issue7.virtual.{name}.adaptive_vs_fixed_2s"
    names = (f"{key}.latency", f"{key}.http_requests", f"{key}.done")
    return _compare(names, runs["adaptive"], runs["fixed_2s"], "s", 1.0)


def video(n: int, seed: int = 7) -> list[Figure]:
    """Issue 24's video row (see :data:`VIDEO`), in virtual time: D - R, requests and ``done``
    per video of :meth:`Policy.video` beside the seed's timings (deadline lifted), and the
    seed's own ``done`` fraction."""
    scenarios, (low, high) = VIDEO
    rng = random.Random(seed)
    gen_times = [rng.uniform(low, high) for _ in range(WARMUP + n)]

    def request() -> StartRequest:
        return VideoRequest(prompt="waves at dusk", model="azure-openai/sora", duration=10)

    figures: list[Figure] = []
    for name, faults in scenarios.items():
        runs = {
            who: virtual_samples(faults, make(), n, gen_times=gen_times, request=request)
            for who, make in (
                ("video", Policy.video),
                ("seed_timings", _seed_for_video),
                ("seed", Policy.seed),
            )
        }
        _report_failures(
            "virtual", f"video.{name}", {k: runs[k] for k in ("video", "seed_timings")}
        )
        key = f"video.virtual.{name}.video_vs_seed_timings"
        names = (f"{key}.latency", f"{key}.http_requests", f"{key}.done")
        figures += _compare(names, runs["video"], runs["seed_timings"], "s", 1.0)
        done = _stats(runs["seed"])[3] / n  # the seed as it is: its 2-minute cap
        figures.append(
            figure(f"video.virtual.{name}.seed.done", done, "fraction", None, higher_is_better=True)
        )
    return figures


def run(smoke: bool = False, plot: str | None = None) -> list[Figure]:
    """Measure figures 1 and 2 in virtual time and over real sockets; optionally draw the plot."""
    names = SMOKE_SCENARIOS if smoke else tuple(SCENARIOS)
    n_virtual = 2 if smoke else 100
    n_real = 2 if smoke else 20
    scale = SMOKE_SCALE if smoke else REAL_SCALE
    stagger = 0.005 if smoke else 0.05
    figures: list[Figure] = []
    plot_rows: list[tuple[str, list[tuple[float, float]]]] = []
    for name in names:
        faults = SCENARIOS[name]
        k_virtual, k_real = POLL_FAULT_SAMPLES if name in POLL_FAULT_SCENARIOS else (1, 1)
        nv, nr = n_virtual * k_virtual, n_real * k_real
        times = _draw(name, WARMUP + max(nv, nr))
        virtual = {
            who: virtual_samples(faults, make(), nv, gen_times=times)
            for who, make in POLICIES.items()
        }
        figures += _figures("virtual", name, virtual, "s", 1.0)
        real = real_samples(faults, nr, scale, stagger, times)
        figures += _figures("real", name, real, "ms", 1e3)
        loop = loop_requests(faults, nr, scale) if name in LOOP_SCENARIOS else None
        if loop is not None:
            ours = _stats(real["default"])[2]
            key = f"load.real.{name}.default_vs_loop.http_requests"
            figures.append(figure(key, ours, "req/gen", loop))
        stats = [_stats(virtual[who]) for who in POLICIES]
        plot_rows.append((name, [(s[0], s[1]) for s in stats]))
    figures += issue7(n_virtual)
    figures += video(2 if smoke else 30)
    if plot:
        from .plot import latency_plot

        latency_plot(plot_rows, plot, series=tuple(POLICIES))
    return figures


def pooled(
    seeds: int = 16, scenarios: Sequence[str] = ("poll_503",), n: int | None = None
) -> list[Figure]:
    """Issue 25's poll-fault rows in virtual time, pooled over ``seeds`` seeds: for each, the
    poll-fault row's generations (jobs of 30-40 s drawn by ``random.Random(7 + seed)``, the
    jitter and the fault draws seeded by ``seed``; seed 0 is :func:`run`'s row). Figures
    ``pooled.virtual.{scenario}.{default,adaptive}.*``: D - R median, mean and p99, requests per
    generation and ``done``, beside the seed. One seed's median moves by tenths of a second: it
    sits where half the first polls after ready are refused. ``n``: generations per seed (default
    the row's, 400). ``poll_429`` is left out by default: in virtual time its rows are
    ``poll_503``'s (a 429 and a 503 with ``Retry-After`` are handled alike)."""
    n = n or 100 * POLL_FAULT_SAMPLES[0]
    figures: list[Figure] = []
    for name in scenarios:
        runs: dict[str, list[Sample]] = {who: [] for who in POLICIES}
        for seed in range(seeds):
            times = _draw(name, WARMUP + n, seed=7 + seed)
            for who, make in POLICIES.items():
                runs[who] += virtual_samples(SCENARIOS[name], make(), n, seed=seed, gen_times=times)
        for who in ("default", "adaptive"):
            key = f"pooled.virtual.{name}.{who}"
            names = (f"latency.{key}", f"load.{key}.http_requests", f"done.{key}")
            figures += _compare(names, runs[who], runs["seed"], "s", 1.0, mean=True)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybridgen.bench.latency --pooled SEEDS``: :func:`pooled`'s figures."""
    parser = argparse.ArgumentParser(prog="python -m hybridgen.bench.latency")
    parser.add_argument(
        "--pooled", type=int, default=16, metavar="SEEDS", help="seeds to pool (default 16)"
    )
    args = parser.parse_args(argv)
    if args.pooled < 1:
        parser.error("--pooled takes a number of seeds >= 1")
    emit(pooled(args.pooled), title=f"# poll faults, virtual, pooled over {args.pooled} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
