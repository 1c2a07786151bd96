"""TLS trust, discovery + JWKS with pyjwt, the Graph-like API, controls and the CLI."""
from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from typing import Any

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.client import session, sign_in
from devstack.launch import ROOT

from .test_entra_msal import API_SCOPE, GRAPH_SCOPE, middletier


@pytest.fixture(scope="module")
def graph_token(devstack: dict[str, Any]) -> str:
    user = sign_in(devstack, "alice", [API_SCOPE])
    return middletier(devstack).acquire_token_on_behalf_of(user["access_token"], [GRAPH_SCOPE])["access_token"]


# --- TLS: the REQUESTS_CA_BUNDLE trap and the two ways out ------------------------------------
def test_requests_env_bundle_overrides_session_verify(devstack: dict[str, Any], monkeypatch: Any) -> None:
    """Why the devstack hands out a combined bundle: env wins over Session.verify."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile or "/etc/ssl/certs/ca-certificates.crt")
    s = requests.Session()
    s.verify = devstack["ca_cert"]
    with pytest.raises(requests.exceptions.SSLError):
        s.get(devstack["endpoints"]["openid_configuration"], timeout=10)
    assert session(devstack["ca_cert"]).get(devstack["endpoints"]["openid_configuration"], timeout=10).ok


def test_msal_trusts_the_stack_through_the_combined_bundle_env(devstack: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", devstack["ca_bundle"])
    app = msal.ConfidentialClientApplication(
        devstack["apps"]["middletier-api"]["client_id"], client_credential=devstack["apps"]["middletier-api"]["secrets"][0],
        authority=devstack["authority"], instance_discovery=False)
    assert "access_token" in app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    # The combined bundle still trusts the machine's roots, so real hosts keep working.
    bundle = open(devstack["ca_bundle"]).read()
    assert open(devstack["ca_cert"]).read() in bundle and bundle.count("BEGIN CERTIFICATE") > 1


# --- discovery and JWKS with pyjwt ------------------------------------------------------------
def test_pyjwt_validates_with_keys_from_discovery(devstack: dict[str, Any], graph_token: str) -> None:
    http = session(devstack["ca_bundle"])
    config = http.get(devstack["endpoints"]["openid_configuration"], timeout=10).json()
    assert config["issuer"] == f"{devstack['instance']}/{devstack['tenant_id']}/v2.0"
    assert config["token_endpoint"] == devstack["endpoints"]["token"]
    jwks = jwt.PyJWKClient(config["jwks_uri"], ssl_context=ssl.create_default_context(cafile=devstack["ca_bundle"]))
    user_token = sign_in(devstack, "bob", [API_SCOPE])["access_token"]
    key = jwks.get_signing_key_from_jwt(user_token)
    decoded = jwt.decode(user_token, key.key, algorithms=["RS256"], issuer=config["issuer"],
                         audience=devstack["apps"]["middletier-api"]["client_id"])
    assert decoded["oid"] == devstack["users"]["bob"]["oid"]
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(decoded, foreign, algorithm="RS256", headers={"kid": key.key_id})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, jwks.get_signing_key_from_jwt(forged).key, algorithms=["RS256"],
                   issuer=config["issuer"], audience=devstack["apps"]["middletier-api"]["client_id"])


def test_jwks_shape_and_common_issuer_template(devstack: dict[str, Any]) -> None:
    http = session(devstack["ca_bundle"])
    keys = http.get(devstack["endpoints"]["jwks"], timeout=10).json()["keys"]
    assert len(keys) >= 2
    for k in keys:
        assert k["kty"] == "RSA" and k["use"] == "sig" and k["kid"] == k["x5t"] and k["x5c"] and "alg" not in k
        assert k["issuer"] == devstack["instance"] + "/{tenantid}/v2.0"
    common = http.get(devstack["instance"] + "/common/v2.0/.well-known/openid-configuration", timeout=10).json()
    assert common["issuer"] == devstack["instance"] + "/{tenantid}/v2.0"
    assert common["token_endpoint"] == devstack["instance"] + "/common/oauth2/v2.0/token"


def test_signing_key_rollover(private_devstack: Any) -> None:
    devstack, admin = private_devstack
    http = session(devstack["ca_bundle"])
    before = [k["kid"] for k in http.get(devstack["endpoints"]["jwks"], timeout=10).json()["keys"]]
    rotated = admin.post("/rotate/signing-key")
    after = [k["kid"] for k in http.get(devstack["endpoints"]["jwks"], timeout=10).json()["keys"]]
    assert after == [before[-1], rotated["kid"]]  # previous signing key still published
    token = sign_in(devstack, "alice", [API_SCOPE])["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == rotated["kid"]


# --- the Graph-like API -----------------------------------------------------------------------
def test_graph_me_returns_the_profile(devstack: dict[str, Any], graph_token: str) -> None:
    r = session(devstack["ca_bundle"]).get(devstack["endpoints"]["graph_me"],
                                           headers={"Authorization": f"Bearer {graph_token}"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == devstack["users"]["alice"]["oid"] and body["displayName"] == "Alice Example"
    assert body["userPrincipalName"] == devstack["users"]["alice"]["upn"]
    assert r.headers["request-id"]


@pytest.mark.parametrize("case", ["none", "garbage", "middletier-token", "expired", "no-user-read", "app-token"])
def test_graph_rejects_what_graph_rejects(devstack: dict[str, Any], admin: Any, case: str) -> None:
    tokens = {
        "none": None, "garbage": "abc.def.ghi",
        "middletier-token": admin.mint(user="alice"),
        "expired": admin.mint(user="alice", scope=GRAPH_SCOPE, lifetime=-5),
        "no-user-read": admin.mint(user="alice", scope="https://graph.microsoft.com/Mail.Read"),
        "app-token": admin.mint(client="middletier-api", scope="https://graph.microsoft.com/.default",
                                roles=["User.Read.All"]),
    }
    token = tokens[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = session(devstack["ca_bundle"]).get(devstack["endpoints"]["graph_me"], headers=headers, timeout=10)
    expected = {"none": 401, "garbage": 401, "middletier-token": 401, "expired": 401, "no-user-read": 403,
                "app-token": 400}[case]
    assert r.status_code == expected
    assert r.json()["error"]["code"] in {"InvalidAuthenticationToken", "Authorization_RequestDenied", "BadRequest"}
    if expected == 401:
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm=""')


def test_graph_cae_challenge_until_a_newer_token(devstack: dict[str, Any], admin: Any) -> None:
    stale = admin.mint(user="bob", scope=GRAPH_SCOPE, capabilities=["cp1"])  # a CAE token: Graph challenges it
    revoked_at = admin.post("/graph/revoke", {"user": "bob", "scope": "tokens"})["revoked_at"]
    http = session(devstack["ca_bundle"])
    try:
        r = http.get(devstack["endpoints"]["graph_me"], headers={"Authorization": f"Bearer {stale}"}, timeout=10)
        assert r.status_code == 401
        challenge = r.headers["WWW-Authenticate"]
        assert 'error="insufficient_claims"' in challenge
        claims_b64 = challenge.split('claims="')[1].split('"')[0]
        claims = json.loads(base64.b64decode(claims_b64))
        assert claims == {"access_token": {"nbf": {"essential": True, "value": str(revoked_at)}}}
        fresh = admin.mint(user="bob", scope=GRAPH_SCOPE, capabilities=["cp1"])  # issued after the event: accepted
        assert http.get(devstack["endpoints"]["graph_me"], headers={"Authorization": f"Bearer {fresh}"},
                        timeout=10).status_code == 200
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})
    assert http.get(devstack["endpoints"]["graph_me"], headers={"Authorization": f"Bearer {stale}"},
                    timeout=10).status_code == 200


# --- controls ---------------------------------------------------------------------------------
def test_injected_429_carries_retry_after_and_is_counted(devstack: dict[str, Any], admin: Any) -> None:
    admin.post("/faults", {"service": "entra", "endpoint": "token", "status": 429, "retry_after": 7, "count": 1})
    http = session(devstack["ca_bundle"])
    form = {"client_id": devstack["apps"]["middletier-api"]["client_id"],
            "client_secret": devstack["apps"]["middletier-api"]["secrets"][0],
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    throttled = http.post(devstack["endpoints"]["token"], data=form, timeout=10)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert http.post(devstack["endpoints"]["token"], data=form, timeout=10).status_code == 200
    assert admin.stats()["entra.token"]["by_outcome"]["fault-429"] >= 1


def test_injected_aadsts_error_for_one_grant(devstack: dict[str, Any], admin: Any) -> None:
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": "on_behalf_of", "aadsts": 50076})
    user = sign_in(devstack, "alice", [API_SCOPE])  # device_code grant: not affected
    result = middletier(devstack).acquire_token_on_behalf_of(user["access_token"], [GRAPH_SCOPE])
    assert result["error_codes"] == [50076] and "claims" in result


def test_secret_rotation(devstack: dict[str, Any], admin: Any) -> None:
    old = devstack["apps"]["daemon-client"]["secrets"][0]
    new = admin.post("/rotate/secret", {"app": "daemon-client", "revoke_previous": True})["value"]

    def try_secret(secret: str) -> dict[str, Any]:
        return msal.ConfidentialClientApplication(
            devstack["apps"]["daemon-client"]["client_id"], client_credential=secret, authority=devstack["authority"],
            instance_discovery=False, http_client=session(devstack["ca_bundle"])
        ).acquire_token_for_client(["api://middletier/.default"])
    assert try_secret(old)["error_codes"] == [7000215]
    granted = try_secret(new)
    assert jwt.decode(granted["access_token"], options={"verify_signature": False})["roles"] == ["MiddleTier.Admin"]


def test_admin_rejects_bad_input_with_400(devstack: dict[str, Any], admin: Any) -> None:
    r = admin.http.post(admin.base + "/faults", data="not json", timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    r = admin.http.post(admin.base + "/graph/revoke", json={"user": "nobody"}, timeout=10)
    assert r.status_code == 400


# --- CLI --------------------------------------------------------------------------------------
def test_cli_info_token_and_stats(devstack: dict[str, Any]) -> None:
    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "devstack", "--state", devstack["state"], *args],
                              cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    info = json.loads(cli("info", "--json"))
    assert info["authority"] == devstack["authority"] and info["ca_bundle"] == devstack["ca_bundle"]
    token = cli("token", "--user", "bob").strip()
    assert jwt.decode(token, options={"verify_signature": False})["oid"] == devstack["users"]["bob"]["oid"]
    stats = json.loads(cli("stats", "--json"))
    assert stats["entra.token"]["by_user"]["bob"] >= 1
