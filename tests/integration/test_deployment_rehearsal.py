"""Deployment rehearsal: the app settings exactly as infra/main.bicep produces them, on the local host.

Every branch of the template (certificate from Key Vault or federated credential; Redis or Blob
Storage as the shared cache) is evaluated by tests/bicep_eval.py (pycep), as in
tests/unit/test_infra.py. App Service's part is played faithfully: Key Vault references resolved to the secret the
template writes (or left as literal text, as App Service does when it can't resolve one), the
managed-identity endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`), and nothing else. Every host
name in the settings is the production one — login.microsoftonline.com, graph.microsoft.com,
`<vault>.vault.azure.net`, `<account>.blob.core.windows.net`, `<cache>.redis.cache...`, the orders
API — reached inside the host process through `DEVSTACK_RESOLVE` (devstack/resolve.py): the Entra,
Graph, Key Vault and orders emulators, real Azurite over HTTPS with the template's account name and
key, real redis-server over TLS with the template's password. The only additions are the local CA
(`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`) and the name mapping, which Azure doesn't need.

All three functions must answer 200 to their intended callers, and the shared cache must be the
one the template chose, encrypted.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import msal
import pytest
import requests

from devstack import launch, resolve
from devstack.client import session
from devstack.launch import Admin, drain, free_port, start_devstack, start_host, stop
from devstack.tls import issue_leaf

from .. import bicep_eval as bicep

ORDERS_HOST = urlsplit(bicep.PARAMETERS["ordersBaseUrl"]).hostname
BRANCHES = {(s["useFederatedCredential"], s["deployRedis"]): (ev, settings) for s, ev, settings in bicep.branches()}


def _vault_host(settings: dict[str, str]) -> str:
    name = re.search(r"VaultName=([^;]+);", settings["TokenCache__EncryptionKey"]).group(1)  # type: ignore[union-attr]
    return f"{name}{bicep.ENVIRONMENTS['AzureCloud']['suffixes']['keyvaultDns']}"


def _storage(settings: dict[str, str]) -> tuple[str, str]:
    parts = dict(p.split("=", 1) for p in settings["AzureWebJobsStorage"].split(";") if p)
    return parts["AccountName"], parts["AccountKey"]


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Admin]]:
    """The emulators under the names the template's settings use."""
    vault = _vault_host(next(iter(BRANCHES.values()))[1])
    proc, info = start_devstack(tmp_path_factory.mktemp("rehearsal-devstack"), "--production-names",
                                "--name", f"keyvault={vault}", "--name", f"orders={ORDERS_HOST}")
    yield info, Admin(info)
    stop(proc)


class TlsServer:
    """A real server (Azurite, redis-server) under a production name, with a certificate from the devstack's CA."""

    def __init__(self, folder: Path, info: dict[str, Any], host: str):
        self.folder, self.host = folder, host
        self.cert, self.key = issue_leaf(Path(info["state"]) / "tls", [host], folder / "tls")
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.secret = ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # type: ignore[arg-type]


def start_azurite(folder: Path, info: dict[str, Any], account: str, key: str) -> TlsServer:
    server = TlsServer(folder, info, f"{account}.blob.core.windows.net")
    server.proc, blob = launch.start_azurite(folder, account, key, tls=(server.cert, server.key))
    server.port = blob["port"]
    return server


def start_redis(folder: Path, info: dict[str, Any], host: str, password: str) -> TlsServer:
    server = TlsServer(folder, info, host)
    server.port, server.secret = free_port(), password
    server.proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
         "--tls-ca-cert-file", info["ca_cert"], "--tls-auth-clients", "no", "--requirepass", password,
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.proc.stdout is not None
    for line in server.proc.stdout:
        if "Ready to accept connections" in line:
            break
    else:
        raise RuntimeError("redis-server did not start")
    drain(server.proc.stdout, folder / "redis.log")
    return server


def deploy(info: dict[str, Any], folder: Path, settings: dict[str, str], extra_names: dict[str, int],
           cors: list[str]) -> dict[str, Any]:
    """The settings as App Service would hand them to the worker, on the local host."""
    mapping = {**resolve.parse(info["resolve"]), **{name: ("127.0.0.1", port) for name, port in extra_names.items()}}
    path = folder / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": settings,
                                "Host": {"CORS": ",".join(cors), "CORSCredentials": False}}))
    platform = {resolve.ENV: resolve.format_spec(mapping), "REQUESTS_CA_BUNDLE": info["ca_bundle"],
                "SSL_CERT_FILE": info["ca_bundle"]}
    proc, ready = start_host(folder, path, info["state"], env=platform)
    ready["proc"] = proc
    return ready


def get(host: dict[str, Any], path: str, token: str) -> requests.Response:
    return requests.get(host["url"] + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def daemon_token(info: dict[str, Any]) -> str:
    """The daemon's own token from unmodified MSAL (client credentials), with instance discovery on."""
    daemon = info["apps"]["daemon-client"]
    with resolve.mapped(info["resolve"]):
        result = msal.ConfidentialClientApplication(
            daemon["client_id"], client_credential=daemon["secrets"][0], authority=info["authority"],
            http_client=session(info["ca_bundle"])).acquire_token_for_client(["api://middletier/.default"])
    return str(result["access_token"])


@pytest.mark.parametrize("federated,redis", sorted(BRANCHES), ids=lambda v: str(v))
def test_every_branch_of_the_template_serves_all_three_functions(
        azure: tuple[dict[str, Any], Admin], tmp_path: Path, federated: bool, redis: bool) -> None:
    info, admin = azure
    ev, produced = BRANCHES[(federated, redis)]
    settings = bicep.resolve_key_vault_references(ev, produced)
    assert settings["AzureAd__Instance"] == "https://login.microsoftonline.com/"
    assert "AzureAd__DisableInstanceDiscovery" not in settings and "KeyVault__VerifyChallengeResource" not in settings
    account, key = _storage(settings)
    servers = [start_azurite(tmp_path / "azurite", info, account, key)]
    if redis:
        host, _, rest = settings["TokenCache__RedisConnectionString"].partition(":")
        password = re.search(r"password=([^,]+)", rest).group(1)  # type: ignore[union-attr]
        servers.append(start_redis(tmp_path / "redis", info, host, password))
    cors = bicep.site(ev)["properties"]["siteConfig"]["cors"]["allowedOrigins"]
    try:
        host = deploy(info, tmp_path, settings, {s.host: s.port for s in servers}, [ev.value(o) for o in cors])
        try:
            alice, daemon = admin.mint(user="alice"), daemon_token(info)
            me = get(host, "/api/me", alice)
            assert me.status_code == 200, me.text
            assert me.json()["id"] == info["users"]["alice"]["oid"]
            mine = get(host, "/api/orders", alice)
            assert mine.status_code == 200 and mine.json()["scope"] == "mine", mine.text
            everyone = get(host, "/api/orders", daemon)
            assert everyone.status_code == 200 and everyone.json()["scope"] == "all", everyone.text
            user = get(host, f"/api/directory/users/{info['users']['bob']['upn']}", daemon)
            assert user.status_code == 200 and user.json()["id"] == info["users"]["bob"]["oid"], user.text
            assert _shared_cache_written(servers[-1], redis, key, account, info["ca_bundle"]), \
                "the template's shared cache holds no sealed entry"
        finally:
            stop(host["proc"])
        log = Path(host["log"]).read_text()
        assert "configuration error" not in log and "is in error" not in log
    finally:
        for server in servers:
            server.stop()


def _shared_cache_written(server: TlsServer, redis: bool, key: str, account: str, ca_bundle: str) -> bool:
    """The L2 the template chose holds sealed entries (no plaintext token)."""
    if redis:
        import redis as redis_client
        client = redis_client.Redis(host="127.0.0.1", port=server.port, ssl=True, ssl_cert_reqs="none",
                                    password=server.secret)
        values = [client.get(k) or b"" for k in client.keys("*") if client.type(k) == b"string"]
        return bool(values) and not any(b"eyJ" in v for v in values)
    blobs = _blobs(server, account, key, ca_bundle)
    return bool(blobs) and not any(b"eyJ" in v for v in blobs.values())


def _blobs(server: TlsServer, account: str, key: str, ca_bundle: str) -> dict[str, bytes]:
    from azure.storage.blob import BlobServiceClient
    with resolve.mapped({server.host: ("127.0.0.1", server.port)}):
        service = BlobServiceClient(f"https://{server.host}", credential={"account_name": account, "account_key": key},
                                    connection_verify=ca_bundle)
        out = {}
        for container in service.list_containers():
            client = service.get_container_client(container.name)
            for blob in client.list_blobs():
                out[f"{container.name}/{blob.name}"] = client.download_blob(blob.name).readall()
        return out


def test_an_unresolved_key_vault_reference_costs_the_shared_cache_not_the_app(
        azure: tuple[dict[str, Any], Admin], tmp_path: Path) -> None:
    """App Service leaves `@Microsoft.KeyVault(...)` as text when it can't resolve it (secret missing,
    no access yet). The app names the setting, serves from its in-process cache, writes nothing."""
    info, admin = azure
    ev, settings = BRANCHES[(False, False)]
    settings = {**bicep.resolve_key_vault_references(ev, settings),
                "TokenCache__EncryptionKey": settings["TokenCache__EncryptionKey"]}  # left literal
    account, key = _storage(settings)
    azurite = start_azurite(tmp_path / "azurite", info, account, key)
    try:
        host = deploy(info, tmp_path, settings, {azurite.host: azurite.port}, [])
        try:
            me = get(host, "/api/me", admin.mint(user="alice"))
            assert me.status_code == 200, me.text
        finally:
            stop(host["proc"])
        log = Path(host["log"]).read_text()
        assert "TokenCache__EncryptionKey is an unresolved Key Vault reference" in log
        assert "SecretName" not in log
        assert _blobs(azurite, account, key, info["ca_bundle"]) == {}  # nothing written outside the process
    finally:
        azurite.stop()
