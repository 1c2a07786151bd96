"""Claims challenges end to end with an MSAL client, and HTTP hygiene of the function app."""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.client import public_client, sign_in
from devstack.launch import Admin

from .test_entra_msal import API_SCOPE
from .test_middletier_api import call, challenge_params

http = requests.Session()
http.trust_env = False


def claims_from(response: requests.Response) -> str:
    """What a client does with the 401: decode the claims challenge for MSAL."""
    encoded = challenge_params(response.headers["WWW-Authenticate"])["claims"]
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def test_cae_session_revocation_round_trip_with_msal(devstack: dict[str, Any], function_host: dict[str, Any],
                                                     admin: Admin) -> None:
    """Graph revokes bob's sessions (CAE); the app can't fix it with OBO, the client re-signs in with the claims."""
    pca = public_client(devstack)
    first = sign_in(devstack, "bob", [API_SCOPE], app=pca)
    assert call(function_host, first["access_token"]).status_code == 200
    admin.post("/graph/revoke", {"user": "bob", "scope": "sessions"})
    try:
        refused = call(function_host, first["access_token"])
        assert refused.status_code == 401
        claims = claims_from(refused)
        assert '"nbf"' in claims
        second = sign_in(devstack, "bob", [API_SCOPE], app=pca, claims_challenge=claims)
        retried = call(function_host, second["access_token"])
        assert retried.status_code == 200 and retried.json()["id"] == devstack["users"]["bob"]["oid"]
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


@pytest.mark.parametrize("capabilities,status", [(None, 401), ("none", 200)])
def test_graph_challenges_a_revoked_session_only_when_the_app_declares_cp1(
        devstack: dict[str, Any], function_host: dict[str, Any], host_factory: Any, admin: Admin,
        capabilities: str | None, status: int) -> None:
    """The app declares cp1 by default (AzureAd__ClientCapabilities): its Graph tokens are CAE tokens and a
    revoked session reaches the client as a claims challenge. Declaring none, the app gets ~1 h tokens that
    Graph keeps serving, revoked session or not, until they expire — as Graph does for such clients."""
    host = function_host if capabilities is None else host_factory(devstack, AzureAd__ClientCapabilities=capabilities)
    token = admin.mint(user="bob")
    assert call(host, token).status_code == 200
    admin.post("/graph/revoke", {"user": "bob", "scope": "sessions"})
    try:
        r = call(host, token)
        assert r.status_code == status, r.text
        if status == 401:
            assert '"nbf"' in claims_from(r) and challenge_params(r.headers["WWW-Authenticate"])["error"] == \
                "insufficient_claims"
        else:
            assert r.json()["id"] == devstack["users"]["bob"]["oid"]
            assert call(host, admin.mint(user="bob")).status_code == 200  # a fresh OBO: again a non-CAE token
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


def test_mfa_round_trip_with_msal(devstack: dict[str, Any], function_host: dict[str, Any]) -> None:
    pca = public_client(devstack)
    first = sign_in(devstack, "carol", [API_SCOPE], app=pca)
    refused = call(function_host, first["access_token"])
    assert refused.status_code == 401 and '"capolids"' in claims_from(refused)
    second = sign_in(devstack, "carol", [API_SCOPE], app=pca, claims_challenge=claims_from(refused))
    assert call(function_host, second["access_token"]).status_code == 200


# --- HTTP hygiene ------------------------------------------------------------------------------
def test_security_headers_and_correlation_id(function_host: dict[str, Any], admin: Admin) -> None:
    ok = call(function_host, admin.mint(user="alice"), **{"x-ms-client-request-id": "req-123"})
    refused = call(function_host, None)
    for r in (ok, refused):
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert ok.headers["x-ms-client-request-id"] == "req-123"
    generated = refused.headers["x-ms-client-request-id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", generated) and refused.json()["trace_id"] == generated
    assert f"[trace={generated}]" in Path(function_host["log"]).read_text()


def test_hostile_correlation_id_is_replaced(function_host: dict[str, Any]) -> None:
    r = call(function_host, None, **{"x-ms-client-request-id": "evil id\twith spaces " + "x" * 100})
    assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["x-ms-client-request-id"])


def test_only_configured_methods(function_host: dict[str, Any], admin: Admin) -> None:
    token = admin.mint(user="alice")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = http.request(method, function_host["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
        assert r.status_code == 404, method
    assert http.get(function_host["url"] + "/api/nothing-here", timeout=10).status_code == 404


def test_request_size_limit(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, FUNCTIONS_REQUEST_BODY_SIZE_LIMIT="1024")
    token = admin.mint(user="alice")
    big = http.get(host["url"] + "/api/me", data=b"x" * 4096, headers={"Authorization": f"Bearer {token}"},
                   timeout=10)
    assert big.status_code == 413
    small = http.get(host["url"] + "/api/me", data=b"x" * 100, headers={"Authorization": f"Bearer {token}"},
                     timeout=10)
    assert small.status_code == 200


def test_cors_exactly_as_configured(function_host: dict[str, Any], admin: Admin) -> None:
    allowed, other = "http://localhost:5173", "https://evil.example"
    preflight = http.options(function_host["url"] + "/api/me", headers={
        "Origin": allowed, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"}, timeout=10)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    refused = http.options(function_host["url"] + "/api/me", headers={
        "Origin": other, "Access-Control-Request-Method": "GET"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in refused.headers
    actual = call(function_host, admin.mint(user="alice"), Origin=allowed)
    assert actual.status_code == 200 and actual.headers["Access-Control-Allow-Origin"] == allowed
    foreign = call(function_host, admin.mint(user="alice"), Origin=other)
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_function_keys_enforced_for_non_anonymous_functions(tmp_path: Path) -> None:
    """authLevel function/admin, as the Functions host enforces it (x-functions-key or ?code=)."""
    import json
    import subprocess
    import sys

    from devstack.launch import ROOT, drain
    app = tmp_path / "app"
    (app / "Keyed").mkdir(parents=True)
    (app / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "x"}}}))
    (app / "Keyed" / "function.json").write_text(json.dumps({"bindings": [
        {"authLevel": "function", "type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"],
         "route": "items/{id:int}"}, {"type": "http", "direction": "out", "name": "$return"}]}))
    (app / "Keyed" / "__init__.py").write_text(
        "import azure.functions as func\n"
        "def main(req: func.HttpRequest, context) -> func.HttpResponse:\n"
        "    return func.HttpResponse(req.route_params['id'] + ':' + context.function_name)\n")
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "--state", str(tmp_path), "host", "--app", str(app),
                             "--port", "0", "--ready-json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "host.log", "w"), text=True)
    try:
        ready = json.loads(proc.stdout.readline())["ready"]  # type: ignore[union-attr]
        drain(proc.stdout, tmp_path / "out.log")
        url = ready["url"] + "/x/items/42"
        assert http.get(url, timeout=10).status_code == 401
        assert http.get(url, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
        ok = http.get(url, headers={"x-functions-key": ready["keys"]["default"]}, timeout=10)
        assert ok.status_code == 200 and ok.text == "42:Keyed"
        assert http.get(url, params={"code": ready["keys"]["master"]}, timeout=10).status_code == 200
        assert http.get(ready["url"] + "/x/items/abc", params={"code": ready["keys"]["master"]},
                        timeout=10).status_code == 404  # route constraint {id:int}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
