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
from typing import Final

import attrs
import trio

from ..config import Config
from ..emulator.model import GENERATION_CONFIGS
from ..errors import ConfigError
from ..parse import parse_generation_configs
from ..wire import VIDEO_KINDS, ModelInfo
from ._exit import EXIT_OK
from ._output import say, setup_logging, write_out

MODELS_TIMEOUT = 30.0
"""The longest fetching the model list may take (seconds)."""
MODEL_TYPES: Final = ("text_to_image", "image_to_image", *VIDEO_KINDS)
"""The generation config types the API documents (a server may list others too)."""
IMAGE_TYPES: Final = ("text_to_image",)
"""The types ``generate`` can run: a prompt alone in, an image out (edit models need a source)."""


async def _fetch(config: Config, types: Sequence[str]) -> list[ModelInfo]:
    from ._watch import WatchedTransport

    transport = WatchedTransport(config)
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


def check_model(name: str, models: Sequence[ModelInfo], kinds: Sequence[str] = IMAGE_TYPES) -> None:
    """Raise :class:`ConfigError` naming ``--model`` and close matches if ``name`` is unknown,
    or the right command if its type is none of ``kinds`` (a server that gives no type passes)."""
    names = [m.name for m in models]
    if name in names:
        kind = next(m.type for m in models if m.name == name)
        if not kind or kind in kinds:
            return
        if kind in VIDEO_KINDS:
            fix = "for a video, run hybridgen generate --video"
        elif kind == "image_to_image":
            fix = (
                "it edits a source image, which generate does not send; for an image from a "
                "prompt, pick a text_to_image model (hybridgen models --type text_to_image)"
            )
        else:
            fix = f"generate runs {' or '.join(kinds)} models (hybridgen models lists them)"
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError("--model", f"names {name!r}, {article} {kind} model: {fix}")
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"known: {', '.join(names[:10])}"
    raise ConfigError(
        "--model", f"the server has no model {name!r}; {hint} (hybridgen models lists them)"
    )


def _check_types(types: Sequence[str], found: Sequence[ModelInfo], config: Config | None) -> None:
    """Raise :class:`ConfigError` naming ``--type`` and the valid types if one is unknown (not
    documented, and not a type of any model the server lists)."""
    listed = {m.type for m in found}
    unknown = [t for t in types if t not in MODEL_TYPES and t not in listed]
    if not unknown:
        return
    valid = dict.fromkeys([*MODEL_TYPES, *(m.type for m in server_models(config) if m.type)])
    raise ConfigError(
        "--type",
        f"names {unknown[0]!r}, which is not a model type; valid types: {', '.join(valid)} "
        "(video: every video type)",
    )


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _durations(model: ModelInfo) -> str:
    """A video model's allowed durations: ``5,10`` or ``1-30`` (``-``: the list says none)."""
    if model.durations:
        return ",".join(map(str, model.durations))
    return "-" if model.max_duration is None else f"1-{model.max_duration}"


def _cmd_models(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    config = Config.from_env() if "SUPERDUPERAI_URL" in os.environ else None
    types = [t.strip() for t in (args.type or "").split(",") if t.strip()]
    video = "video" in types
    if video:  # every video kind
        types = [t for t in types if t != "video"] + [t for t in VIDEO_KINDS if t not in types]
    models = server_models(config, types)
    _check_types(types, models, config)
    if args.json:
        for m in models:
            write_out(json.dumps(attrs.asdict(m)))
        return EXIT_OK
    if config is None:
        say("SUPERDUPERAI_URL is not set; these are the embedded emulator's models")
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
        write_out(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if not models:
        say(f"no models of type {args.type}" if types else "the server lists no models")
    return EXIT_OK
