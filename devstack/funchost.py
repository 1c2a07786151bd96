"""A local Azure Functions host for Python v1-model apps, standing in for `func start`.

It reads what `func start` reads — ``host.json`` (routePrefix), every ``*/function.json``
(route, methods, authLevel, scriptFile, entryPoint) and ``local.settings.json`` (``Values``
into the environment before the app is imported, ``Host.LocalHttpPort``, ``Host.CORS``,
``Host.CORSCredentials``) — builds real ``azure.functions.HttpRequest`` objects and runs
sync functions in a thread pool, as the Python worker does. At start-up it refuses what the real
host refuses (reserved or conflicting routes, invalid names, bindings, authLevel, route templates:
``devstack/routes.py``), with the host's messages.

Differences from Core Tools, on purpose: function keys are enforced (Core Tools skips them
locally) so that ``authLevel: function`` can be tested, and ``Values`` override variables
already in the environment, so a generated settings file fully describes a run.
"""
from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import json
import logging
import os
import secrets
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import azure.functions as func

from .routes import FunctionInError, HttpTrigger, Route, check_conflicts, http_trigger
from .worker_telemetry import TraceContext, WorkerTelemetry, invocation_trace_context

log = logging.getLogger("funchost")
MAX_BODY = 100 * 1024 * 1024  # the Functions host's request size limit
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Function:
    name: str
    route: str
    matcher: Route
    methods: frozenset[str]
    auth_level: str
    entry: Callable[..., Any]
    wants_context: bool
    is_async: bool
    directory: Path


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
    if path is None or not path.is_file():
        return HostSettings()
    data = json.loads(path.read_text())
    host = data.get("Host") or {}
    cors = tuple(o.strip() for o in str(host.get("CORS", "")).split(",") if o.strip())
    values = {str(k): str(v) for k, v in (data.get("Values") or {}).items()}
    return HostSettings(int(host.get("LocalHttpPort", 7071)), cors, bool(host.get("CORSCredentials", False)), values)


ANY_METHOD = frozenset(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])


def load_functions(app_dir: Path) -> tuple[str, list[Function]]:
    """Load the HTTP functions as the host does at start-up (devstack/routes.py): a function the host
    would refuse is logged "in error" and not served, the others are; a route template ASP.NET
    cannot build raises RouteCreationError (the host does not start)."""
    host = json.loads((app_dir / "host.json").read_text())
    prefix = ((host.get("extensions") or {}).get("http") or {}).get("routePrefix", "api") or ""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    functions: list[Function] = []
    loaded: dict[str, HttpTrigger] = {}
    for fj in sorted(app_dir.glob("*/function.json")):  # the host: the file system's order
        name = fj.parent.name
        try:
            spec = json.loads(fj.read_text())
            trigger = http_trigger(name, spec)
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
        script = spec.get("scriptFile", "__init__.py")
        module_name = name if script == "__init__.py" else f"{name}.{Path(script).stem}"
        module = importlib.import_module(module_name)
        entry = getattr(module, spec.get("entryPoint", "main"))
        methods = ANY_METHOD if trigger.methods is None else frozenset(m.upper() for m in trigger.methods)
        params = inspect.signature(entry).parameters
        functions.append(Function(name, trigger.route, matcher, methods, trigger.auth_level, entry, "context" in params,
                                  inspect.iscoroutinefunction(entry), fj.parent))
    return str(prefix), functions


def ensure_keys(path: Path) -> dict[str, str]:
    if path.is_file():
        return json.loads(path.read_text())
    keys = {"master": secrets.token_urlsafe(32), "default": secrets.token_urlsafe(32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys))
    path.chmod(0o600)
    return keys


class FunctionsHost:
    """An ASGI app that routes to the functions; one instance per host process."""

    def __init__(self, functions: list[Function], settings: HostSettings, keys: dict[str, str],
                 threads: int | None = None, telemetry: WorkerTelemetry | None = None):
        # The Functions host's request size limit (100 MB), adjustable with the same app setting.
        self.max_body = int(os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT") or MAX_BODY)
        self.functions = functions
        self.settings = settings
        self.keys = keys
        count = threads or int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", 0)) or min(32, (os.cpu_count() or 1) + 4)
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="worker")
        self.telemetry = telemetry or WorkerTelemetry()  # the worker's OpenTelemetry set-up, once per process

    def _authorized(self, auth_level: str, headers: dict[str, str], query: dict[str, str]) -> bool:
        """The host's key check: ``function`` takes the host or master key; ``admin``, and ``user`` and
        ``system`` (no such keys here), only the master key (AuthUtility.PrincipalHasAuthLevelClaim)."""
        if auth_level == "anonymous":
            return True
        presented = headers.get("x-functions-key") or query.get("code") or ""
        allowed = [self.keys["master"], self.keys["default"]] if auth_level == "function" else [self.keys["master"]]
        return any(secrets.compare_digest(presented.encode(), k.encode()) for k in allowed)

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if not origin or not self.settings.cors:
            return []
        if "*" in self.settings.cors and not self.settings.cors_credentials:
            out = [(b"access-control-allow-origin", b"*")]
        elif origin in self.settings.cors or "*" in self.settings.cors:
            out = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        else:
            return []
        if self.settings.cors_credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        cors = self._cors_headers(headers.get("origin"))
        if method == "GET" and path.lower() in ("/admin/host/status", "/admin/host/status/"):
            if not self._authorized("admin", headers, query):  # the host: admin level (master key)
                await _respond(send, 401, [], b"")
                return
            await _respond(send, 200, [(b"content-type", b"application/json")], b'{"state":"Running"}')
            return
        if method == "OPTIONS" and "access-control-request-method" in headers and cors:
            allow = [(b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
                     (b"access-control-allow-headers",
                      headers.get("access-control-request-headers", "authorization").encode("latin-1")),
                     (b"access-control-max-age", b"600")]
            await _respond(send, 204, cors + allow, b"")
            return
        for fn in self.functions:
            values = fn.matcher.match(path) if method in fn.methods else None
            if values is not None:
                break
        else:
            await _respond(send, 404, cors, b"")
            return
        if not self._authorized(fn.auth_level, headers, query):
            await _respond(send, 401, cors, b"")
            return
        declared = headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.max_body:
            await _respond(send, 413, cors, b"")
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _respond(send, 413, cors, b"")
            return
        host = headers.get("host", "localhost")
        qs = scope.get("query_string", b"").decode("latin-1")
        url = f"http://{host}{path}" + (f"?{qs}" if qs else "")
        request = func.HttpRequest(method, url, headers=headers, params=query,
                                   route_params=values,
                                   body=body)
        status, out_headers, out_body = await self._invoke(fn, request, invocation_trace_context(headers))
        await _respond(send, status, out_headers + cors, out_body)

    async def _invoke(self, fn: Function, request: func.HttpRequest,
                      trace_context: TraceContext) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        args: dict[str, Any] = {"req": request}
        context = Context(fn.name, fn.directory, trace_context)
        if fn.wants_context:
            args["context"] = context
        try:
            if fn.is_async:
                result = await self.telemetry.run_async(trace_context, lambda: fn.entry(**args))
            else:
                ctx = contextvars.copy_context()
                result = await asyncio.get_running_loop().run_in_executor(
                    self.pool, lambda: ctx.run(self.telemetry.run, trace_context, lambda: fn.entry(**args)))
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed)", fn.name)
            return 500, [], b""
        if not isinstance(result, func.HttpResponse):
            log.error("Executed 'Functions.%s' (Failed): returned %s, not an HttpResponse", fn.name,
                      type(result).__name__)
            return 500, [], b""
        headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in result.headers.items()]
        if not any(k == b"content-type" for k, _ in headers):
            ctype = result.mimetype + (f"; charset={result.charset}" if result.charset else "")
            headers.append((b"content-type", ctype.encode("latin-1")))
        return result.status_code, headers, result.get_body() or b""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "information": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10}


def log_level(app_dir: Path) -> int:
    """host.json's logging.logLevel.default, overridable by the app setting
    ``AzureFunctionsJobHost__logging__logLevel__default`` exactly as on Azure."""
    configured = os.environ.get("AzureFunctionsJobHost__logging__logLevel__default")
    if not configured:
        host = json.loads((app_dir / "host.json").read_text())
        configured = ((host.get("logging") or {}).get("logLevel") or {}).get("default", "Information")
    return _LEVELS.get(str(configured).lower(), logging.INFO)


def managed_identity_environment(devstack_state: Path | None) -> dict[str, str]:
    """What App Service sets for a function app with a managed identity, from a running devstack."""
    from .state import read_runtime
    info = read_runtime(devstack_state) if devstack_state else None
    if not info or "identity_header" not in info:
        return {}
    return {"IDENTITY_ENDPOINT": info["endpoints"]["identity"], "IDENTITY_HEADER": info["identity_header"]}


def serve_app(app_dir: Path, settings_path: Path | None, state: Path, *, host: str = "127.0.0.1",
              port: int | None = None, ready_json: bool = False, devstack_state: Path | None = None) -> int:
    """Load settings and functions, then serve until SIGINT/SIGTERM (the `func start` lifecycle)."""
    import uvicorn

    from .resolve import install_from_env
    from .stack import bind
    # DEVSTACK_RESOLVE (process environment, not a setting): real host names -> the devstack, in
    # this process only, before the app makes a connection (devstack/resolve.py).
    install_from_env()
    settings = read_local_settings(settings_path or app_dir / "local.settings.json")
    os.environ.update(managed_identity_environment(devstack_state))
    os.environ.update(settings.values)
    logging.basicConfig(level=log_level(app_dir), format="[%(asctime)s] %(name)s %(levelname)s %(message)s")
    telemetry = WorkerTelemetry()  # the worker's init request comes before it loads the functions
    prefix, functions = load_functions(app_dir)
    keys = ensure_keys(state / "functions-keys.json")
    app = FunctionsHost(functions, settings, keys, telemetry=telemetry)
    sock = bind(host, settings.port if port is None else port)
    url = f"http://{host}:{sock.getsockname()[1]}"

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            listing = [{"name": f.name, "route": f"/{prefix}/{f.route}".replace("//", "/"),
                        "methods": sorted(f.methods), "authLevel": f.auth_level} for f in functions]
            if ready_json:
                print(json.dumps({"ready": {"url": url, "functions": listing, "keys": keys}}), flush=True)
            else:
                print("Functions:", flush=True)
                for f in listing:
                    print(f"  {f['name']}: [{','.join(f['methods'])}] {url}{f['route']}", flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http="httptools",
                            loop="uvloop", timeout_keep_alive=30, timeout_graceful_shutdown=2)
    Server(config).run(sockets=[sock])
    return 0
