"""Validate the caller's access token and decide whether it may call this function.

Order matters: structure first (three canonical base64url segments of JSON objects, no duplicate members,
no ``crit``/``b64`` extensions we don't implement), then the signature (pyjwt, RS256 only, key by ``kid``
from the tenant's JWKS — ``jku``/``x5u``/``jwk``/``x5c`` headers are never followed), then lifetime,
audience (a single string), issuer, tenant and token version, and only then, in ``authorization.py``, what
the function requires (``scp`` or ``roles``). Every failure here is an ``InvalidToken`` (401
``invalid_token``) typed by the check that refused the token; hostile input cannot raise anything else.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import jwt
from cachetools import TLRUCache

from .config import AzureAdSettings
from .errors import (AlgorithmNotAccepted, ExpiredToken, ImmatureToken, ImplausibleLifetime, InvalidAudience,
                     InvalidIssuer, InvalidSignature, InvalidSubject, InvalidTenant, InvalidToken, MalformedToken,
                     MissingClaim, UnknownSigningKey, VersionNotAccepted)
from .memory import VALIDATOR_OVERHEAD, held_bytes
from .signing_keys import SigningKeys

ALGORITHMS = ["RS256"]
MAX_LIFETIME_SECONDS = 48 * 3600  # Entra access tokens live at most ~28 h (CAE)


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
    token_hash: str = field(default="", compare=False)  # SHA-256 of the token: cache partition key


class _DuplicateMember(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) != len({k for k, _ in pairs}):
        raise _DuplicateMember("duplicate member")
    return dict(pairs)


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# NumericDate (RFC 7519 §2): a JSON number. Bounded so that arithmetic on it can never overflow.
_TIME_CLAIMS = ("exp", "nbf", "iat")
_MAX_NUMERIC_DATE = 2 ** 53


def _base64url(part: str) -> bytes:
    """RFC 7515 §2 base64url: URL-safe alphabet only, no padding, no non-zero trailing bits — so one token has
    one spelling (``<token>==`` or ``+``/``/`` variants are refused, never a second cache partition)."""
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise MalformedToken("The token is malformed.")
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != part:
        raise MalformedToken("The token is malformed.")
    return raw


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _segment(part: str) -> dict[str, Any]:
    raw = _base64url(part)  # outside the try: its own refusals are the structure check, not a JSON error
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _DuplicateMember:  # two members of one name: parsers disagree on which one counts
        raise MalformedToken("The token is malformed: a JSON member is duplicated.") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedToken("The token is malformed.") from None
    if not isinstance(value, dict):
        raise MalformedToken("The token is malformed.")
    return value


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JOSE header and unverified payload of a token exactly as we accept it (the module's docstring)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise MalformedToken("The token is malformed.")
    header, payload = _segment(parts[0]), _segment(parts[1])
    _base64url(parts[2])
    if "crit" in header or "b64" in header:
        raise MalformedToken("The token uses header extensions this API does not accept.")
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        if name in payload and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE):
            raise MalformedToken(f"The token's {name} claim is not a number.", claim=name)
    return header, payload


def _issuers(keys: SigningKeys, tid: str, iss: str) -> tuple[str, str | None]:
    """The v2 and v1 issuers for tenant ``tid`` from the authority's metadata (never a hard-coded cloud). The v1
    document is read only for a token not from the v2 issuer, and only if v1 is accepted (else None)."""
    v2 = keys.metadata.issuer.replace("{tenantid}", tid)
    template = keys.v1_issuer() if iss != v2 else None
    return v2, template.replace("{tenantid}", tid) if template else None


_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # Entra's kids: base64url of the certificate's SHA-1 (x5t)


def _could_be_valid(kid: str, claims: dict[str, Any], settings: AzureAdSettings) -> bool:
    """Could this token be ours, judged before its signature? Only then may its unknown ``kid`` refetch the
    tenant's keys (signing_keys.py): a well-formed ``kid``, our (or an allowed) tenant, an issuer naming it,
    our audience, within its lifetime. Failing any of these is refused whatever the keys: no refetch."""
    if not _KID.fullmatch(kid):
        return False
    tid, iss, aud = claims.get("tid"), claims.get("iss"), claims.get("aud")
    if not (isinstance(tid, str) and tid and isinstance(iss, str) and tid in iss and aud in settings.audiences):
        return False
    allowed = {t.lower() for t in settings.allowed_tenants} if settings.multi_tenant else {settings.tenant_id.lower()}
    if allowed and tid.lower() not in allowed:
        return False
    now, skew = time.time(), settings.clock_skew_seconds
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, (int, float)) or not now - skew <= exp <= now + MAX_LIFETIME_SECONDS:
        return False
    return not isinstance(nbf, (int, float)) or nbf <= now + skew


def validate(token: str, keys: SigningKeys, settings: AzureAdSettings) -> Caller:
    header, unverified = _parts(token)
    if header.get("alg") not in ALGORITHMS:
        raise AlgorithmNotAccepted("The token's signing algorithm is not accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise UnknownSigningKey("The token has no usable key identifier.")
    key = keys.get(kid, refetch=_could_be_valid(kid, unverified, settings))
    if key is None:
        raise UnknownSigningKey("The token was not signed by a key of this tenant.")
    try:
        claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=list(settings.audiences),
                            leeway=settings.clock_skew_seconds,
                            options={"require": ["exp", "iat", "iss", "aud", "tid"]})
    except jwt.ExpiredSignatureError:
        raise ExpiredToken("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise ImmatureToken("The token is not valid yet.") from None
    except jwt.InvalidAudienceError:
        raise InvalidAudience("The token was not issued for this API.") from None
    except jwt.InvalidSignatureError:
        raise InvalidSignature("The token's signature is invalid.") from None
    except jwt.MissingRequiredClaimError as err:
        raise MissingClaim(f"The token is invalid: it lacks the required {err.claim} claim.", claim=err.claim) from None
    except jwt.PyJWTError:
        raise InvalidToken("The token is invalid.") from None
    if not isinstance(claims.get("aud"), str):
        raise InvalidAudience("The token must have exactly one audience.")
    if claims["exp"] - time.time() > MAX_LIFETIME_SECONDS:
        raise ImplausibleLifetime("The token's lifetime is implausibly long.")
    tid = claims.get("tid")
    if not isinstance(tid, str) or not tid:
        raise InvalidTenant("The token has no tenant.")
    if settings.multi_tenant:
        # tenant ids are GUIDs: compared case-insensitively, as the single-tenant check below does
        if settings.allowed_tenants and tid.lower() not in {t.lower() for t in settings.allowed_tenants}:
            raise InvalidTenant("The token's tenant is not allowed.")
    elif tid.lower() != settings.tenant_id.lower():
        raise InvalidTenant("The token was issued by another tenant.")
    if not isinstance(claims.get("iss"), str):
        raise InvalidIssuer("The token's issuer is not trusted.")
    v2_issuer, v1_issuer = _issuers(keys, tid, claims["iss"])
    valid_issuers = {v2_issuer, v1_issuer} - {None}
    if claims["iss"] not in valid_issuers:
        raise InvalidIssuer("The token's issuer is not trusted.")
    if claims.get("ver") not in settings.token_versions:
        raise VersionNotAccepted("The token's version is not accepted by this API.")
    if (claims.get("ver") == "1.0") != (claims["iss"] == v1_issuer):
        raise InvalidIssuer("The token's issuer does not match its version.")
    if key.issuer and key.issuer.replace("{tenantid}", tid) not in valid_issuers:
        raise InvalidIssuer("The token's signing key belongs to another issuer.")
    caller = _caller(claims, tid)
    if not caller.oid:
        raise InvalidSubject("The token has no subject object id.")
    return caller


@dataclass(frozen=True)
class _Validated:
    caller: Caller
    kid: str
    not_before: float
    expires: float


class TokenValidator:
    """``validate`` with a memo of tokens already proven good, keyed by SHA-256 of the token; bounded.

    Validation is a pure function of the token's bytes, the tenant's keys and the clock, so a repeat
    is answered from the memo after re-checking what can change: the time window (with skew) and that
    the signing key is still published. Entries leave at the token's expiry; failures are never memoized."""

    def __init__(self, keys: SigningKeys, settings: AzureAdSettings, *, max_entries: int = 10_000,
                 max_bytes: int | None = None, clock: Callable[[], float] = time.time):
        self.keys, self.settings, self._clock = keys, settings, clock
        skew = settings.clock_skew_seconds
        self._max_entries = max_entries  # and, given max_bytes, the bytes its entries hold (shared.memory)
        self._memo: TLRUCache[str, _Validated] = TLRUCache(
            maxsize=max_bytes or max_entries, ttu=lambda _k, v, _now: v.expires + skew, timer=clock,
            getsizeof=(lambda v: VALIDATOR_OVERHEAD + held_bytes(v.caller.claims)) if max_bytes else None)
        self._lock = threading.Lock()

    def validate(self, token: str) -> Caller:
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            hit = self._memo.get(digest)
        if hit is not None:
            now, skew = self._clock(), self.settings.clock_skew_seconds
            if hit.not_before - skew <= now <= hit.expires + skew and self.keys.published(hit.kid):
                return hit.caller
        caller = replace(validate(token, self.keys, self.settings), token_hash=digest)
        nbf = caller.claims.get("nbf", caller.claims["iat"])  # a number: _parts refuses any other NumericDate
        entry = _Validated(caller, str(_parts(token)[0].get("kid")), float(nbf), float(caller.claims["exp"]))
        with self._lock, contextlib.suppress(ValueError):  # ValueError: larger than the whole budget
            self._memo[digest] = entry
            while len(self._memo) > self._max_entries:
                self._memo.popitem()
        return caller


def _is_app_only(claims: dict[str, Any]) -> bool:
    """App-only (client credentials) or delegated, as Entra documents it, for v1 and v2 tokens alike.

    ``idtyp``, when the registration requests it ("the most accurate way"): ``app``, or ``user`` (with
    ``include_user_token``). Without it, app-only is ``oid`` == ``sub`` (a user's ``sub`` is pairwise, never
    its ``oid``). ``scp`` is "only included for user tokens": app-only with ``scp``, or ``user`` without, is refused."""
    has_scp = "scp" in claims
    if "idtyp" in claims:
        idtyp = claims["idtyp"]
        if not isinstance(idtyp, str):
            raise MalformedToken("The token's idtyp claim is malformed.")
        if idtyp == "app" and has_scp:
            raise InvalidSubject("The token is app-only (idtyp) yet carries delegated scopes.")
        if idtyp == "user" and not has_scp:
            raise InvalidSubject("The token is a user token (idtyp) yet carries no delegated scopes.")
        return idtyp == "app"
    oid, sub = claims.get("oid"), claims.get("sub")
    if not (isinstance(oid, str) and oid and oid == sub):
        return False
    if has_scp:
        raise InvalidSubject("The token's subject is an application (oid = sub) yet it carries delegated scopes.")
    return True


def _scopes(scp: str) -> frozenset[str]:
    """``scp`` is scope names separated by ASCII spaces (RFC 6749 §3.3): a name with other whitespace or a control
    character is not one Entra issues, so it is refused, not split (``str.split()`` splits on U+00A0, ...)."""
    names = [name for name in scp.split(" ") if name]
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for name in names for ch in name):
        raise MalformedToken("The token's scp claim is malformed.")
    return frozenset(names)


def _caller(claims: dict[str, Any], tid: str) -> Caller:
    scp, roles, oid = claims.get("scp"), claims.get("roles"), claims.get("oid")
    return Caller(oid=oid if isinstance(oid, str) else "", tid=tid,
                  client_id=str(claims.get("azp") or claims.get("appid") or ""),
                  scopes=_scopes(scp) if isinstance(scp, str) else frozenset(),
                  roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
                  is_app=_is_app_only(claims), claims=claims)
