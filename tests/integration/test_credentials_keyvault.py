"""The app's credential from Key Vault via managed identity: sources, single-flight, rotation, outages."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import msal
import pytest
import requests

from devstack.client import session
from devstack.launch import Admin

from .test_middletier_api import call


def counter(admin: Admin, endpoint: str, label: str, value: str) -> int:
    return admin.stats().get(endpoint, {}).get(f"by_{label}", {}).get(value, 0)


@pytest.fixture
def own_devstack(private_devstack: tuple[dict[str, Any], Admin]) -> tuple[dict[str, Any], Admin]:
    return private_devstack


@pytest.mark.parametrize("credential", ["keyvault-certificate", "keyvault-secret", "federated", "secret"])
def test_each_credential_source_serves_requests(devstack: dict[str, Any], host_factory: Any, admin: Admin,
                                                credential: str) -> None:
    host = host_factory(devstack, credential=credential)
    kv_before = counter(admin, "keyvault.get", "outcome", "200")
    exchange_before = counter(admin, "identity.token", "resource", "api://AzureADTokenExchange")
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == devstack["users"]["alice"]["oid"]
    kv_reads = counter(admin, "keyvault.get", "outcome", "200") - kv_before
    exchanges = counter(admin, "identity.token", "resource", "api://AzureADTokenExchange") - exchange_before
    assert kv_reads == (1 if credential.startswith("keyvault") else 0)
    assert exchanges == (1 if credential == "federated" else 0)
    settings = Path(host["log"]).parent / "local.settings.json"
    if credential != "secret":  # no secret in the settings file
        text = settings.read_text()
        assert all(s not in text for s in devstack["apps"]["middletier-api"]["secrets"])


def test_certificate_with_x5c(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__SendX5C="true")
    assert call(host, admin.mint(user="bob")).status_code == 200


def test_cold_start_burst_reads_key_vault_once(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    from .test_token_cache_scale import UNGATED  # a burst of cold OBOs: the acquisition bound is not under test
    host = host_factory(devstack, **UNGATED)
    mi_before = counter(admin, "identity.token", "resource", "https://vault.azure.net")
    kv_before = counter(admin, "keyvault.get", "secret", "middletier-cert")
    tokens = [admin.mint(user=("alice", "bob")[i % 2]) for i in range(100)]
    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda t: call(host, t).status_code, tokens))
    assert statuses == [200] * 100
    assert counter(admin, "identity.token", "resource", "https://vault.azure.net") - mi_before == 1
    assert counter(admin, "keyvault.get", "secret", "middletier-cert") - kv_before == 1


def _flow_while(host: dict[str, Any], admin: Admin, action: Any) -> list[int]:
    """Requests with fresh assertions (so each needs OBO) flow before, during and after ``action``."""
    statuses: list[int] = []
    started, stop_flag = threading.Event(), threading.Event()

    def flow() -> None:
        while not stop_flag.is_set() or len(statuses) < 20:
            statuses.append(call(host, admin.mint(user="alice")).status_code)
            started.set()

    workers = [threading.Thread(target=flow) for _ in range(3)]
    for w in workers:
        w.start()
    started.wait(30)
    action()
    count_at_action = len(statuses)
    while len(statuses) < count_at_action + 15:  # requests after the rotation, each an OBO
        statuses.append(call(host, admin.mint(user="bob")).status_code)
    stop_flag.set()
    for w in workers:
        w.join(30)
    return statuses


def test_secret_rotation_is_a_non_event(own_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = own_devstack
    host = host_factory(info, credential="keyvault-secret")
    assert call(host, admin.mint(user="alice")).status_code == 200
    before = counter(admin, "keyvault.get", "secret", "middletier-secret")
    statuses = _flow_while(host, admin, lambda: admin.post("/rotate/secret", {
        "app": "middletier-api", "revoke_previous": True, "vault_secret": "middletier-secret"}))
    assert set(statuses) == {200}, statuses
    assert counter(admin, "keyvault.get", "secret", "middletier-secret") - before == 1
    assert counter(admin, "entra.token", "outcome", "AADSTS7000215") >= 1  # the old secret was refused


def test_certificate_rotation_is_a_non_event(own_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = own_devstack
    host = host_factory(info)
    assert call(host, admin.mint(user="alice")).status_code == 200
    before = counter(admin, "keyvault.get", "secret", "middletier-cert")
    statuses = _flow_while(host, admin, lambda: admin.post("/rotate/certificate", {
        "app": "middletier-api", "certificate": "middletier-cert", "revoke_previous": True}))
    assert set(statuses) == {200}, statuses
    assert counter(admin, "keyvault.get", "secret", "middletier-cert") - before == 1
    assert counter(admin, "entra.token", "outcome", "AADSTS700027") >= 1


def test_key_vault_down_at_start_is_503_and_recovers(devstack: dict[str, Any], host_factory: Any,
                                                     admin: Admin) -> None:
    host = host_factory(devstack, MiddleTier__CredentialFailureBackoffSeconds="0")
    admin.post("/faults", {"service": "keyvault", "endpoint": "secrets", "status": 503, "count": None})
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 503 and r.json()["upstream"] == "keyvault"
    log = Path(host["log"]).read_text()
    assert "client credential from Key Vault failed" in log and "middletier-cert" in log
    admin.clear_faults()
    assert call(host, admin.mint(user="alice")).status_code == 200


def test_identity_without_access_is_503_then_recovers(own_devstack: tuple[dict[str, Any], Admin],
                                                      host_factory: Any) -> None:
    info, admin = own_devstack
    admin.post("/keyvault/access", {"identity": "middletier-identity", "revoke": True})
    host = host_factory(info, MiddleTier__CredentialFailureBackoffSeconds="0")
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 503
    assert "access denied: grant the identity 'Key Vault Secrets User'" in Path(host["log"]).read_text()
    admin.post("/keyvault/access", {"identity": "middletier-identity"})
    assert call(host, admin.mint(user="alice")).status_code == 200


def test_failure_backoff_limits_key_vault_attempts(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, MiddleTier__CredentialFailureBackoffSeconds="600")
    admin.post("/faults", {"service": "keyvault", "endpoint": "secrets", "status": 503, "count": None})
    before = admin.stats().get("keyvault.get", {}).get("total", 0)
    statuses = [call(host, admin.mint(user="bob")).status_code for _ in range(10)]
    assert statuses == [503] * 10
    # One load attempt (the SDK retries once): the other nine requests fail fast from the backoff.
    assert admin.stats()["keyvault.get"]["total"] - before == 2


# --- the emulators with the SDKs alone ------------------------------------------------------------
def test_unmodified_sdks_read_secrets_and_certificates(devstack: dict[str, Any], monkeypatch: Any) -> None:
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.secrets import SecretClient
    monkeypatch.setenv("IDENTITY_ENDPOINT", devstack["endpoints"]["identity"])
    monkeypatch.setenv("IDENTITY_HEADER", devstack["identity_header"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", devstack["ca_bundle"])
    credential = ManagedIdentityCredential()
    secrets = SecretClient(devstack["vault"]["url"], credential, verify_challenge_resource=False)
    secret = secrets.get_secret("middletier-secret")
    assert secret.value and secret.id.startswith(devstack["vault"]["url"] + "/secrets/middletier-secret/")
    assert {p.name for p in secrets.list_properties_of_secrets()} >= {"middletier-secret", "middletier-cert"}
    assert [v.version for v in secrets.list_properties_of_secret_versions("middletier-secret")][-1] == \
        secret.properties.version
    cert_secret = secrets.get_secret("middletier-cert")
    assert cert_secret.properties.content_type == "application/x-pkcs12"
    cert = CertificateClient(devstack["vault"]["url"], credential, verify_challenge_resource=False) \
        .get_certificate("middletier-cert")
    assert cert.cer and cert.properties.version == cert_secret.properties.version
    with pytest.raises(Exception) as missing:
        secrets.get_secret("no-such-secret")
    assert type(missing.value).__name__ == "ResourceNotFoundError"


def test_key_vault_challenge_and_access_control(devstack: dict[str, Any], admin: Admin) -> None:
    http = session(devstack["ca_bundle"])
    url = devstack["vault"]["url"] + "/secrets/middletier-secret/?api-version=7.5"
    r = http.get(url, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "Unauthorized"
    assert r.headers["WWW-Authenticate"] == (f'Bearer authorization="{devstack["authority"]}", '
                                             'resource="https://vault.azure.net"')
    identity = requests.get(devstack["endpoints"]["identity"], params={
        "api-version": "2019-08-01", "resource": "https://vault.azure.net",
        "client_id": devstack["managed_identities"]["unrelated-identity"]["client_id"]},
        headers={"X-IDENTITY-HEADER": devstack["identity_header"]}, timeout=10).json()
    assert identity["client_id"] == devstack["managed_identities"]["unrelated-identity"]["client_id"]
    denied = http.get(url, headers={"Authorization": f"Bearer {identity['access_token']}"}, timeout=10)
    assert denied.status_code == 403 and denied.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    graph_token = admin.mint(user="alice", scope="https://graph.microsoft.com/User.Read")
    wrong_aud = http.get(url, headers={"Authorization": f"Bearer {graph_token}"}, timeout=10)
    assert wrong_aud.status_code == 401 and "AKV10022" in wrong_aud.json()["error"]["message"]


@pytest.mark.parametrize("headers,params,status", [
    ({}, {"resource": "https://vault.azure.net"}, 400),
    ({"X-IDENTITY-HEADER": "wrong"}, {"resource": "https://vault.azure.net"}, 401),
    (None, {}, 400),
    (None, {"resource": "https://vault.azure.net", "client_id": "00000000-0000-0000-0000-000000000000"}, 400),
    (None, {"resource": "https://nowhere.example"}, 400),
])
def test_managed_identity_endpoint_errors(devstack: dict[str, Any], headers: Any, params: dict[str, str],
                                          status: int) -> None:
    headers = {"X-IDENTITY-HEADER": devstack["identity_header"]} if headers is None else headers
    r = requests.get(devstack["endpoints"]["identity"], params={"api-version": "2019-08-01", **params},
                     headers=headers, timeout=10)
    assert r.status_code == status and r.json()["statusCode"] == status


def test_managed_identity_token_shape(devstack: dict[str, Any]) -> None:
    r = requests.get(devstack["endpoints"]["identity"], params={
        "api-version": "2019-08-01", "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": devstack["identity_header"]}, timeout=10).json()
    assert r["token_type"] == "Bearer" and r["resource"] == "https://vault.azure.net" and r["expires_on"].isdigit()
    claims = jwt.decode(r["access_token"], options={"verify_signature": False})
    mi = devstack["managed_identities"]["middletier-identity"]
    assert claims["aud"] == "https://vault.azure.net" and claims["oid"] == mi["principal_id"]
    assert claims["appid"] == mi["client_id"] and claims["idtyp"] == "app"


def test_federated_credential_from_an_untrusted_identity_is_refused(devstack: dict[str, Any]) -> None:
    other = requests.get(devstack["endpoints"]["identity"], params={
        "api-version": "2019-08-01", "resource": "api://AzureADTokenExchange",
        "client_id": devstack["managed_identities"]["unrelated-identity"]["client_id"]},
        headers={"X-IDENTITY-HEADER": devstack["identity_header"]}, timeout=10).json()["access_token"]
    app = msal.ConfidentialClientApplication(
        devstack["apps"]["middletier-api"]["client_id"], client_credential={"client_assertion": lambda: other},
        authority=devstack["authority"], instance_discovery=False, http_client=session(devstack["ca_bundle"]))
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert result["error_codes"] == [70021]
