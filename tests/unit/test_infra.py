"""infra/main.bicep, parsed by a Bicep parser (pycep-parser), checked against the app's own code.

No Bicep compiler is installable here (not on PyPI, npm or Debian), so the template is parsed with
pycep and its app settings are *evaluated*: ``concat()`` of arrays, ternaries, variables, parameters,
string interpolations (each ``${...}`` parsed by pycep too), ``environment()`` of each cloud, and
stand-in values for what only Azure knows (keys, host names, ids). Every bool parameter is a
deployment switch whose both values are explored (useFederatedCredential × deployRedis: every branch
of every condition on them); other conditions are computed from the parameters, and the cases with
parameters set are tests of their own.

What the code requires comes from the code: the functions found like the Functions host finds them
(``*/function.json``), each declaring its downstream APIs (``@endpoint(..., downstream=...)``); running
each function (real authorization check, ``Call.downstream`` recorded) as a user and as an app shows
which APIs it calls and which it calls as the app (those ask the scopes' resource's ``/.default``, which
needs an application permission). Each branch's settings must load with
``shared.config.load_settings`` (every required setting, the token-cache key when L2 is on) and build the
token-cache layers. The scopes and app roles that the functions demand must be the ones that
infra/app-registrations.sh registers, run against the stand-in ``az`` of tests/unit/fake_az.py.
"""
from __future__ import annotations

import base64
import functools
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock

import azure.functions as func
import pytest
from pycep.models import BicepElement

import shared.functions
import shared.pipeline
from shared import DownstreamResponse
from shared.config import Settings, load_settings
from shared.context import build_token_cache
from shared.validation import Caller

from ..bicep_eval import (BICEP, CACHE_KEY, ENVIRONMENTS, GRAPH, PARAMETERS, STAND_INS, TOKEN_EXCHANGE,
                          Evaluation, Resource, branches, resolve_key_vault_references, site, symbols,
                          template)
from . import fake_az
from devstack.launch import ROOT

# --- the functions ---------------------------------------------------------------------------------
@functools.cache
def function_modules() -> dict[str, ModuleType]:
    """The functions, found as the Functions host finds them: every folder with a function.json."""
    found = {}
    for spec_path in sorted(ROOT.glob("*/function.json")):
        spec = json.loads(spec_path.read_text())
        assert spec["scriptFile"] == "__init__.py", spec_path
        found[spec_path.parent.name] = importlib.import_module(spec_path.parent.name)
    return found


def downstream_calls(name: str, settings: Settings) -> dict[str, set[tuple[str, bool]]]:
    """Run a function as each kind of caller it accepts (a user with the first scope it accepts, an
    app with the first role): the real authorization check, each ``Call.downstream`` recorded as
    (API, as the app?)."""
    module = function_modules()[name]
    requirement = module.main.requirement
    scopes, roles = requirement.resolve(settings.azure_ad)
    callers = {}
    if requirement.callers in ("user", "any"):
        callers["user"] = Caller("oid-user", settings.azure_ad.tenant_id, "client", frozenset(scopes[:1]), frozenset(),
                                 False, {})
    if requirement.callers in ("app", "any"):
        callers["app"] = Caller("oid-app", settings.azure_ad.tenant_id, "daemon", frozenset(), frozenset(roles[:1]),
                                True, {})
    [binding] = [b for b in json.loads((ROOT / name / "function.json").read_text())["bindings"]
                 if b["type"] == "httpTrigger"]
    route_params = {p: "alice@contoso.dev" for p in re.findall(r"{(\w+)", binding.get("route", ""))}
    calls: dict[str, set[tuple[str, bool]]] = {}
    for kind, caller in callers.items():
        recorded: set[tuple[str, bool]] = set()

        def record(call: Any, api: str, *, as_app: bool = False, **_: Any) -> DownstreamResponse:
            recorded.add((api, as_app))
            return DownstreamResponse(200, "application/json", b"{}")

        request = func.HttpRequest("GET", "http://localhost/api/x", headers={"Authorization": "Bearer t"},
                                   route_params=route_params, body=b"")
        with mock.patch.object(shared.pipeline.Call, "downstream", record), \
                mock.patch.object(shared.pipeline, "authenticate", lambda ctx, header: ("t", caller)), \
                mock.patch.object(shared.functions, "app_context", lambda: SimpleNamespace(settings=settings)):
            answer = module.main(request)
        assert answer.status_code == 200, (name, kind, answer.get_body())
        calls[kind] = recorded
    return calls


# --- tests -----------------------------------------------------------------------------------------
def test_pycep_parses_the_template() -> None:
    tree = template()
    types = {r["type"] for r in tree["resources"].values()}
    assert {"Microsoft.Web/sites", "Microsoft.KeyVault/vaults", "Microsoft.KeyVault/vaults/secrets",
            "Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/blobServices/containers",
            "Microsoft.Storage/storageAccounts/managementPolicies", "Microsoft.Insights/components",
            "Microsoft.Authorization/roleAssignments", "Microsoft.Cache/redis",
            "Microsoft.ManagedIdentity/userAssignedIdentities"} <= types
    ev = Evaluation(tree, "AzureCloud", PARAMETERS, {})
    app = site(ev)
    assert ev.value(app["identity"]["type"]) == "SystemAssigned, UserAssigned"
    [identity] = symbols("Microsoft.ManagedIdentity/userAssignedIdentities")
    assert list(ev.value(app["identity"]["userAssignedIdentities"])) == [Resource(ev, identity).get("id")]
    config = app["properties"]["siteConfig"]
    assert (ev.value(config["linuxFxVersion"]), ev.value(app["properties"]["httpsOnly"])) == ("Python|3.11", True)
    [vault] = symbols("Microsoft.KeyVault/vaults")
    assert Resource(ev, vault).config["properties"]["enableRbacAuthorization"] is True
    # The app's own identity reads the vault: Key Vault Secrets User, on the vault.
    readers = [Resource(ev, s).config for s in symbols("Microsoft.Authorization/roleAssignments")]
    assert any(r["scope"] == vault and ev.value(r["properties"]["principalId"]) == STAND_INS[
        ("Microsoft.Web/sites", "identity.principalId")] and ev.value(r["properties"]["roleDefinitionId"]).endswith(
        "/4633458b-17de-408a-b874-0445c86b69e6") for r in readers)


@pytest.mark.parametrize("cloud", sorted(ENVIRONMENTS))
def test_every_branch_provisions_what_the_functions_use(cloud: str) -> None:
    seen = []
    for switches, ev, raw in branches(cloud):
        seen.append(switches)
        settings = load_settings(resolve_key_vault_references(ev, raw))  # every required setting, valid
        assert settings.token_cache.l2 == ("redis" if switches["deployRedis"] else "blob")
        # The shared cache is on: a 32-byte key (else the app runs L1-only with an operator error).
        assert settings.token_cache.encryption_key == CACHE_KEY and not settings.token_cache.l2_disabled_reason
        assert build_token_cache(settings.token_cache).l2 is not None    # the L2 connection setting parses
        assert settings.azure_ad.instance == ENVIRONMENTS[cloud]["authentication"]["loginEndpoint"]
        for name, module in function_modules().items():
            declared = set(module.main.downstream)
            for api in declared:
                settings.downstream_api(name=api)                          # BaseUrl and Scopes provisioned
            calls = set().union(*downstream_calls(name, settings).values())
            assert {api for api, _ in calls} <= declared, f"{name} calls an API it does not declare"
            for api, as_app in calls:                                     # a call as the app: one resource
                assert not as_app or settings.downstream_api(api).app_scopes(), f"{name} calls {api} as the app"
        graph = settings.downstream_api("Graph")
        assert graph.base_url == GRAPH[cloud] + "/v1.0"
        assert graph.app_scopes() == (GRAPH[cloud] + "/.default",)
        assert all(s.startswith(GRAPH[cloud] + "/") for s in graph.scopes)
        [credential] = settings.azure_ad.credentials
        if switches["useFederatedCredential"]:
            assert credential.source_type == "SignedAssertionFromManagedIdentity"
            assert credential.get("TokenExchangeUrl") == TOKEN_EXCHANGE[cloud]
            assert credential.get("ManagedIdentityClientId") == STAND_INS[
                ("Microsoft.ManagedIdentity/userAssignedIdentities", "properties.clientId")]
        else:
            assert credential.source_type == "KeyVault"
            assert credential.require("KeyVaultUrl").endswith(ENVIRONMENTS[cloud]["suffixes"]["keyvaultDns"] + "/")
            assert credential.require("KeyVaultCertificateName")
    assert sorted(map(sorted, (s.items() for s in seen))) == sorted(
        sorted({"deployRedis": r, "useFederatedCredential": f}.items()) for r in (True, False) for f in (True, False))


def test_graph_and_token_exchange_overrides() -> None:
    """A cloud not in the template's tables (or US Gov DoD) sets graphEndpoint / tokenExchangeAudience."""
    for switches, ev, raw in branches("AzureUSGovernment", graphEndpoint="https://dod-graph.microsoft.us",
                                      tokenExchangeAudience="api://AzureADTokenExchangeUSGov"):
        settings = load_settings(resolve_key_vault_references(ev, raw))
        assert settings.downstream_api("Graph").app_scopes() == ("https://dod-graph.microsoft.us/.default",)
        if switches["useFederatedCredential"]:
            assert settings.azure_ad.credentials[0].get("TokenExchangeUrl") == "api://AzureADTokenExchangeUSGov"


def test_a_setting_the_code_requires_without_infra_fails() -> None:
    """The check above has teeth: drop a provisioned setting or an API and loading/lookup fails."""
    from shared.errors import ConfigurationError
    _, ev, raw = next(branches())
    env = resolve_key_vault_references(ev, raw)
    for required in ("AzureAd__ClientId", "AzureAd__TenantId", "DownstreamApis__Graph__Scopes"):
        with pytest.raises(ConfigurationError):
            load_settings({k: v for k, v in env.items() if k != required})
    without_key = load_settings({k: v for k, v in env.items() if k != "TokenCache__EncryptionKey"})
    assert without_key.token_cache.l2_disabled_reason and without_key.token_cache.encryption_key is None
    unresolved = load_settings(raw)  # a Key Vault reference that App Service could not resolve
    assert unresolved.token_cache.l2_disabled_reason and unresolved.token_cache.encryption_key is None
    settings = load_settings({k: v for k, v in env.items() if not k.startswith("DownstreamApis__Orders__")})
    with pytest.raises(ConfigurationError):
        settings.downstream_api("Orders")


def test_registrations_define_what_the_functions_demand(tmp_path: Path) -> None:
    """The scopes and app roles each function accepts exist on the API registration that
    app-registrations.sh creates; every downstream scope a function's calls ask for is consented: on
    the caller's behalf a delegated grant, as the app an application permission of that resource."""
    az = fake_az.FakeAz(tmp_path, fake_az.seed("AzureCloud"), ROOT / "infra" / "app-registrations.sh")
    orders = next(a for a in az.state()["apps"] if a["displayName"] == "Orders API")
    done = az.run("middletier", ORDERS_API_APP_ID=orders["appId"])
    assert done.returncode == 0, done.stderr
    state = az.state()
    [api] = [a for a in state["apps"] if a["displayName"] == "middletier-api"]
    scopes = {s["value"] for s in api["api"]["oauth2PermissionScopes"] if s["isEnabled"]}
    app_roles = {r["value"] for r in api["appRoles"] if r["isEnabled"] and "Application" in r["allowedMemberTypes"]}
    directory = fake_az.Directory(state)
    api_sp = directory.sp(api["appId"])["id"]

    for _, ev, raw in branches(apiClientId=api["appId"], ordersAppIdUri=orders["identifierUris"][0]):
        settings = load_settings(resolve_key_vault_references(ev, raw))
        assert f"api://{api['appId']}" in settings.azure_ad.audiences
        asked = set()
        for name, module in function_modules().items():
            wanted_scopes, wanted_roles = module.main.requirement.resolve(settings.azure_ad)
            assert set(wanted_scopes) <= scopes and set(wanted_roles) <= app_roles, name
            for called, as_app in set().union(*downstream_calls(name, settings).values()):
                downstream = settings.downstream_api(called)
                asked |= {(called, s) for s in (downstream.app_scopes() if as_app else downstream.scopes)}
        assert {(called, s.rpartition("/")[2]) for called, s in asked} >= {("Graph", ".default"),
                                                                           ("Orders", ".default")}
        for called, scope in asked:
            resource, _, permission = scope.rpartition("/")
            sp = directory.sp(resource)
            if permission == ".default":   # as the app: an application permission was granted
                assert any(a["principalId"] == api_sp and a["resourceId"] == sp["id"]
                           for a in state["assignments"]), called
            else:                          # on behalf of users: consented for all of them
                assert any(g["clientId"] == api_sp and g["resourceId"] == sp["id"] and g["consentType"] ==
                           "AllPrincipals" and permission in g["scope"].split() for g in state["grants"]), called


@pytest.mark.parametrize("origin", ["http://localhost:5173", "https://app.contoso.example"])
def test_cors_allows_the_spa_origin(origin: str) -> None:
    ev = Evaluation(template(), "AzureCloud", {**PARAMETERS, "spaOrigin": origin}, {})
    cors = ev.value(site(ev)["properties"]["siteConfig"]["cors"])
    assert cors == {"allowedOrigins": [origin], "supportCredentials": False}


def test_token_cache_blobs_expire_by_lifecycle_rule() -> None:
    """The rule deletes blobs of the container the blob L2 writes to, in the account it writes to,
    and never before an entry's own expiry (l2.py checks that on read; each write refreshes it)."""
    for switches, ev, raw in branches():
        if switches["deployRedis"]:
            continue
        settings = load_settings(resolve_key_vault_references(ev, raw))
        [storage] = symbols("Microsoft.Storage/storageAccounts")
        account = Resource(ev, storage).name
        assert f"AccountName={account};" in settings.token_cache.blob_connection_string
        [container] = symbols("Microsoft.Storage/storageAccounts/blobServices/containers")
        container_config = Resource(ev, container).config
        assert ev.value(container_config["name"]) == settings.token_cache.blob_container == "msal-token-cache"
        assert Resource(ev, container_config["parent"]).config["parent"] == storage
        [policy] = symbols("Microsoft.Storage/storageAccounts/managementPolicies")
        policy_config = Resource(ev, policy).config
        assert policy_config["parent"] == storage and ev.value(policy_config["name"]) == "default"
        [rule] = ev.value(policy_config["properties"]["policy"]["rules"])
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
        assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"],
                                                 "prefixMatch": [settings.token_cache.blob_container + "/"]}
        days = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        assert days * 86400 >= settings.token_cache.session_lifetime_seconds + 86400


def test_the_cache_key_is_a_secure_parameter_written_to_key_vault() -> None:
    tree = template()
    param = tree["parameters"]["tokenCacheKey"]
    decorators = {d["type"]: d.get("argument") for d in param["decorators"]}
    assert "secure" in decorators and param["default"] is None
    assert decorators["min_length"] == decorators["max_length"] == len(base64.b64encode(bytes(32))) == 44
    [secret] = symbols("Microsoft.KeyVault/vaults/secrets")
    value = Resource(Evaluation(tree, "AzureCloud", PARAMETERS, {}), secret).config["properties"]["value"]
    assert value == "tokenCacheKey" and isinstance(value, BicepElement)


def test_no_cloud_specific_url_outside_the_per_cloud_tables() -> None:
    """Login, storage and vault endpoints come from environment(); Graph and the token-exchange
    audience from the cloud's name. Only those tables (and descriptions) may name a cloud's host."""
    tree = template()
    tables = {"graphEndpoints", "tokenExchangeAudiences"}
    strings: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str) and not isinstance(node, BicepElement):
            strings.append(node)
        elif isinstance(node, dict):
            for k, v in node.items():
                if k != "decorators":
                    walk(k)
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for section in ("parameters", "resources", "outputs"):
        walk(tree[section])
    walk({k: v for k, v in tree["variables"].items() if k not in tables})
    cloud_hosts = re.compile(r"microsoftonline|graph\.microsoft|chinacloudapi|usgovcloudapi|core\.windows\.net|"
                             r"vault\.azure\.net|AzureADTokenExchange", re.I)
    assert not [s for s in strings if cloud_hosts.search(s)]


@pytest.mark.skipif(shutil.which("bicep") is None and shutil.which("az") is None,
                    reason="no Bicep compiler on this machine (it is not on PyPI, npm or Debian)")
def test_bicep_compiles() -> None:  # pragma: no cover - runs where bicep or az exists
    cmd = ["bicep", "build", "--stdout"] if shutil.which("bicep") else ["az", "bicep", "build", "--stdout", "-f"]
    subprocess.run(cmd + [str(BICEP)], check=True, capture_output=True)

