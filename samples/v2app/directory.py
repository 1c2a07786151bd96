"""AdminApi as a blueprint: GET /api/directory/users/{id}, for app-only callers with the MiddleTier.Admin role.

A blueprint's functions use the same decorators as the app's; ``function_app.py`` registers it
(``app.register_functions(bp)``). The id check is the v1 function's (AdminApi/__init__.py; a unit test holds
the two patterns equal): Graph's users/{id} takes an object id or a UPN, and any other segment may be one of
Graph's functions or actions on the collection (users/delta lists every user).
"""
import re
import urllib.parse

import azure.functions as func

from shared import ApiError, Call, DownstreamResponse, Requirement, endpoint

OBJECT_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
UPN = re.compile(r"(?=.{3,113}$)(?=[^@]{1,64}@)[A-Za-z0-9'_!#^~-]+(?:\.[A-Za-z0-9'_!#^~-]+)*"
                 rf"@{_LABEL}(?:\.{_LABEL})+")

bp = func.Blueprint()


def is_user_id(value: str) -> bool:
    return bool(OBJECT_ID.fullmatch(value) or UPN.fullmatch(value))


@bp.function_name(name="AdminApi")
@bp.route(route="directory/users/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(Requirement(app_permissions=("MiddleTier.Admin",), callers="app"), downstream=("Graph",))
def directory_user(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    """Graph is called as the app itself (client credentials), from the app's own token-cache partition."""
    user = req.route_params.get("id", "")
    if not is_user_id(user):
        raise ApiError("The user id is not a valid object id or user principal name.", 400, "Bad Request",
                       "invalid_request")
    return call.downstream("Graph", path="users/" + urllib.parse.quote(user, safe="@"), as_app=True)  # ' # ! ^ encoded
