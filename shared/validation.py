"""Validate the caller's access token and decide whether it may call this function.

Order matters: structure and signature first (pyjwt, RS256 only, key by ``kid`` from the
tenant's JWKS), then lifetime, audience, issuer and tenant, and only then authorization
(``scp`` or ``roles``). Every failure is an ``AuthenticationError`` (401) or
``InsufficientScope`` (403); nothing here can raise anything else for hostile input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from .config import AzureAdSettings
from .errors import AuthenticationError, InsufficientScope
from .signing_keys import SigningKeys

ALGORITHMS = ["RS256"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: enough to authorize, partition caches and log without the token."""

    oid: str
    tid: str
    client_id: str            # azp (v2) or appid (v1)
    scopes: frozenset[str]
    roles: frozenset[str]
    is_app: bool
    claims: dict[str, Any]

    @property
    def uti(self) -> str:
        return str(self.claims.get("uti", ""))


def _issuers(settings: AzureAdSettings, template: str, tid: str) -> set[str]:
    """v2 issuer from the tenant's metadata (``{tenantid}`` substituted) and the v1 issuer."""
    return {template.replace("{tenantid}", tid), f"https://sts.windows.net/{tid}/"}


def validate(token: str, keys: SigningKeys, settings: AzureAdSettings) -> Caller:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError("The token is malformed.") from None
    if header.get("alg") not in ALGORITHMS:
        raise AuthenticationError("The token's signing algorithm is not accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise AuthenticationError("The token has no usable key identifier.")
    key = keys.get(kid)
    if key is None:
        raise AuthenticationError("The token was not signed by a key of this tenant.")
    try:
        claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=list(settings.audiences),
                            leeway=settings.clock_skew_seconds,
                            options={"require": ["exp", "iss", "aud", "tid"], "verify_iat": False})
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise AuthenticationError("The token is not valid yet.") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("The token was not issued for this API.") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError("The token's signature is invalid.") from None
    except jwt.PyJWTError:
        raise AuthenticationError("The token is invalid.") from None
    tid = claims.get("tid")
    if not isinstance(tid, str) or not tid:
        raise AuthenticationError("The token has no tenant.")
    if settings.multi_tenant:
        if settings.allowed_tenants and tid not in settings.allowed_tenants:
            raise AuthenticationError("The token's tenant is not allowed.")
    elif tid.lower() != settings.tenant_id.lower():
        raise AuthenticationError("The token was issued by another tenant.")
    if claims.get("iss") not in _issuers(settings, keys.metadata.issuer, tid):
        raise AuthenticationError("The token's issuer is not trusted.")
    if key.issuer and key.issuer.replace("{tenantid}", tid) not in _issuers(settings, keys.metadata.issuer, tid):
        raise AuthenticationError("The token's signing key belongs to another issuer.")
    return _caller(claims, tid)


def _caller(claims: dict[str, Any], tid: str) -> Caller:
    scp = claims.get("scp")
    roles = claims.get("roles")
    scopes = frozenset(scp.split()) if isinstance(scp, str) else frozenset()
    role_set = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset()
    oid = claims.get("oid")
    client = claims.get("azp") or claims.get("appid") or ""
    is_app = claims.get("idtyp") == "app" or (not scopes and bool(role_set))
    return Caller(oid=str(oid) if oid else "", tid=tid, client_id=str(client), scopes=scopes, roles=role_set,
                  is_app=is_app, claims=claims)


def authorize(caller: Caller, *, scopes: tuple[str, ...], roles: tuple[str, ...], user_required: bool) -> None:
    """Required delegated scope or app role (403), checked only after the token is known good."""
    if user_required and caller.is_app:
        raise InsufficientScope(scopes, "This API acts on behalf of a user; app-only tokens are not accepted.")
    if scopes and caller.scopes & set(scopes):
        return
    if roles and caller.roles & set(roles):
        return
    raise InsufficientScope(scopes + roles)
