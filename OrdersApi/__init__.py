"""GET /api/orders: scope or app permission (MIW's RequiredScopeOrAppPermission).

A user with access_as_user gets their own orders (OBO to the orders API); an app with the
MiddleTier.Admin role gets everyone's (the app's own token for the orders API).
"""
import azure.functions as func

from shared.authorization import Requirement
from shared.context import AppContext
from shared.functions import Call, endpoint, json_answer
from shared.pipeline import call_downstream

# The downstream APIs (DownstreamApis__<name>__*) this function calls: infra/main.bicep must provision
# them (tests/unit/test_infra.py checks it, and that the function calls no other).
DOWNSTREAM_APIS = ("Orders", "OrdersApp")


@endpoint(Requirement(scopes=("access_as_user",), app_permissions=("MiddleTier.Admin",), callers="any"))
def main(ctx: AppContext, call: Call) -> func.HttpResponse:
    api = "OrdersApp" if call.caller.is_app else "Orders"
    return json_answer(call_downstream(ctx, call.token, call.caller, api, correlation_id=call.trace_id))
