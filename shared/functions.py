"""Azure Functions adapter: run a handler, turn every failure into problem+json, log safely."""
from __future__ import annotations

import json
import logging
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

        def main(req: func.HttpRequest) -> func.HttpResponse:
            return run(req, handler)
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


def run(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    """The one place errors become HTTP. The correlation id ties the answer to its log lines."""
    with logctx.tracing(logctx.trace_id_from(req.headers)) as trace_id:
        response = _run(req, handler, trace_id)
    response.headers.update(SECURITY_HEADERS)
    response.headers["x-ms-client-request-id"] = trace_id
    return response


def _run(req: func.HttpRequest, handler: Handler, trace_id: str) -> func.HttpResponse:
    try:
        return handler(app_context(), req, trace_id)
    except ApiError as err:
        level = logging.ERROR if err.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s: %s", req.method, _path(req.url), err.status, err.code, err.detail)
        return problem_response(err, trace_id)
    except Exception as err:  # the last line of defence: never a stack trace to the caller
        log.error("%s %s -> 500 unhandled %s", req.method, _path(req.url), type(err).__name__)
        return problem_response(ApiError("An unexpected error occurred."), trace_id)


def _path(url: str) -> str:
    """The URL without its query string, which could carry anything."""
    return url.split("?", 1)[0]
