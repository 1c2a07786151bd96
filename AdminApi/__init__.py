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
# Graph's users/{id | userPrincipalName}: an object id (a GUID) or a UPN, nothing else — any other
# segment may be one of Graph's functions or actions on the collection (users/delta lists every
# user, users/getByIds, users/validateProperties, microsoft.graph.*). A UPN is local@domain
# (Entra: at most 113 characters, 64 before the @; the local part A-Z a-z 0-9 ' . - _ ! # ^ ~,
# no leading, trailing or doubled dot, and guests' #EXT#); the domain is DNS labels with a dot.
OBJECT_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
UPN = re.compile(r"(?=.{3,113}$)(?=[^@]{1,64}@)[A-Za-z0-9'_!#^~-]+(?:\.[A-Za-z0-9'_!#^~-]+)*"
                 rf"@{_LABEL}(?:\.{_LABEL})+")


def is_user_id(value: str) -> bool:
    return bool(OBJECT_ID.fullmatch(value) or UPN.fullmatch(value))


@endpoint(Requirement(app_permissions=("MiddleTier.Admin",), callers="app"))
def main(ctx: AppContext, call: Call) -> func.HttpResponse:
    user = call.req.route_params.get("id", "")
    if not is_user_id(user):
        raise ApiError("The user id is not a valid object id or user principal name.", 400, "Bad Request",
                       "invalid_request")
    path = "users/" + urllib.parse.quote(user, safe="@")  # ' # ! ^ percent-encoded
    return json_answer(call_downstream(ctx, call.token, call.caller, "GraphApp", path=path,
                                       correlation_id=call.trace_id))
