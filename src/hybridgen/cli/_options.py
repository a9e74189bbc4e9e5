"""What the options ask for: the policy, the embedded emulator's faults, the server to use.

Turns option values into a :class:`~hybridgen.policy.Policy`, emulator
:class:`~hybridgen.emulator.model.Faults` and a :class:`~hybridgen.api.Config` (the configured
server, or an embedded emulator). Invalid values raise :class:`~hybridgen.errors.ConfigError`
naming the option. No timing is invented here: defaults come from the presets.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..config import Config
from ..errors import ConfigError
from ..policy import DURATIONS, PRESETS, Policy
from ._output import note_secret

if TYPE_CHECKING:
    from ..emulator.model import Faults


EMULATOR_GEN_TIME: Final = 35.0
"""How long an emulator job takes (seconds, before ``--time-scale``), for ``serve`` and for the
embedded emulator of ``generate`` alike: about what a real job takes."""
EMULATOR_WS_MODE: Final = "silent"
"""The emulator's legacy WebSocket unless ``--ws-mode`` says otherwise, for ``serve``, ``check``
and the embedded emulator of ``generate`` alike: today's API accepts the subscription and then
never sends the result (DESIGN.md §6, docs/api-today.md)."""
EMULATOR_SSE_MODE: Final = "normal"
"""The emulator's SSE stream unless ``--sse-mode`` says otherwise: today's documented push."""
SERVER_BOUNDS: Final = ("deadline", "request_timeout")
"""The policy's durations that bound the server's job and replies: with ``SUPERDUPERAI_URL`` set,
``--time-scale`` leaves them alone (a real server does not get faster)."""


def policy_from_options(
    preset: str = "default",
    *,
    time_scale: float | None = None,
    push_timeout: float | None = None,
    poll_interval: float | None = None,
    deadline: float | None = None,
    request_timeout: float | None = None,
    keep_bounds: bool = False,
    push: str | None = None,
) -> Policy:
    """The policy the command-line options ask for.

    Start from the ``preset`` (:data:`hybridgen.policy.PRESETS`), multiply its durations by
    ``time_scale`` (with ``keep_bounds``, all but ``deadline`` and ``request_timeout``, which
    bound a real server's job and replies), then set the timings given explicitly (absolute
    seconds, never scaled). When an explicit ``poll_interval`` is longer than the preset's
    ``backoff_cap``, the cap is raised to it (the options have no cap of their own). Invalid
    values raise :class:`~hybridgen.errors.ConfigError` naming the field. ``push``
    (``"websocket,sse"``, ``"none"``) replaces the preset's push channels.
    """
    try:
        factory = PRESETS[preset]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise ConfigError("policy", f"must be one of {choices}; got {preset!r}") from None
    policy = factory()
    if time_scale is not None:
        policy = policy.scaled(time_scale)
        if keep_bounds:
            policy = policy.replace(**{name: getattr(factory(), name) for name in SERVER_BOUNDS})
    explicit: dict[str, Any] = {
        name: value
        for name, value in (
            ("push_timeout", push_timeout),
            ("poll_interval", poll_interval),
            ("deadline", deadline),
            ("request_timeout", request_timeout),
        )
        if value is not None
    }
    if poll_interval is not None and poll_interval > policy.backoff_cap:
        explicit["backoff_cap"] = poll_interval
    if push is not None:
        explicit["push"] = "" if push.strip().lower() == "none" else push
    return policy.replace(**explicit)


def external_scale_note(time_scale: float, policy: Policy) -> str:
    """What ``--time-scale`` did against ``SUPERDUPERAI_URL``: the waits scaled, the bounds kept."""
    waits = ", ".join(
        f"{name} {getattr(policy, name):g} s"
        for name in DURATIONS
        if name not in SERVER_BOUNDS and getattr(policy, name) is not None
    )
    kept = " and ".join(f"{name} {getattr(policy, name):g} s" for name in SERVER_BOUNDS)
    return (
        f"--time-scale {time_scale:g} with SUPERDUPERAI_URL set scales this client's waits only "
        f"({waits}); {kept} are not scaled: they bound your server's job and replies "
        "(--deadline and --request-timeout set them)"
    )


def time_scale_of(value: float | None) -> float:
    if value is None:
        return 1.0
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("time_scale", f"must be a positive number, got {value!r}")
    return value


def absolute_seconds(name: str, value: float | None, scale: float) -> float | None:
    """An explicit emulator duration, pre-divided so that the model's scaling gives it back."""
    if value is None:
        return None
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(name, f"must be a number of seconds >= 0, got {value!r}")
    return value / scale


def make_faults(**switches: Any) -> Faults:
    from ..emulator.model import BadRequest, Faults

    try:
        return Faults(**{k: v for k, v in switches.items() if v is not None})
    except BadRequest as exc:
        raise ConfigError(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None


async def open_config(
    config: Config | None,
    faults: Faults | None,
    time_scale: float,
    stack: contextlib.AsyncExitStack,
    note: Callable[[str], None],
) -> Config:
    """``config``, or (when it is ``None``) that of an embedded emulator started on ``stack``."""
    if config is not None:
        return config
    from ..emulator import running

    token = secrets.token_urlsafe(24)
    note_secret(token)
    emulator = await stack.enter_async_context(running(faults, time_scale=time_scale, token=token))
    note(f"SUPERDUPERAI_URL unset: embedded emulator at {emulator.url}")
    return Config(url=emulator.url, token=token)
