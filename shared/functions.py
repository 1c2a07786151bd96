"""Azure Functions adapter: run a handler, turn every failure into problem+json, log safely."""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Callable

import azure.functions as func

from dataclasses import dataclass

from . import logctx
from .authorization import Requirement, check
from .context import AppContext, app_context
from .downstream import DownstreamResponse
from .errors import ApiError, problem
from .pipeline import authenticate
from .validation import Caller

log = logging.getLogger("middletier")
logctx.install()
# On every answer: identity data must not be cached or sniffed into something else.
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

Handler = Callable[[AppContext, func.HttpRequest, str], func.HttpResponse]


@dataclass(frozen=True)
class Call:
    """One authenticated, authorized request, as a function body sees it."""

    req: func.HttpRequest
    token: str
    caller: Caller
    trace_id: str


def endpoint(requirement: Requirement) -> Callable[[Callable[[AppContext, Call], func.HttpResponse]],
                                                   Callable[[func.HttpRequest], func.HttpResponse]]:
    """Declare what a function requires of its caller, next to the function::

        @endpoint(Requirement(scopes=("access_as_user",)))
        def main(ctx: AppContext, call: Call) -> func.HttpResponse: ...

    The decorated ``main(req)`` is what the Functions worker binds (its parameter is the trigger's
    ``name``); the body runs only for a caller who passed validation and the requirement.
    """
    def decorate(body: Callable[[AppContext, Call], func.HttpResponse]) -> Callable[[func.HttpRequest], func.HttpResponse]:
        def handler(ctx: AppContext, req: func.HttpRequest, trace_id: str) -> func.HttpResponse:
            token, caller = authenticate(ctx, req.headers.get("Authorization"))
            check(caller, requirement, ctx.settings.azure_ad)
            return body(ctx, Call(req, token, caller, trace_id))

        where = _function_of(body)

        def main(req: func.HttpRequest) -> func.HttpResponse:
            return run(req, handler, where)
        main.__doc__ = body.__doc__
        main.requirement = requirement  # type: ignore[attr-defined]
        return main
    return decorate


def json_answer(answer: "DownstreamResponse") -> func.HttpResponse:
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype="application/json")


def problem_response(err: ApiError, trace_id: str) -> func.HttpResponse:
    status, headers, body = problem(err, trace_id=trace_id)
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers,
                             mimetype="application/problem+json")


def run(req: func.HttpRequest, handler: Handler, where: str = "function") -> func.HttpResponse:
    """The one place errors become HTTP. The correlation id ties the answer to its log lines.
    ``where`` names the function and its route template for the log: never the request's URL."""
    with logctx.tracing(logctx.trace_id_from(req.headers)) as trace_id:
        response = _run(req, handler, trace_id, where)
    response.headers.update(SECURITY_HEADERS)
    response.headers["x-ms-client-request-id"] = trace_id
    return response


def _run(req: func.HttpRequest, handler: Handler, trace_id: str, where: str) -> func.HttpResponse:
    # Logged: the function and its route template, never the request's URL (percent-decoded, with the
    # caller's Host header: request text could forge lines). The logger's filter escapes the rest.
    method = req.method if _METHOD.fullmatch(req.method or "") else "?"
    try:
        return handler(app_context(), req, trace_id)
    except ApiError as err:
        level = logging.ERROR if err.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s: %s", method, where, err.status, err.code, logctx.printable(err.detail))
        return problem_response(err, trace_id)
    except Exception as err:  # the last line of defence: never a stack trace to the caller
        log.error("%s %s -> 500 unhandled %s", method, where, type(err).__name__)
        return problem_response(ApiError("An unexpected error occurred."), trace_id)


_METHOD = re.compile(r"[A-Z]{1,16}")


def _function_of(body: Callable[..., object]) -> str:
    """``<Function> /<route template>`` for a function body, from its folder's function.json (as
    the host reads it: the route defaults to the function's name); the name alone if unreadable."""
    name = body.__module__.split(".")[0]
    module = sys.modules.get(body.__module__)
    try:
        spec = json.loads((Path(str(getattr(module, "__file__", ""))).parent / "function.json").read_text())
        trigger = next(b for b in spec.get("bindings", []) if b.get("type") == "httpTrigger")
        route = trigger.get("route") or name
    except (OSError, ValueError, StopIteration, AttributeError):
        return logctx.printable(name)
    return logctx.printable(f"{name} /{route}")
