"""A taken port is a start-up error a user can act on: which port, whose it is, and how to move it.

``up`` binds (or probes) every port before it prints anything, so a clash stops the whole stack with one
line instead of a banner, a traceback and emulators left running with nothing behind them.
"""
from __future__ import annotations

import errno
import socket

from .serving import bind


class PortInUse(Exception):
    """``port`` (``what`` listens there) cannot be bound; ``move`` says how to put it elsewhere."""

    def __init__(self, port: int, what: str, move: str):
        super().__init__(f"port {port} ({what}) is already in use: stop what holds it, or {move}")
        self.port, self.what, self.move = port, what, move


def claim(host: str, port: int, what: str, move: str) -> socket.socket:
    """The listening socket, or PortInUse (EADDRINUSE, and EACCES for a port below 1024 without rights)."""
    try:
        return bind(host, port)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(port, what, move) from None
        raise ValueError(f"cannot listen on {host} port {port} ({what}): {e.strerror}; is --host an address "
                         "of this machine?") from None


def is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound now (another process may still take it before its owner binds it)."""
    try:
        bind(host, port).close()
    except OSError:
        return False
    return True
