"""Hypercorn settings shared by the servers hybridgen runs (the emulator, the inspector)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import hypercorn.logging
from hypercorn.config import Config as HyperConfig


class DebugLogger(hypercorn.logging.Logger):
    """Hypercorn's log at DEBUG ("Running on ..."), errors kept, no access log."""

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        await self.debug(message, *args, **kwargs)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback only (``localhost``, ``127.x``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> str:
    """Hypercorn's bind string for ``host:port`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(host: str, port: int, logger: str, *, backlog: int = 128) -> HyperConfig:
    """A quiet config bound to ``host:port`` that logs errors to ``logger`` and stops at once.

    ``backlog`` is how many pending connections the listening socket holds.
    """
    config = HyperConfig()
    config.bind = [bind(host, port)]
    config.accesslog = None
    config.errorlog = logging.getLogger(logger)
    config.logger_class = DebugLogger
    config.graceful_timeout = 0.5
    config.backlog = backlog
    return config
