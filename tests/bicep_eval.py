"""An evaluator of infra/main.bicep's app settings, on a real Bicep parser (pycep-parser).

No Bicep compiler is installable here (not on PyPI, npm or Debian), so the template is parsed with
pycep and its app settings are *evaluated*: ``concat()`` of arrays, ternaries, variables, parameters,
string interpolations (each ``${...}`` parsed by pycep too), ``environment()`` of each cloud, and
stand-in values for what only Azure knows (keys, host names, ids). Every bool parameter is a
deployment switch whose both values are explored (``branches``). Used by tests/unit/test_infra.py
(the template against the app's code) and tests/integration/test_deployment_rehearsal.py (the app
run under each branch's settings)."""
from __future__ import annotations

import base64
import functools
import hashlib
import re
from typing import Any, Callable, Iterator

from pycep import BicepParser
from pycep.models import BicepElement

from devstack.launch import ROOT

BICEP = ROOT / "infra" / "main.bicep"
SUBSCRIPTION = "0a0b0c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
TENANT = "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f"

# What environment() answers in each cloud, for the fields the template reads (ARM's cloud metadata).
ENVIRONMENTS = {
    "AzureCloud": {"name": "AzureCloud", "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"},
                   "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"}},
    "AzureUSGovernment": {"name": "AzureUSGovernment",
                          "authentication": {"loginEndpoint": "https://login.microsoftonline.us/"},
                          "suffixes": {"storage": "core.usgovcloudapi.net", "keyvaultDns": ".vault.usgovcloudapi.net"}},
    "AzureChinaCloud": {"name": "AzureChinaCloud", "authentication": {"loginEndpoint": "https://login.chinacloudapi.cn/"},
                        "suffixes": {"storage": "core.chinacloudapi.cn", "keyvaultDns": ".vault.azure.cn"}},
}
# Microsoft Graph's root (learn.microsoft.com/graph/deployments) and the managed identity token's
# audience for a federated credential (Entra ID: "Configure an application to trust a managed identity").
GRAPH = {"AzureCloud": "https://graph.microsoft.com", "AzureUSGovernment": "https://graph.microsoft.us",
         "AzureChinaCloud": "https://microsoftgraph.chinacloudapi.cn"}
TOKEN_EXCHANGE = {"AzureCloud": "api://AzureADTokenExchange", "AzureUSGovernment": "api://AzureADTokenExchangeUSGov",
                  "AzureChinaCloud": "api://AzureADTokenExchangeChina"}

CACHE_KEY = base64.b64encode(bytes(range(32))).decode()
PARAMETERS = {  # a parameters file: what has no default
    "apiClientId": "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b",
    "ordersBaseUrl": "https://orders.contoso.example/orders",
    "ordersAppIdUri": "api://orders",
    "tokenCacheKey": CACHE_KEY,
}

# What only Azure knows, per resource type and property path.
STAND_INS: dict[tuple[str, str], Any] = {
    ("Microsoft.KeyVault/vaults", "properties.vaultUri"): lambda r: f"https://{r.name}{r.env['suffixes']['keyvaultDns']}/",
    ("Microsoft.Insights/components", "properties.ConnectionString"):
        "InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=https://ingest.example/",
    ("Microsoft.Cache/redis", "properties.hostName"): lambda r: f"{r.name}.redis.cache.example",
    ("Microsoft.Cache/redis", "listKeys()"): {"primaryKey": "stand+in/redis=key"},
    ("Microsoft.Storage/storageAccounts", "listKeys()"): {"keys": [{"value": base64.b64encode(b"k" * 64).decode()}]},
    ("Microsoft.ManagedIdentity/userAssignedIdentities", "properties.clientId"): "5d3c1b2a-6e7f-4a8b-9c0d-1e2f3a4b5c6d",
    ("Microsoft.ManagedIdentity/userAssignedIdentities", "properties.principalId"): "e1d2c3b4-a5f6-4789-8a0b-c1d2e3f4a5b6",
    ("Microsoft.Web/sites", "identity.principalId"): "c0ffee00-1111-4222-8333-444455556666",
    ("Microsoft.Web/sites", "properties.defaultHostName"): lambda r: f"{r.name}.azurewebsites.example",
}

PARSER = BicepParser()


@functools.cache
def template() -> dict[str, Any]:
    return PARSER.parse(file_path=BICEP)


class Undecided(Exception):
    """A deployment switch (a bool parameter) that this evaluation has not fixed yet."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class Resource:
    """A resource symbol, or a property path below it, as an expression sees it."""

    def __init__(self, ev: "Evaluation", symbol: str, path: str = ""):
        self.ev, self.symbol, self.path = ev, symbol, path
        self.decl = ev.tree["resources"][symbol]
        self.type = self.decl["type"]
        config = self.decl["config"]
        self.config = config["config"] if "condition" in config else config
        self.env = ev.env

    @property
    def name(self) -> str:
        return self.ev.value(self.config["name"])

    def get(self, key: str) -> Any:
        path = f"{self.path}.{key}" if self.path else key
        if path == "name":
            return self.name
        if path == "id":
            return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/{self.type}/{self.name}"
        if (self.type, path) in STAND_INS:
            found = STAND_INS[(self.type, path)]
            return found(self) if callable(found) else found
        if key in ("properties", "identity") and not self.path:
            return Resource(self.ev, self.symbol, key)
        raise KeyError(f"no stand-in for {self.symbol}.{path} ({self.type}): add one to STAND_INS")

    def call(self, function: str) -> Any:
        return STAND_INS[(self.type, f"{function}()")]


class Evaluation:
    """Values of the template's expressions for one cloud, one parameter set and fixed switches."""

    def __init__(self, tree: dict[str, Any], cloud: str, params: dict[str, Any], switches: dict[str, bool]):
        self.tree, self.cloud, self.params, self.switches = tree, cloud, params, switches
        self.env = ENVIRONMENTS[cloud]
        self._vars: dict[str, Any] = {}

    # --- names ---------------------------------------------------------------------------------------
    def name(self, name: str) -> Any:
        t = self.tree
        if name in t["parameters"]:
            decl = t["parameters"][name]
            if decl["type"] == "bool" and name not in self.params:
                if name not in self.switches:
                    raise Undecided(name)
                return self.switches[name]
            if name in self.params:
                return self.params[name]
            if decl["default"] is None:
                raise KeyError(f"parameter {name} has no default and no value")
            return self.value(decl["default"])
        if name in t["variables"]:
            if name not in self._vars:
                self._vars[name] = self.value(t["variables"][name]["value"])
            return self._vars[name]
        if name in t["resources"]:
            return Resource(self, name)
        raise KeyError(f"unknown name {name}")

    # --- expressions ---------------------------------------------------------------------------------
    def value(self, node: Any) -> Any:
        if isinstance(node, BicepElement):
            return self.name(str(node))
        if isinstance(node, str):
            return self.interpolate(node)
        if node is None or isinstance(node, (bool, int)):
            return node
        if isinstance(node, list):
            return [self.value(x) for x in node]
        if isinstance(node, dict) and set(node) == {"function"}:
            return self.function(node["function"])
        if isinstance(node, dict) and set(node) == {"operator"}:
            return self.operator(node["operator"])
        if isinstance(node, dict):
            return {self.key(k): self.value(v) for k, v in node.items()}
        raise TypeError(f"unexpected node {node!r}")

    def key(self, key: str) -> str:
        return self.interpolate(key[1:-1]) if key.startswith("'") and key.endswith("'") else key

    def interpolate(self, text: str) -> str:
        out, i = [], 0
        while (start := text.find("${", i)) >= 0:
            out.append(text[i:start])
            end = closing_brace(text, start + 2)
            expression = PARSER.parse(text=f"var x = {text[start + 2:end]}\n")["variables"]["x"]["value"]
            value = self.value(expression)
            assert isinstance(value, (str, int)), f"interpolating a {type(value).__name__}: {text}"
            out.append(str(value))
            i = end + 1
        out.append(text[i:])
        return "".join(out)

    def function(self, f: dict[str, Any]) -> Any:
        kind, args = f["type"], [self.value(v) for v in (f.get("parameters") or {}).values() if v is not None]
        simple: dict[str, Callable[..., Any]] = {
            "environment": lambda: self.env,
            "concat": lambda *a: [x for part in a for x in part] if isinstance(a[0], list) else "".join(map(str, a)),
            "empty": lambda v: len(v) == 0,
            "to_lower": lambda s: s.lower(),
            "take": lambda v, n: v[:n],
            "replace": lambda s, old, new: s.replace(old, new),
            "unique_string": lambda *a: "u" + digest(a)[:12],
            "guid": lambda *a: "9f9f9f9f-0000-4000-8000-" + digest(a)[:12],
            "subscription_resource_id": lambda *a: f"/subscriptions/{SUBSCRIPTION}/providers/{a[0]}/{'/'.join(a[1:])}",
        }
        if kind == "resource_group":
            return {"location": "westeurope", "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg"}
        if kind == "subscription":
            return {"tenantId": TENANT, "subscriptionId": SUBSCRIPTION}
        if kind not in simple:
            raise NotImplementedError(f"Bicep function {kind} is not evaluated by this test")
        return simple[kind](*args)

    def operator(self, op: dict[str, Any]) -> Any:
        kind, operands = op["type"], op["operands"]
        if kind == "conditional":
            condition = self.value(operands["condition"])
            assert isinstance(condition, bool)
            return self.value(operands["true_value" if condition else "false_value"])
        if kind == "not":
            return not self.value(operands["bool_value"])
        if kind == "property_accessor":
            return self.path(self.value(operands["operand_1"]), operands["operand_2"])
        if kind == "index_accessor":
            return index(self.value(operands["operand_1"]), self.value(operands["operand_2"]))
        if kind == "function_accessor":
            target = self.value(operands["operand_1"])
            assert isinstance(target, Resource), op
            return target.call(operands["func_name"])
        raise NotImplementedError(f"Bicep operator {kind} is not evaluated by this test")

    def path(self, base: Any, node: Any) -> Any:
        """``base.node``: pycep nests ``a.b.c`` as accessor(a, accessor(b, c))."""
        if isinstance(node, str):
            return base.get(str(node)) if isinstance(base, Resource) else base[str(node)]
        kind, operands = node["operator"]["type"], node["operator"]["operands"]
        if kind == "property_accessor":
            return self.path(self.path(base, operands["operand_1"]), operands["operand_2"])
        if kind == "index_accessor":
            return index(self.path(base, operands["operand_1"]), self.value(operands["operand_2"]))
        raise NotImplementedError(f"accessor {kind}")


def closing_brace(text: str, i: int) -> int:
    depth, quoted = 1, False
    while True:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == "'":
                quoted = False
        elif c == "'":
            quoted = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1


def digest(values: tuple[Any, ...]) -> str:
    return hashlib.sha256("|".join(map(str, values)).encode()).hexdigest()


def index(base: Any, key: Any) -> Any:
    return base.get(key) if isinstance(base, Resource) else base[key]


def branches(cloud: str = "AzureCloud", **params: Any) -> Iterator[tuple[dict[str, bool], Evaluation, dict[str, str]]]:
    """Every combination of the switches that the app settings depend on, with those settings."""
    todo: list[dict[str, bool]] = [{}]
    while todo:
        switches = todo.pop()
        ev = Evaluation(template(), cloud, {**PARAMETERS, **params}, switches)
        try:
            settings = ev.value(site(ev)["properties"]["siteConfig"]["appSettings"])
        except Undecided as undecided:
            todo += [{**switches, undecided.name: True}, {**switches, undecided.name: False}]
            continue
        names = [s["name"] for s in settings]
        assert len(names) == len(set(names)), f"duplicate app settings in {switches}"
        assert all(isinstance(s["value"], str) for s in settings), switches
        yield switches, ev, {s["name"]: s["value"] for s in settings}


def symbols(of_type: str) -> list[str]:
    return [name for name, r in template()["resources"].items() if r["type"] == of_type]


def site(ev: Evaluation) -> dict[str, Any]:
    [app] = symbols("Microsoft.Web/sites")
    return Resource(ev, app).config


def resolve_key_vault_references(ev: Evaluation, settings: dict[str, str]) -> dict[str, str]:
    """What App Service does with ``@Microsoft.KeyVault(VaultName=..;SecretName=..)``: the value of that
    secret, which must be a secret of the template's vault."""
    [vault] = symbols("Microsoft.KeyVault/vaults")
    secrets = {ev.value(Resource(ev, s).config["name"]): Resource(ev, s).config for s in
               symbols("Microsoft.KeyVault/vaults/secrets")}
    resolved = dict(settings)
    for key, value in settings.items():
        if m := re.fullmatch(r"@Microsoft\.KeyVault\(VaultName=([^;]+);SecretName=([^)]+)\)", value):
            assert m.group(1) == Resource(ev, vault).name, key
            secret = secrets[m.group(2)]
            assert secret["parent"] == vault, key
            resolved[key] = ev.value(secret["properties"]["value"])
    return resolved
