"""Unmodified MSAL Python against the Entra emulator over HTTPS with the generated CA."""
from __future__ import annotations

from typing import Any

import jwt
import msal
import pytest

from devstack.client import public_client, session, sign_in

API_SCOPE = "api://middletier/access_as_user"
GRAPH_SCOPE = "https://graph.microsoft.com/User.Read"


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def middletier(info: dict[str, Any], credential: Any = None, **kwargs: Any) -> msal.ConfidentialClientApplication:
    app = info["apps"]["middletier-api"]
    return msal.ConfidentialClientApplication(
        app["client_id"], client_credential=credential or app["secrets"][0], authority=info["authority"],
        instance_discovery=False, http_client=session(info["ca_bundle"]), **kwargs)


@pytest.fixture(scope="module")
def alice(devstack: dict[str, Any]) -> dict[str, Any]:
    return sign_in(devstack, "alice", [API_SCOPE])


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_device_code_sign_in_gives_a_v2_token_for_the_middle_tier(devstack: dict[str, Any], user: str) -> None:
    pca = public_client(devstack)
    result = sign_in(devstack, user, [API_SCOPE], app=pca)
    assert "access_token" in result, result
    at = claims(result["access_token"])
    u, tid = devstack["users"][user], devstack["tenant_id"]
    assert at["aud"] == devstack["apps"]["middletier-api"]["client_id"]
    assert at["iss"] == f"{devstack['instance']}/{tid}/v2.0"
    assert at["ver"] == "2.0" and at["tid"] == tid and at["oid"] == u["oid"]
    assert at["scp"] == "access_as_user"
    assert at["azp"] == devstack["apps"]["desktop-client"]["client_id"] and at["azpacr"] == "0"
    assert at["preferred_username"] == u["upn"]
    assert at["exp"] > at["iat"] and {"aio", "rh", "uti", "sub", "nbf", "name"} <= at.keys()
    assert result["id_token_claims"]["oid"] == u["oid"]
    assert result["id_token_claims"]["aud"] == devstack["apps"]["desktop-client"]["client_id"]
    accounts = pca.get_accounts()
    assert [a["home_account_id"] for a in accounts] == [f"{u['oid']}.{tid}"]
    assert accounts[0]["username"] == u["upn"]


def test_pairwise_sub_differs_per_app(devstack: dict[str, Any], alice: dict[str, Any]) -> None:
    obo = middletier(devstack).acquire_token_on_behalf_of(alice["access_token"], [GRAPH_SCOPE])
    assert claims(obo["access_token"])["sub"] != claims(alice["access_token"])["sub"]
    assert claims(obo["access_token"])["oid"] == claims(alice["access_token"])["oid"]


def test_obo_with_client_secret(devstack: dict[str, Any], alice: dict[str, Any]) -> None:
    result = middletier(devstack).acquire_token_on_behalf_of(alice["access_token"], [GRAPH_SCOPE])
    assert "access_token" in result, result
    at = claims(result["access_token"])
    tid = devstack["tenant_id"]
    assert at["aud"] == "https://graph.microsoft.com"
    assert at["iss"] == f"https://sts.windows.net/{tid}/" and at["ver"] == "1.0"
    assert at["appid"] == devstack["apps"]["middletier-api"]["client_id"] and at["appidacr"] == "1"
    assert at["oid"] == devstack["users"]["alice"]["oid"] and at["scp"] == "User.Read"
    # MSAL files OBO results under the user, not as an app token (needs client_info + id_token).
    assert result["id_token_claims"]["oid"] == devstack["users"]["alice"]["oid"]
    assert "refresh_token" in result


@pytest.mark.parametrize("shape", ["pfx_sha256_ps256", "pem_sha1_rs256"])
def test_obo_with_certificate(devstack: dict[str, Any], alice: dict[str, Any], shape: str) -> None:
    cert = devstack["apps"]["middletier-api"]["certificates"][0]
    if shape == "pfx_sha256_ps256":
        credential = {"private_key_pfx_path": cert["pfx"]}
    else:
        with open(cert["pem"]) as fh:
            credential = {"private_key": fh.read(), "thumbprint": cert["thumbprint"]}
    result = middletier(devstack, credential).acquire_token_on_behalf_of(alice["access_token"], [GRAPH_SCOPE])
    assert "access_token" in result, result
    at = claims(result["access_token"])
    assert at["appidacr"] == "2" and at["scp"] == "User.Read"


def test_client_credentials(devstack: dict[str, Any]) -> None:
    result = middletier(devstack).acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    at = claims(result["access_token"])
    assert at["roles"] == ["User.Read.All"] and at["idtyp"] == "app"
    assert "scp" not in at and at["oid"] == at["sub"]
    assert "refresh_token" not in result and "id_token" not in result


def test_client_credentials_rejects_a_non_default_scope(devstack: dict[str, Any]) -> None:
    result = middletier(devstack).acquire_token_for_client([GRAPH_SCOPE])
    assert result["error"] == "invalid_scope" and result["error_codes"] == [70011]


def test_silent_refresh_uses_the_refresh_token(devstack: dict[str, Any], admin: Any) -> None:
    pca = public_client(devstack)
    first = sign_in(devstack, "bob", [API_SCOPE], app=pca)
    before = admin.stats()["entra.token"]["by_grant"].get("refresh_token", 0)
    account = pca.get_accounts()[0]
    cached = pca.acquire_token_silent([API_SCOPE], account)
    assert cached["access_token"] == first["access_token"]  # served from MSAL's cache
    refreshed = pca.acquire_token_silent([API_SCOPE], account, force_refresh=True)
    assert refreshed["access_token"] != first["access_token"]
    assert claims(refreshed["access_token"])["oid"] == devstack["users"]["bob"]["oid"]
    assert admin.stats()["entra.token"]["by_grant"]["refresh_token"] == before + 1


def test_unknown_user_on_sign_in_page_is_refused(devstack: dict[str, Any]) -> None:
    pca = public_client(devstack)
    flow = pca.initiate_device_flow(scopes=[API_SCOPE])
    page = session(devstack["ca_bundle"]).post(flow["verification_uri"], data={
        "code": flow["user_code"], "username": "mallory@contoso.dev", "password": "x"}, timeout=10)
    assert page.status_code == 400
    flow["expires_at"] = 0  # stop MSAL polling: the sign-in never happened
    result = pca.acquire_token_by_device_flow(flow)
    assert "access_token" not in result


@pytest.mark.parametrize("capabilities", [["cp1"], None])
def test_cae_only_for_a_middle_tier_that_declares_cp1(devstack: dict[str, Any], admin: Any,
                                                     capabilities: list[str] | None) -> None:
    """MSAL's client_capabilities puts {"access_token":{"xms_cc":{"values":["cp1"]}}} in the OBO request's
    claims: Entra then issues a CAE token for Graph (xms_cc, 20-28 h) and Graph challenges it once the
    user's sessions are revoked. Without cp1: a ~1 h token that Graph keeps serving until it expires."""
    bob = sign_in(devstack, "bob", [API_SCOPE])
    result = middletier(devstack, client_capabilities=capabilities).acquire_token_on_behalf_of(
        bob["access_token"], [GRAPH_SCOPE])
    assert "access_token" in result, result
    at = claims(result["access_token"])
    http = session(devstack["ca_bundle"])
    admin.post("/graph/revoke", {"user": "bob", "scope": "sessions"})
    try:
        r = http.get(devstack["endpoints"]["graph_me"], headers={"Authorization": f"Bearer {result['access_token']}"},
                     timeout=10)
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})
    if capabilities:
        assert at["xms_cc"] == ["cp1"] and 20 * 3600 <= result["expires_in"] <= 28 * 3600
        assert at["exp"] - at["iat"] == result["expires_in"]
        assert r.status_code == 401 and 'error="insufficient_claims"' in r.headers["WWW-Authenticate"]
    else:
        assert "xms_cc" not in at and result["expires_in"] <= 3600
        assert r.status_code == 200 and r.json()["id"] == devstack["users"]["bob"]["oid"]
