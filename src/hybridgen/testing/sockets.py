"""Count this process's open sockets, to prove a test left none behind (Linux: ``/proc``).

A test that runs the emulator in its own process sees both ends of every loopback connection; these
helpers tell the client's ends (connected *to* the emulator's port) from the server's (bound *on*
it), so a leak on the client side cannot hide behind the server's sockets.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

__all__ = ["client_side_fds", "fds_but_server_side", "port_of", "tcp_ends"]


def port_of(url: str) -> int:
    """The port of a base URL like ``http://127.0.0.1:PORT``."""
    return int(url.rstrip("/").rsplit(":", 1)[1])


def tcp_ends() -> Iterator[tuple[int, int | None]]:
    """``(local port, remote port or None)`` of every TCP socket this process has open."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:["):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                remote: int | None = sock.getpeername()[1]
            except OSError:
                remote = None
            yield sock.getsockname()[1], remote


def client_side_fds(port: int) -> int:
    """Open fds of this process that are connections *to* ``port`` (client ends only)."""
    return sum(1 for local, remote in tcp_ends() if remote == port and local != port)


def fds_but_server_side(port: int) -> int:
    """All open fds of this process except the server's own sockets on ``port``."""
    server_side = sum(1 for local, _ in tcp_ends() if local == port)
    return len(os.listdir("/proc/self/fd")) - server_side
