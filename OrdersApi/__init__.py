"""GET /api/orders: scope or app permission (MIW's RequiredScopeOrAppPermission).

A user with access_as_user gets their own orders (OBO to the orders API); an app with the
MiddleTier.Admin role gets everyone's (the app's own token for the orders API).
"""
import azure.functions as func

from shared import Call, DownstreamResponse, Requirement, endpoint


@endpoint(Requirement(scopes=("access_as_user",), app_permissions=("MiddleTier.Admin",), callers="any"),
          downstream=("Orders",))
def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    return call.downstream("Orders", as_app=call.caller.is_app)
