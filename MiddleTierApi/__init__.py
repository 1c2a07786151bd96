"""GET /api/me: the signed-in user's profile from the downstream API, fetched on their behalf.

authLevel is anonymous because callers authenticate with an Entra bearer token, which
shared/ validates before anything else happens.
"""
import azure.functions as func

from shared.context import AppContext
from shared.functions import run
from shared.pipeline import call_on_behalf_of

DOWNSTREAM_API = "Graph"


def me(ctx: AppContext, req: func.HttpRequest, trace_id: str) -> func.HttpResponse:
    answer = call_on_behalf_of(ctx, req.headers.get("Authorization"), DOWNSTREAM_API, correlation_id=trace_id)
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype="application/json")


def main(req: func.HttpRequest) -> func.HttpResponse:
    return run(req, me)
