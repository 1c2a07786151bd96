"""The common peer pattern, for comparison: validate, then OBO on every request, no token cache.

As in the Node.js Functions OBO sample and fastapi-azure-auth's demo: signing keys are cached
(PyJWKClient, like jwks-rsa), but a new MSAL app is built per request and every request calls
Entra's token endpoint.
"""
import os

import azure.functions as func
import jwt
import msal
import requests

_keys = None
_session = requests.Session()


def _jwks() -> jwt.PyJWKClient:
    global _keys
    if _keys is None:
        authority = os.environ["AzureAd__Instance"].rstrip("/") + "/" + os.environ["AzureAd__TenantId"]
        config = _session.get(authority + "/v2.0/.well-known/openid-configuration", timeout=10).json()
        import ssl
        _keys = (jwt.PyJWKClient(config["jwks_uri"], cache_keys=True,
                                 ssl_context=ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])),
                 config["issuer"])
    return _keys


def main(req: func.HttpRequest) -> func.HttpResponse:
    auth = req.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return func.HttpResponse(status_code=401)
    token = auth[7:]
    client, issuer = _jwks()
    try:
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["RS256"], audience=os.environ["AzureAd__ClientId"], issuer=issuer)
    except jwt.PyJWTError:
        return func.HttpResponse(status_code=401)
    app = msal.ConfidentialClientApplication(
        os.environ["AzureAd__ClientId"], client_credential=os.environ["BENCH_CLIENT_SECRET"],
        authority=os.environ["AzureAd__Instance"].rstrip("/") + "/" + os.environ["AzureAd__TenantId"],
        instance_discovery=False)
    result = app.acquire_token_on_behalf_of(token, [os.environ["DownstreamApis__Graph__Scopes"]])
    if "access_token" not in result:
        return func.HttpResponse(status_code=502)
    r = _session.get(os.environ["BENCH_DOWNSTREAM_URL"],
                     headers={"Authorization": "Bearer " + result["access_token"]}, timeout=(3.05, 10))
    return func.HttpResponse(r.content, status_code=r.status_code, mimetype="application/json")
