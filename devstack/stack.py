"""Assemble the emulators and serve them: one process, one event loop, one port each. Ports are bound
before the apps are built, so ``--port 0`` (tests) gets free ports and issuers name the port served.

Public names (``up --name entra=login.microsoftonline.com`` or ``--production-names``) serve an emulator
under a real host name on port 443 instead: its URLs, the issuer in tokens and the server certificate name
it, and ``info()["resolve"]`` is the ``DEVSTACK_RESOLVE`` mapping that sends that name to the emulator's
loopback port inside a process (``devstack/resolve.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Generator

import uvicorn

from . import clouds
from .admin import Admin
from .controls import FaultPlan, Stats
from .directory import DEFAULT_TENANT_FILE, Directory, load_directory
from .entra import Entra
from .graph import Graph
from .identity import IdentityEndpoint
from .issuer import Issuer
from .keyvault import KeyVault
from .orders import Orders
from .ports import PortInUse, claim
from .serving import config
from .signing import AppCertificate, KeyRing, ensure_app_certificate
from .state import runtime_file, write_runtime
from .tls import TlsFiles, ensure_tls

DEFAULT_PORTS = {"entra": 8443, "graph": 8444, "keyvault": 8445, "identity": 8446, "orders": 8447, "admin": 8440}
PLAIN_HTTP = ("admin", "identity")  # loopback-only; the managed-identity endpoint is plain http on App Service too


@dataclass
class Stack:
    state: Path
    host: str
    directory: Directory
    tls: TlsFiles
    sockets: dict[str, socket.socket]
    entra: Entra
    graph: Graph
    keyvault: KeyVault
    identity: IdentityEndpoint
    orders: Orders
    admin: Admin
    certificates: dict[str, AppCertificate]
    names: dict[str, list[str]] = field(default_factory=dict)

    def loopback_url(self, name: str) -> str:
        scheme = "http" if name in PLAIN_HTTP else "https"
        return f"{scheme}://{self.host}:{self.sockets[name].getsockname()[1]}"

    def url(self, name: str) -> str:
        """The service's base URL as clients name it: its public name if it has one (port 443)."""
        return f"https://{self.names[name][0]}" if self.names.get(name) else self.loopback_url(name)

    def resolve_spec(self) -> str:
        """``DEVSTACK_RESOLVE`` for the public names: each one -> this service's loopback port."""
        from .resolve import format_spec
        ip = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else "::1" if self.host == "::" else self.host
        return format_spec({n: (ip, self.sockets[service].getsockname()[1])
                            for service, names in self.names.items() for n in names})

    def info(self) -> dict[str, Any]:
        tenant = self.directory.default
        instance = self.url("entra")
        apps = {app.name: {
            "client_id": app.client_id, "display_name": app.display_name,
            "identifier_uris": app.identifier_uris, "scopes": app.scopes, "app_roles": app.app_roles,
            "public": app.public, "secrets": [s.value for s in app.secrets],
            "certificates": [{"name": c, "pem": str(self.certificates[c].pem_path),
                              "pfx": str(self.certificates[c].pfx_path), "thumbprint": self.certificates[c].sha1_hex}
                             for c in app.certificates],
        } for app in tenant.apps}
        return {
            "cloud": clouds.active().name,
            "tenant_id": tenant.id, "tenant_domain": tenant.domain,
            "instance": instance, "authority": f"{instance}/{tenant.id}",
            "ca_cert": str(self.tls.ca_cert), "ca_bundle": str(self.tls.bundle),
            "state": str(self.state),
            "endpoints": {
                "entra": instance,
                "openid_configuration": f"{instance}/{tenant.id}/v2.0/.well-known/openid-configuration",
                "jwks": f"{instance}/{tenant.id}/discovery/v2.0/keys",
                "token": f"{instance}/{tenant.id}/oauth2/v2.0/token",
                "devicelogin": f"{instance}/devicelogin",
                "graph": self.url("graph"), "graph_me": f"{self.url('graph')}/v1.0/me",
                "admin": self.url("admin"),
                "keyvault": self.url("keyvault"),
                "orders": self.url("orders") + "/orders",
                "identity": self.url("identity") + "/msi/token",
            },
            "identity_header": self.identity.header,
            "managed_identities": {m.name: {"client_id": m.client_id, "principal_id": m.principal_id,
                                            "system_assigned": m.system_assigned} for m in tenant.managed_identities},
            "vault": {"name": self.keyvault.vault.name, "url": self.url("keyvault"),
                      "secrets": sorted(self.keyvault.store.secrets),
                      "certificates": sorted(self.keyvault.store.certificates)},
            # Public names: where each emulator really listens, and the mapping to reach it by name.
            "names": {service: list(names) for service, names in self.names.items() if names},
            "loopback": {name: self.loopback_url(name) for name in self.sockets},
            "resolve": self.resolve_spec(),
            "apps": apps,
            "users": {u.name: {"oid": u.oid, "upn": u.upn, "password": u.password,
                               "display_name": u.display_name, "mfa_code": u.mfa_code}
                      for u in tenant.users},
        }


def build(state: Path, *, host: str = "127.0.0.1", ports: dict[str, int] | None = None,
          tenant_file: Path = DEFAULT_TENANT_FILE, names: dict[str, list[str]] | None = None,
          cloud: str = clouds.PUBLIC.name) -> Stack:
    """``names``: service -> public host names, the first one canonical (URLs, issuer), the others
    aliases (certificate and resolve mapping only); ``{vault}`` stands for the vault's name.
    ``cloud``: the national cloud to emulate (its v1 issuer, Graph, Key Vault domain)."""
    state.mkdir(parents=True, exist_ok=True)
    emulated = clouds.use(cloud)
    directory = load_directory(tenant_file)
    for tenant in directory.tenants:  # Graph, Key Vault, token exchange: known by this cloud's URIs only
        for app in tenant.apps:
            uri = {"graph": (emulated.graph, clouds.PUBLIC.graph),
                   "keyvault": (emulated.keyvault_resource, clouds.PUBLIC.keyvault_resource),
                   "token-exchange": (emulated.token_exchange, clouds.PUBLIC.token_exchange)}.get(app.name)
            if uri:
                app.identifier_uris[:] = [uri[0]] + [u for u in app.identifier_uris if u not in uri]
    vault_name = directory.default.vaults[0].name
    names = {service: [n.replace("{vault}", vault_name).lower().rstrip(".") for n in hosts]
             for service, hosts in (names or {}).items() if hosts}
    for service in names:
        if service not in DEFAULT_PORTS or service in PLAIN_HTTP:
            raise ValueError(f"no public name for {service!r}: one of entra, graph, keyvault, orders")
        if names[service][0].startswith("*"):
            raise ValueError(f"the first name of {service!r} is its URL: a host name, not a wildcard")
    tls = ensure_tls(state / "tls", [n for hosts in names.values() for n in hosts])
    chosen = {**DEFAULT_PORTS, **(ports or {})}
    sockets: dict[str, socket.socket] = {}
    try:
        for name, port in chosen.items():
            sockets[name] = claim(host, port, f"the {name} emulator",
                                  "move every emulator to a free port with --port 0")
    except PortInUse:
        for sock in sockets.values():
            sock.close()
        raise
    instance = f"https://{names['entra'][0]}" if "entra" in names \
        else f"https://{host}:{sockets['entra'].getsockname()[1]}"
    certificates: dict[str, AppCertificate] = {}
    for tenant in directory.tenants:
        for app in tenant.apps:
            for name in app.certificates:
                cert = certificates.setdefault(name, ensure_app_certificate(state / "certs", name))
                app.cert_thumbprints[cert.x5t] = cert.cert
                app.cert_thumbprints[cert.x5t_s256] = cert.cert
    own_keys = [t.id for t in directory.tenants if t.own_signing_key]
    issuer = Issuer(KeyRing(state / "keys", own_keys), instance, state)
    stats, faults = Stats(), FaultPlan()
    entra = Entra(directory, issuer, stats, faults)
    graph = Graph(directory, issuer, stats, faults)
    identity = IdentityEndpoint(directory, issuer, stats, faults)
    keyvault = KeyVault(directory, issuer, stats, faults, directory.default.vaults[0])
    keyvault.url = f"https://{names['keyvault'][0]}" if "keyvault" in names \
        else f"https://{host}:{sockets['keyvault'].getsockname()[1]}"
    _seed_vault(keyvault, directory, certificates)
    admin = Admin(directory, issuer, graph, keyvault, stats, faults, state / "certs", lambda: stack.info())
    orders = Orders(directory, issuer, stats, faults)
    stack = Stack(state, host, directory, tls, sockets, entra, graph, keyvault, identity, orders, admin, certificates,
                  names)  # the lambda above reads it
    return stack


def _seed_vault(keyvault: KeyVault, directory: Directory, certificates: dict[str, AppCertificate]) -> None:
    vault = keyvault.vault
    for secret_name, app_name in vault.secrets_from_apps.items():
        keyvault.store.set_secret(secret_name, directory.default.app_by_name(app_name).secrets[-1].value)
    for cert_name in vault.certificates:
        keyvault.store.import_certificate(cert_name, certificates[cert_name])


class _Server(uvicorn.Server):
    """uvicorn server that leaves signal handling to the stack (several servers, one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Idle keep-alive connections are cut, not closed: closing a TLS one waits for the client's close_notify,
        which an idle browser never sends, so uvicorn's 2 s grace ran out on every Ctrl-C after a sign-in and
        logged "Cancel 0 running task(s), timeout graceful shutdown exceeded". A request in flight still ends."""
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)


Companion = Callable[[dict[str, Any]], Awaitable[int] | None]


async def serve(stack: Stack, on_ready: Companion, extra: dict[str, tuple[Any, socket.socket]] | None = None) -> int:
    """Serve the emulators (and ``extra``: name -> (ASGI app, socket), plain http) until SIGINT/SIGTERM.
    ``on_ready`` may return a coroutine, the companion (``up``'s Functions host): it runs beside the servers;
    a signal cancels it before the servers stop (its children go first, so no connection is left open to
    an emulator), and its end stops the servers and gives the exit code."""
    servers = {name: _Server(config(getattr(stack, name).app(), None if name in PLAIN_HTTP else stack.tls))
               for name in DEFAULT_PORTS}
    sockets = dict(stack.sockets)
    for name, (app, sock) in (extra or {}).items():
        servers[name], sockets[name] = _Server(config(app)), sock
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    tasks = [asyncio.create_task(server.serve(sockets=[sockets[name]])) for name, server in servers.items()]
    while not all(s.started for s in servers.values()) and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    companion: asyncio.Future[int] | None = None
    code = 0
    try:
        if all(s.started for s in servers.values()):
            info = stack.info()
            write_runtime(stack.state, info)
            result = on_ready(info)
            if result is not None:
                companion = asyncio.ensure_future(result)
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait([signalled, *tasks, *([companion] if companion else [])],
                           return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if companion is not None and not companion.done():
            companion.cancel()
        if companion is not None:
            with contextlib.suppress(asyncio.CancelledError):
                code = await companion
        for server in servers.values():
            server.should_exit = True
        await asyncio.gather(*tasks)
    finally:
        runtime_file(stack.state).unlink(missing_ok=True)
    return code


def run(stack: Stack, on_ready: Companion, extra: dict[str, tuple[Any, socket.socket]] | None = None) -> int:
    import uvloop
    return uvloop.run(serve(stack, on_ready, extra))


def describe(info: dict[str, Any]) -> str:
    e = info["endpoints"]
    return "\n".join([
        "devstack is up (Ctrl-C stops it)",
        f"  Entra ID authority   {info['authority']}",
        f"  device sign-in page  {e['devicelogin']}",
        f"  Graph-like API       {e['graph_me']}",
        f"  orders API           {e['orders']}",
        f"  Key Vault            {e['keyvault']}",
        f"  managed identity     {e['identity']}",
        f"  admin (loopback)     {e['admin']}",
        f"  CA certificate       {info['ca_cert']}",
        f"  CA bundle            {info['ca_bundle']}",
    ] + ([f"  public names         DEVSTACK_RESOLVE={info['resolve']}"] if info.get("resolve") else []))
