"""Real host names -> the devstack, inside one Python process; no /etc/hosts, no DNS server.

``socket.getaddrinfo`` (and ``gethostbyname``) answer a mapped name with the emulator's loopback
address *and port*, so ``https://login.microsoftonline.com/...`` (port 443) reaches
``127.0.0.1:<entra port>``, while the URL, the ``Host`` header, TLS SNI and certificate verification
keep the real name (the devstack's certificate names it: ``up --name``/``--production-names``). Every
client stack in the app resolves through ``socket.getaddrinfo`` at connect time: ``requests`` (urllib3;
so azure-core's ``RequestsTransport`` and MSAL), ``http.client``, asyncio's ``loop.getaddrinfo``.

The mapping, as text (``DEVSTACK_RESOLVE``; ``python -m devstack info --json`` gives it as ``resolve``)::

    login.microsoftonline.com=127.0.0.1:41001,graph.microsoft.com=127.0.0.1:41002,*.vault.azure.net=127.0.0.1:41003

- ``name=address:port`` sends every connection to ``name`` there; ``name=address`` keeps the URL's port.
- ``*.suffix`` matches any name ending in ``.suffix``; exact names win. Names are case-insensitive, a
  trailing dot is ignored; ``address`` may be IPv6 in brackets.

``python -m devstack host`` installs ``DEVSTACK_RESOLVE`` before it loads the app. Mapped names are
added to ``NO_PROXY``: a proxy would resolve them for real.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, Iterator, Mapping, Optional

ENV = "DEVSTACK_RESOLVE"

Target = tuple[str, Optional[int]]

_original_getaddrinfo = socket.getaddrinfo
_original_gethostbyname = socket.gethostbyname
_lock = threading.Lock()
_mapping: dict[str, Target] = {}


def _norm(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.strip().lower().rstrip(".")


def parse(spec: str) -> dict[str, Target]:
    """``"a.example=127.0.0.1:8443,*.b.example=127.0.0.1"`` -> ``{name: (address, port or None)}``."""
    mapping: dict[str, Target] = {}
    for item in spec.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, target = item.partition("=")
        name, target = _norm(name), target.strip()
        if not sep or not name or not target or name in ("*", "*."):
            raise ValueError(f"{ENV}: expected name=address[:port], got {item!r}")
        if name.startswith("*") and not name.startswith("*."):
            raise ValueError(f"{ENV}: a wildcard must be '*.suffix', got {name!r}")
        port: int | None = None
        if target.startswith("["):  # [::1]:8443
            address, _, rest = target[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{ENV}: bad address {target!r}")
                port = _port(rest[1:], item)
        elif target.count(":") == 1:
            address, _, raw = target.partition(":")
            port = _port(raw, item)
        else:
            address = target
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
        except OSError:
            raise ValueError(f"{ENV}: {address!r} is not an IP address (in {item!r})") from None
        mapping[name] = (address, port)
    return mapping


def _port(raw: str, item: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{ENV}: bad port in {item!r}")
    return int(raw)


def format_spec(mapping: Mapping[str, Target]) -> str:
    """The inverse of ``parse``."""
    out = []
    for name, (address, port) in mapping.items():
        host = f"[{address}]" if ":" in address and port is not None else address
        out.append(f"{name}={host}" + (f":{port}" if port is not None else ""))
    return ",".join(out)


def lookup(host: str | bytes | None, mapping: Mapping[str, Target] | None = None) -> Target | None:
    """Where ``host`` goes under ``mapping`` (default: the installed one); None if not mapped."""
    table = _mapping if mapping is None else mapping
    if host is None or not table:
        return None
    name = _norm(host)
    if name in table:
        return table[name]
    wildcards = [p for p in table if p.startswith("*.") and name.endswith(p[1:])]
    return table[max(wildcards, key=len)] if wildcards else None  # the longest suffix wins


def _getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                 flags: int = 0) -> list[Any]:
    target = lookup(host) if isinstance(host, (str, bytes)) else None
    if target is None:
        return _original_getaddrinfo(host, port, family, type, proto, flags)
    address, to_port = target
    return _original_getaddrinfo(address, to_port if to_port is not None else port, family, type, proto,
                                 flags | socket.AI_NUMERICHOST)


def _gethostbyname(host: str) -> str:
    target = lookup(host)
    return target[0] if target is not None else _original_gethostbyname(host)


def _no_proxy(names: list[str]) -> None:
    entries = [n[1:] if n.startswith("*.") else n for n in names]  # "*.x.y" -> ".x.y"
    for var in ("NO_PROXY", "no_proxy"):
        current = [e.strip() for e in os.environ.get(var, "").split(",") if e.strip()]
        os.environ[var] = ",".join(current + [e for e in entries if e not in current])


def install(mapping: Mapping[str, Target] | str) -> dict[str, Target]:
    """Map names in this process (adds to what is installed). Returns the whole installed mapping."""
    table = parse(mapping) if isinstance(mapping, str) else {_norm(k): v for k, v in mapping.items()}
    with _lock:
        _mapping.update(table)
        socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]
        socket.gethostbyname = _gethostbyname
        _no_proxy(list(table))
        return dict(_mapping)


def uninstall() -> None:
    """Back to the system resolver (NO_PROXY entries stay; they are harmless)."""
    with _lock:
        _mapping.clear()
        socket.getaddrinfo = _original_getaddrinfo
        socket.gethostbyname = _original_gethostbyname


def installed() -> dict[str, Target]:
    return dict(_mapping)


def install_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Target]:
    """Install ``DEVSTACK_RESOLVE`` if it is set and not empty; the installed mapping (maybe empty)."""
    spec = (os.environ if environ is None else environ).get(ENV, "").strip()
    return install(spec) if spec else installed()


@contextlib.contextmanager
def mapped(mapping: Mapping[str, Target] | str) -> Iterator[dict[str, Target]]:
    """Install for the duration of a block (tests in a process that must get its resolver back)."""
    before = installed()
    try:
        yield install(mapping)
    finally:
        uninstall()
        if before:
            install(before)


def environment(info: Mapping[str, Any]) -> dict[str, str]:
    """``{DEVSTACK_RESOLVE: ...}`` for a child process (a function host) wired to ``info``'s devstack."""
    spec = info.get("resolve") or ""
    return {ENV: spec} if spec else {}
