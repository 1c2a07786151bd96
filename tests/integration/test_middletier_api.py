"""End to end: client token -> local Functions host -> MiddleTierApi -> Entra OBO -> Graph-like API."""
from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.client import sign_in
from devstack.launch import start_devstack, stop

from .test_entra_msal import API_SCOPE

http = requests.Session()
http.trust_env = False


def call(host: dict[str, Any], token: str | None = None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return http.get(host["url"] + "/api/me", headers=headers, timeout=30)


def obo_count(admin: Any) -> int:
    return admin.stats().get("entra.token", {}).get("by_grant", {}).get("on_behalf_of", 0)


def challenge_params(header: str) -> dict[str, str]:
    import re
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


@pytest.fixture(scope="module")
def tokens(devstack: dict[str, Any]) -> dict[str, str]:
    return {u: sign_in(devstack, u, [API_SCOPE])["access_token"] for u in ("alice", "bob", "carol")}


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_profile_comes_back_for_the_signed_in_user(devstack: dict[str, Any], function_host: dict[str, Any],
                                                   tokens: dict[str, str], user: str) -> None:
    r = call(function_host, tokens[user])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == devstack["users"][user]["oid"]
    assert body["userPrincipalName"] == devstack["users"][user]["upn"]
    assert r.headers["Cache-Control"] == "no-store"


def test_repeat_calls_are_served_from_the_partition(devstack: dict[str, Any], function_host: dict[str, Any],
                                                    admin: Any) -> None:
    token = sign_in(devstack, "alice", [API_SCOPE])["access_token"]
    before = obo_count(admin)
    assert call(function_host, token).status_code == 200
    assert obo_count(admin) == before + 1
    for _ in range(5):
        assert call(function_host, token).status_code == 200
    assert obo_count(admin) == before + 1  # no new OBO for the same assertion
    fresh = sign_in(devstack, "alice", [API_SCOPE])["access_token"]
    assert call(function_host, fresh).status_code == 200
    assert obo_count(admin) == before + 2  # a new token for the same user is a new partition


def test_concurrent_users_never_see_each_other(devstack: dict[str, Any], function_host: dict[str, Any],
                                               admin: Any) -> None:
    users = ["alice", "bob"] * 3
    tokens = {u: admin.mint(user=u) for u in set(users)}
    before = obo_count(admin)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda u: (u, call(function_host, tokens[u])), users * 4))
    for user, response in results:
        assert response.status_code == 200
        assert response.json()["id"] == devstack["users"][user]["oid"]
    # Concurrent misses on one partition wait for one OBO: one call per distinct assertion.
    assert obo_count(admin) == before + 2


def test_mfa_policy_user_gets_a_claims_challenge(devstack: dict[str, Any], function_host: dict[str, Any],
                                                 tokens: dict[str, str]) -> None:
    r = call(function_host, tokens["carol"])
    assert r.status_code == 401
    params = challenge_params(r.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_claims"
    assert params["client_id"] == devstack["apps"]["middletier-api"]["client_id"]
    claims = json.loads(base64.b64decode(params["claims"]))
    assert claims["access_token"]["capolids"]["essential"] is True
    body = r.json()
    assert body["status"] == 401 and body["aadsts"] == [50076] and json.loads(body["claims"]) == claims
    assert tokens["carol"] not in r.text


def test_claims_challenge_round_trip_with_mfa(devstack: dict[str, Any], function_host: dict[str, Any]) -> None:
    from devstack.client import public_client
    pca = public_client(devstack)
    first = sign_in(devstack, "carol", [API_SCOPE], app=pca)
    challenge = challenge_params(call(function_host, first["access_token"]).headers["WWW-Authenticate"])
    claims = base64.b64decode(challenge["claims"]).decode()
    second = sign_in(devstack, "carol", [API_SCOPE], app=pca, claims_challenge=claims)
    r = call(function_host, second["access_token"])
    assert r.status_code == 200 and r.json()["id"] == devstack["users"]["carol"]["oid"]


def test_downstream_cae_challenge_is_satisfied_by_a_fresh_obo(devstack: dict[str, Any],
                                                              function_host: dict[str, Any], admin: Any) -> None:
    token = admin.mint(user="bob")
    assert call(function_host, token).status_code == 200
    admin.post("/graph/revoke", {"user": "bob", "scope": "tokens"})
    before = obo_count(admin)
    try:
        # The cached Graph token predates the CAE event: Graph challenges, the app re-runs OBO with the
        # claims once, and the fresh token passes. The caller never notices.
        r = call(function_host, token)
        assert r.status_code == 200 and r.json()["id"] == devstack["users"]["bob"]["oid"]
        assert obo_count(admin) == before + 1
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


def test_revoked_session_reaches_the_client_as_a_claims_challenge(devstack: dict[str, Any],
                                                                  function_host: dict[str, Any],
                                                                  admin: Any) -> None:
    token = admin.mint(user="bob")
    admin.post("/graph/revoke", {"user": "bob", "scope": "sessions"})
    try:
        r = call(function_host, token)
        assert r.status_code == 401
        params = challenge_params(r.headers["WWW-Authenticate"])
        assert params["error"] == "insufficient_claims"
        assert "nbf" in json.loads(base64.b64decode(params["claims"]))["access_token"]
        assert r.json()["status"] == 401 and r.json()["reason"] == "interaction_required"
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


def _foreign(token: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(jwt.decode(token, options={"verify_signature": False}), key, algorithm="RS256",
                      headers={"kid": jwt.get_unverified_header(token)["kid"]})


@pytest.mark.parametrize("case,status,error", [
    ("missing", 401, None),
    ("basic-scheme", 401, "invalid_request"),
    ("other-audience", 401, "invalid_token"),
    ("expired", 401, "invalid_token"),
    ("foreign-key", 401, "invalid_token"),
    ("app-only-without-role", 403, "insufficient_scope"),
    ("user-without-scope", 403, "insufficient_scope"),
])
def test_bad_callers_are_refused(devstack: dict[str, Any], function_host: dict[str, Any], admin: Any,
                                 case: str, status: int, error: str | None) -> None:
    alice = admin.mint(user="alice")
    headers: dict[str, str] = {}
    token: str | None = {
        "missing": None,
        "basic-scheme": None,
        "other-audience": admin.mint(user="alice", scope="https://graph.microsoft.com/User.Read"),
        "expired": admin.mint(user="alice", lifetime=-600),
        "foreign-key": _foreign(alice),
        "app-only-without-role": admin.mint(client="daemon-client", scope="api://middletier/.default"),
        "user-without-scope": admin.mint(user="alice", claims={"scp": "something_else"}),
    }[case]
    if case == "basic-scheme":
        headers["Authorization"] = "Basic dXNlcjpwYXNz"
    r = call(function_host, token, **headers)
    assert r.status_code == status, r.text
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm=""')
    assert challenge_params(challenge).get("error") == error
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == status
    if token:
        assert token not in r.text and token not in challenge


def test_signing_key_rollover_costs_one_jwks_fetch(private_devstack: Any, host_factory: Any) -> None:
    devstack, admin = private_devstack
    host = host_factory(devstack)
    assert call(host, admin.mint(user="alice")).status_code == 200
    before = admin.stats()["entra.jwks"]["total"]
    admin.post("/rotate/signing-key")
    for user in ("alice", "bob", "alice"):
        assert call(host, admin.mint(user=user)).status_code == 200
    assert admin.stats()["entra.jwks"]["total"] == before + 1


def test_configuration_error_names_the_key_not_the_value(devstack: dict[str, Any], host_factory: Any,
                                                         admin: Any) -> None:
    host = host_factory(devstack, AzureAd__ClientId="not-a-guid-but-secretish")
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 500
    body = r.json()
    assert body["setting"] == "AzureAd__ClientId" and "not-a-guid-but-secretish" not in r.text
    log = Path(host["log"]).read_text()
    assert log.count("configuration error: Setting AzureAd__ClientId") == 1
    assert call(host, admin.mint(user="alice")).status_code == 500
    assert Path(host["log"]).read_text().count("configuration error") == 1  # logged once per process


def test_entra_slower_than_the_deadline_is_504(devstack: dict[str, Any], host_factory: Any, admin: Any) -> None:
    host = host_factory(devstack, AzureAd__TimeoutSeconds="1")
    assert call(host, admin.mint(user="bob")).status_code == 200  # warm: keys and MSAL app ready
    admin.post("/faults", {"service": "entra", "endpoint": "token", "latency_ms": 3000, "count": 2})
    started = time.monotonic()
    r = call(host, admin.mint(user="bob"))
    assert r.status_code == 504 and r.json()["upstream"] == "entra"
    assert time.monotonic() - started < 2.9  # answered at the deadline, before Entra did


def test_entra_unreachable_is_503_not_a_hang(tmp_path_factory: Any, host_factory: Any) -> None:
    proc, info = start_devstack(tmp_path_factory.mktemp("doomed"))
    from devstack.launch import Admin
    admin = Admin(info)
    warm_token, cold_token = admin.mint(user="alice"), admin.mint(user="bob")
    warm = host_factory(info)
    cold = host_factory(info)
    assert call(warm, warm_token).status_code == 200
    stop(proc)
    for host, token in ((cold, cold_token), (warm, cold_token)):
        started = time.monotonic()
        r = call(host, token)
        assert r.status_code == 503, r.text
        assert r.json()["upstream"] == "entra"
        assert time.monotonic() - started < 10
