"""Virtual time: how long real scenarios take on trio's MockClock, and property-test throughput.

Runs the seed's real case (silent socket, 35 s job) and a 2-minute deadline scenario under the
seed and default presets; prints the real milliseconds per scenario and the virtual/real speed-up,
then how many random Hypothesis scenarios (with every invariant checked) run per second.

    python -m bench.virtual [--n 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hypothesis import given, settings

from hybridgen.emulator.model import Faults
from hybridgen.policy import Policy
from hybridgen.testing import Scenario, check_invariants, run_scenario
from hybridgen.testing.strategies import scenarios

CASES = {
    "silent_35s_seed": Scenario(faults=Faults(ws_mode="silent", gen_time=35), policy=Policy.seed()),
    "silent_35s_default": Scenario(faults=Faults(ws_mode="silent", gen_time=35)),
    "never_ready_120s_default": Scenario(faults=Faults(ws_mode="silent", gen_time=500)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="runs per scenario")
    args = parser.parse_args(argv)
    rows = []
    for name, scenario in CASES.items():
        run_scenario(scenario)  # warm up
        start = time.perf_counter()
        for _ in range(args.n):
            trace = run_scenario(scenario)
        real = (time.perf_counter() - start) / args.n
        virtual = trace.ended_at
        rows.append(
            {
                "name": f"virtual.{name}",
                "value": real * 1e3,
                "unit": "ms",
                "baseline": virtual * 1e3,
                "ratio": virtual / real,
            }
        )
    count = 0

    @settings(max_examples=args.n, deadline=None, database=None)
    @given(scenarios())
    def explore(scenario: Scenario) -> None:
        nonlocal count
        count += 1
        check_invariants(run_scenario(scenario))

    start = time.perf_counter()
    explore()
    elapsed = time.perf_counter() - start
    rows.append(
        {
            "name": "virtual.property_examples_per_second",
            "value": count / elapsed,
            "unit": "1/s",
            "baseline": None,
            "ratio": None,
        }
    )
    for row in rows:
        print(json.dumps(row))
    for row in rows:
        ratio = "" if row["ratio"] is None else f"  (virtual/real {row['ratio']:,.0f}x)"
        print(f"{row['name']:42} {row['value']:10.2f} {row['unit']}{ratio}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
