"""The local Functions host refuses at start-up what the real host refuses (devstack/host/routes.py).

Error texts are the host's (Azure/azure-functions-host ScriptHost.ValidateFunction/ValidateHttpFunction,
HostFunctionMetadataProvider, FunctionDescriptorProvider, ScriptBindingContext) and ASP.NET Core's
(RoutePatternParser, RouteConstraintBuilder, ParameterPolicyActivator). A function in error is logged
"The '<name>' function is in error: <message>" and not served; the others are.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from devstack.host.funchost import (ANY_METHOD, FunctionsHost, HostConfigurationError, HostSettings, load_functions,
                                   read_local_settings)
from devstack.host.routes import Route, RouteCreationError

from devstack.launch import ROOT

BUILT_IN = "The specified route conflicts with one or more built in routes."
HANDLER = ("import json\nimport azure.functions as func\n"
           "def main(req: func.HttpRequest) -> func.HttpResponse:\n"
           "    return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype='application/json')\n")
KEYS = {"master": "master-key", "default": "host-key"}
GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def http(route: str | None = None, methods: Any = None, auth: Any = "anonymous", **extra: Any) -> dict[str, Any]:
    trigger: dict[str, Any] = {"type": "httpTrigger", "direction": "in", "name": "req", **extra}
    for key, value in (("route", route), ("methods", methods), ("authLevel", auth)):
        if value is not None:
            trigger[key] = value
    return {"scriptFile": "__init__.py", "bindings": [trigger, {"type": "http", "direction": "out", "name": "$return"}]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    """make(functions, prefix) -> app folder; the functions' modules are forgotten afterwards."""
    path, modules = list(sys.path), set(sys.modules)

    def make(functions: dict[str, dict[str, Any] | str], prefix: str | None = "api") -> Path:
        http_options = {} if prefix is None else {"routePrefix": prefix}
        (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": http_options}}))
        for name, spec in functions.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / "function.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
            (tmp_path / name / "__init__.py").write_text(HANDLER)
        return tmp_path
    yield make
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def load(app_dir: Path, caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """(names of the functions served, the host's error lines)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="funchost"):
        _, functions = load_functions(app_dir)
    return [f.name for f in functions], [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def call(app_dir: Path, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request through the local host's ASGI app, no socket."""
    host = FunctionsHost(load_functions(app_dir)[1], HostSettings(), KEYS, threads=1)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    try:
        asyncio.run(host(scope, receive, send))
    finally:
        host.pool.shutdown()
    return sent[0]["status"], sent[1]["body"]


# --- the repository's own app ------------------------------------------------------------------------
def test_the_repository_functions_all_pass_the_hosts_checks(caplog: pytest.LogCaptureFixture) -> None:
    served, errors = load(ROOT, caplog)
    assert (served, errors) == (["AdminApi", "MiddleTierApi", "OrdersApi"], [])
    routes = {f.name: f.matcher.template for f in load_functions(ROOT)[1]}
    assert routes["AdminApi"] == "api/directory/users/{id}"


# --- reserved routes (ScriptHost.ValidateHttpFunction) -------------------------------------------------
@pytest.mark.parametrize("route", ["admin/users/{id}", "Admin/users", "/admin", "ADMIN", "administrators/{id}",
                                   "adminx", "runtime/webhooks", "/Runtime/", "runtimes"])
def test_a_route_in_the_hosts_reserved_space_is_in_error_and_not_served(
        app: Any, caplog: pytest.LogCaptureFixture, route: str) -> None:
    folder = app({"Reserved": http(route), "Other": http("other")})
    assert load(folder, caplog) == (["Other"], [f"The 'Reserved' function is in error: {BUILT_IN}"])
    assert call(folder, "GET", "/api/" + route.strip("/").replace("{id}", "1"))[0] == 404
    assert call(folder, "GET", "/api/other")[0] == 200


@pytest.mark.parametrize("name", ["AdminApi", "administration", "RuntimeInfo"])
def test_without_a_route_the_function_name_is_the_route_and_is_checked_too(
        app: Any, caplog: pytest.LogCaptureFixture, name: str) -> None:
    assert load(app({name: http(None)}), caplog) == ([], [f"The '{name}' function is in error: {BUILT_IN}"])


@pytest.mark.parametrize("route", ["directory/users/{id}", "adm", "x/admin", "users/admin", "my-runtime", "{admin}"])
def test_reserved_words_elsewhere_in_a_route_are_fine(app: Any, caplog: pytest.LogCaptureFixture, route: str) -> None:
    assert load(app({"Fine": http(route)}), caplog) == (["Fine"], [])


def test_a_blank_route_defaults_to_the_function_name(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    folder = app({"Named": http("   ")})
    assert load(folder, caplog) == (["Named"], [])
    assert call(folder, "GET", "/api/named")[0] == 200


# --- conflicting routes (ScriptHost.HttpRoutesConflict) ---------------------------------------------
@pytest.mark.parametrize("first,second", [
    (("items", ["get"]), ("items", ["get", "post"])),
    (("items", ["get"]), ("/ITEMS/", ["get"])),        # outer '/' and case are ignored
    (("items", None), ("items", ["delete"])),         # no methods: every method
    (("items", ["get"]), ("items", [])),               # an empty list counts as every method here
])
def test_a_second_function_on_the_same_route_and_method_is_in_error(
        app: Any, caplog: pytest.LogCaptureFixture, first: tuple[str, Any], second: tuple[str, Any]) -> None:
    folder = app({"A": http(first[0], first[1]), "B": http(second[0], second[1])})
    assert load(folder, caplog) == (
        ["A"], ["The 'B' function is in error: The route specified conflicts with the route defined by function 'A'."])


@pytest.mark.parametrize("first,second", [
    (("items", ["get"]), ("items", ["post"])),
    (("items/{id}", ["get"]), ("items/{key}", ["get"])),  # compared as text, not as templates
    (("items", ["get"]), ("items", ["GET"])),              # methods compare case-sensitively (Intersect)
])
def test_routes_that_the_host_does_not_consider_conflicting(
        app: Any, caplog: pytest.LogCaptureFixture, first: tuple[str, Any], second: tuple[str, Any]) -> None:
    assert load(app({"A": http(*first), "B": http(*second)}), caplog) == (["A", "B"], [])


def test_a_function_in_error_does_not_claim_its_route(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    folder = app({"A": http("items", auth="bogus"), "B": http("items")})
    served, errors = load(folder, caplog)
    assert served == ["B"] and len(errors) == 1 and errors[0].startswith("The 'A' function is in error:")


# --- function names and bindings (HostFunctionMetadataProvider, FunctionDescriptorProvider) ----------
@pytest.mark.parametrize("name", ["1st", "_x", "has.dot", "host", "HOST", "a" * 129, "naïve"])
def test_invalid_function_names(app: Any, caplog: pytest.LogCaptureFixture, name: str) -> None:
    assert load(app({name: http("r")}), caplog) == ([], [f"The '{name}' function is in error: "
                                                         f"'{name}' is not a valid function name."])


@pytest.mark.parametrize("name", ["a", "A-b_c9", "hosts", "x" * 128])
def test_valid_function_names(app: Any, caplog: pytest.LogCaptureFixture, name: str) -> None:
    assert load(app({name: http("r")}), caplog) == ([name], [])


@pytest.mark.parametrize("spec,message", [
    ({"bindings": []}, "At least one binding must be declared."),
    ({}, "At least one binding must be declared."),
    ({"bindings": [{"type": "http", "direction": "out", "name": "$return"}]},
     "No trigger binding specified. A function must have a trigger input binding."),
    ({"bindings": [{"type": "httpTrigger", "name": "req"}, {"type": "timerTrigger", "name": "t"}]},
     "Multiple trigger bindings defined. A function can only have a single trigger binding."),
    ({"bindings": [{"type": "httpTrigger", "name": "req"}, {"type": "blob", "name": "REQ"}]},
     "Multiple bindings with name 'REQ' discovered. Binding names must be unique."),
    ({"bindings": [{"type": "httpTrigger", "name": "my_req"}]},
     "The binding name my_req is invalid. Please assign a valid name to the binding."),
    ({"bindings": [{"name": "req"}]}, "Binding 'req' is invalid. Bindings must specify a Type."),
    ("{not json", None),
])
def test_function_json_errors(app: Any, caplog: pytest.LogCaptureFixture, spec: Any, message: str | None) -> None:
    served, errors = load(app({"Broken": spec, "Fine": http("fine")}), caplog)
    assert served == ["Fine"] and len(errors) == 1
    assert errors[0].startswith("The 'Broken' function is in error: ")
    if message:
        assert errors[0] == f"The 'Broken' function is in error: {message}"


def test_a_function_with_another_trigger_is_not_an_http_function(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    timer = {"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "0 * * * * *"}]}
    assert load(app({"Timer": timer}), caplog) == ([], [])


# --- authLevel and methods (WebJobsCoreScriptBindingProvider, ScriptBindingContext) -----------------
@pytest.mark.parametrize("raw,level", [(None, "function"), ("", "function"), ("Anonymous", "anonymous"),
                                       ("ADMIN", "admin"), ("0", "anonymous"), (2, "function"), ("user", "user")])
def test_auth_levels_parse_like_the_enum(app: Any, raw: Any, level: str) -> None:
    spec = http("r", auth=None)
    if raw is not None:
        spec["bindings"][0]["AuthLevel"] = raw  # property names are case-insensitive
    assert load_functions(app({"F": spec}))[1][0].auth_level == level


@pytest.mark.parametrize("raw", ["secret", "true", True])
def test_an_unknown_auth_level_is_in_error(app: Any, caplog: pytest.LogCaptureFixture, raw: Any) -> None:
    assert load(app({"F": http("r", auth=raw)}), caplog)[1] == [
        "The 'F' function is in error: Error parsing function.json: Invalid value specified for binding property "
        "'authLevel' of enum type AuthorizationLevel."]


def test_methods_must_be_an_array(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert load(app({"F": http("r", "get")}), caplog)[1] == [
        "The 'F' function is in error: Error parsing function.json: Invalid value specified for binding property "
        "'methods' of type JArray."]


def test_methods_absent_any_method_empty_none(app: Any) -> None:
    functions = {f.name: f for f in load_functions(app({"Absent": http("a"), "Empty": http("e", [])}))[1]}
    assert functions["Absent"].methods == ANY_METHOD and functions["Empty"].methods == frozenset()


def test_methods_match_case_insensitively_and_an_empty_list_serves_nothing(app: Any) -> None:
    folder = app({"Get": http("g", ["get"]), "Empty": http("e", [])})
    assert call(folder, "GET", "/api/g")[0] == 200 and call(folder, "POST", "/api/g")[0] == 404
    assert call(folder, "GET", "/api/e")[0] == 404


@pytest.mark.parametrize("level,key,status", [("function", "host-key", 200), ("function", "", 401),
                                              ("user", "host-key", 401), ("system", "host-key", 401),
                                              ("admin", "host-key", 401), ("user", "master-key", 200)])
def test_function_keys_per_auth_level(app: Any, level: str, key: str, status: int) -> None:
    folder = app({"Keyed": http("k", auth=level)})
    assert call(folder, "GET", "/api/k", {"x-functions-key": key} if key else None)[0] == status


def test_host_status_is_an_admin_api(app: Any) -> None:
    folder = app({"F": http("f")})
    assert call(folder, "GET", "/admin/host/status")[0] == 401
    assert call(folder, "GET", "/admin/host/status", {"x-functions-key": "host-key"})[0] == 401
    status, body = call(folder, "GET", "/admin/host/status", {"x-functions-key": "master-key"})
    assert status == 200 and json.loads(body)["state"] == "Running"


def test_disabled_by_the_app_setting_not_by_function_json(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {**http("on"), "disabled": True}  # ignored by the v2+ host
    folder = app({"On": spec, "Off": http("off")})
    monkeypatch.setenv("AzureWebJobs_Off_Disabled", "true")
    assert [f.name for f in load_functions(folder)[1]] == ["On"]


# --- route templates: ASP.NET Core refuses them and the host does not start -------------------------
PARSER = " (Parameter 'routeTemplate')."


@pytest.mark.parametrize("route,template,inner", [
    ("/users", "api//users", "The route template separator character '/' cannot appear consecutively. It must be "
                             "separated by either a parameter or a literal value." + PARSER),
    ("a//b", "api/a//b", "The route template separator character '/' cannot appear consecutively. It must be "
                         "separated by either a parameter or a literal value." + PARSER),
    ("a/{id", "api/a/{id", "There is an incomplete parameter in the route template. Check that each '{' character "
                           "has a matching '}' character." + PARSER),
    ("a/id}", "api/a/id}", "There is an incomplete parameter in the route template. Check that each '{' character "
                           "has a matching '}' character." + PARSER),
    ("a/{}", "api/a/{}", "The route parameter name '' is invalid. Route parameter names must be non-empty and cannot "
                         "contain these characters: '{', '}', '/'. The '?' character marks a parameter as optional, "
                         "and can occur only at the end of the parameter. The '*' character marks a parameter as "
                         "catch-all, and can occur only at the start of the parameter." + PARSER),
    ("a/{x}/{X}", "api/a/{x}/{X}", "The route parameter name 'X' appears more than one time in the route template."
                                   + PARSER),
    ("a/{*rest}/b", "api/a/{*rest}/b", "A catch-all parameter can only appear as the last segment of the route "
                                       "template." + PARSER),
    ("a/{*rest?}", "api/a/{*rest?}", "A catch-all parameter cannot be marked optional." + PARSER),
    ("a/{x?=1}", "api/a/{x?=1}", "The route parameter name 'x?' is invalid. Route parameter names must be non-empty "
                                 "and cannot contain these characters: '{', '}', '/'. The '?' character marks a "
                                 "parameter as optional, and can occur only at the end of the parameter. The '*' "
                                 "character marks a parameter as catch-all, and can occur only at the start of the "
                                 "parameter." + PARSER),
    ("a/{x}{y}", "api/a/{x}{y}", "A path segment cannot contain two consecutive parameters. They must be separated "
                                 "by a '/' or by a literal string." + PARSER),
    ("a/{x}-{y?}", "api/a/{x}-{y?}", "In the segment '{x}-{y?}', the optional parameter 'y' is preceded by an invalid "
                                     "segment '-'. Only a period (.) can precede an optional parameter." + PARSER),
    ("a/{x?}.{y}", "api/a/{x?}.{y}", "An optional parameter must be at the end of the segment. In the segment "
                                     "'{x?}.{y}', optional parameter 'x' is followed by '.'." + PARSER),
    ("a/b?", "api/a/b?", "The literal section 'b?' is invalid. Literal sections cannot contain the '?' character."
                         + PARSER),
    ("a/{x{y}", "api/a/{x{y}", "In a route parameter, '{' and '}' must be escaped with '{{' and '}}'." + PARSER),
    ("a/{id:number}", "api/a/{id:number}", "The constraint entry 'id' - 'number' on the route 'api/a/{id:number}' "
                                           "could not be resolved by the constraint resolver of type "
                                           "'DefaultInlineConstraintResolver'."),
    ("a/{id:int(5)}", "api/a/{id:int(5)}", "Could not find a constructor for constraint type 'IntRouteConstraint' "
                                           "with the following number of parameters: 1."),
    ("a/{id:range(1)}", "api/a/{id:range(1)}", "Could not find a constructor for constraint type "
                                               "'RangeRouteConstraint' with the following number of parameters: 1."),
    ("a/{id:minlength(x)}", "api/a/{id:minlength(x)}", "An error occurred while trying to create an instance of "
                                                       "'Microsoft.AspNetCore.Routing.Constraints."
                                                       "MinLengthRouteConstraint'."),
])
def test_a_template_aspnet_cannot_parse_stops_the_host(app: Any, route: str, template: str, inner: str) -> None:
    with pytest.raises(RouteCreationError) as refused:
        load_functions(app({"Bad": http(route), "Fine": http("fine")}))
    assert str(refused.value) == (f"An error occurred while creating the route with name 'Bad' and template "
                                  f"'{template}'. {inner}")


def test_an_empty_route_prefix_leaves_the_route_alone(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    folder = app({"Root": http("/items")}, prefix="")
    assert load(folder, caplog) == (["Root"], [])
    assert call(folder, "GET", "/items")[0] == 200


# --- route matching (RoutePatternMatcher) -------------------------------------------------------------
@pytest.mark.parametrize("route,path,values", [
    ("me", "/api/me", {}),
    ("me", "/api/ME/", {}),                                    # literals ignore case; a trailing '/' is ignored
    ("me", "/api/me//", None),                                 # an empty segment never matches
    ("me", "/api//me", None),
    ("users/{id}", "/api/users/alice@contoso.dev", {"id": "alice@contoso.dev"}),
    ("users/{id}", "/api/users", None),
    ("users/{id?}", "/api/users", {}),
    ("users/{id=7}", "/api/users", {"id": "7"}),
    ("users/{id:int}", "/api/users/-12", {"id": "-12"}),
    ("users/{id:int}", "/api/users/2147483648", None),         # Int32 range
    ("users/{id:long}", "/api/users/2147483648", {"id": "2147483648"}),
    ("users/{id:int:min(5)}", "/api/users/3", None),
    ("users/{id:range(1,5)}", "/api/users/5", {"id": "5"}),
    ("users/{id:guid}", "/api/users/" + GUID, {"id": GUID}),
    ("users/{id:guid}", "/api/users/{%s}" % GUID.upper(), {"id": "{%s}" % GUID.upper()}),
    ("users/{id:guid}", "/api/users/" + GUID.replace("-", ""), {"id": GUID.replace("-", "")}),
    ("users/{id:guid}", "/api/users/" + "-" * 36, None),
    ("users/{id:alpha}", "/api/users/abc1", None),
    ("users/{id:bool}", "/api/users/TRUE", {"id": "TRUE"}),
    ("users/{id:length(2,3)}", "/api/users/abcd", None),
    ("users/{id:regex(ab)}", "/api/users/xabx", {"id": "xabx"}),  # Regex.IsMatch: anywhere, ignoring case
    ("users/{id:regex(^ab$)}", "/api/users/xab", None),
    ("users/{id:regex(^\\d{{3}}$)}", "/api/users/123", {"id": "123"}),
    ("files/{*path}", "/api/files/a/b.txt", {"path": "a/b.txt"}),
    ("files/{*path}", "/api/files", {}),
    ("files/{name}.{ext?}", "/api/files/a.tar.gz", {"name": "a.tar", "ext": "gz"}),
    ("files/{name}.{ext?}", "/api/files/readme", {"name": "readme"}),
    ("v{n:int}/items", "/api/V2/items", {"n": "2"}),
    ("a/{x?}/b", "/api/a/b", None),
])
def test_route_matching(route: str, path: str, values: dict[str, str] | None) -> None:
    assert Route("F", "api", route).match(path) == values


# --- local.settings.json the host can't use: one line naming it, never a traceback ---------------------------
@pytest.mark.parametrize("text", ['{"Host": {"LocalHttpPort": "abc"}}', '{"Host": {"LocalHttpPort": 70000}}',
                                  '{"Host": {"LocalHttpPort": true}}', '{"Host": {"LocalHttpPort": [7071]}}',
                                  '{"Host": {"LocalHttpPort": -1}}', '{"Values": ["a"]}', '{"Host": 5}',
                                  '[1, 2]', '{"Values": {', ''])
def test_local_settings_the_host_cannot_use_are_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(text)
    with pytest.raises(HostConfigurationError) as err:
        read_local_settings(path)
    assert str(path) in str(err.value) and "LocalHttpPort" in str(err.value)


def test_local_settings_port_may_be_written_as_a_string(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text('{"Host": {"LocalHttpPort": "7072", "CORS": "https://a, https://b"}, "Values": {"X": 1}}')
    settings = read_local_settings(path)
    assert settings.port == 7072 and settings.cors == ("https://a", "https://b") and settings.values == {"X": "1"}
