"""A :class:`Scenario`: one generation's server behaviour, policy and caller actions."""

from __future__ import annotations

import attrs

from ..emulator.model import Faults
from ..policy import Policy

__all__ = ["Scenario"]


@attrs.frozen(kw_only=True)
class Scenario:
    """What the server does (``faults``), how the client waits (``policy``), what the caller does.

    ``cancel_at`` (seconds after the start) cancels the generation: through trio cancellation of
    the caller's scope when ``cancel_by`` is ``"scope"``, through :meth:`Generation.cancel` when
    it is ``"handle"``. ``token``/``server_token``: what the client sends and the server expects.
    """

    faults: Faults = attrs.field(factory=Faults)
    policy: Policy = attrs.field(factory=Policy.default)
    cancel_at: float | None = None
    cancel_by: str = attrs.field(
        default="scope", validator=attrs.validators.in_(("scope", "handle"))
    )
    token: str | None = None
    server_token: str | None = None
