"""pytest fixtures for testing code that uses hybridgen (registered as a pytest plugin).

Installed with hybridgen, so any project's tests can ask for them (async fixtures: run your tests
with pytest-trio, e.g. ``trio_mode = true``):

- ``hybridgen_emulator``: an :class:`~hybridgen.emulator.Emulator` on a loopback port, running
  for the test. Its behaviour comes from three fixtures you may override: ``hybridgen_faults``
  (a :class:`~hybridgen.emulator.Faults`, default: all normal), ``hybridgen_time_scale``
  (default 0.05: a 35 s job takes 1.75 s) and ``hybridgen_token`` (the token it requires).
- ``hybridgen_config``: a :class:`~hybridgen.api.Config` pointing at that emulator.
- ``hybridgen_transport``: a :class:`~hybridgen.transport.SuperDuperTransport` for it, closed
  after the test.

Change switches during a test through ``hybridgen_emulator.model.faults`` (or the emulator's
``PUT /_emulator/faults`` endpoint).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..config import Config
    from ..emulator import Emulator, Faults
    from ..transport import SuperDuperTransport

__all__ = [
    "hybridgen_config",
    "hybridgen_emulator",
    "hybridgen_faults",
    "hybridgen_time_scale",
    "hybridgen_token",
    "hybridgen_transport",
]


@pytest.fixture
def hybridgen_faults() -> Faults:
    """The emulator's fault switches (override this fixture to change them)."""
    from ..emulator import Faults

    return Faults()


@pytest.fixture
def hybridgen_time_scale() -> float:
    """The emulator's time scale: every server-side duration is multiplied by it."""
    return 0.05


@pytest.fixture
def hybridgen_token() -> str:
    """The bearer token the emulator requires (and the transport sends)."""
    return "test-token-123"


@pytest.fixture
async def hybridgen_emulator(
    hybridgen_faults: Faults, hybridgen_time_scale: float, hybridgen_token: str
) -> AsyncIterator[Emulator]:
    """A real emulator on a free loopback port, for the duration of the test."""
    from ..emulator import running

    async with running(
        hybridgen_faults, time_scale=hybridgen_time_scale, token=hybridgen_token
    ) as emulator:
        yield emulator


@pytest.fixture
def hybridgen_config(hybridgen_emulator: Emulator, hybridgen_token: str) -> Config:
    """A :class:`~hybridgen.api.Config` for the emulator."""
    from ..config import Config

    return Config(url=hybridgen_emulator.url, token=hybridgen_token)


@pytest.fixture
async def hybridgen_transport(hybridgen_config: Config) -> AsyncIterator[SuperDuperTransport]:
    """A real-socket transport talking to the emulator, closed after the test."""
    from ..transport import SuperDuperTransport

    transport = SuperDuperTransport(hybridgen_config)
    try:
        yield transport
    finally:
        await transport.aclose()
