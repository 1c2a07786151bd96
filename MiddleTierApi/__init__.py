"""GET /api/me: the signed-in user's profile from the downstream API, fetched on their behalf.

authLevel is anonymous because callers authenticate with an Entra bearer token; the requirement
below (a user token with the API's scope, AzureAd__Scopes) is checked before the body runs.
"""
import azure.functions as func

from shared import Call, DownstreamResponse, Requirement, endpoint


@endpoint(Requirement(callers="user"), downstream=("Graph",))
def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
    return call.downstream("Graph")
