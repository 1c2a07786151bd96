"""Azure Functions adapter: the endpoint decorator, every failure as problem+json, safe logs.
The request path itself (authenticate -> authorize -> acquire -> call) is ``pipeline.py``'s."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Callable

import azure.functions as func
from azure.functions.decorators.function_app import DecoratorApi, FunctionBuilder

from . import deadline, logctx
from .authorization import Requirement
from .context import AppContext, app_context
from .downstream import DownstreamResponse
from .errors import ApiError, problem
from .pipeline import Call, admit

log = logging.getLogger("middletier")
logctx.install()
# On every answer: identity data must not be cached or sniffed into something else.
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

Handler = Callable[[AppContext, func.HttpRequest, str], func.HttpResponse]
Body = Callable[[func.HttpRequest, Call], func.HttpResponse | DownstreamResponse]


def endpoint(requirement: Requirement, *, downstream: tuple[str, ...] = ()) -> Callable[[Body], Callable[
        [func.HttpRequest], func.HttpResponse]]:
    """Declare what a function requires of its caller and which downstream APIs it calls, next to it (an example:
    ``shared/__init__.py``). The worker binds the decorated ``main(req)`` (its parameter is the trigger's ``name``);
    the body runs once ``pipeline.admit`` let the request in. A downstream answer keeps its content type.

    v2 programming model: ``@endpoint`` goes *below* ``@app.route(...)`` (next to the ``def``), so the function
    ``app.route`` records (``Function.get_user_function()``, what the worker indexes and calls) is this wrapper:
    its signature is ``(req: func.HttpRequest) -> func.HttpResponse``, the binding names ``app.route``'s defaults
    (``trigger_arg_name='req'``, ``$return``) declare. It carries the body's ``__name__`` (the function's name
    unless ``@app.function_name``) but no ``__wrapped__``: ``inspect.signature`` would follow it to the body's
    ``(req, call)`` and the worker would refuse ``call`` as a parameter no binding declares."""
    def decorate(body: Body) -> Callable[[func.HttpRequest], func.HttpResponse]:
        if isinstance(body, FunctionBuilder):  # @endpoint above @app.route: the worker would call the bare body
            raise TypeError("@endpoint(...) goes below @app.route(...), next to the def: the function app must "
                            "record the function endpoint wraps, which is what the worker calls")

        def handler(ctx: AppContext, req: func.HttpRequest, trace_id: str) -> func.HttpResponse:
            answer = body(req, admit(ctx, req.headers.get("Authorization"), requirement, downstream, trace_id))
            if isinstance(answer, DownstreamResponse):
                return func.HttpResponse(answer.body, status_code=answer.status, mimetype=answer.content_type)
            return answer

        where = [_function_of(body)]  # a v2 function's name and route are known only once it is registered

        def main(req: func.HttpRequest) -> func.HttpResponse:
            if where[0] is None:
                where[0] = _registered_as(main, body)
            return run(req, handler, where[0])
        main.__name__, main.__qualname__, main.__module__ = body.__name__, body.__qualname__, body.__module__
        main.__doc__ = body.__doc__
        main.requirement, main.downstream = requirement, downstream  # type: ignore[attr-defined]
        return main
    return decorate


def problem_response(err: ApiError, trace_id: str) -> func.HttpResponse:
    status, headers, body = problem(err, trace_id=trace_id)
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers,
                             mimetype="application/problem+json")


def run(req: func.HttpRequest, handler: Handler, where: str = "function") -> func.HttpResponse:
    """The one place errors become HTTP. The correlation id ties the answer to its log lines."""
    with logctx.tracing(logctx.trace_id_from(req.headers)) as trace_id:
        response = _run(req, handler, trace_id, where)
    response.headers.update({**SECURITY_HEADERS, "x-ms-client-request-id": trace_id})
    return response


def _run(req: func.HttpRequest, handler: Handler, trace_id: str, where: str) -> func.HttpResponse:
    # Logged: ``where``, the function and its route template, never the request's URL (percent-decoded, with
    # the caller's Host header: request text could forge lines). The logger's filter escapes the rest.
    method = req.method if _METHOD.fullmatch(req.method or "") else "?"
    started = time.monotonic()
    try:
        ctx = app_context()
        # One deadline for everything the request waits on, from its start (a first request builds the context):
        # validation's metadata, Key Vault, managed identity, L2, the acquisition gate, the partition lock, Entra
        # and the downstream API's whole answer.
        with deadline.within(ctx.settings.request_budget_seconds - (time.monotonic() - started)):
            return handler(ctx, req, trace_id)
    except ApiError as err:
        level = logging.ERROR if err.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s: %s", method, where, err.status, err.code, logctx.printable(err.detail))
        return problem_response(err, trace_id)
    except Exception as err:  # the last line of defence: never a stack trace to the caller
        log.error("%s %s -> 500 unhandled %s", method, where, type(err).__name__)
        return problem_response(ApiError("An unexpected error occurred."), trace_id)


_METHOD = re.compile(r"[A-Z]{1,16}")


def _function_of(body: Callable[..., object]) -> str | None:
    """``<Function> /<route template>`` for a function body, from its folder's function.json (as
    the host reads it: the route defaults to the function's name); the name alone if unreadable;
    None when the folder has no function.json (a v2 app: ``_registered_as`` at the first call)."""
    name = body.__module__.split(".")[0]
    module = sys.modules.get(body.__module__)
    path = Path(str(getattr(module, "__file__", ""))).parent / "function.json"
    if module is None or not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
        trigger = next(b for b in spec.get("bindings", []) if b.get("type") == "httpTrigger")
        route = trigger.get("route") or name
    except (OSError, ValueError, StopIteration, AttributeError):
        return logctx.printable(name)
    return logctx.printable(f"{name} /{route}")


def _registered_as(main: Callable[..., object], body: Callable[..., object]) -> str:
    """A v2 function's ``<Function> /<route template>``: the FunctionApp or Blueprint in the body's module
    that recorded ``main`` (its name: ``@app.function_name`` or the def's; its route: ``app.route``'s, or the
    name as the library defaults it). The library keeps its builders in private attributes, so anything
    unexpected falls back to the def's name rather than failing a request."""
    module = sys.modules.get(body.__module__)
    try:
        for value in list(vars(module).values()) if module is not None else []:
            for builder in getattr(value, "_function_builders", None) or [] \
                    if isinstance(value, DecoratorApi) else []:
                function = builder._function
                if function.get_user_function() is main:
                    name = function.get_function_name()
                    route = getattr(function.get_trigger(), "route", None) or name
                    return logctx.printable(f"{name} /{route}")
    except Exception as err:  # noqa: BLE001 - a log label is never worth a failed request
        log.debug("function app's record of %s unreadable: %s", logctx.printable(body.__name__), type(err).__name__)
    return logctx.printable(body.__name__)
