"""A Graph-like downstream API: strict bearer validation, Graph's error JSON, CAE challenges.

It validates exactly what Graph validates for ``/me`` (signature against the emulator's
published keys, audience, issuer, lifetime, ``scp``), so a middle tier that gets a profile
back here sent a token Graph would accept.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
import uuid
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import clouds
from .controls import FaultPlan, Stats
from .directory import Directory, Tenant, User
from .issuer import AuthContext, Issuer, declares_cp1, is_app_only, next_serial
from .kit import BearerRefused, ServiceError, check_bearer

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def audiences() -> tuple[str, ...]:
    """Graph's App ID URI in the emulated cloud (graph.microsoft.com, graph.microsoft.us, ...), or its id."""
    graph = clouds.active().graph
    return graph, graph + "/", GRAPH_APP_ID
ME_SCOPES = {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"}
USERS_ROLES = {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"}
CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
DENIED = "Insufficient privileges to complete the operation."
CHALLENGE_BASE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                  f'client_id="{GRAPH_APP_ID}"')


# Graph's words for each reason a bearer token is refused (kit.BearerRefused).
REFUSED = {"missing": "Access token is empty.",
           "expired": "Access token has expired or is not yet valid.",
           "not_yet_valid": "Access token has expired or is not yet valid.",
           "audience": "Access token validation failure. Invalid audience.",
           "invalid": "Access token validation failure.",
           "issuer": "Access token validation failure. Invalid issuer."}


async def admit(request: Request, service: str, endpoint: str, faults: FaultPlan, issuer: Issuer,
                directory: Directory, audiences: tuple[str, ...]) -> tuple[Tenant, dict[str, Any]]:
    """A fault's status, else the bearer check (kit.check_bearer) for a token of any known tenant, in
    Graph's words (Orders says the same)."""
    fault = await faults.gate(service, endpoint)
    request.state.drip_ms = fault.drip_ms if fault is not None else 0  # read by the answer (Graph._json)
    if fault is not None and fault.status is not None:
        raise ServiceError.injected(fault, "serviceNotAvailable" if fault.status >= 500 else "TooManyRequests")
    try:
        return check_bearer(request, issuer, audiences, require=("exp", "nbf", "iat", "iss", "aud", "tid"),
                            tenant_of=lambda claims: directory.tenant_by_id(str(claims.get("tid"))))
    except BearerRefused as refused:
        challenge = CHALLENGE_BASE + ("" if refused.reason == "missing" else ', error="invalid_token"')
        raise ServiceError(401, "InvalidAuthenticationToken", REFUSED[refused.reason], challenge=challenge) from None


def not_found(name: str) -> ServiceError:
    return ServiceError(404, "Request_ResourceNotFound",
                        f"Resource '{name}' does not exist or one of its queried reference-property objects "
                        "are not present.")


class Graph:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults
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
            raise ServiceError(401, "InvalidAuthenticationToken", reason,
                               challenge=CHALLENGE_BASE + f', error_description="{reason}", '
                                                          f'error="insufficient_claims", claims="{encoded}"')

    async def me(self, request: Request) -> Response:
        try:
            tenant, claims = await admit(request, "graph", "me", self.faults, self.issuer, self.directory, audiences())
            if is_app_only(claims) or "scp" not in claims:
                raise ServiceError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user = tenant.user_by_oid(str(claims.get("oid")))
            if user is None:
                raise not_found(str(claims.get("oid")))
            if not ME_SCOPES & set(str(claims.get("scp", "")).split()):
                raise ServiceError(403, "Authorization_RequestDenied", DENIED)
            self._cae(user, claims)
        except ServiceError as err:
            self.stats.count("graph.me", status=str(err.status))
            return self._error(err, request)
        self.stats.count("graph.me", status="200", user=user.name)
        return self._json(request, profile(user))

    async def user(self, request: Request) -> Response:
        try:
            tenant, claims = await admit(request, "graph", "users", self.faults, self.issuer, self.directory,
                                         audiences())
            roles = set(claims.get("roles") or [])
            scopes = set(str(claims.get("scp", "")).split())
            if not (roles & USERS_ROLES or scopes & (ME_SCOPES - {"User.Read", "User.ReadWrite"})):
                raise ServiceError(403, "Authorization_RequestDenied", DENIED)
            user = tenant.user_by_login(request.path_params["id"])
            if user is None:
                raise not_found(request.path_params["id"])
        except ServiceError as err:
            self.stats.count("graph.users", status=str(err.status))
            return self._error(err, request)
        self.stats.count("graph.users", status="200")
        return self._json(request, profile(user))

    def _json(self, request: Request, body: dict[str, Any], status: int = 200,
              headers: dict[str, str] | None = None, request_id: str | None = None) -> Response:
        """Graph's headers (recorded): one request-id per answer, echoed as client-request-id when the
        client sent none; OData 4.0; not cacheable."""
        request_id = request_id or str(uuid.uuid4())
        all_headers = {"request-id": request_id,
                       "client-request-id": request.headers.get("client-request-id", request_id),
                       "OData-Version": "4.0", "Cache-Control": "no-cache",
                       **(headers or {})}
        if drip_ms := getattr(request.state, "drip_ms", 0):  # a slow body: headers now, a byte per drip_ms
            return StreamingResponse(drip(json.dumps(body).encode(), drip_ms), status_code=status,
                                     headers=all_headers, media_type=CONTENT_TYPE)
        return Response(json.dumps(body), status_code=status, headers=all_headers, media_type=CONTENT_TYPE)

    def _error(self, err: ServiceError, request: Request) -> Response:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        request_id = str(uuid.uuid4())
        body = err.body(innerError={"date": now, "request-id": request_id,
                                    "client-request-id": request.headers.get("client-request-id", request_id)})
        return self._json(request, body, err.status, err.headers, request_id)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1.0/me", self.me),
            Route("/v1.0/users/{id}", self.user),
        ])


async def drip(body: bytes, drip_ms: int) -> AsyncIterator[bytes]:
    """The body one byte at a time, ``drip_ms`` apart (a fault's ``drip_ms``: an upstream that sends slowly)."""
    for i in range(len(body)):
        yield body[i:i + 1]
        await asyncio.sleep(drip_ms / 1000)


def profile(user: User) -> dict[str, Any]:
    return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "businessPhones": [], "displayName": user.display_name, "givenName": user.given_name,
            "jobTitle": user.job_title, "mail": user.upn, "mobilePhone": None, "officeLocation": None,
            "preferredLanguage": "en-US", "surname": user.surname, "userPrincipalName": user.upn, "id": user.oid}
