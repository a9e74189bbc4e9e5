"""The SuperDuperAI emulator: the same API on a loopback port, with fault switches.

:class:`ServerModel` holds the behaviour (jobs, timelines, faults) without sockets;
:func:`serve` and :func:`running` put it on a real HTTP + WebSocket port. The server (Hypercorn,
Starlette, Pillow: ``pip install 'hybridgen[emulator]'``) is imported when one of its names is
first used, not with this package; so is :class:`ServerModel` (and trio with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .faults import Faults

if TYPE_CHECKING:
    from .model import ServerModel
    from .server import Emulator, running, serve

__all__ = ["Emulator", "Faults", "ServerModel", "running", "serve"]

_SERVER = frozenset({"Emulator", "running", "serve"})


def __getattr__(name: str) -> object:
    if name == "ServerModel":  # with trio: loaded when used (`hybridgen --help` needs no trio)
        from .model import ServerModel

        return ServerModel
    if name in _SERVER:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
