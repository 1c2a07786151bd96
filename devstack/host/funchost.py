"""A local Azure Functions host for Python apps (v1 model; v2, ``function_app.py``: indexing.py), standing in for
`func start`.

It reads what `func start` reads (``host.json``, every ``*/function.json``, ``local.settings.json``:
``Values`` into the environment before the app is imported, ``Host.LocalHttpPort``, ``Host.CORS``,
``Host.CORSCredentials``) and runs sync functions in a thread pool, as the Python worker does. At
start-up it refuses what the real host refuses, with its messages (``routes.py``, ``read_host_json``).
A function gets the request as Kestrel and the host's ``ToRpcHttp`` hand it to the worker
(tests/unit/test_funchost_requests.py, tests/integration/test_funchost_conformance.py).

Differences from Core Tools, on purpose: function keys are enforced (Core Tools skips them locally) so that
``authLevel: function`` can be tested; ``Values`` override the environment, so a settings file describes a run.
"""
from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote_to_bytes

import azure.functions as func
from azure.functions.http import HttpRequest as WorkerHttpRequest

from .indexing import IndexedFunction, IndexingError, index_app, script_file_name
from .routes import FunctionInError, HttpTrigger, Route, RouteCreationError, check_conflicts, http_trigger
from .worker_telemetry import TraceContext, WorkerTelemetry, invocation_trace_context

log = logging.getLogger("funchost")
MAX_BODY = 100 * 1024 * 1024  # the Functions host's request size limit
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclass(frozen=True)
class Entry:
    """A function as the worker loaded it (the Python worker's ``loader.load_function``)."""

    name: str
    directory: Path
    call: Callable[..., Any]
    wants_context: bool
    is_async: bool
    trigger_param: str = "req"  # the HTTP trigger binding's name: the parameter the request is passed as


@dataclass
class Function:
    """A function as the host knows it from ``function.json`` (HostFunctionMetadataProvider), with its
    loaded entry when the app runs in this process (FUNCTIONS_WORKER_PROCESS_COUNT=1)."""

    name: str
    route: str
    matcher: Route
    methods: frozenset[str]
    auth_level: str
    directory: Path
    module: str
    entry_point: str
    entry: Entry | None = None
    worker_indexed: bool = False  # v2: each worker process indexes the script file itself (the worker's
    #                               "worker_indexed" metadata property), then finds the function by name


def import_entry(name: str, module: str, entry_point: str, directory: Path) -> Entry:
    """The worker's FunctionLoadRequest: import the function's module (its own module state per process)."""
    call = getattr(importlib.import_module(module), entry_point)
    return Entry(name, directory, call, "context" in inspect.signature(call).parameters,
                 inspect.iscoroutinefunction(call))


def indexed_entry(function: IndexedFunction) -> Entry:
    """A v2 function's FunctionInfo: the user function the FunctionApp recorded, bound by its trigger's name."""
    return Entry(function.name, function.directory, function.call, function.wants_context,
                 inspect.iscoroutinefunction(function.call), function.trigger_param or "req")


def index_entries(app_dir: Path) -> dict[str, Entry]:
    """A worker process's own indexing of a v2 app (FunctionLoadRequest with "worker_indexed"): its entries
    by function name. IndexingError as in the host's."""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    return {f.name: indexed_entry(f) for f in index_app(app_dir, os.environ) or []}


@dataclass
class HostSettings:
    port: int = 7071
    cors: tuple[str, ...] = ()
    cors_credentials: bool = False
    values: dict[str, str] = field(default_factory=dict)


class Context:
    """The parts of ``azure.functions.Context`` a function reads."""

    def __init__(self, name: str, directory: Path, trace_context: TraceContext):
        self.invocation_id = str(uuid.uuid4())
        self.function_name = name
        self.function_directory = str(directory)
        self.trace_context = trace_context
        self.retry_context = None


def read_local_settings(path: Path | None) -> HostSettings:
    """local.settings.json's ``Values`` and ``Host`` section; a file the host can't use is a
    ``HostConfigurationError`` naming it (the start stops with that line, no traceback)."""
    if path is None or not path.is_file():
        return HostSettings()
    try:
        data = json.loads(path.read_text())
        host = data.get("Host") or {}
        values = data.get("Values") or {}
        port = host.get("LocalHttpPort", 7071)
        if isinstance(port, bool) or not isinstance(port, (int, str)) or not str(port).isdigit() \
                or not 0 <= int(port) <= 65535 or not isinstance(values, dict):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise HostConfigurationError(f"Unable to use the local settings file '{path}': it must be a JSON object "
                                     "whose Values is an object and Host.LocalHttpPort a port number.") from None
    cors = tuple(o.strip() for o in str(host.get("CORS", "")).split(",") if o.strip())
    values = {str(k): str(v) for k, v in values.items()}
    return HostSettings(int(port), cors, bool(host.get("CORSCredentials", False)), values)


ANY_METHOD = frozenset(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])


class HostConfigurationError(Exception):
    """host.json the host refuses: it does not start (HostJsonFileConfigurationSource)."""


class WorkerIndexingError(HostConfigurationError):
    """A v2 app the worker fails to index (devstack/host/indexing.py): the real host runs with no function;
    this one does not start."""


def read_host_json(app_dir: Path) -> dict[str, Any]:
    """host.json as HostJsonFileConfigurationSource.LoadHostConfig/InitializeHostConfig check it. Stricter
    on purpose: a missing host.json is refused (`func start` needs one; the host would write a default),
    and JSON is read strictly (Newtonsoft also takes comments and trailing commas)."""
    path = app_dir / "host.json"
    try:
        host = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise HostConfigurationError(f"Unable to find host.json in '{app_dir}'.") from None
    except (ValueError, UnicodeDecodeError):
        raise HostConfigurationError(f"Unable to parse host configuration file '{path}'.") from None
    if not isinstance(host, dict):  # JObject.Parse takes only an object
        raise HostConfigurationError(f"Unable to parse host configuration file '{path}'.")
    if not host:
        return {"version": "2.0"}  # an empty object: the host writes and uses its default
    version = host.get("version")
    if version is None or version == "":
        raise HostConfigurationError("The host.json file is missing the required 'version' property. See "
                                     "https://aka.ms/functions-hostjson for steps to migrate the configuration file.")
    if version != "2.0":  # a number is never the string "2.0" (2.0 reads as "2" in .NET)
        shown = version if isinstance(version, str) else json.dumps(version).removesuffix(".0").title()
        message = (f"'{shown}' is an invalid value for host.json 'version' property. We recommend you set the "
                   "'version' property to '2.0'. ")
        if shown.lower().startswith("3"):
            message += ("This does not correspond to the function runtime version, only to the schema version of "
                        "the host.json file. ")
        raise HostConfigurationError(message + "See https://aka.ms/functions-hostjson for more information on this "
                                               "configuration file.")
    return host


def load_functions(app_dir: Path, import_app: bool = True) -> tuple[str, list[Function]]:
    """The HTTP functions as the host loads them: one it refuses is logged "in error" and not served;
    RouteCreationError, HostConfigurationError or WorkerIndexingError stop the host's start. ``import_app=False``:
    metadata only, for a host whose worker processes import the app (devstack/host/workers.py); a v2 app is
    imported for its metadata all the same (the real host asks a worker for it), and each worker indexes it again.

    Which model (FunctionMetadataProvider): the worker indexes when the app has its script file
    (``function_app.py`` or ``PYTHON_SCRIPT_FILE_NAME``) with at least one function; then the ``*/function.json``
    folders are not read ("Detected mixed function app"); otherwise the host reads them (v1)."""
    host = read_host_json(app_dir)
    prefix = ((host.get("extensions") or {}).get("http") or {}).get("routePrefix", "api") or ""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    try:
        indexed = index_app(app_dir, os.environ)
    except IndexingError as e:
        raise WorkerIndexingError(str(e)) from e
    candidates = _v1_functions(app_dir) if indexed is None else _v2_functions(app_dir, indexed)
    functions: list[Function] = []
    loaded: dict[str, HttpTrigger] = {}
    for name, spec, meta in candidates:
        try:
            if isinstance(spec, Exception):
                raise spec
            trigger = http_trigger(name, spec)
            if trigger is None and meta.worker_indexed:  # the worker indexed it; this host cannot run it
                kinds = [str(b.get("type")) for b in spec["bindings"] if str(b.get("type", "")).endswith("Trigger")]
                raise FunctionInError(f"this local host runs HTTP-triggered functions only, not {kinds[0]}.")
            if trigger is not None:
                check_conflicts(trigger, loaded)
        except (FunctionInError, ValueError) as e:
            log.error("The '%s' function is in error: %s", name, e)
            continue
        if trigger is None:
            continue  # not an HTTP function: this host runs HTTP triggers only
        loaded[name] = trigger
        if any(os.environ.get(f"AzureWebJobs{sep}{name}{sep}Disabled", "").lower() in ("true", "1") for sep in "._"):
            continue  # disabled with the app setting (function.json's "disabled" is ignored since v2)
        matcher = Route(name, str(prefix), trigger.route)
        methods = ANY_METHOD if trigger.methods is None else frozenset(m.upper() for m in trigger.methods)
        entry = (meta.entry or import_entry(name, meta.module, meta.entry_point, meta.directory)) if import_app \
            else None
        functions.append(Function(name, trigger.route, matcher, methods, trigger.auth_level, meta.directory,
                                  meta.module, meta.entry_point, entry, meta.worker_indexed))
    return str(prefix), functions


@dataclass(frozen=True)
class _Meta:
    """Where a function's code is: its module and entry point (v1), or the worker's entry (v2)."""

    directory: Path
    module: str
    entry_point: str
    entry: Entry | None = None
    worker_indexed: bool = False


def _v1_functions(app_dir: Path) -> list[tuple[str, dict[str, Any] | Exception, _Meta]]:
    """HostFunctionMetadataProvider: every ``*/function.json``, in the file system's order."""
    out: list[tuple[str, dict[str, Any] | Exception, _Meta]] = []
    for fj in sorted(app_dir.glob("*/function.json")):
        name = fj.parent.name
        try:
            spec: dict[str, Any] | Exception = json.loads(fj.read_text())
        except ValueError as e:
            spec = e
        script = spec.get("scriptFile", "__init__.py") if isinstance(spec, dict) else "__init__.py"
        module_name = name if script == "__init__.py" else f"{name}.{Path(script).stem}"
        entry_point = spec.get("entryPoint", "main") if isinstance(spec, dict) else "main"
        out.append((name, spec, _Meta(fj.parent, module_name, entry_point)))
    return out


def _v2_functions(app_dir: Path, indexed: list[IndexedFunction]) -> list[tuple[str, dict[str, Any] | Exception,
                                                                                _Meta]]:
    """WorkerFunctionMetadataProvider: the worker's functions, in its order; ``function.json`` folders ignored."""
    legacy = sorted(fj.parent.name for fj in app_dir.glob("*/function.json"))
    if legacy:  # ValidateFunctionAppFormat; Core Tools' wording (the host logs it a minute after start)
        log.warning("Detected mixed function app. Some functions may not be indexed - %s Refer to the documentation "
                    "to filter warning - https://docs.microsoft.com/en-us/azure/azure-functions/configure-monitoring"
                    "?tabs=v2", ", ".join(legacy))
    module = Path(script_file_name(os.environ)).stem
    log.info("Indexed function app and found %d functions", len(indexed))  # the worker's line (index_functions)
    return [(f.name, {"bindings": f.bindings}, _Meta(app_dir, module, f.name, indexed_entry(f), True))
            for f in indexed]


def ensure_keys(path: Path) -> dict[str, str]:
    if path.is_file():
        return json.loads(path.read_text())
    keys = {"master": secrets.token_urlsafe(32), "default": secrets.token_urlsafe(32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys))
    path.chmod(0o600)
    return keys


class FunctionRunner:
    """What the Python worker's Dispatcher does with an invocation: sync functions in its thread pool
    (PYTHON_THREADPOOL_THREAD_COUNT, per process), async ones on its loop, the trace context attached;
    the HttpResponse converted back (HttpResponseConverter). In the host process when
    FUNCTIONS_WORKER_PROCESS_COUNT=1, in each worker process otherwise (devstack/host/worker.py)."""

    def __init__(self, threads: int | None = None, telemetry: WorkerTelemetry | None = None):
        default = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's own default
        count = threads or int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", 0)) or default
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="worker")
        self.telemetry = telemetry or WorkerTelemetry()  # the worker's OpenTelemetry set-up, once per process

    async def run(self, fn: Entry, request: func.HttpRequest, trace_context: TraceContext) -> Response:
        args: dict[str, Any] = {fn.trigger_param: request}
        if fn.wants_context:
            args["context"] = Context(fn.name, fn.directory, trace_context)
        try:
            if fn.is_async:
                with self.telemetry.attached(trace_context):
                    result = await fn.call(**args)
            else:
                def call() -> Any:  # in a worker thread, in a copy of this context (as the worker does)
                    with self.telemetry.attached(trace_context):
                        return fn.call(**args)
                ctx = contextvars.copy_context()
                result = await asyncio.get_running_loop().run_in_executor(self.pool, ctx.run, call)
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed)", fn.name)
            return 500, [], b""
        if not isinstance(result, func.HttpResponse):
            log.error("Executed 'Functions.%s' (Failed): returned %s, not an HttpResponse", fn.name,
                      type(result).__name__)
            return 500, [], b""
        headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in result.headers.items()]
        if not any(k == b"content-type" for k, _ in headers):  # HttpResponseConverter.encode
            text = result.mimetype.startswith("text/")
            ctype = f"{result.mimetype}; charset={result.charset}" if text else result.mimetype
            headers.append((b"content-type", ctype.encode("latin-1")))
        return result.status_code, headers, result.get_body() or b""


class Dispatcher:
    """Where the host sends an invocation: ``invoke(function name, request fields, trace context)``."""

    async def invoke(self, name: str, request: dict[str, Any], trace_context: TraceContext) -> Response:
        raise NotImplementedError


class FunctionsHost:
    """An ASGI app that routes to the functions; one instance per host process. Everything before the
    worker (routing, keys, CORS, body limits, request conversion) happens here; the function runs in this
    process (``runner``) or in a worker process (``workers``, FUNCTIONS_WORKER_PROCESS_COUNT > 1)."""

    def __init__(self, functions: list[Function], settings: HostSettings, keys: dict[str, str],
                 threads: int | None = None, telemetry: WorkerTelemetry | None = None,
                 workers: Dispatcher | None = None):
        # Kestrel's MaxRequestBodySize (ScriptConstants.DefaultMaxRequestBodySize, 100 MiB), replaced by
        # FUNCTIONS_REQUEST_BODY_SIZE_LIMIT when it parses as a number (HttpRequestBodySizeMiddleware).
        try:
            self.max_body = int(os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "").strip())
        except ValueError:
            self.max_body = MAX_BODY
        self.functions = functions
        self.settings = settings
        self.keys = keys
        self.workers = workers
        self.runner = None if workers else FunctionRunner(threads, telemetry)
        self.pool = self.runner.pool if self.runner else None

    def _authorized(self, auth_level: str, headers: dict[str, list[str]], query: dict[str, list[str]]) -> bool:
        """The host's key check: ``function`` takes the host or master key; ``admin``, and ``user`` and
        ``system`` (no such keys here), only the master key (AuthUtility.PrincipalHasAuthLevelClaim).
        The key is the first ``x-functions-key`` header if there is one, even empty, else the first
        ``code`` query value, the name in any case (AuthenticationLevelHandler.GetAuthorizationKeyInfoAsync)."""
        if auth_level == "anonymous":
            return True
        code = next((v for k, v in query.items() if k.lower() == "code"), [""])
        presented = (headers["x-functions-key"] if "x-functions-key" in headers else code)[0]
        if not presented:
            return False
        allowed = [self.keys["master"], self.keys["default"]] if auth_level == "function" else [self.keys["master"]]
        return any(secrets.compare_digest(presented.encode(), k.encode()) for k in allowed)

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        allowed, credentials = self.settings.cors, self.settings.cors_credentials
        if not origin or (origin not in allowed and "*" not in allowed):
            return []
        if "*" in allowed and not credentials:
            return [(b"access-control-allow-origin", b"*")]
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")] + \
            ([(b"access-control-allow-credentials", b"true")] if credentials else [])

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, headers, body = await self._handle(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Receive) -> Response:
        path = kestrel_path(scope.get("raw_path") or scope["path"].encode("utf-8"))
        if path is None:  # %00: Kestrel refuses the request line
            return 400, [], b""
        method = scope["method"]
        headers = header_values(scope["headers"])
        hosts = headers.get("host", [])
        if len(hosts) > 1 or (not hosts and scope.get("http_version") == "1.1") or \
                (hosts and not host_header_valid(hosts[0])):
            return 400, [], b""  # Kestrel: Multiple/Missing/InvalidHostHeader
        qs = scope.get("query_string", b"").decode("latin-1")
        query = query_values(qs)
        cors = self._cors_headers(headers.get("origin", [""])[0])
        if method == "GET" and path.lower() in ("/admin/host/status", "/admin/host/status/"):
            if not self._authorized("admin", headers, query):  # the host: admin level (master key)
                return 401, [], b""
            return 200, [(b"content-type", b"application/json")], b'{"state":"Running"}'
        if method == "OPTIONS" and "access-control-request-method" in headers and cors:
            allow = [(b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
                     (b"access-control-allow-headers",
                      joined(headers.get("access-control-request-headers", ["authorization"])).encode("latin-1")),
                     (b"access-control-max-age", b"600")]
            return 204, cors + allow, b""
        for fn in self.functions:
            values = fn.matcher.match(path) if method in fn.methods else None
            if values is not None:
                break
        else:  # no route, or a route whose methods exclude this one: HttpMethodRouteConstraint fails, 404
            return 404, cors, b""
        if not self._authorized(fn.auth_level, headers, query):
            return 401, cors, b""  # UnauthorizedResult: no body
        # ToRpcHttp reads the body only when Content-Length > 0 (a chunked body reaches no function);
        # Kestrel's MaxRequestBodySize refuses it when that read starts.
        declared = joined(headers.get("content-length", [""]))
        if declared and not declared.isdigit():
            return 400, cors, b""
        if declared and int(declared) > self.max_body:
            return 413, cors, b""
        body = await _read_body(receive, self.max_body) if declared and int(declared) > 0 else b""
        if body is None:
            return 413, cors, b""
        host = joined(headers.get("host", ["localhost"]))
        url = f"http://{host}{uri_component(path)}" + (f"?{qs}" if qs else "")
        flat = {k: joined(v) for k, v in headers.items()}
        params = {k: joined(v) for k, v in query.items() if joined(v)}
        fields = {"method": method, "url": url, "headers": flat, "params": params, "route_params": values,
                  "body": body}
        trace_context = invocation_trace_context(flat)
        if self.workers is not None:
            status, out_headers, out_body = await self.workers.invoke(fn.name, fields, trace_context)
        else:
            assert self.runner is not None and fn.entry is not None
            status, out_headers, out_body = await self.runner.run(fn.entry, worker_request(fields), trace_context)
        return status, out_headers + cors, out_body


def worker_request(fields: dict[str, Any]) -> func.HttpRequest:
    """The worker's request object from the host's converted request (ToRpcHttp's fields)."""
    return WorkerHttpRequest(fields["method"], fields["url"], headers=fields["headers"], params=fields["params"],
                             route_params=fields["route_params"], body_type="bytes", body=fields["body"])


# --- the request as Kestrel and the host's ToRpcHttp hand it to the Python worker ----------------------
def joined(values: list[str]) -> str:
    """StringValues.ToString(): the values joined with ',' (no space), empty ones left out."""
    return values[0] if len(values) == 1 else ",".join(v for v in values if v)


def header_values(raw: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """Request headers by lower-case name (ToRpcHttp lower-cases them), each with its values in order."""
    out: dict[str, list[str]] = {}
    for k, v in raw:
        out.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
    return out


def _unescape(text: str) -> str:
    """Uri.UnescapeDataString after '+' -> ' ': a sequence that is not UTF-8 stays escaped."""
    decoded = unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "surrogateescape")
    return re.sub("[\udc80-\udcff]", lambda m: f"%{ord(m.group()) - 0xDC00:02X}", decoded)


def query_values(qs: str) -> dict[str, list[str]]:
    """QueryFeature.ParseNullableQueryInternal: '&'-separated, empty pairs skipped, names compared
    ignoring case (the first spelling is kept), every value of a name in order."""
    out: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for pair in qs.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _unescape(name)
        key = spelling.setdefault(name.lower(), name)
        out.setdefault(key, []).append(_unescape(value))
    return out


_HOST_CHARS = frozenset("!$&'()-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def host_header_valid(text: str) -> bool:
    """Kestrel's HttpUtilities.IsHostHeaderValid (origin-form requests): empty, a name of host
    characters or an [IPv6] literal, then at most ':' and digits."""
    if not text:
        return True
    if text[0] == "[":
        end = text.find("]")
        if end < 4 or any(c not in "0123456789abcdefABCDEF:." for c in text[1:end]):
            return False
        rest = text[end + 1:]
    elif text[0] == ":":
        return False
    else:
        bad = next((i for i, c in enumerate(text) if c not in _HOST_CHARS), len(text))
        rest = text[bad:]
    return not rest or (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit())


_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")


def kestrel_path(raw: bytes) -> str | None:
    """Request.Path as Kestrel makes it from the request target (PathDecoder.DecodePath,
    UrlDecoder.DecodeInPlace, PathNormalizer.RemoveDotSegments): %XX sequences that form UTF-8 are
    decoded except %2F, which stays "%2F" (so it never separates segments); others stay as they are;
    dot segments are removed after decoding. None for %00 ("The path contains null characters.")."""
    out, i, n = bytearray(), 0, len(raw)

    def escape(at: int) -> int:  # UnescapePercentEncoding at a '%': the byte, or -1 (also for %2F)
        digits = raw[at + 1:at + 3]
        if raw[at:at + 1] != b"%" or not _HEX2.fullmatch(digits) or digits.lower() == b"2f":
            return -1
        return int(digits, 16)

    while i < n:
        first = escape(i)
        if first < 0:
            out.append(raw[i])
            i += 1
            continue
        if first == 0:
            return None
        count = (1 if first <= 0x7F else 2 if first & 0xE0 == 0xC0 else 3 if first & 0xF0 == 0xE0
                 else 4 if first & 0xF8 == 0xF0 else 0)  # the UTF-8 sequence's length from its first byte
        start, i, seq = i, i + 3, [first]
        while len(seq) < count:
            nxt = escape(i)
            if nxt < 0 or nxt & 0xC0 != 0x80:
                break
            seq.append(nxt)
            i += 3
        try:
            valid = len(seq) == count and bool(bytes(seq).decode("utf-8"))
        except UnicodeDecodeError:  # overlong, surrogate or beyond U+10FFFF
            valid = False
        out += bytes(seq) if valid else raw[start:i]  # what was read stays escaped; reading goes on after it
    return _remove_dot_segments(out.decode("utf-8", "replace"))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, as PathNormalizer applies it to a path starting with '/'."""
    if not path.startswith("/"):
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for n, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if n == len(segments) - 1:  # a trailing dot segment leaves a trailing '/'
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


_PATH_CHARS = frozenset("!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~")


def uri_component(path: str) -> str:
    """PathString.ToUriComponent: what is not a path character is escaped, an existing %XX kept."""
    def escaped(m: re.Match[str]) -> str:
        return m[0] if len(m[0]) == 3 or m[0] in _PATH_CHARS else quote(m[0], safe="")
    return re.sub("%[0-9A-Fa-f]{2}|.", escaped, path, flags=re.S)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return bytes(body)


_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "information": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10}


def log_level(host: dict[str, Any]) -> int:
    """host.json's logging.logLevel.default, overridable by the app setting
    ``AzureFunctionsJobHost__logging__logLevel__default`` exactly as on Azure."""
    configured = os.environ.get("AzureFunctionsJobHost__logging__logLevel__default") or \
        ((host.get("logging") or {}).get("logLevel") or {}).get("default", "Information")
    return _LEVELS.get(str(configured).lower(), logging.INFO)


def managed_identity_environment(devstack_state: Path | None) -> dict[str, str]:
    """What App Service sets for a function app with a managed identity, from a running devstack."""
    from ..state import read_runtime
    info = read_runtime(devstack_state) if devstack_state else None
    if not info or "identity_header" not in info:
        return {}
    return {"IDENTITY_ENDPOINT": info["endpoints"]["identity"], "IDENTITY_HEADER": info["identity_header"]}


def serve_app(app_dir: Path, settings_path: Path | None, state: Path, *, host: str = "127.0.0.1",
              port: int | None = None, ready_json: bool = False, devstack_state: Path | None = None) -> int:
    """Load settings and functions, then serve until SIGINT/SIGTERM (the `func start` lifecycle)."""
    import uvicorn

    from ..resolve import install_from_env
    from ..serving import bind, config
    install_from_env()  # DEVSTACK_RESOLVE (not a setting): real host names -> the devstack, before any connection
    try:
        settings = read_local_settings(settings_path or app_dir / "local.settings.json")
    except HostConfigurationError as e:
        print(e, file=sys.stderr, flush=True)
        return 1
    os.environ.update(managed_identity_environment(devstack_state))
    os.environ.update(settings.values)
    from .workers import WorkerPool, WorkerProviderError, WorkerStartError, process_count
    try:
        host_json = read_host_json(app_dir)  # before anything else, as the host reads its configuration first
        logging.basicConfig(level=log_level(host_json), format="[%(asctime)s] %(name)s %(levelname)s %(message)s")
        count = process_count(os.environ)  # RpcWorkerConfigFactory, before any function is loaded
        # N = 1: the worker's work in this process; N > 1: only the metadata here, each worker imports the app
        telemetry = WorkerTelemetry() if count == 1 else None  # the worker's init request, before the loads
        prefix, functions = load_functions(app_dir, import_app=count == 1)
    except (HostConfigurationError, RouteCreationError) as e:
        # ScriptHostServiceLoggerExtension.ErrorOccurredDuringStartupOperation; the host stays in
        # error (503 to every request): here it does not start at all, which no test can mistake.
        print(f"A host error has occurred during startup operation '{uuid.uuid4()}'.\n{e}", file=sys.stderr,
              flush=True)
        return 1
    except WorkerProviderError as e:  # the real host runs on with no Python worker: no function can run
        print(e, file=sys.stderr, flush=True)
        return 1
    keys = ensure_keys(state / "functions-keys.json")
    failed: list[str] = []

    def stop_application() -> None:
        failed.append("worker restarts exhausted")
        server.should_exit = True

    workers = WorkerPool(app_dir, functions, count, stop_application) if count > 1 else None
    app = FunctionsHost(functions, settings, keys, telemetry=telemetry, workers=workers)
    wanted = settings.port if port is None else port
    try:
        sock = bind(host, wanted)
    except OSError as e:  # `func start`'s words (StartHostAction): which port, and how to move it; no traceback
        print(f"Port {wanted} is unavailable ({e.strerror}). Close the process using that port, or specify another "
              "port using --port (or Host.LocalHttpPort in local.settings.json).", file=sys.stderr, flush=True)
        return 1  # no worker has started yet: they start with the server
    url = f"http://{host}:{sock.getsockname()[1]}"

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            if workers is not None:
                try:
                    await workers.start()
                except WorkerStartError as e:
                    print(e, file=sys.stderr, flush=True)
                    failed.append(str(e))
                    await workers.close()
                    self.should_exit = True
                    return
            await super().startup(sockets)
            listing = [{"name": f.name, "route": f"/{prefix}/{f.route}".replace("//", "/"),
                        "methods": sorted(f.methods), "authLevel": f.auth_level} for f in functions]
            lines = [json.dumps({"ready": {"url": url, "functions": listing, "keys": keys}})] if ready_json else \
                ["Functions:"] + [f"  {f['name']}: [{','.join(f['methods'])}] {url}{f['route']}" for f in listing]
            print("\n".join(lines), flush=True)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            if workers is not None:
                await workers.close()

    server = Server(config(app))
    server.run(sockets=[sock])
    return 1 if failed else 0
