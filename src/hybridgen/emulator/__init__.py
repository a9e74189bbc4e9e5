"""The SuperDuperAI emulator: the same API on a loopback port, with fault switches.

:class:`ServerModel` holds the behaviour (jobs, timelines, faults) without sockets;
:func:`serve` and :func:`running` put it on a real HTTP + WebSocket port.
"""

from .model import Faults, ServerModel
from .server import Emulator, running, serve

__all__ = ["Emulator", "Faults", "ServerModel", "running", "serve"]
