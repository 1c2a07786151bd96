"""Entra's errors through the app: an AADSTS answer injected on the real devstack's token endpoint,
the request made through the real local Functions host, and the app's exact answer asserted —
status, problem ``error``, ``reason``/``aadsts``, ``WWW-Authenticate`` and ``Retry-After`` — for each
family ``shared/aadsts.py`` maps (issue 15, item 3). ``tests/unit/test_aadsts.py`` covers the mapping
code by code; this proves each family survives MSAL, the pipeline and the host on the wire.

Faults are counted (``count``), so each case also proves the app really asked Entra, and how often.
Every case mints its own caller token (a fresh partition: a cache miss, so a real OBO) with an
object id of its own, so a throttle remembered for one case's caller never answers another's.
"""
from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.launch import Admin

FABRIKAM = "f00dfeed-2b3c-4d5e-8f6a-7b8c9d0e1f2a"
GRAPH = "https://graph.microsoft.com"
http = requests.Session()
http.trust_env = False


def get(host: dict[str, Any], path: str, token: str) -> requests.Response:
    return http.get(host["url"] + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def challenge(header: str) -> dict[str, str]:
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header))


def user_token(admin: Admin, user: str = "alice", **kwargs: Any) -> str:
    """A fresh caller token (its own partition) with an object id of its own (its own throttle key)."""
    return admin.mint(user=user, claims={"oid": str(uuid.uuid4())}, **kwargs)


def app_token(admin: Admin) -> str:
    return admin.mint(client="daemon-client", scope="api://middletier/.default", roles=["MiddleTier.Admin"])


def token_outcomes(admin: Admin) -> dict[str, int]:
    return dict(admin.stats().get("entra.token", {}).get("by_outcome", {}))


def fired(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def vault_reads(admin: Admin) -> int:
    return int(admin.stats().get("keyvault.get", {}).get("total", 0))


def inject(admin: Admin, grant: str = "on_behalf_of", **fault: Any) -> None:
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": grant, **fault})


@pytest.fixture(scope="module")
def app_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    return host_factory(devstack)


@pytest.fixture(scope="module")
def multi_tenant_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    return host_factory(devstack, AzureAd__TenantId="organizations",
                        AzureAd__AllowedTenants=f"{devstack['tenant_id']} {FABRIKAM}")


# --- the caller's token, the user, the registration: OBO answered 4xx --------------------------------
def assert_mfa_claims(raw: str) -> None:
    """Entra's claims challenge for a Conditional Access policy (as the devstack's grants send it)."""
    claims = json.loads(raw)
    policy = claims["access_token"]["capolids"]
    assert claims == {"access_token": {"capolids": {"essential": True, "values": policy["values"]}}}
    assert len(policy["values"]) == 1 and uuid.UUID(policy["values"][0])


# case id -> (fault, HTTP status, problem error, expected body fields, WWW-Authenticate params or None)
# WWW-Authenticate params: the exact set of parameter names, with values checked where given (None: any).
CASES: dict[str, tuple[dict[str, Any], int, str, dict[str, Any], dict[str, Any] | None]] = {
    "65001 consent (suberror consent_required)": (
        {"aadsts": 65001}, 401, "consent_required", {"reason": "consent_required", "aadsts": [65001]},
        {"realm": "", "error": "consent_required", "authorization_uri": "AUTHORIZE", "client_id": "CLIENT",
         "error_description": None}),
    "50076 MFA with claims": (
        {"aadsts": 50076}, 401, "insufficient_claims", {"reason": "interaction_required", "aadsts": [50076]},
        {"realm": "", "error": "insufficient_claims", "authorization_uri": "AUTHORIZE", "client_id": "CLIENT",
         "error_description": None, "claims": "CLAIMS"}),
    "50076 MFA without claims": (
        {"aadsts": 50076, "claims": False}, 401, "interaction_required",
        {"reason": "interaction_required", "aadsts": [50076]},
        {"realm": "", "error": "interaction_required", "authorization_uri": "AUTHORIZE", "client_id": "CLIENT",
         "error_description": None}),
    "53003 CA block with claims": (
        {"aadsts": 53003}, 401, "insufficient_claims", {"reason": "interaction_required", "aadsts": [53003]},
        {"realm": "", "error": "insufficient_claims", "authorization_uri": "AUTHORIZE", "client_id": "CLIENT",
         "error_description": None, "claims": "CLAIMS"}),
    "53003 CA block without claims": (
        {"aadsts": 53003, "claims": False}, 403, "access_denied", {"aadsts": [53003]}, None),
    "500133 expired assertion": (
        {"aadsts": 500133}, 401, "invalid_token", {}, {"realm": "", "error": "invalid_token", "error_description": None}),
    "70011 invalid scope": (
        {"aadsts": 70011}, 500, "configuration_error", {"aadsts": [70011]}, None),
    "500011 single-tenant": (
        {"aadsts": 500011}, 500, "configuration_error", {"aadsts": [500011]}, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_obo_error_reaches_the_caller_as_the_apps_answer(devstack: dict[str, Any], app_host: dict[str, Any],
                                                         admin: Admin, case: str) -> None:
    fault, status, error, fields, www = CASES[case]
    code = fault["aadsts"]
    before = token_outcomes(admin)
    inject(admin, count=1, **fault)
    r = get(app_host, "/api/me", user_token(admin))
    assert fired(before, token_outcomes(admin)) == {"fault-400": 1}  # Entra was asked, once
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["error"] == error
    assert body["type"] == f"urn:middletier:problem:{error}"
    for key, value in fields.items():
        assert body[key] == value, (key, body)
    if not fields.get("aadsts"):
        assert "aadsts" not in body, body
    assert f"AADSTS{code}" in body["detail"]
    if www is None:
        assert "WWW-Authenticate" not in r.headers, r.headers
        assert "claims" not in body
        return
    params = challenge(r.headers["WWW-Authenticate"])
    assert set(params) == set(www), params
    expected = {"AUTHORIZE": f"{devstack['authority']}/oauth2/v2.0/authorize",
                "CLIENT": devstack["apps"]["middletier-api"]["client_id"]}
    for key, value in www.items():
        if value == "CLAIMS":
            # the client's MSAL reads the claims, base64, from the header: Entra's claims, byte for byte
            assert base64.b64decode(params["claims"]).decode() == body["claims"]
            assert_mfa_claims(body["claims"])
        elif value is not None:
            assert params[key] == expected.get(value, value), (key, params)
    if "claims" not in www:
        assert "claims" not in body


def test_500011_in_another_tenant_is_that_tenants_state_403(devstack: dict[str, Any],
                                                            multi_tenant_host: dict[str, Any], admin: Admin) -> None:
    before = token_outcomes(admin)
    inject(admin, count=1, aadsts=500011)
    r = get(multi_tenant_host, "/api/me", user_token(admin, "dave", tenant=FABRIKAM))
    assert fired(before, token_outcomes(admin)) == {"fault-400": 1}
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "tenant_not_provisioned" and body["tenant"] == FABRIKAM
    assert body["aadsts"] == [500011]
    assert GRAPH in body["detail"] and "WWW-Authenticate" not in r.headers
    # the same code for a user of the home tenant, whose authority is ours too in multi-tenant mode:
    # still that tenant's state (403), named as the home tenant
    inject(admin, count=1, aadsts=500011)
    home = get(multi_tenant_host, "/api/me", user_token(admin))
    assert home.status_code == 403 and home.json()["tenant"] == devstack["tenant_id"]


# --- Entra unavailable or throttling: 503 with Retry-After, one request upstream -----------------------
@pytest.mark.parametrize("fault,upstream_outcome,retry_after,detail", [
    # MSAL raises on a 5xx: the app answers 503 with Entra's own Retry-After
    ({"status": 503, "retry_after": 11}, "fault-503", "11", "The identity provider is unavailable or throttling."),
    # MSAL hands a 429 back as a dict: classified (temporarily_unavailable, AADSTS90033), Entra's Retry-After
    ({"status": 429, "retry_after": 17}, "fault-429", "17",
     "The identity provider is throttling or unavailable: temporarily_unavailable (AADSTS90033)"),
    # 503 temporarily_unavailable without Retry-After: the app holds the caller for 5 s and says so
    ({"aadsts": 90033}, "fault-503", "5", "The identity provider is unavailable or throttling."),
], ids=["503 temporarily_unavailable Retry-After 11", "429 throttled Retry-After 17",
        "AADSTS90033 temporarily_unavailable, no Retry-After"])
def test_entra_unavailable_or_throttling_is_503_with_retry_after(app_host: dict[str, Any], admin: Admin,
                                                                 fault: dict[str, Any], upstream_outcome: str,
                                                                 retry_after: str | None, detail: str) -> None:
    token = user_token(admin)
    before = token_outcomes(admin)
    inject(admin, count=None, **fault)  # until cleared: a retry by MSAL or the app would be counted
    try:
        r = get(app_host, "/api/me", token)
        again = get(app_host, "/api/me", token)  # the same caller, told to wait: not asked again
    finally:
        admin.clear_faults()
    assert fired(before, token_outcomes(admin)) == {upstream_outcome: 1}
    assert r.status_code == 503, r.text
    body = r.json()
    assert (body["error"], body["upstream"], body["title"], body["detail"]) == \
        ("upstream_error", "entra", "Service Unavailable", detail)
    assert "aadsts" not in body and "WWW-Authenticate" not in r.headers
    assert r.headers.get("Retry-After") == retry_after
    assert again.status_code == 503 and again.json()["error"] == "upstream_error"
    assert 1 <= int(again.headers["Retry-After"]) <= int(retry_after or 5)  # what is left of the hold


def test_first_503_without_entras_retry_after_still_says_how_long(app_host: dict[str, Any], admin: Admin) -> None:
    inject(admin, count=1, aadsts=90033)
    r = get(app_host, "/api/me", user_token(admin))
    assert r.status_code == 503 and r.headers.get("Retry-After") == "5"


# --- the app's own credential: 500 invalid_client, one reload of the credential, rate-limited ----------
def reload_lines(host: dict[str, Any]) -> int:
    return sum("reloading it once" in line for line in Path(host["log"]).read_text(errors="replace").splitlines())


def admin_api(host: dict[str, Any], admin: Admin) -> requests.Response:
    return get(host, "/api/directory/users/alice@contoso.dev", app_token(admin))


def assert_credential_error(r: requests.Response, code: int) -> None:
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["error"] == "invalid_client" and body["title"] == "Credential error"
    assert body["aadsts"] == [code] and f"AADSTS{code}" in body["detail"]
    assert "WWW-Authenticate" not in r.headers  # never the caller's fault


@pytest.mark.parametrize("code,first", [(700024, "on_behalf_of"), (7000215, "client_credentials")],
                         ids=["700024 client assertion time range, OBO first",
                              "7000215 bad secret, client credentials first"])
def test_refused_credential_is_500_after_one_rate_limited_reload(devstack: dict[str, Any], host_factory: Any,
                                                                 admin: Admin, code: int, first: str) -> None:
    # A host of its own: the reload is once per credential generation and per backoff (here 600 s).
    host = host_factory(devstack, MiddleTier__CredentialFailureBackoffSeconds="600")
    assert get(host, "/api/me", admin.mint(user="alice")).status_code == 200  # the credential is loaded
    reads = vault_reads(admin)
    grants = [first, "client_credentials" if first == "on_behalf_of" else "on_behalf_of"]

    def through(grant: str) -> requests.Response:
        return get(host, "/api/me", admin.mint(user="alice")) if grant == "on_behalf_of" else admin_api(host, admin)

    # 1. Refused twice: the app reloads its credential from Key Vault once and tries once more.
    before = token_outcomes(admin)
    inject(admin, grants[0], count=2, aadsts=code)
    assert_credential_error(through(grants[0]), code)
    assert fired(before, token_outcomes(admin)) == {"fault-401": 2}
    assert vault_reads(admin) - reads == 1
    # 2. Refused again, on the other grant, within the backoff: tried again, but no second reload.
    before = token_outcomes(admin)
    inject(admin, grants[1], count=2, aadsts=code)
    assert_credential_error(through(grants[1]), code)
    assert fired(before, token_outcomes(admin)) == {"fault-401": 2}
    assert vault_reads(admin) - reads == 1
    # 3. Refused once: the second try is answered, the caller never sees the refusal.
    before = token_outcomes(admin)
    inject(admin, grants[0], count=1, aadsts=code)
    assert through(grants[0]).status_code == 200
    assert fired(before, token_outcomes(admin)) == {"fault-401": 1, "ok": 1}
    assert vault_reads(admin) - reads == 1
    # The OBO path logs each refusal at ERROR (steps 1 and 3, or step 2); the client-credentials path
    # logs none — its reload shows only as the Key Vault read above.
    assert reload_lines(host) == (2 if first == "on_behalf_of" else 1)
