"""Azure Functions adapter: run a handler, turn every failure into problem+json, log safely."""
from __future__ import annotations

import json
import logging
import uuid
from typing import Callable

import azure.functions as func

from .context import AppContext, app_context
from .errors import ApiError, problem

log = logging.getLogger("middletier")

Handler = Callable[[AppContext, func.HttpRequest, str], func.HttpResponse]


def problem_response(err: ApiError, trace_id: str) -> func.HttpResponse:
    status, headers, body = problem(err, trace_id=trace_id)
    headers["Cache-Control"] = "no-store"
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers,
                             mimetype="application/problem+json")


def run(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    """The one place errors become HTTP. ``trace_id`` ties the answer to the log line."""
    trace_id = req.headers.get("x-correlation-id") or req.headers.get("client-request-id") or str(uuid.uuid4())
    try:
        return handler(app_context(), req, trace_id)
    except ApiError as err:
        level = logging.ERROR if err.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s: %s [trace %s]", req.method, _path(req.url), err.status, err.code,
                err.detail, trace_id)
        return problem_response(err, trace_id)
    except Exception as err:  # the last line of defence: never a stack trace to the caller
        log.error("%s %s -> 500 unhandled %s [trace %s]", req.method, _path(req.url), type(err).__name__, trace_id)
        return problem_response(ApiError("An unexpected error occurred."), trace_id)


def _path(url: str) -> str:
    """The URL without its query string, which could carry anything."""
    return url.split("?", 1)[0]
