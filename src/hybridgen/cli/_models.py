"""``hybridgen models`` and ``generate --model``: the server's generation configs, by name.

Lists what ``GET /api/v1/generation-config`` returns (the configured server's, or the embedded
emulator's) and checks a ``--model`` name against it before any job starts, naming close matches
when it is unknown. The list is fetched once per run; this file never starts a job.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
from collections.abc import Sequence

import attrs
import trio

from ..api import VIDEO_KINDS, Config, ModelInfo, parse_generation_configs
from ..emulator.model import GENERATION_CONFIGS
from ..errors import ConfigError
from ._exit import EXIT_OK
from ._output import _out, _say, _setup_logging

MODELS_TIMEOUT = 30.0
"""The longest fetching the model list may take (seconds)."""


async def _fetch(config: Config, types: Sequence[str]) -> list[ModelInfo]:
    from ..transport import SuperDuperTransport

    transport = SuperDuperTransport(config)
    try:
        with trio.fail_after(MODELS_TIMEOUT):
            return await transport.models(types)
    finally:
        await transport.aclose()


def server_models(config: Config | None, types: Sequence[str] = ()) -> list[ModelInfo]:
    """The server's models (``config`` ``None``: the embedded emulator's, without a server)."""
    if config is None:
        wanted = set(types)
        every = parse_generation_configs(list(GENERATION_CONFIGS))
        return [m for m in every if not wanted or m.type in wanted]
    try:
        return trio.run(_fetch, config, types)
    except trio.TooSlowError:
        raise ConfigError(
            "SUPERDUPERAI_URL", f"the model list took longer than {MODELS_TIMEOUT:g} s"
        ) from None


def check_model(name: str, models: Sequence[ModelInfo]) -> None:
    """Raise :class:`ConfigError` naming ``--model`` and close matches if ``name`` is unknown."""
    names = [m.name for m in models]
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"known: {', '.join(names[:10])}"
    raise ConfigError(
        "--model", f"the server has no model {name!r}; {hint} (hybridgen models lists them)"
    )


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _durations(model: ModelInfo) -> str:
    """A video model's allowed durations: ``5,10`` or ``1-30`` (``-``: the list says none)."""
    if model.durations:
        return ",".join(map(str, model.durations))
    return "-" if model.max_duration is None else f"1-{model.max_duration}"


def _cmd_models(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    config = Config.from_env() if "SUPERDUPERAI_URL" in os.environ else None
    types = [t.strip() for t in (args.type or "").split(",") if t.strip()]
    video = "video" in types
    if video:  # every video kind
        types = [t for t in types if t != "video"] + [t for t in VIDEO_KINDS if t not in types]
    models = server_models(config, types)
    if args.json:
        for m in models:
            _out(json.dumps(attrs.asdict(m)))
        return EXIT_OK
    if config is None:
        _say("SUPERDUPERAI_URL is not set; these are the embedded emulator's models")
    rows = [("NAME", "LABEL", "TYPE", "PRICE", "VIP")]
    rows += [(m.name, m.label, m.type, _price(m.price), "yes" if m.vip else "") for m in models]
    if video:
        rows = [("NAME", "KIND", "DURATIONS", "PRICE/S", "VIP")]
        rows += [
            (m.name, m.type, _durations(m), _price(m.price_per_second), "yes" if m.vip else "")
            for m in models
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not models:
        _say(f"no models of type {args.type}" if types else "the server lists no models")
    return EXIT_OK
