"""Tools to test code that uses hybridgen: fake servers, Hypothesis strategies, invariant checks.

- :class:`MemoryTransport` runs the emulator's behaviour in memory, on trio's virtual clock.
- :mod:`hybridgen.testing.strategies` draws server behaviours (:class:`Scenario`) and policies.
- :func:`run_scenario` runs one generation of a scenario on a ``MockClock`` and returns a
  :class:`Trace`; :func:`check_invariants` checks a trace against the machine's guarantees.
"""

from .harness import Trace, check_invariants, run_scenario, run_virtual
from .memory import MemoryTransport
from .scenario import Scenario

__all__ = [
    "MemoryTransport",
    "Scenario",
    "Trace",
    "check_invariants",
    "run_scenario",
    "run_virtual",
]
