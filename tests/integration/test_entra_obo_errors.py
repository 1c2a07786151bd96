"""Every OBO failure Entra enforces, with its error value and AADSTS code, through real MSAL."""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import msal
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.client import public_client, session, sign_in

from .test_entra_msal import API_SCOPE, GRAPH_SCOPE, middletier


@pytest.fixture(scope="module")
def alice_token(devstack: dict[str, Any]) -> str:
    return sign_in(devstack, "alice", [API_SCOPE])["access_token"]


def assert_aad_error(result: dict[str, Any], error: str, code: int) -> None:
    assert "access_token" not in result, result
    assert result["error"] == error, result
    assert result["error_codes"] == [code], result
    assert result["error_description"].startswith(f"AADSTS{code}:")
    assert {"timestamp", "trace_id", "correlation_id"} <= result.keys()


def test_consent_missing_is_65001(devstack: dict[str, Any], alice_token: str) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of(alice_token, ["https://graph.microsoft.com/Mail.Read"])
    assert_aad_error(result, "invalid_grant", 65001)
    assert result["suberror"] == "consent_required"


def test_unknown_scope_is_70011(devstack: dict[str, Any], alice_token: str) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of(alice_token, ["https://graph.microsoft.com/Nope.Read"])
    assert_aad_error(result, "invalid_scope", 70011)


def test_unknown_resource_is_500011(devstack: dict[str, Any], alice_token: str) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of(alice_token, ["api://nowhere/x"])
    assert_aad_error(result, "invalid_resource", 500011)


def test_two_resources_is_28000(devstack: dict[str, Any], alice_token: str) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of(alice_token, [GRAPH_SCOPE, API_SCOPE])
    assert_aad_error(result, "invalid_scope", 28000)


def test_wrong_secret_is_7000215_with_401(devstack: dict[str, Any], alice_token: str) -> None:
    raw = session(devstack["ca_bundle"]).post(devstack["endpoints"]["token"], data={
        "client_id": devstack["apps"]["middletier-api"]["client_id"], "client_secret": "wrong",
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
        "assertion": alice_token, "scope": GRAPH_SCOPE}, timeout=10)
    assert raw.status_code == 401
    assert_aad_error(raw.json(), "invalid_client", 7000215)
    result = middletier(devstack, "also-wrong").acquire_token_on_behalf_of(alice_token, [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_client", 7000215)


def test_expired_assertion_is_500133(devstack: dict[str, Any], admin: Any) -> None:
    expired = admin.mint(user="alice", lifetime=-60)
    result = middletier(devstack).acquire_token_on_behalf_of(expired, [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_grant", 500133)


def test_assertion_signed_by_a_foreign_key_is_50013(devstack: dict[str, Any], alice_token: str) -> None:
    header = jwt.get_unverified_header(alice_token)
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(jwt.decode(alice_token, options={"verify_signature": False}), foreign,
                        algorithm="RS256", headers={"kid": header["kid"]})
    result = middletier(devstack).acquire_token_on_behalf_of(forged, [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_grant", 50013)


def test_malformed_assertion_is_50027(devstack: dict[str, Any]) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of("not-a-jwt", [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_request", 50027)


def test_assertion_for_another_audience_is_500131(devstack: dict[str, Any], admin: Any) -> None:
    graph_token = admin.mint(user="alice", scope=GRAPH_SCOPE)
    result = middletier(devstack).acquire_token_on_behalf_of(graph_token, [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_grant", 500131)


def test_app_token_is_not_a_user_assertion(devstack: dict[str, Any], admin: Any) -> None:
    app_token = admin.mint(client="daemon-client", scope="api://middletier/.default", roles=["MiddleTier.Admin"])
    result = middletier(devstack).acquire_token_on_behalf_of(app_token, [GRAPH_SCOPE])
    assert_aad_error(result, "invalid_grant", 50013)


def test_mfa_policy_gives_a_claims_challenge_that_sign_in_can_satisfy(devstack: dict[str, Any]) -> None:
    pca = public_client(devstack)
    first = sign_in(devstack, "carol", [API_SCOPE], app=pca)
    result = middletier(devstack).acquire_token_on_behalf_of(first["access_token"], [GRAPH_SCOPE])
    assert_aad_error(result, "interaction_required", 50076)
    assert result["suberror"] == "basic_action"
    challenge = json.loads(result["claims"])
    assert challenge["access_token"]["capolids"]["essential"] is True
    # The client signs in again with the claims; the page asks carol for her one-time code.
    flow = pca.initiate_device_flow(scopes=[API_SCOPE], claims_challenge=result["claims"])
    account = devstack["users"]["carol"]
    page = session(devstack["ca_bundle"]).post(flow["verification_uri"], data={
        "code": flow["user_code"], "username": account["upn"], "password": account["password"]}, timeout=10)
    assert page.status_code == 401 and 'name="otp"' in page.text
    second = sign_in(devstack, "carol", [API_SCOPE], app=pca, claims_challenge=result["claims"])
    retried = middletier(devstack).acquire_token_on_behalf_of(second["access_token"], [GRAPH_SCOPE])
    assert "access_token" in retried, retried
    assert jwt.decode(retried["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "mfa"]


def test_public_client_must_not_send_a_secret(devstack: dict[str, Any]) -> None:
    r = session(devstack["ca_bundle"]).post(devstack["endpoints"]["token"], data={
        "client_id": devstack["apps"]["desktop-client"]["client_id"], "client_secret": "x",
        "grant_type": "refresh_token", "refresh_token": "x", "scope": API_SCOPE}, timeout=10)
    assert r.status_code == 401
    assert_aad_error(r.json(), "invalid_client", 700025)


def test_confidential_client_must_authenticate(devstack: dict[str, Any], alice_token: str) -> None:
    r = session(devstack["ca_bundle"]).post(devstack["endpoints"]["token"], data={
        "client_id": devstack["apps"]["middletier-api"]["client_id"],
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
        "assertion": alice_token, "scope": GRAPH_SCOPE}, timeout=10)
    assert r.status_code == 401
    assert_aad_error(r.json(), "invalid_client", 7000218)


def _assertion(devstack: dict[str, Any], **overrides: Any) -> str:
    cert = devstack["apps"]["middletier-api"]["certificates"][0]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    pem = open(cert["pem"], "rb").read()
    key = serialization.load_pem_private_key(pem, None)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    x5t = base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()
    cid = devstack["apps"]["middletier-api"]["client_id"]
    now = time.time()
    claims = {"aud": devstack["endpoints"]["token"], "iss": cid, "sub": cid, "jti": str(uuid.uuid4()),
              "iat": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, key, algorithm="PS256", headers={"x5t#S256": x5t})


def _client_credentials_with(devstack: dict[str, Any], assertion: str) -> Any:
    return session(devstack["ca_bundle"]).post(devstack["endpoints"]["token"], data={
        "client_id": devstack["apps"]["middletier-api"]["client_id"], "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion, "scope": "https://graph.microsoft.com/.default"}, timeout=10)


def test_client_assertion_jti_reuse_by_another_assertion_is_refused(devstack: dict[str, Any]) -> None:
    assertion = _assertion(devstack, jti="fixed-jti")
    assert _client_credentials_with(devstack, assertion).status_code == 200
    # MSAL re-sends its cached assertion for ~9 minutes; Entra accepts the identical assertion again.
    assert _client_credentials_with(devstack, assertion).status_code == 200
    forged = _assertion(devstack, jti="fixed-jti", exp=time.time() + 500)
    replay = _client_credentials_with(devstack, forged)
    assert replay.status_code == 401
    assert_aad_error(replay.json(), "invalid_client", 700027)


@pytest.mark.parametrize("overrides,code", [
    ({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"}, 700023),
    ({"exp": 1}, 700024),
    ({"iss": "someone-else"}, 700027),
])
def test_client_assertion_claims_are_checked(devstack: dict[str, Any], overrides: dict[str, Any], code: int) -> None:
    r = _client_credentials_with(devstack, _assertion(devstack, **overrides))
    assert r.status_code == 401
    assert_aad_error(r.json(), "invalid_client", code)


def test_unknown_certificate_is_700027(devstack: dict[str, Any]) -> None:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cid = devstack["apps"]["middletier-api"]["client_id"]
    forged = jwt.encode({"aud": devstack["endpoints"]["token"], "iss": cid, "sub": cid, "jti": "j",
                         "exp": time.time() + 600}, foreign, algorithm="RS256", headers={"x5t": "AAAA"})
    r = _client_credentials_with(devstack, forged)
    assert_aad_error(r.json(), "invalid_client", 700027)


def test_unknown_tenant_is_90002(devstack: dict[str, Any]) -> None:
    r = session(devstack["ca_bundle"]).get(
        devstack["instance"] + "/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration", timeout=10)
    assert r.status_code == 400
    assert_aad_error(r.json(), "invalid_tenant", 90002)


def test_unknown_client_is_700016(devstack: dict[str, Any]) -> None:
    app = msal.ConfidentialClientApplication(
        str(uuid.uuid4()), client_credential="x", authority=devstack["authority"], instance_discovery=False,
        http_client=session(devstack["ca_bundle"]))
    assert_aad_error(app.acquire_token_for_client(["https://graph.microsoft.com/.default"]),
                     "unauthorized_client", 700016)
