"""The Entra ID v2 emulator's HTTP surface: discovery, JWKS, token, device code, sign-in page."""
from __future__ import annotations

import html
import secrets
import urllib.parse
from typing import Any, Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .aadsts import INTERACTION_CODES, AadError
from .controls import FaultPlan, Stats
from .directory import Directory, Tenant
from .grants import Grants, capabilities, grant_name, mfa_challenge
from .issuer import AuthContext, Issuer, v1_issuer, v2_issuer
from .kit import JSON, read_form
from .signin import BrowserSignIn

# What Entra sends with token-endpoint answers, success or error (azure-sdk-for-js recordings).
JSON_HEADERS = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", "Expires": "-1"}
# Discovery documents, keys and instance discovery are cacheable and readable cross-origin; their
# errors (an unknown tenant) are private and uncached, still cross-origin (recorded 90002 answer).
DISCOVERY_HEADERS = {"Cache-Control": "max-age=86400, private", "Access-Control-Allow-Origin": "*"}
DISCOVERY_ERROR_HEADERS = {"Cache-Control": "private", "Access-Control-Allow-Origin": "*"}
GENERIC_TENANTS = ("common", "organizations", "consumers")

# What https://login.microsoftonline.com/common/discovery/instance?api-version=1.1 lists: one group of
# aliases per cloud (recorded answers in azure-sdk-for-js's test recordings and MSAL.NET's
# TestConstants.DiscoveryJsonResponse). MSAL reads the group holding its authority's host for aliases.
CLOUD_METADATA: list[dict[str, Any]] = [
    {"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
     "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"]},
    {"preferred_network": "login.partner.microsoftonline.cn", "preferred_cache": "login.partner.microsoftonline.cn",
     "aliases": ["login.partner.microsoftonline.cn", "login.chinacloudapi.cn"]},
    {"preferred_network": "login.microsoftonline.de", "preferred_cache": "login.microsoftonline.de",
     "aliases": ["login.microsoftonline.de"]},
    {"preferred_network": "login.microsoftonline.us", "preferred_cache": "login.microsoftonline.us",
     "aliases": ["login.microsoftonline.us", "login.usgovcloudapi.net"]},
    {"preferred_network": "login-us.microsoftonline.com", "preferred_cache": "login-us.microsoftonline.com",
     "aliases": ["login-us.microsoftonline.com"]},
]
DISCOVERY_API_VERSIONS = ("1.0", "1.1")


# What Entra's v1 and v2 metadata documents have in common (recorded public-cloud documents).
_DOCUMENT_COMMON: dict[str, Any] = {
    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    "response_modes_supported": ["query", "fragment", "form_post"],
    "subject_types_supported": ["pairwise"],
    "id_token_signing_alg_values_supported": ["RS256"],
    "http_logout_supported": True,
    "frontchannel_logout_supported": True,
    "tenant_region_scope": "WW",
    "cloud_instance_name": "microsoftonline.com",
    "cloud_graph_host_name": "graph.windows.net",
    "msgraph_host": "graph.microsoft.com",
    "rbac_url": "https://pas.windows.net",
}


class EchoClientRequestId:
    """Entra returns the caller's ``client-request-id`` header when it asked with
    ``return-client-request-id: true`` (MSAL.NET does; azure-sdk-for-net recordings)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        asked = headers.get(b"return-client-request-id", b"").lower() == b"true"
        echo = headers.get(b"client-request-id") if asked else None

        async def sending(message: Message) -> None:
            if echo is not None and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"client-request-id", echo)]}
            await send(message)
        await self.app(scope, receive, sending)


# The ``suberror`` Entra sends with a code, for injected faults (as the grants send it).
FAULT_SUBERRORS = {65001: "consent_required", 50076: "basic_action", 50079: "basic_action"}


class Entra:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults
        self.grants = Grants(directory, issuer, self.token_urls)
        self.signin = BrowserSignIn(directory, self.grants)

    @property
    def instance(self) -> str:
        return self.issuer.instance

    def token_urls(self, tenant: Tenant, segment: str) -> set[str]:
        """Audiences Entra accepts in a client assertion: the token endpoint as the client named it."""
        return {f"{self.instance}/{seg}/oauth2/v2.0/token" for seg in (tenant.id, tenant.domain, segment)}

    def _error(self, err: AadError, request: Request, headers: dict[str, str] = JSON_HEADERS) -> JSON:
        return JSON(err.body(request.headers.get("client-request-id")),
                    status_code=err.http_status, headers=headers)

    async def _fault(self, endpoint: str, request: Request, grant: str | None = None) -> Response | None:
        fault = await self.faults.gate("entra", endpoint, grant=grant)
        if fault is None:
            return None
        if fault.aadsts is not None:
            # The body the grants send for the code (MFA: interaction_required + basic_action + claims;
            # consent: consent_required; CA block: claims); the fault's ``suberror``/``claims`` override
            # it (Entra sends 53003 without claims when no sign-in can satisfy the policy).
            policy = (self.directory.default.policy_ids or ["00000000-0000-0000-0000-000000000000"])[0]
            wants_claims = fault.claims if fault.claims is not None else fault.aadsts in INTERACTION_CODES
            return self._error(AadError(
                fault.aadsts, {}, claims=mfa_challenge(policy) if wants_claims else None,
                error="interaction_required" if fault.aadsts in (50076, 50079) else None,
                suberror=fault.suberror if fault.suberror is not None else FAULT_SUBERRORS.get(fault.aadsts)), request)
        if fault.status is not None:
            error = "temporarily_unavailable" if fault.status >= 429 else "invalid_request"
            return self._error(AadError(90033, {}, error=error, status=fault.status), request,
                               JSON_HEADERS | fault.retry_headers())
        return None

    def openid_configuration(self, segment: str, tenant: Tenant) -> dict[str, Any]:
        generic = segment.lower() in GENERIC_TENANTS
        base = f"{self.instance}/{segment if generic else tenant.id}"
        issuer = f"{self.instance}/{{tenantid}}/v2.0" if generic else v2_issuer(self.instance, tenant.id)
        return {**_DOCUMENT_COMMON, **({"tenant_region_scope": None} if generic else {}),
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time",
                                 "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash",
                                 "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
        }

    def openid_configuration_v1(self, segment: str, tenant: Tenant) -> dict[str, Any]:
        """The v1 document (``/{tenant}/.well-known/openid-configuration``): what middle tiers read
        the v1 issuer from — ``https://sts.windows.net/{tid}/`` in the public cloud."""
        generic = segment.lower() in GENERIC_TENANTS
        base = f"{self.instance}/{segment if generic else tenant.id}"
        return {**_DOCUMENT_COMMON,
            "token_endpoint": f"{base}/oauth2/token",
            "jwks_uri": f"{self.instance}/common/discovery/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": v1_issuer("{tenantid}" if generic else tenant.id),
            "microsoft_multi_refresh_token": True,
            "authorization_endpoint": f"{base}/oauth2/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/devicecode",
            "end_session_endpoint": f"{base}/oauth2/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                                 "amr", "nonce", "email", "given_name", "family_name", "nickname"],
            "check_session_iframe": f"{base}/oauth2/checksession",
            "userinfo_endpoint": f"{base}/openid/userinfo",
            "kerberos_endpoint": f"{base}/kerberos",
        }

    def _keys(self, segment: str, tenant: Tenant) -> dict[str, Any]:
        return self.issuer.keys.jwks(self.instance, None if segment.lower() in GENERIC_TENANTS else tenant.id)

    async def _metadata(self, endpoint: str, request: Request,
                        document: Callable[[str, Tenant], dict[str, Any]]) -> Response:
        """A discovery document or the keys: counted, faultable; an unknown tenant is a 90002."""
        self.stats.count(f"entra.{endpoint}")
        if (r := await self._fault(endpoint, request)) is not None:
            return r
        segment = request.path_params.get("tenant", "common")
        try:
            tenant = self.directory.tenant(segment)
        except AadError as err:
            return self._error(err, request, DISCOVERY_ERROR_HEADERS)
        return JSON(document(segment, tenant), headers=DISCOVERY_HEADERS)

    async def discovery(self, request: Request) -> Response:
        v2 = request.url.path.endswith("/v2.0/.well-known/openid-configuration")
        return await self._metadata("discovery", request,
                                    self.openid_configuration if v2 else self.openid_configuration_v1)

    async def jwks(self, request: Request) -> Response:
        return await self._metadata("jwks", request, self._keys)

    def instance_metadata(self) -> list[dict[str, Any]]:
        """Under a public cloud's name (``up --production-names``) the emulator is that cloud and lists
        every cloud, as Entra does; on loopback it is an instance of its own, aliased to nothing else."""
        host = urllib.parse.urlsplit(self.instance).netloc
        if any(host in group["aliases"] for group in CLOUD_METADATA):
            return CLOUD_METADATA
        return [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]

    def known_instances(self) -> set[str]:
        """Hosts whose authorities this emulator validates: its own and its aliases. Entra also knows
        the other clouds' hosts; the emulator refuses them, as it cannot serve them."""
        host = urllib.parse.urlsplit(self.instance).netloc
        return next(set(g["aliases"]) for g in self.instance_metadata() if host in g["aliases"])

    async def instance_discovery(self, request: Request) -> Response:
        """``GET /common/discovery/instance``: MSAL's authority validation (``api-version=1.0``, the
        authority's authorize endpoint; MSAL Python asks for any host it does not know) and alias
        lookup (``1.1``, ``https://login.microsoftonline.com/common/oauth2/authorize``). A host Entra
        does not know gets 400 ``invalid_instance`` (AADSTS50049), on which MSAL refuses the authority."""
        q = request.query_params
        version = q.get("api-version", "")
        if (r := await self._fault("instance_discovery", request)) is not None:
            self.stats.count("entra.instance_discovery", outcome=f"fault-{r.status_code}")
            return r
        try:
            if version not in DISCOVERY_API_VERSIONS:
                raise AadError(50050, {"param": "api-version"})
            named = [k for k in ("authorization_endpoint", "issuer") if q.get(k)]
            if len(named) != 1:
                raise AadError(50050, {"param": "authorization_endpoint"})
            parts = urllib.parse.urlsplit(q[named[0]])
            segments = [s for s in parts.path.split("/") if s]
            if parts.scheme != "https" or not parts.netloc or not segments:
                raise AadError(50050, {"param": named[0]})
            if parts.netloc.lower() not in self.known_instances():
                raise AadError(50049)
        except AadError as err:
            self.stats.count("entra.instance_discovery", outcome=f"AADSTS{err.code}", api_version=version or None)
            return self._error(err, request)
        v2 = named[0] == "authorization_endpoint" and "/oauth2/v2.0/authorize" in parts.path
        doc = f"{self.instance}/{segments[0]}" + ("/v2.0" if v2 else "") + "/.well-known/openid-configuration"
        body: dict[str, Any] = {"tenant_discovery_endpoint": doc}
        if version == "1.1":  # 1.0 answers the endpoint alone; the alias table came with 1.1
            body.update({"api-version": "1.1", "metadata": self.instance_metadata()})
        self.stats.count("entra.instance_discovery", outcome="200", api_version=version, host=parts.netloc.lower())
        return JSON(body, headers=DISCOVERY_HEADERS)

    async def user_realm(self, request: Request) -> Response:
        domain = request.path_params["upn"].rpartition("@")[2]
        return JSON({"ver": "1.0", "account_type": "Managed", "domain_name": domain,
                     "cloud_instance_name": "microsoftonline.com",
                     "cloud_audience_urn": "urn:federation:MicrosoftOnline"})

    def _spa_origins(self) -> set[str]:
        uris = (urllib.parse.urlsplit(u) for t in self.directory.tenants for a in t.apps for u in a.spa_redirect_uris)
        return {f"{parts.scheme}://{parts.netloc}" for parts in uris}

    def _cors(self, request: Request) -> dict[str, str]:
        """Entra answers SPAs' cross-origin token requests for origins of registered SPA redirect URIs."""
        origin = request.headers.get("origin")
        if origin and origin in self._spa_origins():
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    async def token_preflight(self, request: Request) -> Response:
        if cors := self._cors(request):
            cors.update({"Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Max-Age": "86400",
                         "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers",
                                                                             "content-type")})
        return Response(status_code=204 if cors else 403, headers=cors)

    async def token(self, request: Request) -> Response:
        response = await self._token(request)
        response.headers.update(self._cors(request))
        return response

    async def _token(self, request: Request) -> Response:
        form = await read_form(request)
        grant = grant_name(form.get("grant_type", ""))
        if (r := await self._fault("token", request, grant)) is not None:
            self.stats.count("entra.token", grant=grant, outcome=f"fault-{r.status_code}")
            return r
        try:
            outcome = self.grants.token(request.path_params["tenant"], form, request.headers)
        except AadError as err:
            self.stats.count("entra.token", grant=grant, outcome=f"AADSTS{err.code}",
                             client=self._client_label(form))
            return self._error(err, request)
        self.stats.count("entra.token", grant=grant, outcome="ok", client=outcome.client.name,
                         user=outcome.user.name if outcome.user else None)
        return JSON(outcome.body, headers=JSON_HEADERS)

    def _client_label(self, form: Mapping[str, str]) -> str | None:
        cid = form.get("client_id")
        for t in self.directory.tenants:
            if cid and (app := t.app_by_client_id(cid)):
                return app.name
        return "unknown" if cid else None

    async def devicecode(self, request: Request) -> Response:
        form = await read_form(request)
        self.stats.count("entra.devicecode", client=self._client_label(form))
        if (r := await self._fault("devicecode", request)) is not None:
            return r
        try:
            answer = self.grants.start_device_flow(request.path_params["tenant"], form,
                                                   f"{self.instance}/devicelogin")
        except AadError as err:
            return self._error(err, request)
        return JSON(answer, headers=JSON_HEADERS)

    async def devicelogin(self, request: Request) -> Response:
        """The verification page a user opens for device code sign-in."""
        if request.method == "GET":
            return _login_page("Enter the code displayed on your device, then sign in.")
        form = await read_form(request)
        flow = self.grants.pending_by_user_code(form.get("code", ""))
        if flow is None:
            return _login_page("That code was not recognised or has expired.", status=400)
        user = flow.tenant.user_by_login(form.get("username", ""))
        if user is None or not secrets.compare_digest(user.password.encode(), form.get("password", "").encode()):
            return _login_page("Your account or password is incorrect.", status=400, code=form.get("code", ""))
        mfa = False
        if flow.needs_mfa(user):
            otp = form.get("otp", "")
            if not otp or not user.mfa_code:
                return _login_page("Approve the sign-in: enter the code from your authenticator app.",
                                   status=401, code=form.get("code", ""), username=user.upn, otp=True)
            if not secrets.compare_digest(otp.encode(), user.mfa_code.encode()):
                return _login_page("That verification code is not correct.", status=400,
                                   code=form.get("code", ""), username=user.upn, otp=True)
            mfa = True
        flow.user = user
        flow.auth = AuthContext.signed_in(mfa=mfa, capabilities=capabilities(flow.claims))
        self.stats.count("entra.devicelogin", user=user.name)
        return HTMLResponse(f"<!doctype html><title>Signed in</title><h1>{html.escape(flow.client.display_name)}</h1>"
                            "<p id=done>You have signed in to the application on your device. "
                            "You may now close this window.</p>")

    def app(self) -> Starlette:
        return Starlette(middleware=[Middleware(EchoClientRequestId)], routes=[
            Route("/common/discovery/instance", self.instance_discovery),
            Route("/common/userrealm/{upn}", self.user_realm),
            Route("/devicelogin", self.devicelogin, methods=["GET", "POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery),
            Route("/{tenant}/.well-known/openid-configuration", self.discovery),
            Route("/{tenant}/discovery/v2.0/keys", self.jwks),
            Route("/{tenant}/discovery/keys", self.jwks),
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/{tenant}/oauth2/v2.0/token", self.token_preflight, methods=["OPTIONS"]),
            Route("/{tenant}/oauth2/v2.0/authorize", self.signin.authorize, methods=["GET", "POST"]),
            Route("/{tenant}/oauth2/v2.0/devicecode", self.devicecode, methods=["POST"]),
        ])


def _login_page(message: str, *, status: int = 200, code: str = "", username: str = "",
                otp: bool = False) -> HTMLResponse:
    otp_field = ('<label>One-time code <input name="otp" autocomplete="one-time-code" autofocus></label>'
                 if otp else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sign in (devstack)</title></head>
<body><h1>Sign in to your account</h1><p id="message">{html.escape(message)}</p>
<form method="post" action="/devicelogin">
<label>Code <input name="code" value="{html.escape(code)}" required></label>
<label>Email <input name="username" value="{html.escape(username)}" required></label>
<label>Password <input name="password" type="password" required></label>
{otp_field}<button type="submit">Sign in</button></form></body></html>"""
    return HTMLResponse(page, status_code=status)
