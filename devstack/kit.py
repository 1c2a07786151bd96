"""What the emulators share: form bodies, the resource APIs' bearer check and error JSON.

Each emulator keeps its own wording and headers (pinned by tests/conformance/): the kit gives the
steps, the emulator the words. Faults come through one gate, ``FaultPlan.gate`` (controls.py).
"""
from __future__ import annotations

import urllib.parse
from typing import Any, Callable

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse

from .controls import Fault
from .directory import Tenant
from .issuer import Issuer

FORM_LIMIT = 64 * 1024


class JSON(JSONResponse):
    """Entra, Key Vault and App Service name their charset: ``application/json; charset=utf-8``."""
    media_type = "application/json; charset=utf-8"


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (its first FORM_LIMIT bytes): first value wins;
    unknown parameters are kept and ignored."""
    body = (await request.body())[:FORM_LIMIT]
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class BearerRefused(Exception):
    """Why a resource API refuses the bearer token (missing, expired, not_yet_valid, audience, invalid,
    issuer); each API words the reason its own way."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_bearer(request: Request, issuer: Issuer, audiences: tuple[str, ...] | list[str], *,
                 require: tuple[str, ...], tenant_of: Callable[[dict[str, Any]], Tenant | None]
                 ) -> tuple[Tenant, dict[str, Any]]:
    """What a resource server checks: a Bearer token signed by a published key, for one of
    ``audiences``, within its lifetime, with the ``require``d claims, issued by Entra for the
    tenant that ``tenant_of`` finds for it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise BearerRefused("missing")
    try:
        key = issuer.keys.by_kid(str(jwt.get_unverified_header(token).get("kid")))
        if key is None:
            raise jwt.InvalidSignatureError("unknown kid")
        claims = jwt.decode(token, key.private_key.public_key(), algorithms=["RS256"], audience=audiences,
                            options={"require": list(require)}, leeway=0)
    except jwt.ExpiredSignatureError:
        raise BearerRefused("expired") from None
    except jwt.ImmatureSignatureError:
        raise BearerRefused("not_yet_valid") from None
    except jwt.InvalidAudienceError:
        raise BearerRefused("audience") from None
    except jwt.PyJWTError:
        raise BearerRefused("invalid") from None
    tenant = tenant_of(claims)
    if tenant is None or not issuer.issued(claims, tenant.id):
        raise BearerRefused("issuer")
    return tenant, claims


class ServiceError(Exception):
    """A resource API's error answer (Graph, Orders, Key Vault): ``{"error": {"code", "message", ...}}``
    with its status and headers (``WWW-Authenticate`` for a ``challenge``, ``Retry-After`` for a fault)."""

    def __init__(self, status: int, code: str, message: str, *, challenge: str | None = None,
                 inner: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = ({"WWW-Authenticate": challenge} if challenge else {}) | (headers or {})

    @classmethod
    def injected(cls, fault: Fault, code: str) -> "ServiceError":
        """The answer to a fault with a status."""
        assert fault.status is not None
        return cls(fault.status, code, "The service is temporarily unavailable.", headers=fault.retry_headers())

    def body(self, **extra: Any) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **extra}}
