"""Authorization rules an attacker would probe, end to end (real devstack, real local host).

- ACL mode (``AzureAd__AllowWebApiToBeAuthorizedByACL``) lifts only the global "a token carries
  ``scp`` or ``roles``" rule, as Microsoft.Identity.Web does; it never satisfies a scope or app role
  that a function declares.
- A caller is app-only by ``idtyp`` when present, otherwise by Entra's documented markers (no ``scp``
  and ``oid == sub``); a token whose ``idtyp`` contradicts its ``scp`` is refused.
- AdminApi takes only an object id (GUID) or a UPN as the user id: never a Graph function name.
"""
from __future__ import annotations

from typing import Any

import pytest
import requests

from devstack.launch import Admin

http_ = requests.Session()
http_.trust_env = False


def get(host: dict[str, Any], path: str, token: str) -> requests.Response:
    return http_.get(host["url"] + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def bare_app_token(admin: Admin, client: str = "daemon-client", **kw: Any) -> str:
    """A client-credentials token with no roles (and, as every app token, no scp)."""
    return admin.mint(client=client, scope="api://middletier/.default", roles=[], **kw)


def downstream_calls(admin: Admin) -> dict[str, int]:
    stats = admin.stats()
    return {"graph.users": stats.get("graph.users", {}).get("total", 0),
            "orders": sum(v.get("total", 0) for k, v in stats.items() if k.startswith("orders")),
            "entra.token": stats.get("entra.token", {}).get("total", 0)}


@pytest.fixture(scope="module")
def acl_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    return host_factory(devstack, AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                        AzureAd__AllowedClientApplications=devstack["apps"]["daemon-client"]["client_id"])


# --- ACL mode ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,required", [
    ("/api/orders", {"access_as_user", "MiddleTier.Admin"}),
    ("/api/directory/users/alice@contoso.dev", {"MiddleTier.Admin"}),
])
def test_acl_mode_never_satisfies_a_role_the_function_declares(devstack: dict[str, Any], acl_host: dict[str, Any],
                                                                admin: Admin, path: str, required: set[str]) -> None:
    """A listed client's token without roles passes the global rule in ACL mode, and is then held to the
    function's declared scope or role like any other token: 403 naming it, no downstream call."""
    before = downstream_calls(admin)
    r = get(acl_host, path, bare_app_token(admin))
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "insufficient_scope" and set(body["required"]) == required
    assert "neither scopes nor app roles" not in body["detail"]  # the global rule was lifted
    assert "value" not in body and "scope" not in body
    assert downstream_calls(admin) == before


def test_acl_mode_still_serves_the_declared_role_and_refuses_unlisted_bare_clients(
        devstack: dict[str, Any], acl_host: dict[str, Any], admin: Admin) -> None:
    with_role = get(acl_host, "/api/orders", admin.mint(client="daemon-client", scope="api://middletier/.default",
                                                         roles=["MiddleTier.Admin"]))
    assert with_role.status_code == 200 and with_role.json()["scope"] == "all"
    unlisted = get(acl_host, "/api/orders", bare_app_token(admin, client="spa-client"))
    assert unlisted.status_code == 403 and "neither scopes nor app roles" in unlisted.json()["detail"]
    user = get(acl_host, "/api/orders", admin.mint(user="bob"))
    assert user.status_code == 200 and user.json()["scope"] == "mine"


# --- app-only or delegated ------------------------------------------------------------------------------
@pytest.mark.parametrize("case,claims,remove", [
    # a user's token (pairwise sub != oid) carrying an app role and no scp: never an app
    ("user-with-role-no-scp", {"roles": ["MiddleTier.Admin"]}, ["scp"]),
    ("user-with-role-no-scp-idtyp-user", {"roles": ["MiddleTier.Admin"], "idtyp": "user"}, ["scp"]),
    # idtyp app next to delegated scopes: contradicts itself
    ("user-claiming-idtyp-app", {"roles": ["MiddleTier.Admin"], "idtyp": "app"}, []),
])
def test_a_user_token_is_never_served_as_an_app(devstack: dict[str, Any], function_host: dict[str, Any],
                                                admin: Admin, case: str, claims: dict[str, Any],
                                                remove: list[str]) -> None:
    """Everyone's orders go to app-only callers only. A delegated token dressed as an app (roles without
    scp, or idtyp: app beside scp) gets neither everyone's orders nor an app token from Entra."""
    before = admin.stats().get("entra.token", {}).get("by_grant", {}).get("client_credentials", 0)
    r = get(function_host, "/api/orders", admin.mint(user="bob", claims=claims, remove=remove))
    assert r.status_code in (401, 403), r.text
    assert "value" not in r.json()
    after = admin.stats().get("entra.token", {}).get("by_grant", {}).get("client_credentials", 0)
    assert after == before
    admin_api = get(function_host, "/api/directory/users/alice@contoso.dev",
                    admin.mint(user="bob", claims=claims, remove=remove))
    assert admin_api.status_code in (401, 403), admin_api.text


def test_an_app_token_without_roles_is_still_an_app(devstack: dict[str, Any], acl_host: dict[str, Any],
                                                    admin: Admin) -> None:
    """Entra's app-only marker is oid == sub without scp; roles are not required (ACL mode issues
    none): such a token is an app, so a user-only function refuses it as an app."""
    r = get(acl_host, "/api/me", bare_app_token(admin))
    assert r.status_code == 403 and "app-only tokens are not accepted" in r.json()["detail"]


# --- AdminApi: object ids and UPNs only ----------------------------------------------------------------
@pytest.mark.parametrize("user_id", ["delta", "microsoft.graph.delta", "getByIds", "validateProperties",
                                     "alice", "alice@", "@contoso.dev", "alice@contoso", "alice@-contoso.dev",
                                     "alice@contoso..dev", ".alice@contoso.dev", "alice.@contoso.dev",
                                     "al..ice@contoso.dev", "a@b@contoso.dev", "a11ce000-1b2c-4d3e-8f4a",
                                     "a11ce000-1b2c-4d3e-8f4a-5b6c7d8e9f01x"])
def test_admin_api_refuses_ids_that_are_neither_object_ids_nor_upns(devstack: dict[str, Any],
                                                                   function_host: dict[str, Any], admin: Admin,
                                                                   user_id: str) -> None:
    before = downstream_calls(admin)["graph.users"]
    r = get(function_host, f"/api/directory/users/{user_id}",
            admin.mint(client="daemon-client", scope="api://middletier/.default", roles=["MiddleTier.Admin"]))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert downstream_calls(admin)["graph.users"] == before  # Graph never asked


@pytest.mark.parametrize("user_id", ["alice@contoso.dev", "ALICE@CONTOSO.DEV", "a11ce000-1b2c-4d3e-8f4a-5b6c7d8e9f01",
                                     "A11CE000-1B2C-4D3E-8F4A-5B6C7D8E9F01"])
def test_admin_api_accepts_object_ids_and_upns(devstack: dict[str, Any], function_host: dict[str, Any],
                                               admin: Admin, user_id: str) -> None:
    r = get(function_host, f"/api/directory/users/{user_id}",
            admin.mint(client="daemon-client", scope="api://middletier/.default", roles=["MiddleTier.Admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == devstack["users"]["alice"]["oid"]


@pytest.mark.parametrize("user_id", ["o'neil_contoso.com#EXT#@contoso.dev", "first.last@sub.contoso.dev"])
def test_admin_api_passes_well_formed_upns_to_graph(devstack: dict[str, Any], function_host: dict[str, Any],
                                                    admin: Admin, user_id: str) -> None:
    """Guest (#EXT#) and other well-formed UPNs reach Graph (which answers 404 for unknown users)."""
    from urllib.parse import quote
    before = downstream_calls(admin)["graph.users"]
    r = get(function_host, "/api/directory/users/" + quote(user_id, safe="@"),
            admin.mint(client="daemon-client", scope="api://middletier/.default", roles=["MiddleTier.Admin"]))
    assert r.status_code == 404, r.text
    assert downstream_calls(admin)["graph.users"] == before + 1
