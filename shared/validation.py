"""Validate the caller's access token and decide whether it may call this function.

Order matters: structure first (three canonical base64url segments of JSON objects, no duplicate members,
no ``crit``/``b64`` extensions we don't implement), then the signature (RS256 only, OpenSSL through
``cryptography``, key by ``kid`` from the tenant's JWKS as pyjwt's ``PyJWK`` loaded it — ``jku``/``x5u``/
``jwk``/``x5c`` headers are never followed), then lifetime, audience (a single string), issuer, tenant and
token version, and only then, in ``authorization.py``, what the function requires (``scp`` or ``roles``).
Every failure here is an ``InvalidToken`` (401 ``invalid_token``) typed by the check that refused the token;
hostile input cannot raise anything else.

A token is parsed once (``Parsed``), its signature verified over the bytes it was parsed from, and the registered
claims checked in one pass in pyjwt's order (pyjwt's ``decode`` re-parses the token, checks its alphabet a
character at a time, and was 3/4 of a first sight's cost: bench/validation.py).
"""
from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import re
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from cachetools import TLRUCache
from cryptography.exceptions import InvalidSignature as BadSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .config import AzureAdSettings
from .errors import (AlgorithmNotAccepted, ExpiredToken, ImmatureToken, ImplausibleLifetime, InvalidAudience,
                     InvalidIssuer, InvalidSignature, InvalidSubject, InvalidTenant, InvalidToken, MalformedToken,
                     MissingClaim, UnknownSigningKey, VersionNotAccepted)
from .memory import VALIDATOR_OVERHEAD, held_bytes, json_held_bytes
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
    members = dict(pairs)
    if len(members) != len(pairs):  # a name given twice: the dict kept one of them
        raise _DuplicateMember("duplicate member")
    return members


# NumericDate (RFC 7519 §2): a JSON number. Bounded so that arithmetic on it can never overflow.
_TIME_CLAIMS = ("exp", "nbf", "iat")
_MAX_NUMERIC_DATE = 2 ** 53


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_SPARE_BITS = {2: 0b1111, 3: 0b11}  # length % 4 -> the last character's bits that encode no data


def _base64url(part: str) -> bytes:
    """RFC 7515 §2 base64url: URL-safe alphabet only, no padding, no non-zero trailing bits — so one token has
    one spelling (``<token>==`` or ``+``/``/`` variants are refused, never a second cache partition)."""
    rest = len(part) % 4
    if not part.isascii() or "+" in part or "/" in part or "=" in part or rest == 1 \
            or (rest and _ALPHABET.find(part[-1]) & _SPARE_BITS[rest]):
        raise MalformedToken("The token is malformed.")
    try:  # strict: any character outside the alphabet (whitespace included) is refused, not skipped
        return binascii.a2b_base64(part.encode().translate(_TO_STANDARD) + b"=" * (-rest % 4), strict_mode=True)
    except binascii.Error:
        raise MalformedToken("The token is malformed.") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


# One decoder for every token (as json.loads shares one): UTF-8 only (RFC 7515 §5.2), no BOM, no duplicate
# members, no NaN/Infinity.
_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = _JSON.decode(raw.decode())  # UTF-8
    except _DuplicateMember:  # two members of one name: parsers disagree on which one counts
        raise MalformedToken("The token is malformed: a JSON member is duplicated.") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedToken("The token is malformed.") from None
    if not isinstance(value, dict):
        raise MalformedToken("The token is malformed.")
    return value


class Parsed(NamedTuple):
    """A token taken apart once: the JOSE header, the unverified payload, and the bytes the signature covers."""
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    payload_json: bytes  # the payload's JSON text, which sizes its claims for the memo (memory.json_held_bytes)


def _parts(token: str) -> Parsed:
    """The token exactly as we accept it (the module's docstring), parsed once for every later check."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise MalformedToken("The token is malformed.")
    payload_json = _base64url(parts[1])  # each _base64url outside _json_object: its refusals aren't JSON errors
    header, payload = _json_object(_base64url(parts[0])), _json_object(payload_json)
    signature = _base64url(parts[2])
    if "crit" in header or "b64" in header:
        raise MalformedToken("The token uses header extensions this API does not accept.")
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        if name in payload and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE):
            raise MalformedToken(f"The token's {name} claim is not a number.", claim=name)
    # the segments matched the base64url alphabet, so the token is ASCII
    return Parsed(header, payload, token[:len(parts[0]) + len(parts[1]) + 1].encode(), signature, payload_json)


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


_PKCS1V15, _SHA256 = padding.PKCS1v15(), hashes.SHA256()  # RS256: stateless, shared by every verify
_REQUIRED = ("exp", "iat", "iss", "aud", "tid")


def _verify_signature(key: Any, parsed: Parsed) -> None:
    """RS256 (RFC 7518 §3.3) with OpenSSL through ``cryptography``; a key of any other type never verifies."""
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidSignature("The token's signature is invalid.")
    try:
        key.verify(parsed.signature, parsed.signing_input, _PKCS1V15, _SHA256)
    except BadSignature:
        raise InvalidSignature("The token's signature is invalid.") from None


def _check_registered_claims(claims: dict[str, Any], settings: AzureAdSettings, now: float) -> None:
    """RFC 7519's checks, in one pass and pyjwt's order (its ``_validate_claims``, whose answers the hostile-token
    battery pins): required claims, ``iat`` and ``nbf`` not ahead and ``exp`` not past (NumericDates truncated
    to whole seconds, skew allowed), the audience ours, ``sub`` and ``jti`` strings when present."""
    for name in _REQUIRED:
        if claims.get(name) is None:
            raise MissingClaim(f"The token is invalid: it lacks the required {name} claim.", claim=name)
    leeway = settings.clock_skew_seconds
    if int(claims["iat"]) > now + leeway or ("nbf" in claims and int(claims["nbf"]) > now + leeway):
        raise ImmatureToken("The token is not valid yet.")
    if int(claims["exp"]) <= now - leeway:
        raise ExpiredToken("The token has expired.")
    aud = claims["aud"]
    if not aud:
        raise MissingClaim("The token is invalid: it lacks the required aud claim.", claim="aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences) \
            or not any(a in settings.audiences for a in audiences):
        raise InvalidAudience("The token was not issued for this API.")
    if not isinstance(aud, str):
        raise InvalidAudience("The token must have exactly one audience.")
    if not isinstance(claims.get("sub", ""), str) or not isinstance(claims.get("jti", ""), str):
        raise InvalidToken("The token is invalid.")


def validate(token: str, keys: SigningKeys, settings: AzureAdSettings) -> Caller:
    """The caller named by ``token`` once every check passed; an ``InvalidToken`` naming the first that failed."""
    return _validate(_parts(token), keys, settings, token_hash(token))


def token_hash(token: str) -> str:
    """SHA-256 of the token, hex: the key of its cache partition (never the token itself outside the process)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _validate(parsed: Parsed, keys: SigningKeys, settings: AzureAdSettings, digest: str) -> Caller:
    header, claims = parsed.header, parsed.payload
    if header.get("alg") not in ALGORITHMS:
        raise AlgorithmNotAccepted("The token's signing algorithm is not accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise UnknownSigningKey("The token has no usable key identifier.")
    key = keys.get(kid, refetch=False)
    if key is None:  # unknown: refetched only for a token that could be valid (signing_keys.py)
        key = keys.get(kid, refetch=_could_be_valid(kid, claims, settings))
    if key is None:
        raise UnknownSigningKey("The token was not signed by a key of this tenant.")
    _verify_signature(key.key, parsed)
    now = time.time()
    _check_registered_claims(claims, settings, now)
    if claims["exp"] - now > MAX_LIFETIME_SECONDS:
        raise ImplausibleLifetime("The token's lifetime is implausibly long.")
    tid = claims["tid"]
    if not isinstance(tid, str) or not tid:
        raise InvalidTenant("The token has no tenant.")
    if settings.multi_tenant:
        # tenant ids are GUIDs: compared case-insensitively, as the single-tenant check below does
        if settings.allowed_tenants and tid.lower() not in {t.lower() for t in settings.allowed_tenants}:
            raise InvalidTenant("The token's tenant is not allowed.")
    elif tid.lower() != settings.tenant_id.lower():
        raise InvalidTenant("The token was issued by another tenant.")
    if not isinstance(claims["iss"], str):
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
    caller = _caller(claims, tid, digest)
    if not caller.oid:
        raise InvalidSubject("The token has no subject object id.")
    return caller


@dataclass(frozen=True)
class _Validated:
    caller: Caller
    kid: str
    not_before: int  # whole seconds, as the full path compares them
    expires: int
    size: int  # bytes held, when the memo has a byte budget


class TokenValidator:
    """``validate`` with a memo of tokens already proven good, keyed by the token itself; bounded.

    Validation is a pure function of the token's bytes, the tenant's keys and the clock, so a repeat
    is answered from the memo after re-checking what can change: the time window (with skew) and that
    the signing key is still published. Entries leave at the token's expiry; failures are never memoized.
    The key is the whole token, compared byte for byte on a hit (a digest would cost a warm request a SHA-256
    of the token, ~40k instructions: bench/inprocess.py); its SHA-256, the cache partition's key, is computed
    once, at first sight, and kept in the ``Caller``. The memo's byte budget counts the token it keeps."""

    def __init__(self, keys: SigningKeys, settings: AzureAdSettings, *, max_entries: int = 10_000,
                 max_bytes: int | None = None, clock: Callable[[], float] = time.time):
        self.keys, self.settings, self._clock = keys, settings, clock
        skew = settings.clock_skew_seconds
        self._max_entries = max_entries  # and, given max_bytes, the bytes its entries hold (shared.memory)
        self._memo: TLRUCache[str, _Validated] = TLRUCache(
            maxsize=max_bytes or sys.maxsize, ttu=lambda _k, v, _now: v.expires + skew, timer=clock,
            getsizeof=lambda v: v.size)
        self._lock = threading.Lock()

    def validate(self, token: str) -> Caller:
        with self._lock:
            hit = self._memo.get(token)
        if hit is not None:
            now, skew = self._clock(), self.settings.clock_skew_seconds
            # the full path's window (whole seconds, as pyjwt truncates): int(nbf) - skew <= now < int(exp) + skew
            if hit.not_before - skew <= now < hit.expires + skew and self.keys.published(hit.kid):
                return hit.caller
        parsed = _parts(token)
        caller = _validate(parsed, self.keys, self.settings, token_hash(token))
        nbf = caller.claims.get("nbf", caller.claims["iat"])  # a number: _parts refuses any other NumericDate
        size = VALIDATOR_OVERHEAD + held_bytes(token) + json_held_bytes(parsed.payload_json, caller.claims)
        entry = _Validated(caller, parsed.header["kid"], int(nbf), int(caller.claims["exp"]), size)
        with self._lock, contextlib.suppress(ValueError):  # ValueError: larger than the whole budget
            self._memo[token] = entry
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
    if scp.isascii():  # the common case, one C call: ASCII's only non-printables are its controls (and \t\n...)
        if not scp.isprintable():
            raise MalformedToken("The token's scp claim is malformed.")
    elif any(ch.isspace() or unicodedata.category(ch).startswith("C") for name in names for ch in name):
        raise MalformedToken("The token's scp claim is malformed.")
    return frozenset(names)


def _caller(claims: dict[str, Any], tid: str, digest: str) -> Caller:
    scp, roles, oid = claims.get("scp"), claims.get("roles"), claims.get("oid")
    return Caller(oid=oid if isinstance(oid, str) else "", tid=tid,
                  client_id=str(claims.get("azp") or claims.get("appid") or ""),
                  scopes=_scopes(scp) if isinstance(scp, str) else frozenset(),
                  roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
                  is_app=_is_app_only(claims), claims=claims, token_hash=digest)
