"""GET /api/me: the signed-in user's profile from the downstream API, fetched on their behalf.

authLevel is anonymous because callers authenticate with an Entra bearer token; the requirement
below (a user token with the API's scope, AzureAd__Scopes) is checked before the body runs.
"""
import azure.functions as func

from shared.authorization import Requirement
from shared.context import AppContext
from shared.functions import Call, endpoint, json_answer
from shared.pipeline import call_downstream

# The downstream APIs (DownstreamApis__<name>__*) this function calls: infra/main.bicep must provision
# them (tests/unit/test_infra.py checks it, and that the function calls no other).
DOWNSTREAM_APIS = ("Graph",)


@endpoint(Requirement(callers="user"))
def main(ctx: AppContext, call: Call) -> func.HttpResponse:
    return json_answer(call_downstream(ctx, call.token, call.caller, "Graph", correlation_id=call.trace_id))
