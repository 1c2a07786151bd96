"""The local Functions host as a process (`python -m devstack host`, uvicorn + httptools) against what
the real host does, over real sockets with requests written byte for byte.

Each expectation comes from the real sources; commits and files are listed in
tests/unit/test_funchost_requests.py (Azure/azure-functions-host @ 89dc438d, azure-functions-python-worker
@ 7e6acf36, azure-functions-python-library @ 2e8ba4b5, dotnet StringValues/QueryFeature/UrlDecoder/
PathDecoder). The unit tests there cover the rules case by case; these check that the server in front
(uvicorn) hands the rules what a client really sent: repeated headers, undecoded paths, chunked bodies.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from devstack.launch import ROOT, host_ready, stop

from ..secrets_registry import REGISTRY

ECHO = '''import json
import azure.functions as func
def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"url": req.url, "headers": dict(req.headers), "params": dict(req.params),
                                         "route": dict(req.route_params), "body": req.get_body().decode()}),
                             mimetype="application/json")
'''
BOOM = '''import azure.functions as func
def main(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom: internal detail 5f1d")
'''


def trigger(route: str, methods: list[str] | None = None, auth: str = "anonymous") -> dict[str, Any]:
    t: dict[str, Any] = {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": auth, "route": route}
    if methods is not None:
        t["methods"] = methods
    return {"scriptFile": "__init__.py", "bindings": [t, {"type": "http", "direction": "out", "name": "$return"}]}


def write_app(folder: Path, functions: dict[str, tuple[Any, str]], host_json: str = '{"version": "2.0"}',
              values: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "host.json").write_text(host_json)
    for name, (spec, code) in functions.items():
        (folder / name).mkdir()
        (folder / name / "function.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
        (folder / name / "__init__.py").write_text(code)
    (folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTIONS_WORKER_RUNTIME": "python", **(values or {})}}))
    return folder


def launch(app: Path, state: Path) -> subprocess.Popen[str]:
    state.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "devstack", "--state", str(state), "host", "--app", str(app),
         "--settings", str(app / "local.settings.json"), "--port", "0", "--ready-json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(state / "host.log", "w"), text=True,
        env={k: v for k, v in os.environ.items() if k != "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"})


class Host:
    def __init__(self, proc: subprocess.Popen[str], ready: dict[str, Any], log: Path):
        self.proc, self.keys, self.log = proc, ready["keys"], log
        self.port = int(ready["url"].rsplit(":", 1)[1])
        self.functions = {f["name"]: f for f in ready["functions"]}

    def request(self, method: str, target: str, headers: Sequence[tuple[str, str]] = (),
                body: bytes | None = None, chunked: bool = False,
                no_host: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The request line and headers exactly as given (repeats kept, the target not re-encoded)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True,
                            skip_host=no_host or any(k.lower() == "host" for k, _ in headers))
            for k, v in headers:
                conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders(iter([body or b""]), encode_chunked=True)
            else:
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def echo(self, target: str, headers: Sequence[tuple[str, str]] = (), **kw: Any) -> dict[str, Any]:
        status, _, body = self.request(kw.pop("method", "GET"), target, headers, **kw)
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]


def start(app: Path, state: Path) -> Host:
    proc = launch(app, state)
    ready = host_ready(proc, state)
    REGISTRY.add_function_keys(ready.get("keys"))
    return Host(proc, ready, state / "host.log")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("conformance")
    app = write_app(base / "app", {
        "Echo": (trigger("echo/{id}"), ECHO),
        "Rest": (trigger("rest/{*path}"), ECHO),
        "PostOnly": (trigger("post-only", ["post"]), ECHO),
        "Keyed": (trigger("keyed", auth="function"), ECHO),
        "AdminOnly": (trigger("master-only", auth="admin"), ECHO),
        "Boom": (trigger("boom"), BOOM),
        "Broken": ("{not json", ECHO),
    }, values={"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "64"})
    h = start(app, base / "state")
    yield h
    stop(h.proc)


# --- what the function sees ---------------------------------------------------------------------------
def test_repeated_headers_reach_the_function_joined_by_a_bare_comma(host: Host) -> None:
    seen = host.echo("/api/echo/1", [("X-Multi", "a"), ("x-multi", "b"), ("X-MULTI", "")])
    assert seen["headers"]["x-multi"] == "a,b"


def test_repeated_query_keys_reach_the_function_joined(host: Host) -> None:
    assert host.echo("/api/echo/1?k=1&K=2&k=&e=")["params"] == {"k": "1,2"}


def test_an_encoded_slash_stays_in_the_route_value(host: Host) -> None:
    assert host.echo("/api/echo/a%2Fb")["route"] == {"id": "a%2Fb"}
    assert host.request("GET", "/api/echo/a/b")[0] == 404
    assert host.echo("/api/rest/x%2Fy/%C3%A9")["route"] == {"path": "x%2Fy/é"}


def test_percent_encoded_segments_and_dot_segments(host: Host) -> None:
    seen = host.echo("/api/rest/%2E%2E/echo/./a%20b", headers=[("Host", "fn.example")])
    assert seen["url"] == "http://fn.example/api/echo/a%20b"  # Kestrel's Request.Path, re-escaped
    assert seen["route"] == {"id": "a b"}


def test_http11_needs_exactly_one_host_header(host: Host) -> None:
    """Kestrel (Http1Connection.EnsureHostHeaderExists): none in HTTP/1.1, or several, is 400."""
    assert host.request("GET", "/api/echo/1", [("Host", "a.example"), ("Host", "b.example")])[::2] == (400, b"")
    assert host.request("GET", "/api/echo/1", no_host=True)[::2] == (400, b"")
    assert host.request("GET", "/api/echo/1", [("Host", "a.example")])[0] == 200


def test_case_of_route_literals_and_values(host: Host) -> None:
    assert host.echo("/API/Echo/MiXeD")["route"] == {"id": "MiXeD"}


def test_a_chunked_body_does_not_reach_the_function(host: Host) -> None:
    """ToRpcHttp reads the body only when Content-Length > 0."""
    assert host.echo("/api/echo/1", method="POST", body=b"hello", chunked=True)["body"] == ""
    assert host.echo("/api/echo/1", method="POST", body=b"hello")["body"] == "hello"


# --- what the caller gets -------------------------------------------------------------------------------
def test_an_unhandled_exception_is_500_with_an_empty_body(host: Host) -> None:
    status, headers, body = host.request("GET", "/api/boom")
    assert (status, body, headers.get("content-length")) == (500, b"", "0")
    assert "5f1d" not in json.dumps(headers)


def test_missing_routes_and_other_methods_are_404_with_an_empty_body(host: Host) -> None:
    assert host.request("GET", "/api/nowhere")[::2] == (404, b"")
    assert host.request("GET", "/api/post-only")[::2] == (404, b"")  # not 405: the route does not match
    assert host.request("POST", "/api/post-only")[0] == 200


def test_oversized_bodies_are_refused_before_the_function(host: Host) -> None:
    assert host.request("POST", "/api/echo/1", body=b"x" * 64)[0] == 200
    assert host.request("POST", "/api/echo/1", body=b"x" * 65)[::2] == (413, b"")


@pytest.mark.parametrize("function,how,key,status", [
    ("keyed", None, None, 401),
    ("keyed", "code", "default", 200),
    ("keyed", "header", "default", 200),
    ("keyed", "header", "wrong", 401),
    ("keyed", "code", "master", 200),
    ("master-only", "code", "default", 401),
    ("master-only", "header", "master", 200),
])
def test_function_keys(host: Host, function: str, how: str | None, key: str | None, status: int) -> None:
    value = host.keys.get(key, key) if key else None
    target = f"/api/{function}" + (f"?code={value}" if how == "code" else "")
    headers = [("x-functions-key", value)] if how == "header" and value else []
    got, _, body = host.request("GET", target, headers)
    assert got == status
    if status == 401:
        assert body == b""


def test_a_function_json_that_is_not_json_is_in_error_and_the_rest_run(host: Host) -> None:
    assert "Broken" not in host.functions and "Echo" in host.functions
    assert "The 'Broken' function is in error:" in host.log.read_text()


# --- start-up errors --------------------------------------------------------------------------------------
def refused(tmp_path: Path, host_json: str, functions: dict[str, tuple[Any, str]] | None = None) -> str:
    app = write_app(tmp_path / "app", functions or {"Echo": (trigger("echo/{id}"), ECHO)}, host_json=host_json)
    proc = launch(app, tmp_path / "state")
    assert proc.stdout is not None
    out = proc.stdout.readline()  # the ready line if it starts (then it is stopped), else EOF at exit
    if out:
        stop(proc)
    proc.wait(timeout=60)
    log = (tmp_path / "state" / "host.log").read_text()
    assert proc.returncode == 1 and '"ready"' not in out, log
    assert "Traceback" not in log
    first, message = log.strip().split("\n", 1)
    assert first.startswith("A host error has occurred during startup operation '")
    return message


def test_host_json_that_is_not_json_stops_the_host(tmp_path: Path) -> None:
    assert refused(tmp_path, '{"version": "2.0",') == \
        f"Unable to parse host configuration file '{tmp_path / 'app' / 'host.json'}'."


def test_an_unknown_host_json_version_stops_the_host(tmp_path: Path) -> None:
    assert refused(tmp_path, '{"version": "1.0"}').startswith(
        "'1.0' is an invalid value for host.json 'version' property.")


def test_a_missing_host_json_version_stops_the_host(tmp_path: Path) -> None:
    assert refused(tmp_path, '{"logging": {}}').startswith(
        "The host.json file is missing the required 'version' property.")


def test_a_route_template_aspnet_cannot_build_stops_the_host(tmp_path: Path) -> None:
    assert refused(tmp_path, '{"version": "2.0"}', {"Bad": (trigger("a/{id"), ECHO)}).startswith(
        "An error occurred while creating the route with name 'Bad' and template 'api/a/{id'.")
