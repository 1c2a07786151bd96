"""Serving an ASGI app the devstack's way, for the emulators (stack.py) and the Functions host (host/):
the socket is bound before the app is built, so ``port 0`` gets a free port that the app can name."""
from __future__ import annotations

import socket
from typing import Any

import uvicorn

from .tls import TlsFiles


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def config(app: Any, tls: TlsFiles | None = None) -> uvicorn.Config:
    """Quiet, uvloop + httptools, 30 s keep-alive, 2 s to finish on shutdown; HTTPS with ``tls``."""
    https = {} if tls is None else {"ssl_certfile": str(tls.server_cert), "ssl_keyfile": str(tls.server_key)}
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http="httptools",
                          loop="uvloop", timeout_keep_alive=30, timeout_graceful_shutdown=2, **https)
