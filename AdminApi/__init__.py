"""GET /api/directory/users/{id}: for app-only callers with the MiddleTier.Admin role.

No user is involved, so Graph is called as the app itself (client credentials, Graph's .default),
from the app's own token-cache partition.
"""
import re
import urllib.parse

import azure.functions as func

from shared import ApiError, Call, DownstreamResponse, Requirement, endpoint

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


@endpoint(Requirement(app_permissions=("MiddleTier.Admin",), callers="app"), downstream=("Graph",))
def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    user = req.route_params.get("id", "")
    if not is_user_id(user):
        raise ApiError("The user id is not a valid object id or user principal name.", 400, "Bad Request",
                       "invalid_request")
    return call.downstream("Graph", path="users/" + urllib.parse.quote(user, safe="@"), as_app=True)  # ' # ! ^ encoded
