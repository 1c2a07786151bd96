"""The app's failures as a small typed hierarchy, each knowing its HTTP answer.

``problem()`` turns any of them into status + headers + an RFC 9457 ``application/problem+json`` body.
Messages are written for the caller and never contain a token, secret or assertion. Refusals of the caller
are typed by the check that made them (like pyjwt's ``jwt.exceptions``), so code and tests tell them apart
by type, never by message text. The type decides nothing on the wire: the HTTP answer is the base class's,
and the raising check's ``detail`` is the ``error_description`` the client reads::

    ApiError
    ├── AuthenticationError   401 (bearer.py, validation.py; tokens.py: Entra refused the assertion)
    │   ├── MissingToken, InvalidRequest
    │   └── InvalidToken      MalformedToken, AlgorithmNotAccepted, UnknownSigningKey, InvalidSignature,
    │                         ExpiredToken, ImmatureToken, ImplausibleLifetime, MissingClaim, InvalidAudience,
    │                         InvalidIssuer, InvalidTenant, VersionNotAccepted, InvalidSubject
    ├── InsufficientScope     403 (authorization.py): NoScopesOrRoles, CallerKindNotAccepted, ScopeNotGranted
    ├── ClaimsChallenge, AccessDenied, TenantNotProvisioned, CredentialError   (tokens.py: Entra's answers)
    ├── ConfigurationError    500
    └── UpstreamError, DownstreamRejected   502/503/504, a downstream 4xx
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiError(Exception):
    detail: str
    status: int = 500
    title: str = "Internal Server Error"
    code: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)


def bearer_challenge(**params: str | None) -> str:
    """``WWW-Authenticate: Bearer realm="", k="v", ...`` (RFC 6750 §3), empty params dropped."""
    quoted = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in params.items() if v}
    return "Bearer " + ", ".join(['realm=""'] + [f'{k}="{v}"' for k, v in quoted.items()])


class AuthenticationError(ApiError):
    """401: the caller's credentials are missing or unusable."""

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        challenge = bearer_challenge(error=error, error_description=detail if error else None)
        super().__init__(detail, 401, "Unauthorized", error or "unauthorized", {"WWW-Authenticate": challenge})


class MissingToken(AuthenticationError):
    """401 without an error code: no credentials were presented (RFC 6750 §3.1)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, error=None)


class InvalidRequest(AuthenticationError):
    """401 ``invalid_request``: the Authorization header is not exactly one bearer token."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, error="invalid_request")


class InvalidToken(AuthenticationError):
    """401 ``invalid_token`` (pyjwt: InvalidTokenError) when no subclass fits; ``claim`` names the claim at fault."""

    def __init__(self, detail: str, *, claim: str | None = None) -> None:
        super().__init__(detail)
        self.claim = claim


class MalformedToken(InvalidToken):
    """Structure, base64url, JSON, duplicates, header extensions, claim types or forms (DecodeError)."""


class AlgorithmNotAccepted(InvalidToken):
    """Signed with an algorithm other than RS256 (InvalidAlgorithmError)."""


class UnknownSigningKey(InvalidToken):
    """No usable ``kid``, or one the tenant does not publish, even after a refetch (PyJWKClientError)."""


class InvalidSignature(InvalidToken):
    """The signature does not verify with the tenant's key (InvalidSignatureError)."""


class ExpiredToken(InvalidToken):
    """``exp`` is past, clock skew included (ExpiredSignatureError)."""


class ImmatureToken(InvalidToken):
    """``nbf`` (or ``iat``) is ahead, clock skew included (ImmatureSignatureError)."""


class ImplausibleLifetime(InvalidToken):
    """``exp`` further away than any Entra access token lives."""


class MissingClaim(InvalidToken):
    """A required claim is absent, ``claim`` names it (MissingRequiredClaimError)."""


class InvalidAudience(InvalidToken):
    """Not issued for this API, or not for exactly one audience (InvalidAudienceError)."""


class InvalidIssuer(InvalidToken):
    """Not the tenant's issuer, not the one for the token's version, or not its key's (InvalidIssuerError)."""


class InvalidTenant(InvalidToken):
    """No tenant, another tenant (single-tenant), or a tenant not in ``AzureAd__AllowedTenants``."""


class VersionNotAccepted(InvalidToken):
    """A token version (``ver``) the API doesn't accept."""


class InvalidSubject(InvalidToken):
    """No ``oid``, or app-only and delegated markers (``idtyp``, ``oid``/``sub``, ``scp``) that contradict."""


class InsufficientScope(ApiError):
    """403: a valid token without a required scope or app role."""

    def __init__(self, required: tuple[str, ...],
                 detail: str = "The token lacks a required scope or app role.") -> None:
        challenge = bearer_challenge(error="insufficient_scope", scope=" ".join(required), error_description=detail)
        super().__init__(detail, 403, "Forbidden", "insufficient_scope", {"WWW-Authenticate": challenge},
                         {"required": list(required)})


class NoScopesOrRoles(InsufficientScope):
    """The token carries neither ``scp`` nor ``roles`` (lifted only by ACL mode, for listed clients)."""


class CallerKindNotAccepted(InsufficientScope):
    """A user token for a function that accepts apps only, or an app-only token for one that acts for a user."""


class ScopeNotGranted(InsufficientScope):
    """None of the scopes or app roles the function accepts."""


class ClaimsChallenge(ApiError):
    """401: the client must sign the user in again (consent, MFA, CAE). MSAL's "claims challenge" for middle
    tiers: the client's MSAL reads ``claims`` (base64) from ``WWW-Authenticate`` and re-acquires with it."""

    def __init__(self, detail: str, *, claims: str | None, authorization_uri: str, client_id: str,
                 reason: str = "interaction_required", aadsts: list[int] | None = None) -> None:
        code = "insufficient_claims" if claims else reason
        encoded = base64.b64encode(claims.encode()).decode() if claims else None
        header = bearer_challenge(authorization_uri=authorization_uri, client_id=client_id, error=code,
                                  error_description=detail, claims=encoded)
        extra = {k: v for k, v in {"reason": reason, "claims": claims, "aadsts": aadsts}.items() if v}
        super().__init__(detail, 401, "Unauthorized", code, {"WWW-Authenticate": header}, extra)


class AccessDenied(ApiError):
    """403: no token for this user, and signing in again won't change that (Conditional Access, disabled account)."""

    def __init__(self, detail: str, aadsts: list[int] | None = None) -> None:
        super().__init__(detail, 403, "Forbidden", "access_denied", extra={"aadsts": aadsts or []})


class TenantNotProvisioned(ApiError):
    """403: (multi-tenant) a downstream API the function needs is not provisioned or disabled in the caller's
    tenant, whose administrator must add it: that tenant's state, not this app's configuration, so never a 500."""

    def __init__(self, tenant: str, resource: str, aadsts: list[int]) -> None:
        what = f"The downstream API {resource}" if resource else "A downstream API this function needs"
        super().__init__(f"{what} is not provisioned in your tenant ({tenant}); an administrator of the tenant "
                         "must add it (grant admin consent to this application).", 403, "Forbidden",
                         "tenant_not_provisioned", extra={"tenant": tenant, "aadsts": aadsts})


class ConfigurationError(ApiError):
    """500: a setting is missing or malformed. Names the key, never the value."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"Setting {key} {problem}.", 500, "Configuration error", "configuration_error",
                         extra={"setting": key})
        self.key = key


class CredentialError(ApiError):
    """500: Entra refused our own client credential. An operator problem, not the caller's."""

    def __init__(self, detail: str, aadsts: list[int] | None = None) -> None:
        super().__init__(detail, 500, "Credential error", "invalid_client", extra={"aadsts": aadsts or []})


class UpstreamError(ApiError):
    """502/503/504: Entra, Key Vault or the downstream API failed or was too slow."""

    def __init__(self, service: str, detail: str, status: int = 502, retry_after: int | None = None) -> None:
        titles = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        super().__init__(detail, status, titles.get(status, "Bad Gateway"), "upstream_error", headers,
                         {"upstream": service})


class DownstreamRejected(ApiError):
    """A downstream 4xx that is meaningful to the caller (404, 403, 409...)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail, status, {403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(status, "Error"),
                         "downstream_rejected", extra={"upstream": "downstream"})


def problem(err: ApiError, *, trace_id: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {"type": f"urn:middletier:problem:{err.code}", "title": err.title,
                            "status": err.status, "detail": err.detail, "error": err.code, **err.extra}
    if trace_id:
        body["trace_id"] = trace_id
    return err.status, dict(err.headers), body
