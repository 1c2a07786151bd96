"""A stand-in for the Azure CLI (``az``) over an emulated Microsoft Graph directory.

Tests copy this file into a temporary folder as an executable named ``az`` and put that folder first
on ``PATH``, then run ``infra/app-registrations.sh`` against it. It keeps the directory in a JSON
file (``FAKE_AZ_STATE``: applications with their federated identity credentials, service principals,
oauth2PermissionGrants, appRoleAssignments) and appends every call's argv to ``FAKE_AZ_LOG`` (JSON
lines). It answers the way az and Graph do, including their refusals:

- ``az ad app list --display-name X`` matches a *prefix* (az sends ``startswith(displayName,'X')``);
  ``az ad app create`` patches the one existing app of that exact name instead of creating another;
  ``az ad app permission add`` appends without looking for duplicates; ``az ad app permission grant``
  deletes every grant of the client/resource pair and creates one (azure-cli ``role/custom.py``);
- a PATCH of an application that drops an enabled scope or app role, or changes its id, answers 400
  ``CannotDeleteOrUpdateEnabledEntitlement``; duplicate values or ids, pre-authorizations of unknown
  scope ids and appRoles without ``allowedMemberTypes`` answer 400;
- a federated credential whose name exists answers 409 ``Request_MultipleObjectsWithSameKeyValue``,
  one whose issuer and subject exist 400 ``InvalidFederatedIdentityCredentialValue``;
- a service principal that exists answers 409; an appRoleAssignment that exists answers 400
  ("Permission being assigned already exists on the object"); identifier URIs are unique;
- ``az rest`` only reaches the Graph root of the current cloud (``FAKE_AZ_CLOUD``, default AzureCloud):
  a public-cloud URL in a sovereign cloud fails, as it would for real;
- ``az ad app permission admin-consent`` fails: the script must not use it.

Only the commands and options that the script uses are emulated; anything else fails loudly.
Run as ``az`` it needs only the standard library and ``jmespath`` (for ``--query``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
USER_READ = "e1fe6dd8-ba31-4d61-89e7-88639da4683d"        # Graph delegated permission User.Read
USER_READ_ALL = "df021288-bdef-4463-88db-98f22de89214"    # Graph application permission User.Read.All

# What `az cloud show` answers (azure-cli core/cloud.py): the login endpoint and Graph's resource id.
CLOUDS = {
    "AzureCloud": {"activeDirectory": "https://login.microsoftonline.com",
                   "microsoftGraphResourceId": "https://graph.microsoft.com/"},
    "AzureUSGovernment": {"activeDirectory": "https://login.microsoftonline.us",
                          "microsoftGraphResourceId": "https://graph.microsoft.us/"},
    "AzureChinaCloud": {"activeDirectory": "https://login.chinacloudapi.cn",
                        "microsoftGraphResourceId": "https://microsoftgraph.chinacloudapi.cn"},
}

MUTATING_AD = {("ad", "app", "create"), ("ad", "app", "update"), ("ad", "app", "delete"),
               ("ad", "app", "permission", "add"), ("ad", "app", "permission", "grant"),
               ("ad", "app", "permission", "delete"), ("ad", "app", "permission", "admin-consent"),
               ("ad", "sp", "create"), ("ad", "sp", "update"), ("ad", "sp", "delete"),
               ("ad", "app", "federated-credential", "create"), ("ad", "app", "federated-credential", "update"),
               ("ad", "app", "federated-credential", "delete"), ("ad", "app", "credential", "reset")}


def is_mutating(argv: list[str]) -> bool:
    """Whether a call may change the directory: every write command, and ``az rest`` with any method
    but GET (az rest's default method is GET). Reads: show, list, list-grants, account/cloud show."""
    words = tuple(a for a in argv if not a.startswith("-"))
    if words[:1] == ("rest",):
        method = "get"
        for i, arg in enumerate(argv):
            if arg in ("--method", "-m") and i + 1 < len(argv):
                method = argv[i + 1].lower()
        return method != "get"
    return any(words[:len(command)] == command for command in MUTATING_AD)


def seed(cloud: str = "AzureCloud", *, orders: bool = True) -> dict[str, Any]:
    """A tenant with Microsoft Graph's service principal and, optionally, an orders API registration."""
    graph_root = CLOUDS[cloud]["microsoftGraphResourceId"].rstrip("/")
    state: dict[str, Any] = {
        "tenant": str(uuid.uuid4()), "cloud": cloud, "apps": [], "fics": {}, "grants": [], "assignments": [],
        "sps": [{
            "id": str(uuid.uuid4()), "appId": GRAPH_APP_ID, "displayName": "Microsoft Graph",
            "servicePrincipalNames": [graph_root, GRAPH_APP_ID],
            "oauth2PermissionScopes": [{"id": USER_READ, "value": "User.Read", "type": "User", "isEnabled": True}],
            "appRoles": [{"id": USER_READ_ALL, "value": "User.Read.All", "allowedMemberTypes": ["Application"],
                          "isEnabled": True}],
        }],
    }
    if orders:
        app = new_app("Orders API")
        app["identifierUris"] = ["api://orders"]
        app["api"]["oauth2PermissionScopes"] = [{"id": str(uuid.uuid4()), "value": "Orders.Read", "type": "User",
                                                 "isEnabled": True}]
        app["appRoles"] = [{"id": str(uuid.uuid4()), "value": "Orders.Read.All", "allowedMemberTypes": ["Application"],
                            "isEnabled": True}]
        state["apps"].append(app)
        state["sps"].append({"id": str(uuid.uuid4()), "appId": app["appId"], "displayName": "Orders API"})
    return state


def new_app(name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "displayName": name,
            "signInAudience": "AzureADMyOrg", "identifierUris": [], "isFallbackPublicClient": None,
            "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": [],
                    "preAuthorizedApplications": []},
            "appRoles": [], "requiredResourceAccess": [], "optionalClaims": None, "spa": {"redirectUris": []},
            "publicClient": {"redirectUris": []}, "web": {"redirectUris": []}}


class AzError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def graph_error(status: int, reason: str, code: str, message: str) -> AzError:
    """How ``az rest`` and the ``az ad`` commands report a Graph error."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return AzError(f"{reason}({body})")


class Directory:
    def __init__(self, state: dict[str, Any]):
        self.s = state

    # --- lookups ---------------------------------------------------------------------------------
    def app(self, ident: str) -> dict[str, Any]:
        for app in self.s["apps"]:
            if ident in (app["appId"], app["id"]) or ident in app["identifierUris"]:
                return app
        raise AzError(f"Resource '{ident}' does not exist or one of its queried reference-property objects "
                      "are not present.", 3)

    def sp(self, ident: str) -> dict[str, Any]:
        for sp in self.s["sps"]:
            view = self.sp_view(sp)
            if ident in (sp["appId"], sp["id"]) or ident in view["servicePrincipalNames"]:
                return sp
        raise AzError(f"Service principal '{ident}' doesn't exist", 3)

    def sp_view(self, sp: dict[str, Any]) -> dict[str, Any]:
        app = next((a for a in self.s["apps"] if a["appId"] == sp["appId"]), None)
        if app is None:
            return dict(sp)
        return {**sp, "servicePrincipalNames": [*app["identifierUris"], app["appId"]],
                "oauth2PermissionScopes": app["api"]["oauth2PermissionScopes"], "appRoles": app["appRoles"]}

    # --- application PATCH with Graph's rules --------------------------------------------------------
    def patch_app(self, app: dict[str, Any], body: dict[str, Any]) -> None:
        new = json.loads(json.dumps(app))
        for key, value in body.items():
            if key in ("api", "spa", "web", "publicClient") and isinstance(value, dict):
                new[key].update(value)
            elif key in ("id", "appId"):
                raise graph_error(400, "Bad Request", "Request_BadRequest", f"Property '{key}' is read-only.")
            else:
                new[key] = value
        self._entitlements(app["api"]["oauth2PermissionScopes"], new["api"]["oauth2PermissionScopes"], "scope")
        self._entitlements(app["appRoles"], new["appRoles"], "role")
        for role in new["appRoles"]:
            if not role.get("allowedMemberTypes"):
                raise graph_error(400, "Bad Request", "InvalidAppRole", "allowedMemberTypes is required.")
        scope_ids = {s["id"] for s in new["api"]["oauth2PermissionScopes"]}
        for pre in new["api"]["preAuthorizedApplications"]:
            if not set(pre.get("delegatedPermissionIds", [])) <= scope_ids:
                raise graph_error(400, "Bad Request", "InvalidPreAuthorizedApp",
                                  "A delegated permission id of a pre-authorized application is not defined.")
        if new["api"].get("requestedAccessTokenVersion") not in (None, 1, 2):
            raise graph_error(400, "Bad Request", "Request_BadRequest", "Invalid requestedAccessTokenVersion.")
        self._unique_uris(app, new["identifierUris"])
        app.clear()
        app.update(new)

    @staticmethod
    def _entitlements(old: list[dict[str, Any]], new: list[dict[str, Any]], kind: str) -> None:
        for item in new:
            try:
                uuid.UUID(item["id"])
                item["value"]
            except (KeyError, TypeError, ValueError):
                raise graph_error(400, "Bad Request", "Request_BadRequest",
                                  f"Each {kind} needs a GUID id and a value.") from None
        for field in ("id", "value"):
            values = [item[field] for item in new]
            if len(values) != len(set(values)):
                raise graph_error(400, "Bad Request", "Request_BadRequest", f"Duplicate {kind} {field}.")
        kept = {item["id"] for item in new}
        for item in old:
            if item.get("isEnabled") and item["id"] not in kept:
                raise graph_error(400, "Bad Request", "CannotDeleteOrUpdateEnabledEntitlement",
                                  "Permission (scope or role) cannot be deleted or updated unless disabled first.")

    def _unique_uris(self, app: dict[str, Any], uris: list[str]) -> None:
        for other in self.s["apps"]:
            if other["id"] != app["id"] and set(other["identifierUris"]) & set(uris):
                raise graph_error(400, "Bad Request", "Request_BadRequest", "Another object with the same value "
                                  "for property identifierUris already exists.")

    # --- federated identity credentials -----------------------------------------------------------
    def fics(self, app: dict[str, Any]) -> list[dict[str, Any]]:
        return self.s["fics"].setdefault(app["id"], [])

    def check_fic(self, app: dict[str, Any], fic: dict[str, Any]) -> None:
        for field in ("name", "issuer", "subject", "audiences"):
            if not fic.get(field):
                raise graph_error(400, "Bad Request", "Request_BadRequest", f"Property '{field}' is required.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{2,119}", fic["name"]):
            raise graph_error(400, "Bad Request", "Request_BadRequest", "Invalid federated credential name.")
        if len(fic["audiences"]) != 1:
            raise graph_error(400, "Bad Request", "Request_BadRequest", "Exactly one audience is supported.")
        for other in self.fics(app):
            if other["id"] == fic.get("id"):
                continue
            if other["name"] == fic["name"]:
                raise graph_error(409, "Conflict", "Request_MultipleObjectsWithSameKeyValue",
                                  f"FederatedIdentityCredential with name {fic['name']} already exists.")
            if (other["issuer"], other["subject"]) == (fic["issuer"], fic["subject"]):
                raise graph_error(400, "Bad Request", "InvalidFederatedIdentityCredentialValue",
                                  "The combination of issuer and subject must be unique for the application.")
        if len(self.fics(app)) >= 20 and "id" not in fic:
            raise graph_error(400, "Bad Request", "Request_BadRequest", "At most 20 federated credentials.")


def parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    words: list[str] = []
    i = 0
    while i < len(argv) and not argv[i].startswith("-"):
        words.append(argv[i])
        i += 1
    opts: dict[str, list[str]] = {}
    aliases = {"-o": "--output", "-m": "--method", "-u": "--uri", "-b": "--body", "-p": "--parameters"}
    while i < len(argv):
        key = aliases.get(argv[i], argv[i])
        if not key.startswith("--"):
            raise AzError(f"unrecognized arguments: {argv[i]}", 2)
        i += 1
        values = []
        while i < len(argv) and not (argv[i].startswith("--") or argv[i] in aliases):
            values.append(argv[i])
            i += 1
        opts[key] = values
    return tuple(words), opts


def one(opts: dict[str, list[str]], key: str, default: str | None = None) -> str:
    values = opts.get(key)
    if not values:
        if default is not None:
            return default
        raise AzError(f"the following arguments are required: {key}", 2)
    if len(values) != 1:
        raise AzError(f"{key} takes one value", 2)
    return values[0]


def body_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise graph_error(400, "Bad Request", "BadRequest", "Unable to read JSON request payload.") from None


def app_view(app: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(app))


def run(d: Directory, words: tuple[str, ...], opts: dict[str, list[str]]) -> Any:  # noqa: C901 - a dispatcher
    s = d.s
    if words == ("account", "show"):
        return {"tenantId": s["tenant"], "id": "00000000-0000-4000-8000-00000000f00d", "name": "Fake subscription",
                "environmentName": s["cloud"]}
    if words == ("cloud", "show"):
        return {"name": s["cloud"], "endpoints": dict(CLOUDS[s["cloud"]])}
    if words == ("ad", "app", "list"):
        if set(opts) - {"--display-name", "--query", "--output"}:
            raise AzError("only --display-name is emulated for az ad app list", 2)
        prefix = one(opts, "--display-name", "")
        return [app_view(a) for a in s["apps"] if a["displayName"].startswith(prefix)]
    if words == ("ad", "app", "create"):
        name = one(opts, "--display-name")
        patch: dict[str, Any] = {}
        if "--sign-in-audience" in opts:
            patch["signInAudience"] = one(opts, "--sign-in-audience")
        if "--is-fallback-public-client" in opts:
            patch["isFallbackPublicClient"] = one(opts, "--is-fallback-public-client").lower() == "true"
        if "--public-client-redirect-uris" in opts:
            patch["publicClient"] = {"redirectUris": opts["--public-client-redirect-uris"]}
        if "--identifier-uris" in opts:
            patch["identifierUris"] = opts["--identifier-uris"]
        unknown = set(opts) - {"--display-name", "--sign-in-audience", "--is-fallback-public-client",
                               "--public-client-redirect-uris", "--identifier-uris", "--query", "--output"}
        if unknown:
            raise AzError(f"not emulated: {sorted(unknown)}", 2)
        same = [a for a in s["apps"] if a["displayName"] == name]
        if len(same) > 1:
            raise AzError(f"More than one application have the same display name '{name}'")
        if same:  # what az does: "Found an existing application instance ... We will patch it."
            print(f"WARNING: Found an existing application instance: (id) {same[0]['id']}. We will patch it.",
                  file=sys.stderr)
            d.patch_app(same[0], patch)
            return app_view(same[0])
        app = new_app(name)
        d.patch_app(app, patch)
        s["apps"].append(app)
        return app_view(app)
    if words == ("ad", "app", "show"):
        return app_view(d.app(one(opts, "--id")))
    if words == ("ad", "app", "update"):
        app = d.app(one(opts, "--id"))
        if set(opts) - {"--id", "--identifier-uris"}:
            raise AzError("only --identifier-uris is emulated for az ad app update", 2)
        d.patch_app(app, {"identifierUris": opts["--identifier-uris"]})
        return None
    if words == ("ad", "app", "permission", "add"):
        app = d.app(one(opts, "--id"))
        api = one(opts, "--api")
        access = []
        for item in opts["--api-permissions"]:
            pid, _, kind = item.partition("=")
            if kind not in ("Scope", "Role"):
                raise AzError("Usage error: Please provide both permission id and type", 2)
            access.append({"id": pid, "type": kind})
        rra = next((r for r in app["requiredResourceAccess"] if r["resourceAppId"] == api), None)
        if rra is None:
            app["requiredResourceAccess"].append({"resourceAppId": api, "resourceAccess": access})
        else:
            rra["resourceAccess"] += access  # az does not look for duplicates
        print(f"WARNING: Invoking `az ad app permission grant --id {one(opts, '--id')} --api {api}` is needed to "
              "make the change effective", file=sys.stderr)
        return None
    if words == ("ad", "app", "permission", "grant"):
        client = d.sp(one(opts, "--id"))
        resource = d.sp(one(opts, "--api"))
        scopes = opts.get("--scope") or []
        offered = {x["value"] for x in d.sp_view(resource).get("oauth2PermissionScopes", [])}
        if not scopes or not set(scopes) <= offered:
            raise graph_error(400, "Bad Request", "Request_BadRequest", f"Invalid scope value(s): {scopes}")
        consent = one(opts, "--consent-type", "AllPrincipals")
        s["grants"] = [g for g in s["grants"] if not (g["clientId"] == client["id"]
                                                       and g["resourceId"] == resource["id"])]
        grant = {"id": str(uuid.uuid4()), "clientId": client["id"], "consentType": consent,
                 "principalId": None, "resourceId": resource["id"], "scope": " ".join(scopes)}
        s["grants"].append(grant)
        return dict(grant)
    if words == ("ad", "app", "permission", "list-grants"):
        client = d.sp(one(opts, "--id"))
        return [dict(g) for g in s["grants"] if g["clientId"] == client["id"]]
    if words == ("ad", "app", "permission", "admin-consent"):
        raise AzError("admin-consent is not emulated: it calls an internal portal API (public cloud only); use "
                      "az ad app permission grant and appRoleAssignments")
    if words == ("ad", "sp", "list"):
        match = re.fullmatch(r"appId eq '([^']+)'", one(opts, "--filter"))
        if not match:
            raise AzError("only --filter \"appId eq '...'\" is emulated", 2)
        return [d.sp_view(sp) for sp in s["sps"] if sp["appId"] == match.group(1)]
    if words == ("ad", "sp", "show"):
        return d.sp_view(d.sp(one(opts, "--id")))
    if words == ("ad", "sp", "create"):
        app = d.app(one(opts, "--id"))
        if any(sp["appId"] == app["appId"] for sp in s["sps"]):
            raise graph_error(409, "Conflict", "Request_MultipleObjectsWithSameKeyValue",
                              "The service principal cannot be created, updated, or restored because the service "
                              "principal name is already in use.")
        sp = {"id": str(uuid.uuid4()), "appId": app["appId"], "displayName": app["displayName"]}
        s["sps"].append(sp)
        return d.sp_view(sp)
    if words[:4] == ("ad", "app", "federated-credential", "list"):
        return [dict(f) for f in d.fics(d.app(one(opts, "--id")))]
    if words[:4] == ("ad", "app", "federated-credential", "create"):
        app = d.app(one(opts, "--id"))
        fic = body_json(one(opts, "--parameters"))
        d.check_fic(app, fic)
        fic = {"id": str(uuid.uuid4()), **fic}
        d.fics(app).append(fic)
        return dict(fic)
    if words[:4] == ("ad", "app", "federated-credential", "update"):
        app = d.app(one(opts, "--id"))
        ident = one(opts, "--federated-credential-id")
        fic = next((f for f in d.fics(app) if ident in (f["id"], f["name"])), None)
        if fic is None:
            raise AzError(f"Resource '{ident}' does not exist", 3)
        change = body_json(one(opts, "--parameters"))
        if change.get("name", fic["name"]) != fic["name"]:
            raise graph_error(400, "Bad Request", "Request_BadRequest", "The name is immutable.")
        updated = {**fic, **change}
        d.check_fic(app, updated)
        fic.update(updated)
        return None
    if words == ("rest",):
        return rest(d, opts)
    raise AzError(f"'{' '.join(words)}' is not emulated by the fake az", 2)


def rest(d: Directory, opts: dict[str, list[str]]) -> Any:
    s = d.s
    method = one(opts, "--method", "get").upper()
    uri = one(opts, "--uri")
    root = CLOUDS[s["cloud"]]["microsoftGraphResourceId"].rstrip("/") + "/v1.0/"
    if not uri.startswith(root):
        raise AzError(f"Can't derive appropriate Azure AD resource from --url to acquire an access token "
                      f"(not Microsoft Graph of {s['cloud']}): {uri}")
    path = uri[len(root):]
    body = body_json(one(opts, "--body")) if "--body" in opts else None
    if method in ("PATCH", "POST") and not isinstance(body, dict):
        raise graph_error(400, "Bad Request", "BadRequest", "Empty Payload. JSON content expected.")
    if m := re.fullmatch(r"applications/([0-9a-f-]+)", path):
        app = next((a for a in s["apps"] if a["id"] == m.group(1)), None)
        if app is None:
            raise graph_error(404, "Not Found", "Request_ResourceNotFound", f"Resource '{m.group(1)}' does not exist.")
        if method == "GET":
            return app_view(app)
        if method == "PATCH":
            assert body is not None
            d.patch_app(app, body)
            return None
    if m := re.fullmatch(r"servicePrincipals/([0-9a-f-]+)/appRoleAssignments", path):
        principal = next((sp for sp in s["sps"] if sp["id"] == m.group(1)), None)
        if principal is None:
            raise graph_error(404, "Not Found", "Request_ResourceNotFound", f"Resource '{m.group(1)}' does not exist.")
        if method == "GET":
            return {"value": [dict(a) for a in s["assignments"] if a["principalId"] == principal["id"]]}
        if method == "POST":
            assert body is not None
            resource = next((sp for sp in s["sps"] if sp["id"] == body.get("resourceId")), None)
            if body.get("principalId") != principal["id"] or resource is None:
                raise graph_error(400, "Bad Request", "Request_BadRequest", "One or more properties are invalid.")
            roles = {r["id"]: r for r in d.sp_view(resource).get("appRoles", [])}
            role = roles.get(body.get("appRoleId", ""))
            if role is None or "Application" not in role.get("allowedMemberTypes", []):
                raise graph_error(400, "Bad Request", "Request_BadRequest", "Permission being assigned was not "
                                  "found on application")
            if any(a["principalId"] == principal["id"] and a["resourceId"] == resource["id"]
                   and a["appRoleId"] == role["id"] for a in s["assignments"]):
                raise graph_error(400, "Bad Request", "Request_BadRequest",
                                  "Permission being assigned already exists on the object")
            assignment = {"id": str(uuid.uuid4()), "principalId": principal["id"], "resourceId": resource["id"],
                          "appRoleId": role["id"]}
            s["assignments"].append(assignment)
            return dict(assignment)
    if m := re.fullmatch(r"oauth2PermissionGrants/([^/?]+)", path):
        grant = next((g for g in s["grants"] if g["id"] == m.group(1)), None)
        if grant is None:
            raise graph_error(404, "Not Found", "Request_ResourceNotFound", f"Resource '{m.group(1)}' does not exist.")
        if method == "GET":
            return dict(grant)
        if method == "PATCH":
            assert body is not None
            if set(body) != {"scope"}:
                raise graph_error(400, "Bad Request", "Request_BadRequest", "Only scope can be updated.")
            grant["scope"] = body["scope"]
            return None
    raise graph_error(400, "Bad Request", "BadRequest", f"{method} {path} is not emulated by the fake Graph.")


def tsv(value: Any) -> str:
    """az's tsv output (knack): a list is one row per item; a row's fields are tab-separated."""
    def field(v: Any) -> str:
        if isinstance(v, list):
            return str(len(v))
        if isinstance(v, dict):
            return ""
        return "" if v is None else str(v)

    def row(v: Any) -> str:
        if isinstance(v, dict):
            return "\t".join(field(v[k]) for k in sorted(v))
        if isinstance(v, list):
            return "\t".join(field(x) for x in v)
        return field(v)

    if value is None:
        return ""
    rows = value if isinstance(value, list) else [value]
    return "".join(row(v) + "\n" for v in rows)


def main(argv: list[str]) -> int:
    state_path, log_path = os.environ["FAKE_AZ_STATE"], os.environ["FAKE_AZ_LOG"]
    with open(log_path, "a") as log:
        log.write(json.dumps({"argv": argv}) + "\n")
    with open(state_path) as fh:
        state = json.load(fh)
    try:
        words, opts = parse(argv)
        result = run(Directory(state), words, opts)
        if "--query" in opts and result is not None:
            import jmespath
            result = jmespath.search(one(opts, "--query"), result)
    except AzError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return err.code
    with open(state_path, "w") as fh:  # only a call that succeeded changes the directory
        json.dump(state, fh, indent=1)
    output = opts.get("--output", ["json"])[0]
    if result is not None and output == "tsv":
        sys.stdout.write(tsv(result))
    elif result is not None and output == "json":
        print(json.dumps(result, indent=2))
    return 0


class FakeAz:
    """For tests (unused when this file runs as ``az``): a tenant behind the stand-in ``az`` in
    ``folder/bin``; ``run`` executes a script with it first on PATH."""

    def __init__(self, folder: Path, state: dict[str, Any], script: Path):
        self.folder, self.script = folder, script
        self.state_path = folder / "graph.json"
        self.log_path = folder / "az-calls.jsonl"
        self.state_path.write_text(json.dumps(state))
        self.log_path.write_text("")
        (folder / "bin").mkdir()
        az = folder / "bin" / "az"
        az.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
        az.chmod(0o755)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERS_", "SPA_", "TOKEN_EXCHANGE"))}
        environ.update(PATH=f"{self.folder / 'bin'}{os.pathsep}{os.environ['PATH']}",
                       FAKE_AZ_STATE=str(self.state_path), FAKE_AZ_LOG=str(self.log_path), **env)
        start = len(self.calls())
        done = subprocess.run(["bash", str(self.script), *args], env=environ, capture_output=True, text=True, timeout=120)
        done.calls = self.calls()[start:]  # type: ignore[attr-defined]
        return done

    def calls(self) -> list[list[str]]:
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines()]

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def app(self, name: str) -> dict[str, Any]:
        [app] = [a for a in self.state()["apps"] if a["displayName"] == name]
        return app

    def sp_of(self, app_id: str) -> dict[str, Any]:
        [sp] = [s for s in self.state()["sps"] if s["appId"] == app_id]
        return sp

    def orders_app_id(self) -> str:
        return self.app("Orders API")["appId"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
