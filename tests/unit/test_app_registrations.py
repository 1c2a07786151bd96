"""infra/app-registrations.sh against a stand-in ``az`` that emulates Microsoft Graph (tests/unit/fake_az.py).

The script must converge: a second run adds only what is missing (the federated credential when the
identity's principal id is given), keeps every app, scope and role id, and a run with nothing to do
makes no mutating call at all — ``fake_az.is_mutating``: any ``az ad ... create/update/delete/add/
grant/reset/admin-consent`` and any ``az rest`` whose method is not GET. Reads (show, list,
list-grants, ``az account/cloud show``, ``az rest --method GET``) are the only calls it may make then.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import fake_az
from .fake_az import FakeAz
from devstack.launch import ROOT

SCRIPT = ROOT / "infra" / "app-registrations.sh"
PRINCIPAL = "6c1f0b2e-3d4a-4b5c-8d6e-7f8091a2b3c4"       # the user-assigned identity's principal id
OTHER_PRINCIPAL = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a"


def make_az(tmp_path: Path, cloud: str = "AzureCloud") -> FakeAz:
    return FakeAz(tmp_path, fake_az.seed(cloud), SCRIPT)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def entitlement_ids(app: dict[str, Any]) -> dict[str, str]:
    return {**{"scope:" + s["value"]: s["id"] for s in app["api"]["oauth2PermissionScopes"]},
            **{"role:" + r["value"]: r["id"] for r in app["appRoles"]}}


def test_the_script_is_valid_bash_and_shellcheck_clean() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_two_runs_as_the_readme_says_converge(tmp_path: Path) -> None:
    """Step 1 without, step 2 with the identity's principal id: one app each, ids kept, one credential."""
    az = make_az(tmp_path)
    first = ok(az.run("middletier", ORDERS_API_APP_ID=az.orders_app_id()))
    after_first = az.state()
    second = ok(az.run("middletier", PRINCIPAL, ORDERS_API_APP_ID=az.orders_app_id()))
    state = az.state()

    assert not [c for c in second.calls if c[:3] == ["ad", "app", "create"]]        # type: ignore[attr-defined]
    assert {a["appId"] for a in state["apps"]} == {a["appId"] for a in after_first["apps"]}
    assert sorted(a["displayName"] for a in state["apps"]) == \
        ["Orders API", "middletier-api", "middletier-desktop", "middletier-spa"]
    api = az.app("middletier-api")
    [api_before] = [a for a in after_first["apps"] if a["displayName"] == "middletier-api"]
    assert entitlement_ids(api) == entitlement_ids(api_before)
    for call in first.calls + second.calls:                                           # type: ignore[attr-defined]
        assert "admin-consent" not in call

    # What the functions need of the registration.
    assert api["identifierUris"] == [f"api://{api['appId']}"]
    assert api["api"]["requestedAccessTokenVersion"] == 2
    assert [c["name"] for c in api["optionalClaims"]["accessToken"]] == ["idtyp"]  # once, after two runs
    [scope] = api["api"]["oauth2PermissionScopes"]
    assert (scope["value"], scope["type"], scope["isEnabled"]) == ("access_as_user", "User", True)
    [role] = api["appRoles"]
    assert (role["value"], role["allowedMemberTypes"], role["isEnabled"]) == ("MiddleTier.Admin", ["Application"], True)
    clients = {az.app("middletier-desktop")["appId"], az.app("middletier-spa")["appId"]}
    assert {p["appId"]: p["delegatedPermissionIds"] for p in api["api"]["preAuthorizedApplications"]} == \
        {c: [scope["id"]] for c in clients}
    assert az.app("middletier-desktop")["isFallbackPublicClient"] is True
    assert az.app("middletier-spa")["spa"]["redirectUris"] == ["http://localhost:5173/"]

    # The federated credential: once, for the principal, this cloud's issuer and audience.
    [fic] = state["fics"][api["id"]]
    assert fic["subject"] == PRINCIPAL
    assert fic["issuer"] == f"https://login.microsoftonline.com/{state['tenant']}/v2.0"
    assert fic["audiences"] == ["api://AzureADTokenExchange"]

    # Consent: delegated grants for all users, application permissions as appRoleAssignments.
    api_sp = az.sp_of(api["appId"])["id"]
    graph_sp = az.sp_of(fake_az.GRAPH_APP_ID)["id"]
    orders_sp = az.sp_of(az.orders_app_id())["id"]
    grants = {g["resourceId"]: (g["consentType"], g["scope"].split()) for g in state["grants"]
              if g["clientId"] == api_sp}
    assert grants == {graph_sp: ("AllPrincipals", ["User.Read"]), orders_sp: ("AllPrincipals", ["Orders.Read"])}
    orders_role = az.app("Orders API")["appRoles"][0]["id"]
    assert sorted((a["resourceId"], a["appRoleId"]) for a in state["assignments"] if a["principalId"] == api_sp) == \
        sorted([(graph_sp, fake_az.USER_READ_ALL), (orders_sp, orders_role)])
    requested = {(r["resourceAppId"], x["id"], x["type"]) for r in api["requiredResourceAccess"] for x in r["resourceAccess"]}
    assert requested == {(fake_az.GRAPH_APP_ID, fake_az.USER_READ, "Scope"),
                         (fake_az.GRAPH_APP_ID, fake_az.USER_READ_ALL, "Role"),
                         (az.orders_app_id(), az.app("Orders API")["api"]["oauth2PermissionScopes"][0]["id"], "Scope"),
                         (az.orders_app_id(), orders_role, "Role")}
    assert sum(len(r["resourceAccess"]) for r in api["requiredResourceAccess"]) == 4   # no duplicates


def test_a_run_with_nothing_to_do_changes_nothing(tmp_path: Path) -> None:
    az = make_az(tmp_path)
    ok(az.run("middletier", PRINCIPAL, ORDERS_API_APP_ID=az.orders_app_id()))
    before = az.state()
    again = ok(az.run("middletier", PRINCIPAL, ORDERS_API_APP_ID=az.orders_app_id()))
    assert again.calls, "the stand-in az was not called"                            # type: ignore[attr-defined]
    assert [c for c in again.calls if fake_az.is_mutating(c)] == []                 # type: ignore[attr-defined]
    assert az.state() == before
    assert f"apiClientId={az.app('middletier-api')['appId']}" in again.stdout


def test_a_new_principal_updates_the_credential_in_place(tmp_path: Path) -> None:
    az = make_az(tmp_path)
    ok(az.run("middletier", PRINCIPAL))
    api = az.app("middletier-api")
    [before] = az.state()["fics"][api["id"]]
    again = ok(az.run("middletier", OTHER_PRINCIPAL))
    [after] = az.state()["fics"][api["id"]]
    assert (after["id"], after["name"], after["subject"]) == (before["id"], before["name"], OTHER_PRINCIPAL)
    assert [c[:4] for c in again.calls if fake_az.is_mutating(c)] == \
        [["ad", "app", "federated-credential", "update"]]                              # type: ignore[attr-defined]


def test_existing_registrations_are_completed_not_replaced(tmp_path: Path) -> None:
    """An API registered by hand (its own scope id, an extra enabled scope, an existing grant for
    another scope) and a look-alike app name: ids and other entries are kept; only the exact name counts."""
    state = fake_az.seed()
    api = fake_az.new_app("middletier-api")
    scope_id, extra_id = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    api["api"]["oauth2PermissionScopes"] = [
        {"id": extra_id, "value": "Reports.Read", "type": "User", "isEnabled": True},
        {"id": scope_id, "value": "access_as_user", "type": "User", "isEnabled": True}]
    look_alike = fake_az.new_app("middletier-api-old")
    state["apps"] += [look_alike, api]
    api_sp = {"id": "33333333-3333-4333-8333-333333333333", "appId": api["appId"], "displayName": "middletier-api"}
    state["sps"].append(api_sp)
    graph_sp = state["sps"][0]["id"]
    state["grants"].append({"id": "grant-1", "clientId": api_sp["id"], "consentType": "AllPrincipals",
                            "principalId": None, "resourceId": graph_sp, "scope": "openid"})
    az = FakeAz(tmp_path, state, SCRIPT)

    ok(az.run("middletier"))
    new = az.app("middletier-api")
    assert new["appId"] == api["appId"]
    assert entitlement_ids(new)["scope:access_as_user"] == scope_id
    assert entitlement_ids(new)["scope:Reports.Read"] == extra_id
    assert az.app("middletier-api-old") == look_alike
    [grant] = [g for g in az.state()["grants"] if g["clientId"] == api_sp["id"]]
    assert (grant["id"], grant["scope"]) == ("grant-1", "openid User.Read")


def test_sovereign_cloud_endpoints_come_from_az_cloud_show(tmp_path: Path) -> None:
    """US Government: Graph at graph.microsoft.us (the stand-in refuses any other root for az rest),
    the issuer at login.microsoftonline.us, the USGov token-exchange audience."""
    az = make_az(tmp_path, "AzureUSGovernment")
    done = ok(az.run("middletier", PRINCIPAL, ORDERS_API_APP_ID=az.orders_app_id()))
    uris = [c[c.index("--uri") + 1] for c in done.calls if c[0] == "rest"]              # type: ignore[attr-defined]
    assert uris and all(u.startswith("https://graph.microsoft.us/v1.0/") for u in uris)
    state = az.state()
    [fic] = state["fics"][az.app("middletier-api")["id"]]
    assert fic["issuer"] == f"https://login.microsoftonline.us/{state['tenant']}/v2.0"
    assert fic["audiences"] == ["api://AzureADTokenExchangeUSGov"]


def test_the_stand_in_refuses_what_graph_refuses(tmp_path: Path) -> None:
    """The emulation the tests above rely on: a new id for an enabled scope, a second credential of
    the same name, a second service principal and a repeated appRoleAssignment all fail."""
    az = make_az(tmp_path)
    ok(az.run("middletier", PRINCIPAL))
    api = az.app("middletier-api")
    env = {**os.environ, "FAKE_AZ_STATE": str(az.state_path), "FAKE_AZ_LOG": str(az.log_path)}
    azbin = str(az.folder / "bin" / "az")
    root = "https://graph.microsoft.com/v1.0"

    def call(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([azbin, *argv], env=env, capture_output=True, text=True)

    scope = dict(api["api"]["oauth2PermissionScopes"][0], id="44444444-4444-4444-8444-444444444444")
    done = call("rest", "--method", "PATCH", "--uri", f"{root}/applications/{api['id']}",
                "--body", json.dumps({"api": {"oauth2PermissionScopes": [scope]}}))
    assert done.returncode == 1 and "CannotDeleteOrUpdateEnabledEntitlement" in done.stderr
    done = call("ad", "app", "federated-credential", "create", "--id", api["appId"], "--parameters",
                json.dumps({"name": "function-app-managed-identity", "issuer": "https://example/", "subject": "x",
                            "audiences": ["api://AzureADTokenExchange"]}))
    assert done.returncode == 1 and "Request_MultipleObjectsWithSameKeyValue" in done.stderr
    assert call("ad", "sp", "create", "--id", api["appId"]).returncode == 1
    api_sp = az.sp_of(api["appId"])["id"]
    body = {"principalId": api_sp, "resourceId": az.sp_of(fake_az.GRAPH_APP_ID)["id"], "appRoleId": fake_az.USER_READ_ALL}
    done = call("rest", "--method", "POST", "--uri", f"{root}/servicePrincipals/{api_sp}/appRoleAssignments",
                "--body", json.dumps(body))
    assert done.returncode == 1 and "already exists" in done.stderr
    assert call("ad", "app", "permission", "admin-consent", "--id", api["appId"]).returncode == 1
    assert call("rest", "--method", "GET", "--uri", f"https://graph.microsoft.us/v1.0/applications/{api['id']}"
                ).returncode == 1


@pytest.mark.parametrize("argv, mutating", [
    (["ad", "app", "show", "--id", "x"], False),
    (["rest", "--uri", "u"], False),
    (["rest", "--method", "GET", "--uri", "u"], False),
    (["rest", "--method", "patch", "--uri", "u"], True),
    (["ad", "app", "permission", "list-grants", "--id", "x"], False),
    (["ad", "app", "permission", "grant", "--id", "x"], True),
    (["ad", "app", "federated-credential", "list", "--id", "x"], False),
    (["ad", "sp", "create", "--id", "x"], True),
])
def test_what_counts_as_mutating(argv: list[str], mutating: bool) -> None:
    assert fake_az.is_mutating(argv) is mutating
