"""GET /api/directory/users/{id}: for app-only callers with the MiddleTier.Admin role.

No user is involved, so the downstream call is made as the app itself (client credentials,
DownstreamApis__GraphApp__RequestAppToken=true), from the app's own token-cache partition.
"""
import re
import urllib.parse

import azure.functions as func

from shared.authorization import Requirement
from shared.context import AppContext
from shared.errors import ApiError
from shared.functions import Call, endpoint, json_answer
from shared.pipeline import call_downstream

# The downstream APIs (DownstreamApis__<name>__*) this function calls: infra/main.bicep must provision
# them (tests/unit/test_infra.py checks it, and that the function calls no other).
DOWNSTREAM_APIS = ("GraphApp",)
USER_ID = re.compile(r"(?!\.+$)[A-Za-z0-9@._-]{1,128}")  # an object id or UPN; never "." or ".."


@endpoint(Requirement(app_permissions=("MiddleTier.Admin",), callers="app", allow_acl=False))
def main(ctx: AppContext, call: Call) -> func.HttpResponse:
    user = call.req.route_params.get("id", "")
    if not USER_ID.fullmatch(user):
        raise ApiError("The user id is not a valid object id or user principal name.", 400, "Bad Request",
                       "invalid_request")
    path = "users/" + urllib.parse.quote(user, safe="@")
    return json_answer(call_downstream(ctx, call.token, call.caller, "GraphApp", path=path,
                                       correlation_id=call.trace_id))
