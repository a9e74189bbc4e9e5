"""Virtual time: how long real scenarios take on trio's MockClock, and property-test throughput.

Runs the seed's real case (silent socket, 35 s job) and a 2-minute deadline scenario under the
seed and default presets; reports the real milliseconds per scenario beside the virtual time it
covers, then how many random Hypothesis scenarios (every invariant checked) run per second
(skipped when Hypothesis, a test extra, is not installed)::

    python -m hybridgen.bench virtual [--smoke]
"""

from __future__ import annotations

import time

from ..emulator.model import Faults
from ..policy import Policy
from ..testing import Scenario, check_invariants, run_scenario
from ._report import Figure, figure

__all__ = ["CASES", "run"]

CASES = {
    "silent_35s_seed": Scenario(faults=Faults(ws_mode="silent", gen_time=35), policy=Policy.seed()),
    "silent_35s_default": Scenario(faults=Faults(ws_mode="silent", gen_time=35)),
    "never_ready_120s_default": Scenario(faults=Faults(ws_mode="silent", gen_time=500)),
}


def run(smoke: bool = False, n: int | None = None) -> list[Figure]:
    """Real ms per virtual scenario (baseline: the virtual ms it covers), examples per second."""
    n = n or (3 if smoke else 200)
    figures = []
    for name, scenario in CASES.items():
        run_scenario(scenario)  # warm up
        start = time.perf_counter()
        for _ in range(n):
            trace = run_scenario(scenario)
        real = (time.perf_counter() - start) / n
        figures.append(figure(f"virtual.{name}", real * 1e3, "ms", trace.ended_at * 1e3))
    try:
        from hypothesis import given, settings

        from ..testing.strategies import scenarios
    except ImportError:  # pragma: no cover - hypothesis is a test extra
        return figures
    count = 0

    @settings(max_examples=n, deadline=None, database=None)
    @given(scenarios())
    def explore(scenario: Scenario) -> None:
        nonlocal count
        count += 1
        check_invariants(run_scenario(scenario))

    start = time.perf_counter()
    explore()
    elapsed = time.perf_counter() - start
    # baseline: one example per second of the slowest virtual scenario above, run in real time
    figures.append(
        figure(
            "virtual.property_examples_per_second",
            count / elapsed,
            "1/s",
            1 / 120,
            higher_is_better=True,
        )
    )
    return figures
