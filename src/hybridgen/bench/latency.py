"""Figures 1 and 2: time to result after ready (D - R) and HTTP requests per generation.

The server marks the result ready at R; the client reaches ``done`` at D. For every scenario our
default policy runs beside :meth:`Policy.seed() <hybridgen.policy.Policy.seed>` (the baseline):

- in virtual time, over :class:`~hybridgen.testing.MemoryTransport` (exact; the default policy's
  jitter makes D - R a distribution, so several random seeds give its median and p99);
- over real loopback sockets against the emulator (:func:`hybridgen.emulator.running`), every
  timing scaled by ``REAL_SCALE`` (the policy by ``.scaled()``, the emulator by ``time_scale``);
  these D - R figures are real milliseconds as measured, not scaled back.

Figure 2 counts the HTTP requests (start + polls) each generation made, from the same runs::

    python -m hybridgen.bench latency [--smoke] [--plot docs/latency.png]
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Final

import attrs
import trio

from ..api import Config, ImageRequest
from ..driver import Client, Generation
from ..emulator import running
from ..emulator.model import Faults, Job, ServerModel
from ..machine import State
from ..policy import Policy
from ..testing import MemoryTransport, run_virtual
from ..transport import SuperDuperTransport
from ._report import Figure, figure, percentile

__all__ = ["REAL_SCALE", "SCENARIOS", "Sample", "real_samples", "run", "virtual_samples"]

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
}
"""The scenarios (``push_silent`` is also the 35 s generation; ``push_late``: ready at 25 s,
pushed at 31 s, after the seed closed its socket)."""

SMOKE_SCENARIOS: Final = ("push_works", "push_silent")
REAL_SCALE: Final = 0.05
"""Real-socket runs: every timing (policy and emulator) times this (20x faster)."""
SMOKE_SCALE: Final = 0.01
POLICIES: Final = {"ours": Policy.default, "seed": Policy.seed}


@attrs.frozen
class Sample:
    """One generation's outcome: D - R in seconds (``None`` unless done) and its HTTP requests."""

    after_ready: float | None
    requests: float
    ws_connects: float
    failure: str = ""
    """Why the generation did not end ``done`` (empty when it did)."""


def virtual_samples(faults: Faults, policy: Policy, seeds: int) -> list[Sample]:
    """Run the scenario once per random seed on the virtual clock.

    Each seed drives both the core's jitter and the server model's fault draws (a poll fault
    rate below 1), so the runs differ in both.
    """
    return [run_virtual(partial(_virtual_one, faults, policy, seed)) for seed in range(seeds)]


async def _virtual_one(faults: Faults, policy: Policy, seed: int) -> Sample:
    random.seed(seed)  # the core's jitter draws from the random module
    model = ServerModel(faults, seed=seed)
    transport = MemoryTransport(model)
    async with Client(transport, policy=policy) as client, trio.open_nursery() as nursery:
        gen = await nursery.start(partial(client.start, ImageRequest(prompt="a red fox")))
        await gen.wait()
    whats = [what for _, what in transport.calls]
    sample = _sample(gen, model.jobs)
    return attrs.evolve(
        sample,
        requests=whats.count("start") + whats.count("poll"),
        ws_connects=whats.count("ws_connect"),
    )


async def _one(
    client: Client,
    nursery: trio.Nursery,
    at: float,
    samples: list[Sample],
    emulator_jobs: Mapping[str, Job],
) -> None:
    await trio.sleep_until(at)
    gen: Generation = await nursery.start(partial(client.start, ImageRequest(prompt="a red fox")))
    await gen.wait()
    samples.append(_sample(gen, emulator_jobs))


def _sample(gen: Generation, jobs: Mapping[str, Job]) -> Sample:
    job = jobs.get(gen.file_id) if gen.file_id else None
    after = None
    if gen.state is State.DONE and job is not None:
        after = gen.history[-1].monotonic - job.ready_at
    return Sample(after, 0, 0, "" if gen.state is State.DONE else gen.result().reason)


async def _real_policy(
    faults: Faults, policy: Policy, n: int, scale: float, stagger: float
) -> list[Sample]:
    async with running(faults, time_scale=scale) as emulator:
        config = Config(url=emulator.url, token="bench", allow_insecure=True)
        samples: list[Sample] = []
        async with Client(SuperDuperTransport(config), policy=policy) as client:
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(
                        _one, client, nursery, t0 + i * stagger, samples, emulator.model.jobs
                    )
        counts = emulator.model.counts
        per_gen = (counts["start"] + counts["poll"]) / n
        connects = counts["ws_connect"] / n
    # the server's counters are per run; spread them over the samples as a per-generation mean
    return [attrs.evolve(s, requests=per_gen, ws_connects=connects) for s in samples]


def real_samples(faults: Faults, n: int, scale: float, stagger: float) -> dict[str, list[Sample]]:
    """Run ``n`` generations of each policy (scaled) concurrently, each against its own emulator."""
    result: dict[str, list[Sample]] = {}

    async def main() -> None:
        async def one(name: str) -> None:
            policy = POLICIES[name]().scaled(scale)
            result[name] = await _real_policy(faults, policy, n, scale, stagger)

        async with trio.open_nursery() as nursery:
            for name in POLICIES:
                nursery.start_soon(one, name)

    trio.run(main)
    return result


def _times(samples: Sequence[Sample]) -> list[float]:
    return [s.after_ready for s in samples if s.after_ready is not None]


def _stats(samples: Sequence[Sample]) -> tuple[float, float, float, int]:
    times = _times(samples)
    if not times:
        return float("nan"), float("nan"), float("nan"), 0
    reqs = statistics.fmean(s.requests for s in samples)
    return statistics.median(times), percentile(times, 99), reqs, len(times)


def _figures(
    kind: str, scenario: str, ours: Sequence[Sample], seed: Sequence[Sample], unit: str, k: float
) -> list[Figure]:
    for who, samples in (("ours", ours), ("seed", seed)):
        for s in samples:
            if s.failure:
                print(f"# {kind} {scenario} {who}: not done: {s.failure}", file=sys.stderr)
    o_med, o_p99, o_req, o_done = _stats(ours)
    s_med, s_p99, s_req, s_done = _stats(seed)
    return [
        figure(f"latency.{kind}.{scenario}.median", o_med * k, unit, s_med * k),
        figure(f"latency.{kind}.{scenario}.p99", o_p99 * k, unit, s_p99 * k),
        figure(f"load.{kind}.{scenario}.http_requests", o_req, "req/gen", s_req),
        figure(
            f"done.{kind}.{scenario}",
            o_done / len(ours),
            "fraction",
            s_done / len(seed),
            higher_is_better=True,
        ),
    ]


def run(smoke: bool = False, plot: str | None = None) -> list[Figure]:
    """Measure figures 1 and 2 in virtual time and over real sockets; optionally draw the plot."""
    names = SMOKE_SCENARIOS if smoke else tuple(SCENARIOS)
    seeds = 2 if smoke else 100
    n_real = 2 if smoke else 20
    scale = SMOKE_SCALE if smoke else REAL_SCALE
    stagger = 0.005 if smoke else 0.05
    figures: list[Figure] = []
    plot_rows: list[tuple[str, float, float, float, float]] = []
    for name in names:
        faults = SCENARIOS[name]
        ours = virtual_samples(faults, Policy.default(), seeds)
        seed = virtual_samples(faults, Policy.seed(), seeds)
        figures += _figures("virtual", name, ours, seed, "s", 1.0)
        real = real_samples(faults, n_real, scale, stagger)
        figures += _figures("real", name, real["ours"], real["seed"], "ms", 1e3)
        o, s = _stats(ours), _stats(seed)
        plot_rows.append((name, o[0], o[1], s[0], s[1]))
    if plot:
        from .plot import latency_plot

        latency_plot(plot_rows, plot)
    return figures
