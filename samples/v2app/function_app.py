"""The v1 app's three functions in the Python v2 programming model: one ``func.FunctionApp``, the routes
as decorators, AdminApi from a blueprint (``directory.py``) registered below.

The same ``shared`` package serves both models: ``@endpoint`` goes below ``@app.route`` (next to the def),
so the function the app records, and the worker calls, is the one ``endpoint`` wraps. ``@app.function_name``
keeps the v1 names (the names logs, ``AzureWebJobs.<name>.Disabled`` and the portal use); routes, methods and
auth levels are the v1 ``function.json`` files' (``authLevel`` anonymous: callers bring an Entra token).
"""
import azure.functions as func
from directory import bp

from shared import Call, DownstreamResponse, Requirement, endpoint

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name(name="MiddleTierApi")
@app.route(route="me", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(Requirement(callers="user"), downstream=("Graph",))
def me(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    """GET /api/me: the signed-in user's profile from the downstream API, fetched on their behalf."""
    return call.downstream("Graph")


@app.function_name(name="OrdersApi")
@app.route(route="orders", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(Requirement(scopes=("access_as_user",), app_permissions=("MiddleTier.Admin",), callers="any"),
          downstream=("Orders",))
def orders(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    """GET /api/orders: a user's own orders (OBO), or everyone's for an app with MiddleTier.Admin."""
    return call.downstream("Orders", as_app=call.caller.is_app)


app.register_functions(bp)
