"""The ``hybridgen`` command: ``generate`` (one or a batch), ``resume``, ``serve``, and more.

The command has no logic of its own: policies come from :mod:`hybridgen.policy`, the run from
:class:`hybridgen.driver.Client`, what it prints from the generation's events, the emulator from
:mod:`hybridgen.emulator`. Exit codes: 0 done, 1 failed, 2 bad usage or invalid configuration,
130 interrupted (Ctrl-C). The API token is never printed, in any mode or error.

One concern per file: ``_app`` (parser, ``main``), ``_exit`` (exit codes), ``_options`` (policy,
emulator, server), ``_generate``, ``_batch``, ``_resume``, ``_serve`` and ``_tools`` (the commands),
``_report`` (the reporter interface and plain lines), ``_json`` (``--json``), ``_live`` (rich
views on a terminal), ``_files`` (saves, journal), ``_interrupt`` (Ctrl-C), ``_output`` (what
goes to stderr and stdout, secrets cut out).
"""

from __future__ import annotations

from ._app import build_parser, main
from ._exit import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._options import policy_from_options

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "policy_from_options",
]
