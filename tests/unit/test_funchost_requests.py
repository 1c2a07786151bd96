"""What a function sees of a request, and what the caller gets back, compared with the real host.

Sources (commits read):
- Azure/azure-functions-host @ 89dc438d476542786f2fc4070f553423213a6223 (v4.1037.0):
  ``src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs`` (``ToRpcHttp``:
  header names lower-cased, every value ``StringValues.ToString()``; query values likewise, empty ones
  left out; the body only when ``Content-Length > 0``, as bytes for the Python worker's
  ``RawHttpBodyBytes``/``RpcHttpBodyOnly`` capabilities), ``WebJobs.Script.WebHost/Middleware/
  FunctionInvocationMiddleware.cs`` (401 ``UnauthorizedResult``), ``ExceptionMiddleware.cs`` (500, no
  body), ``Security/Authentication/Keys/AuthenticationLevelHandler.cs`` (the key: first
  ``x-functions-key`` header if present, else first ``code``), ``Config/HostJsonFileConfigurationSource.cs``,
  ``Middleware/HttpRequestBodySizeMiddleware.cs``, ``Program.cs`` (100 MiB).
- Azure/azure-functions-python-worker @ 7e6acf36e43335ad69742923af9ff3d62b99242a: ``dispatcher.py``
  (capabilities), ``bindings/datumdef.py`` (no body -> ``b''``).
- Azure/azure-functions-python-library @ 2e8ba4b5146cde3b41b16df09b4f5b25a95ba340: ``azure/functions/http.py``
  (``HttpRequestConverter.decode`` builds ``azure.functions.http.HttpRequest``; ``HttpResponseConverter``
  adds ``; charset=`` to ``text/*`` only), ``_http.py`` (header names case-insensitive).
- dotnet/runtime ``Microsoft.Extensions.Primitives/src/StringValues.cs`` @ 02fc749910789becca86f53072b5f8822f54980a
  (values joined with ',' and empty ones skipped); dotnet/aspnetcore ``src/Http/Http/src/Features/QueryFeature.cs``
  @ d1a4541e9d913e8b05d88984b10d5585949b425f (query names ignore case), ``src/Shared/UrlDecoder/UrlDecoder.cs``
  @ 953674e31b51d95cb9a99e4f938b003b198ab8a4 (%2F is not decoded), ``Kestrel/Core/src/Internal/Http/PathDecoder.cs``
  @ 02fbb9c82fa0eb7691b54d883d7a54524c3945ff (dot segments removed after decoding), ``Http.Abstractions/src/
  PathString.cs`` @ 03674d4f754d31e78e285cfe7a0a3951ebd377b9 (``ToUriComponent`` for the url).
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from devstack.host.funchost import (FunctionsHost, HostConfigurationError, HostSettings, host_header_valid,
                                    kestrel_path, load_functions, query_values, read_host_json, uri_component)

from .test_funchost_routes import http

KEYS = {"master": "master-key", "default": "host-key"}
ECHO = '''import json
import azure.functions as func
def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        req.get_json()
        problem = None
    except ValueError as e:
        problem = str(e)
    return func.HttpResponse(json.dumps({
        "method": req.method, "url": req.url, "headers": dict(req.headers), "params": dict(req.params),
        "route": dict(req.route_params), "body": req.get_body().decode("latin-1"), "json_error": problem,
        "class": type(req).__module__ + "." + type(req).__name__,
        "X-Header": req.headers.get("X-Header")}), mimetype="application/json")
'''
BOOM = '''import azure.functions as func
def main(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret detail: do not leak")
'''
TEXT = '''import azure.functions as func
def main(req: func.HttpRequest) -> func.HttpResponse:
    kind = req.params.get("kind")
    if kind == "text":
        return func.HttpResponse("hi")
    if kind == "header":
        return func.HttpResponse("hi", headers={"Content-Type": "application/x-own"})
    return func.HttpResponse(b"{}", mimetype="application/json")
'''


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FunctionsHost]:
    path, modules = list(sys.path), set(sys.modules)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    for name, route, code, auth in (("Echo", "echo/{id}", ECHO, "anonymous"),
                                    ("Rest", "rest/{*path}", ECHO, "anonymous"),
                                    ("Boom", "boom", BOOM, "anonymous"), ("Text", "text", TEXT, "anonymous"),
                                    ("Keyed", "keyed", ECHO, "function"), ("Admin", "adm", ECHO, "admin"),
                                    ("Typed", "typed/{n:int}", ECHO, "anonymous")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "function.json").write_text(json.dumps(http(route, auth=auth)))
        (tmp_path / name / "__init__.py").write_text(code)
    h = FunctionsHost(load_functions(tmp_path)[1], HostSettings(), KEYS, threads=1)
    yield h
    h.pool.shutdown()
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def send(h: FunctionsHost, method: str, target: str, headers: Sequence[tuple[str, str]] = (),
         body: bytes = b"", content_length: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app as uvicorn presents it: raw_path undecoded, headers in order."""
    raw_path, _, query = target.partition("?")
    hs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if body and content_length:
        hs.append((b"content-length", str(len(body)).encode()))
    chunks = [body[i:i + 10] for i in range(0, len(body), 10)] or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)
    scope = {"type": "http", "method": method, "path": raw_path, "raw_path": raw_path.encode("latin-1"),
             "query_string": query.encode("latin-1"), "headers": hs}
    asyncio.run(h(scope, receive, collect))
    out_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], out_headers, sent[1]["body"]


def echo(h: FunctionsHost, target: str, headers: Sequence[tuple[str, str]] = (), **kw: Any) -> dict[str, Any]:
    status, _, body = send(h, kw.pop("method", "GET"), target, headers, **kw)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


# --- headers ------------------------------------------------------------------------------------------
def test_repeated_headers_are_joined_with_a_bare_comma_and_names_are_lower_case(host: FunctionsHost) -> None:
    seen = echo(host, "/api/echo/1", [("X-Header", "a"), ("x-header", "b, c"), ("X-HEADER", "")])
    assert seen["headers"]["x-header"] == "a,b, c"  # StringValues.ToString(): ',' and the empty value skipped
    assert seen["X-Header"] == "a,b, c"             # looked up in any case
    assert "X-Header" not in seen["headers"]


def test_an_empty_header_is_passed_on_empty(host: FunctionsHost) -> None:
    assert echo(host, "/api/echo/1", [("x-empty", "")])["headers"]["x-empty"] == ""


# --- query --------------------------------------------------------------------------------------------
def test_repeated_query_keys_are_all_kept_joined_with_commas(host: FunctionsHost) -> None:
    assert echo(host, "/api/echo/1?x=1&x=2&X=3")["params"] == {"x": "1,2,3"}  # names ignore case, first spelling


def test_empty_query_values_are_left_out(host: FunctionsHost) -> None:
    assert echo(host, "/api/echo/1?a=&b&c=1&c=&d=%20")["params"] == {"c": "1", "d": " "}


def test_query_decoding(host: FunctionsHost) -> None:
    seen = echo(host, "/api/echo/1?q=a+b%2Bc&%C3%A9=%E2%82%AC&bad=%FF&&")
    assert seen["params"] == {"q": "a b+c", "é": "€", "bad": "%FF"}
    assert seen["url"].endswith("/api/echo/1?q=a+b%2Bc&%C3%A9=%E2%82%AC&bad=%FF&&")  # the raw query string


def test_query_parser_units() -> None:
    assert query_values("a=1&A=2&b=&&=v") == {"a": ["1", "2"], "b": [""], "": ["v"]}


# --- path, route values, url ------------------------------------------------------------------------
@pytest.mark.parametrize("raw,path", [
    ("/api/echo/a%20b", "/api/echo/a b"),
    ("/api/echo/a%2Fb", "/api/echo/a%2Fb"),         # %2F stays encoded: never a separator
    ("/api/echo/a%2fb", "/api/echo/a%2fb"),
    ("/api/echo/%C3%A9", "/api/echo/é"),
    ("/api/echo/%C3", "/api/echo/%C3"),             # not UTF-8: left as it is
    ("/api/echo/%C0%80", "/api/echo/%C0%80"),       # overlong
    ("/api/echo/%ED%A0%80", "/api/echo/%ED%A0%80"),  # a surrogate
    ("/api/echo/%zz", "/api/echo/%zz"),
    ("/api/x/../echo/1", "/api/echo/1"),            # dot segments removed ...
    ("/api/x/%2E%2E/echo/./1", "/api/echo/1"),      # ... after decoding
    ("/..", "/"),
    ("/a/b/..", "/a/"),
])
def test_kestrel_path_decoding(raw: str, path: str) -> None:
    assert kestrel_path(raw.encode()) == path


def test_a_null_character_in_the_path_is_a_bad_request(host: FunctionsHost) -> None:
    assert kestrel_path(b"/api/echo/a%00") is None
    assert send(host, "GET", "/api/echo/a%00")[0] == 400


@pytest.mark.parametrize("raw,value", [("a%20b", "a b"), ("a%2Fb", "a%2Fb"), ("%C3%A9", "é"), ("a+b", "a+b"),
                                       ("A%3Fb", "A?b")])
def test_route_values_are_decoded_except_slash(host: FunctionsHost, raw: str, value: str) -> None:
    assert echo(host, f"/api/echo/{raw}")["route"] == {"id": value}


def test_an_encoded_slash_does_not_split_a_segment(host: FunctionsHost) -> None:
    assert send(host, "GET", "/api/echo/a%2Fb")[0] == 200
    assert send(host, "GET", "/api/echo/a/b")[0] == 404
    assert echo(host, "/api/rest/a%2Fb/c%20d")["route"] == {"path": "a%2Fb/c d"}


def test_route_constraints_and_case(host: FunctionsHost) -> None:
    assert echo(host, "/API/TYPED/7")["route"] == {"n": "7"}   # literals ignore case
    assert send(host, "GET", "/api/typed/x")[0] == 404
    assert echo(host, "/api/echo/MiXeD")["route"] == {"id": "MiXeD"}  # values keep theirs


def test_the_url_is_scheme_host_escaped_path_and_raw_query(host: FunctionsHost) -> None:
    seen = echo(host, "/api/echo/%C3%A9%20x%2Fy?a=%20", [("Host", "example.net:8080")])
    assert seen["url"] == "http://example.net:8080/api/echo/%C3%A9%20x%2Fy?a=%20"
    assert uri_component("/a b/é/%2F/%zz/[x]") == "/a%20b/%C3%A9/%2F/%25zz/%5Bx%5D"


# --- body ---------------------------------------------------------------------------------------------
def test_the_request_object_is_the_workers_with_a_bytes_body(host: FunctionsHost) -> None:
    seen = echo(host, "/api/echo/1", [("Content-Type", "application/json")], method="POST", body=b"{not json")
    assert seen["class"] == "azure.functions.http.HttpRequest"
    assert seen["body"] == "{not json"
    assert seen["json_error"] == "HTTP request does not contain valid JSON data"


def test_no_content_length_no_body(host: FunctionsHost) -> None:
    """ToRpcHttp reads the body only when Content-Length > 0: a chunked body never reaches the function."""
    seen = echo(host, "/api/echo/1", [("Transfer-Encoding", "chunked")], method="POST", body=b"payload",
                content_length=False)
    assert seen["body"] == "" and seen["json_error"] == "HTTP request does not contain valid JSON data"


def test_the_body_size_limit(host: FunctionsHost) -> None:
    host.max_body = 16
    assert send(host, "POST", "/api/echo/1", body=b"x" * 16)[0] == 200
    assert send(host, "POST", "/api/echo/1", body=b"x" * 17)[0] == 413
    # A declared length within the limit but more bytes sent: refused while reading.
    assert send(host, "POST", "/api/echo/1", [("Content-Length", "4")], body=b"x" * 40, content_length=False)[0] == 413


@pytest.mark.parametrize("setting,limit", [(None, 104857600), ("2048", 2048), (" 77 ", 77), ("lots", 104857600)])
def test_the_body_size_setting(monkeypatch: pytest.MonkeyPatch, setting: str | None, limit: int) -> None:
    if setting is None:
        monkeypatch.delenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", raising=False)
    else:
        monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", setting)
    h = FunctionsHost([], HostSettings(), KEYS, threads=1)
    h.pool.shutdown()
    assert h.max_body == limit


# --- answers ------------------------------------------------------------------------------------------
def test_an_unhandled_exception_is_500_with_no_body(host: FunctionsHost) -> None:
    status, headers, body = send(host, "GET", "/api/boom")
    assert (status, body) == (500, b"")
    assert "secret" not in json.dumps(headers)


def test_missing_route_and_method_not_allowed_are_404(host: FunctionsHost) -> None:
    assert send(host, "GET", "/api/nothing")[::2] == (404, b"")
    assert send(host, "GET", "/")[0] == 404  # the host's home page is not served here
    assert send(host, "PUT", "/api/echo/1")[0] == 200
    next(f for f in host.functions if f.name == "Echo").methods = frozenset({"POST"})
    assert send(host, "PUT", "/api/echo/1")[::2] == (404, b"")  # HttpMethodRouteConstraint: 404, never 405


@pytest.mark.parametrize("kind,ctype", [("text", "text/plain; charset=utf-8"), ("json", "application/json"),
                                        ("header", "application/x-own")])
def test_response_content_type_as_the_library_sets_it(host: FunctionsHost, kind: str, ctype: str) -> None:
    assert send(host, "GET", f"/api/text?kind={kind}")[1]["content-type"] == ctype


# --- keys ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target,headers,status", [
    ("/api/keyed", [], 401),
    ("/api/keyed?code=host-key", [], 200),
    ("/api/keyed?CODE=host-key", [], 200),                                   # the query name ignores case
    ("/api/keyed?code=host-key&code=other", [], 200),                        # the first value
    ("/api/keyed?code=other&code=host-key", [], 401),
    ("/api/keyed", [("x-functions-key", "host-key")], 200),
    ("/api/keyed", [("X-Functions-Key", "host-key"), ("x-functions-key", "other")], 200),
    ("/api/keyed", [("x-functions-key", "other"), ("x-functions-key", "host-key")], 401),
    ("/api/keyed?code=host-key", [("x-functions-key", "other")], 401),      # the header wins ...
    ("/api/keyed?code=host-key", [("x-functions-key", "")], 401),           # ... even empty
    ("/api/keyed?code=master-key", [], 200),
    ("/api/adm?code=host-key", [], 401),
    ("/api/adm?code=master-key", [], 200),
    ("/api/echo/1?code=wrong", [], 200),                                     # anonymous: any key or none
])
def test_function_keys(host: FunctionsHost, target: str, headers: list[tuple[str, str]], status: int) -> None:
    got, out_headers, body = send(host, "GET", target, headers)
    assert got == status
    if status == 401:
        assert body == b"" and "www-authenticate" not in out_headers


def test_the_code_query_value_reaches_the_function_too(host: FunctionsHost) -> None:
    assert echo(host, "/api/keyed?code=host-key")["params"] == {"code": "host-key"}  # ToRpcHttp drops nothing


# --- host.json ----------------------------------------------------------------------------------------
MIGRATE = ("The host.json file is missing the required 'version' property. See https://aka.ms/functions-hostjson for "
           "steps to migrate the configuration file.")


def _invalid(version: str, v3: bool = False) -> str:
    return (f"'{version}' is an invalid value for host.json 'version' property. We recommend you set the 'version' "
            "property to '2.0'. " + ("This does not correspond to the function runtime version, only to the schema "
                                     "version of the host.json file. " if v3 else "")
            + "See https://aka.ms/functions-hostjson for more information on this configuration file.")


@pytest.mark.parametrize("text,message", [
    ('{"version": "2.0"', "parse"), ("", "parse"), ("[]", "parse"), ('"2.0"', "parse"),
    ('{"logging": {}}', MIGRATE), ('{"version": ""}', MIGRATE), ('{"Version": "2.0"}', MIGRATE),
    ('{"version": "1.0"}', _invalid("1.0")), ('{"version": "3.0"}', _invalid("3.0", v3=True)),
    ('{"version": 2.0}', _invalid("2")), ('{"version": "2.0 "}', _invalid("2.0 ")),
])
def test_host_json_the_host_refuses(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "host.json").write_text(text)
    with pytest.raises(HostConfigurationError) as refused:
        read_host_json(tmp_path)
    expected = f"Unable to parse host configuration file '{tmp_path / 'host.json'}'." if message == "parse" else message
    assert str(refused.value) == expected


@pytest.mark.parametrize("text", ['{"version": "2.0"}', "{}", '\ufeff{"version": "2.0"}'])
def test_host_json_the_host_takes(tmp_path: Path, text: str) -> None:
    (tmp_path / "host.json").write_text(text, encoding="utf-8")
    assert read_host_json(tmp_path)["version"] == "2.0"


def test_no_host_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HostConfigurationError):
        read_host_json(tmp_path)


# --- Host header (Kestrel Http1Connection.EnsureHostHeaderExists) -----------------------------------------
def test_several_host_headers_are_a_bad_request(host: FunctionsHost) -> None:
    assert send(host, "GET", "/api/echo/1", [("Host", "a"), ("Host", "b")])[::2] == (400, b"")
    assert send(host, "GET", "/api/echo/1", [("Host", "a")])[0] == 200


@pytest.mark.parametrize("value,valid", [
    ("", True), ("localhost", True), ("fn.example:7071", True), ("a-b_c~d!$&'()", True), ("[::1]", True),
    ("[::1]:80", True), ("[fe80::1%25eth0]", False), ("[::]", False), ("[::1", False), (":80", False),
    ("a b", False), ("a:", False), ("a:8x", False), ("a/b", False), ("a@b", False), ("é.example", False),
])
def test_host_header_values(host: FunctionsHost, value: str, valid: bool) -> None:
    """Kestrel HttpUtilities.IsHostHeaderValid (dotnet/aspnetcore, HttpCharacters: alphanumerics and !$&'()-._~)."""
    assert host_header_valid(value) is valid
    assert send(host, "GET", "/api/echo/1", [("Host", value)])[0] == (200 if valid else 400)
