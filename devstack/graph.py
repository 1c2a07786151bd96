"""A Graph-like downstream API: strict bearer validation, Graph's error JSON, CAE challenges.

It validates exactly what Graph validates for ``/me`` (signature against the emulator's
published keys, audience, issuer, lifetime, ``scp``), so a middle tier that gets a profile
back here sent a token Graph would accept.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import clouds
from .controls import FaultPlan, Stats, delay
from .directory import Directory, Tenant, User
from .issuer import AuthContext, Issuer, declares_cp1, is_app_only, next_serial, v1_issuer, v2_issuer

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def audiences() -> tuple[str, ...]:
    """Graph's App ID URI in the emulated cloud (graph.microsoft.com, graph.microsoft.us, ...), or its id."""
    graph = clouds.active().graph
    return graph, graph + "/", GRAPH_APP_ID
ME_SCOPES = {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"}
USERS_ROLES = {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"}
CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
CHALLENGE_BASE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                  f'client_id="{GRAPH_APP_ID}"')


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, challenge: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.challenge = status, code, message, challenge


def validate_bearer(request: Request, issuer: Issuer, directory: Directory,
                    audiences: tuple[str, ...]) -> tuple[Tenant, dict[str, Any]]:
    """What a resource server checks: a Bearer token signed by a published key, for one of
    ``audiences``, unexpired, from an issuer of a known tenant. Graph's error shapes."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", CHALLENGE_BASE)
    token = token.strip()
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = issuer.keys.by_kid(str(kid))
        if key is None:
            raise jwt.InvalidSignatureError("unknown kid")
        claims = jwt.decode(token, key.private_key.public_key(), algorithms=["RS256"], audience=audiences,
                            options={"require": ["exp", "nbf", "iat", "iss", "aud", "tid"]}, leeway=0)
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
        raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                         CHALLENGE_BASE + ', error="invalid_token"') from None
    except jwt.InvalidAudienceError:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
                         CHALLENGE_BASE + ', error="invalid_token"') from None
    except jwt.PyJWTError:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.",
                         CHALLENGE_BASE + ', error="invalid_token"') from None
    tenant = directory.tenant_by_id(str(claims.get("tid")))
    if tenant is None or claims.get("iss") not in (v1_issuer(tenant.id), v2_issuer(issuer.instance, tenant.id)):
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid issuer.",
                         CHALLENGE_BASE + ', error="invalid_token"')
    return tenant, claims


class Graph:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan):
        self.directory = directory
        self.issuer = issuer
        self.stats = stats
        self.faults = faults
        # CAE events per user oid: (serial at the event, unix time of the event)
        self.revoked_tokens: dict[str, tuple[int, int]] = {}
        self.revoked_sessions: dict[str, tuple[int, int]] = {}

    def revoke(self, user: User, scope: str = "tokens") -> int:
        """A CAE event: Graph refuses this user's tokens issued before now ('tokens'), or every token
        that derives from a sign-in before now ('sessions'), with a claims challenge; 'clear' ends both."""
        if scope == "clear":
            self.revoked_tokens.pop(user.oid, None)
            self.revoked_sessions.pop(user.oid, None)
            return 0
        if scope not in ("tokens", "sessions"):
            raise ValueError("scope must be tokens, sessions or clear")
        event = (next_serial(), int(time.time()))
        (self.revoked_tokens if scope == "tokens" else self.revoked_sessions)[user.oid] = event
        return event[1]

    # --- validation --------------------------------------------------------------------------
    def _validate(self, request: Request) -> tuple[Tenant, dict[str, Any]]:
        return validate_bearer(request, self.issuer, self.directory, audiences())

    def _cae(self, user: User, claims: dict[str, Any]) -> None:
        """Challenge a token issued before a revocation event — only if its client declared cp1 (CAE
        token, ``xms_cc``). A client that did not is never challenged: its token, revoked or not,
        is served until it expires (about an hour), as Graph does."""
        if not declares_cp1(claims.get("xms_cc")):
            return
        aio = AuthContext.decode(claims.get("aio"))
        revoked = None
        if (event := self.revoked_tokens.get(user.oid)) and int(aio.get("t") or 0) < event[0]:
            revoked = event[1]
        if (event := self.revoked_sessions.get(user.oid)) and int(aio.get("s") or 0) < event[0]:
            revoked = event[1]
        if revoked is not None:
            challenge_claims = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(revoked)}}},
                                          separators=(",", ":"))
            encoded = base64.b64encode(challenge_claims.encode()).decode()
            reason = ("Continuous access evaluation resulted in challenge with result: InteractionRequired "
                      "and code: TokenIssuedBeforeRevocationTimestamp")
            raise GraphError(401, "InvalidAuthenticationToken", reason,
                             CHALLENGE_BASE + f', error_description="{reason}", error="insufficient_claims", '
                                              f'claims="{encoded}"')

    # --- endpoints -----------------------------------------------------------------------------
    async def me(self, request: Request) -> Response:
        fault = self.faults.take("graph", "me")
        await delay(fault)
        try:
            if fault is not None and fault.status is not None:
                raise GraphError(fault.status, "serviceNotAvailable" if fault.status >= 500 else "TooManyRequests",
                                 "The service is temporarily unavailable.")
            tenant, claims = self._validate(request)
            if is_app_only(claims) or "scp" not in claims:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user = tenant.user_by_oid(str(claims.get("oid")))
            if user is None:
                raise GraphError(404, "Request_ResourceNotFound",
                                 f"Resource '{claims.get('oid')}' does not exist or one of its queried reference-property "
                                 "objects are not present.")
            if not ME_SCOPES & set(str(claims.get("scp", "")).split()):
                raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
            self._cae(user, claims)
        except GraphError as err:
            self.stats.count("graph.me", status=str(err.status))
            return self._error(err, request, fault)
        self.stats.count("graph.me", status="200", user=user.name)
        return self._json(request, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
                                    **profile(user)})

    async def user(self, request: Request) -> Response:
        fault = self.faults.take("graph", "users")
        await delay(fault)
        try:
            if fault is not None and fault.status is not None:
                raise GraphError(fault.status, "serviceNotAvailable", "The service is temporarily unavailable.")
            tenant, claims = self._validate(request)
            roles = set(claims.get("roles") or [])
            scopes = set(str(claims.get("scp", "")).split())
            if not (roles & USERS_ROLES or scopes & (ME_SCOPES - {"User.Read", "User.ReadWrite"})):
                raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
            user = tenant.user_by_login(request.path_params["id"])
            if user is None:
                raise GraphError(404, "Request_ResourceNotFound",
                                 f"Resource '{request.path_params['id']}' does not exist or one of its queried "
                                 "reference-property objects are not present.")
        except GraphError as err:
            self.stats.count("graph.users", status=str(err.status))
            return self._error(err, request, fault)
        self.stats.count("graph.users", status="200")
        return self._json(request, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
                                    **profile(user)})

    def _json(self, request: Request, body: dict[str, Any], status: int = 200,
              headers: dict[str, str] | None = None, request_id: str | None = None) -> Response:
        """Graph's headers (recorded): one request-id per answer, echoed as client-request-id when the
        client sent none; OData 4.0; not cacheable."""
        request_id = request_id or str(uuid.uuid4())
        all_headers = {"request-id": request_id,
                       "client-request-id": request.headers.get("client-request-id", request_id),
                       "OData-Version": "4.0", "Cache-Control": "no-cache",
                       **(headers or {})}
        return Response(json.dumps(body), status_code=status, headers=all_headers, media_type=CONTENT_TYPE)

    def _error(self, err: GraphError, request: Request, fault: Any = None) -> Response:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        request_id = str(uuid.uuid4())
        body = {"error": {"code": err.code, "message": err.message,
                          "innerError": {"date": now, "request-id": request_id,
                                         "client-request-id": request.headers.get("client-request-id", request_id)}}}
        headers: dict[str, str] = {}
        if err.challenge:
            headers["WWW-Authenticate"] = err.challenge
        if fault is not None and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        return self._json(request, body, err.status, headers, request_id)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1.0/me", self.me),
            Route("/v1.0/users/{id}", self.user),
        ])


def profile(user: User) -> dict[str, Any]:
    return {"businessPhones": [], "displayName": user.display_name, "givenName": user.given_name,
            "jobTitle": user.job_title, "mail": user.upn, "mobilePhone": None, "officeLocation": None,
            "preferredLanguage": "en-US", "surname": user.surname, "userPrincipalName": user.upn, "id": user.oid}
