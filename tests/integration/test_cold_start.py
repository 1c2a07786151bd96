"""A cold first request overlaps its two independent chains (issue 19 item 3; ``bench/cold_start.py`` measures it).

The signing keys (OpenID metadata -> JWKS) and the app's credential (Key Vault's challenge -> managed identity ->
Key Vault) are fetched at once; MSAL's authority reads the signing keys' metadata document (one call, not two);
then OBO, then Graph. With latency added to every upstream call by the devstack's fault controls (traced: each
call's arrival and answer), the first request takes less than its calls one after another would, and a credential
failure still answers, and is remembered, as before.
"""
from __future__ import annotations

from typing import Any

import requests

from devstack.launch import Admin, HostFactory

SERVICES = ("entra", "identity", "keyvault", "graph")
LATENCY_MS = 400  # well above the CPU between two calls on a busy 2-core machine, so the overlap shows
http = requests.Session()
http.trust_env = False


def _slow_everything(admin: Admin, latency_ms: int) -> None:
    for service in SERVICES:
        admin.post("/faults", {"service": service, "endpoint": "*", "latency_ms": latency_ms, "count": None,
                               "trace": True})


def _trace(admin: Admin) -> list[tuple[str, float, float]]:
    faults = admin.http.get(admin.base + "/faults", timeout=10).json()["faults"]
    return sorted(((f"{f['service']}.{c[0]}", c[1], c[2]) for f in faults for c in f["calls"]), key=lambda c: c[1])


def _me(host: dict[str, Any], token: str) -> requests.Response:
    return http.get(host["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_the_first_request_fetches_the_credential_beside_the_signing_keys(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: HostFactory) -> None:
    info, admin = private_devstack
    token = admin.mint(user="alice")
    host = host_factory(info)
    admin.post("/stats/reset")
    _slow_everything(admin, LATENCY_MS)
    r = _me(host, token)
    assert r.status_code == 200, r.text
    calls = _trace(admin)
    admin.clear_faults()
    stats = admin.stats()
    counted = {name: entry["total"] for name, entry in stats.items() if name.split(".")[0] in SERVICES}
    # 7 calls: MSAL's tenant discovery shares the signing keys' metadata document; Key Vault's two are the SDK's
    # challenge (unauthenticated -> 401) and the read; every one of them went through the fault controls
    assert counted == {"entra.discovery": 1, "entra.jwks": 1, "identity.token": 1, "keyvault.get": 2,
                       "entra.token": 1, "graph.me": 1}
    assert len(calls) == sum(counted.values())
    first = {name: (arrived, answered) for name, arrived, answered in reversed(calls)}  # each name's first call
    assert first["keyvault.secrets"][0] < first["entra.jwks"][1]   # the credential's chain began before the keys came
    assert first["entra.token"][0] > max(first["entra.jwks"][1], max(a for n, _, a in calls if n.startswith(
        ("keyvault", "identity"))))                                 # OBO after both chains
    span = max(a for _, _, a in calls) - min(s for _, s, _ in calls)
    one_after_another = sum(a - s for _, s, a in calls)
    assert span < one_after_another  # calls overlapped: one after another, the span is at least their sum


def test_a_credential_failure_on_a_cold_start_answers_and_is_remembered_as_before(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: HostFactory) -> None:
    info, admin = private_devstack
    token = admin.mint(user="alice")
    host = host_factory(info, MiddleTier__CredentialFailureBackoffSeconds="60")
    admin.post("/faults", {"service": "keyvault", "endpoint": "*", "status": 503, "count": None})
    try:
        answers = [_me(host, token) for _ in range(2)]
        kv_calls = admin.stats().get("keyvault.get", {}).get("total", 0)
    finally:
        admin.clear_faults()
    for r in answers:
        assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json"
        body = r.json()
        assert (body["error"], body["upstream"], body["detail"]) == (
            "upstream_error", "keyvault", "The app's credential could not be loaded from Key Vault.")
    # azure-core retries once (retry_total=1), on the first request only: the second answers from the backoff
    assert kv_calls == 2
    assert _me(host, token).status_code == 503  # still within the backoff with the vault back: remembered


def test_a_cold_start_without_latency_makes_the_same_seven_calls(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: HostFactory) -> None:
    """No timing luck needed: the calls of a cold first request with nothing slowed (traced through 0 ms faults)."""
    info, admin = private_devstack
    token = admin.mint(user="bob")
    host = host_factory(info)
    _slow_everything(admin, 0)
    assert _me(host, token).status_code == 200
    calls = [name for name, _, _ in _trace(admin)]
    admin.clear_faults()
    assert sorted(calls) == ["entra.discovery", "entra.jwks", "entra.token", "graph.me", "identity.token",
                             "keyvault.secrets", "keyvault.secrets"]
