"""Authorization breadth: per-function requirements, ACL mode, app-only tokens, multi-tenant keys."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from devstack.launch import Admin

FABRIKAM = "f00dfeed-2b3c-4d5e-8f6a-7b8c9d0e1f2a"
http = requests.Session()
http.trust_env = False


def get(host: dict[str, Any], path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(host["url"] + path, headers=headers, timeout=30)


def app_token(admin: Admin, roles: list[str] | None = None, client: str = "daemon-client", **kw: Any) -> str:
    return admin.mint(client=client, scope="api://middletier/.default", roles=roles or [], **kw)


def grants(admin: Admin) -> dict[str, int]:
    return admin.stats().get("entra.token", {}).get("by_grant", {})


# --- per-function requirements ---------------------------------------------------------------------
@pytest.mark.parametrize("who,status", [("user", 200), ("user-other-scope", 403), ("app-with-role", 403)])
def test_scope_only_function(devstack: dict[str, Any], function_host: dict[str, Any], admin: Admin,
                             who: str, status: int) -> None:
    token = {"user": admin.mint(user="alice"),
             "user-other-scope": admin.mint(user="alice", claims={"scp": "something.else"}),
             "app-with-role": app_token(admin, ["MiddleTier.Admin"])}[who]
    r = get(function_host, "/api/me", token)
    assert r.status_code == status
    if status == 403:
        assert r.json()["required"] == ["access_as_user"]
        assert 'scope="access_as_user"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("who,status", [("app-with-role", 200), ("app-without-role", 403), ("user", 403)])
def test_role_only_function(devstack: dict[str, Any], function_host: dict[str, Any], admin: Admin,
                            who: str, status: int) -> None:
    token = {"app-with-role": app_token(admin, ["MiddleTier.Admin"]), "app-without-role": app_token(admin, ["Other"]),
             "user": admin.mint(user="alice")}[who]
    r = get(function_host, "/api/directory/users/alice@contoso.dev", token)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["id"] == devstack["users"]["alice"]["oid"]
    elif who == "app-without-role":
        assert r.json()["required"] == ["MiddleTier.Admin"]
    else:
        assert "app-only callers only" in r.json()["detail"]


@pytest.mark.parametrize("raw_path", ["/api/directory/users/..", "/api/directory/users/.",
                                      "/api/directory/users/%2E%2E", "/api/directory/users/a%2F..%2Fme"])
def test_role_only_function_validates_its_route_parameter(function_host: dict[str, Any], admin: Admin,
                                                          raw_path: str) -> None:
    """Sent as-is (no client-side dot-segment removal): '.'/'..' must never reach Graph as users/ or /."""
    import http.client
    from urllib.parse import urlsplit
    url = urlsplit(function_host["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", raw_path, headers={"Authorization": "Bearer " + app_token(admin, ["MiddleTier.Admin"])})
    r = conn.getresponse()
    body = r.read()
    assert r.status in (400, 404), body
    assert b'"value"' not in body  # never a user list


@pytest.mark.parametrize("who,status,scope", [("user", 200, "mine"), ("app-with-role", 200, "all"),
                                              ("app-without-role", 403, None), ("user-other-scope", 403, None)])
def test_scope_or_app_permission_function(devstack: dict[str, Any], function_host: dict[str, Any], admin: Admin,
                                          who: str, status: int, scope: str | None) -> None:
    token = {"user": admin.mint(user="bob"), "app-with-role": app_token(admin, ["MiddleTier.Admin"]),
             "app-without-role": app_token(admin, ["Other"]),
             "user-other-scope": admin.mint(user="bob", claims={"scp": "x"})}[who]
    r = get(function_host, "/api/orders", token)
    assert r.status_code == status, r.text
    if status == 200:
        body = r.json()
        assert body["scope"] == scope
        if scope == "mine":
            assert {o["owner"] for o in body["value"]} == {devstack["users"]["bob"]["oid"]}
        else:
            assert len({o["owner"] for o in body["value"]}) >= 3
    else:
        assert set(r.json()["required"]) == {"access_as_user", "MiddleTier.Admin"}


# --- scp-or-roles gate and ACL mode -----------------------------------------------------------------
def test_no_scopes_no_roles_is_refused_then_accepted_in_acl_mode_for_listed_clients_only(
        devstack: dict[str, Any], host_factory: Any, function_host: dict[str, Any], admin: Admin) -> None:
    bare_daemon = app_token(admin)                       # neither scp nor roles
    bare_spa = app_token(admin, client="spa-client")
    r = get(function_host, "/api/orders", bare_daemon)
    assert r.status_code == 403 and "neither scopes nor app roles" in r.json()["detail"]
    acl = host_factory(devstack, AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                       AzureAd__AllowedClientApplications=devstack["apps"]["daemon-client"]["client_id"])
    # ACL mode lifts the global rule for listed clients only; a function's declared scope or role still applies
    lifted = get(acl, "/api/orders", bare_daemon)
    assert lifted.status_code == 403 and "neither scopes nor app roles" not in lifted.json()["detail"]
    assert set(lifted.json()["required"]) == {"access_as_user", "MiddleTier.Admin"}
    spa = get(acl, "/api/orders", bare_spa)
    assert spa.status_code == 403 and "neither scopes nor app roles" in spa.json()["detail"]  # not on the list
    assert get(acl, "/api/directory/users/alice@contoso.dev", bare_daemon).status_code == 403  # demands its role
    with_role = get(acl, "/api/orders", app_token(admin, ["MiddleTier.Admin"]))
    assert with_role.status_code == 200 and with_role.json()["scope"] == "all"


def test_acl_mode_without_a_client_list_is_a_configuration_error(devstack: dict[str, Any], host_factory: Any,
                                                                 admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__AllowWebApiToBeAuthorizedByACL="true")
    r = get(host, "/api/orders", app_token(admin))
    assert r.status_code == 500 and r.json()["setting"] == "AzureAd__AllowedClientApplications"


# --- app-only tokens ------------------------------------------------------------------------------
def test_app_only_calls_use_client_credentials_and_their_own_cache(devstack: dict[str, Any], host_factory: Any,
                                                                   admin: Admin) -> None:
    host = host_factory(devstack)
    token = app_token(admin, ["MiddleTier.Admin"])
    before = grants(admin)
    for _ in range(3):
        assert get(host, "/api/orders", token).json()["scope"] == "all"
    after = grants(admin)
    assert after.get("on_behalf_of", 0) == before.get("on_behalf_of", 0)          # 0 OBO
    assert after["client_credentials"] == before.get("client_credentials", 0) + 1  # then cache hits


@pytest.mark.parametrize("idtyp", [False, True])
def test_app_only_tokens_with_and_without_the_idtyp_optional_claim(devstack: dict[str, Any],
                                                                   function_host: dict[str, Any], admin: Admin,
                                                                   idtyp: bool) -> None:
    """Entra puts idtyp in an API's tokens only when its registration requests that optional claim; the
    app tells app-only tokens either way (idtyp, else no scp and oid == sub). A daemon's token from
    unmodified MSAL (client credentials) reaches AdminApi and OrdersApi as an app in both cases."""
    import jwt
    import msal

    from devstack.client import session
    admin.post("/apps/optional-claims", {"app": "middletier-api", "access_token": [{"name": "idtyp"}] if idtyp else []})
    try:
        daemon = devstack["apps"]["daemon-client"]
        result = msal.ConfidentialClientApplication(
            daemon["client_id"], client_credential=daemon["secrets"][0], authority=devstack["authority"],
            instance_discovery=False, http_client=session(devstack["ca_bundle"]),
        ).acquire_token_for_client(["api://middletier/.default"])
        token = result["access_token"]
        at = jwt.decode(token, options={"verify_signature": False})
        assert at.get("idtyp") == ("app" if idtyp else None) and at["oid"] == at["sub"] and "scp" not in at
        assert "idtyp" not in jwt.decode(admin.mint(user="alice"), options={"verify_signature": False})  # users: never
        user = get(function_host, "/api/directory/users/alice@contoso.dev", token)
        assert user.status_code == 200 and user.json()["id"] == devstack["users"]["alice"]["oid"]
        orders = get(function_host, "/api/orders", token)
        assert orders.status_code == 200 and orders.json()["scope"] == "all"
    finally:
        admin.post("/apps/optional-claims", {"app": "middletier-api", "access_token": []})


def test_user_and_app_partitions_never_mix(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack)
    callers = [("alice", admin.mint(user="alice")), ("bob", admin.mint(user="bob")),
               ("app", app_token(admin, ["MiddleTier.Admin"])), ("app2", app_token(admin, ["MiddleTier.Admin"]))]
    work = callers * 40
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda c: (c[0], get(host, "/api/orders", c[1])), work))
    for who, r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        if who.startswith("app"):
            assert body["scope"] == "all"
        else:
            assert body["scope"] == "mine"
            assert {o["owner"] for o in body["value"]} == {devstack["users"][who]["oid"]}


# --- signing-key issuer validation, two tenants ----------------------------------------------------
@pytest.fixture(scope="module")
def multi_tenant_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    return host_factory(devstack, AzureAd__TenantId="organizations",
                        AzureAd__AllowedTenants=f"{devstack['tenant_id']} {FABRIKAM}")


def test_multi_tenant_accepts_both_tenants(devstack: dict[str, Any], multi_tenant_host: dict[str, Any],
                                           admin: Admin) -> None:
    dave = get(multi_tenant_host, "/api/me", admin.mint(user="dave", tenant=FABRIKAM))
    assert dave.status_code == 200, dave.text
    assert dave.json()["displayName"] == "Dave Fabrikam"
    alice = get(multi_tenant_host, "/api/me", admin.mint(user="alice"))
    assert alice.status_code == 200 and alice.json()["displayName"] == "Alice Example"


def test_key_of_tenant_b_cannot_sign_for_tenant_a(devstack: dict[str, Any], multi_tenant_host: dict[str, Any],
                                                  admin: Admin) -> None:
    forged = admin.mint(user="alice", signing_tenant=FABRIKAM)  # tid/iss say Contoso, Fabrikam's key signs
    r = get(multi_tenant_host, "/api/me", forged)
    assert r.status_code == 401 and "signing key belongs to another issuer" in r.json()["detail"]


def test_single_tenant_refuses_the_other_tenant(devstack: dict[str, Any], function_host: dict[str, Any],
                                                admin: Admin) -> None:
    r = get(function_host, "/api/me", admin.mint(user="dave", tenant=FABRIKAM))
    assert r.status_code == 401


def test_disallowed_tenant_is_refused(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__TenantId="organizations", AzureAd__AllowedTenants=devstack["tenant_id"])
    r = get(host, "/api/me", admin.mint(user="dave", tenant=FABRIKAM))
    assert r.status_code == 401 and "tenant is not allowed" in r.json()["detail"]
