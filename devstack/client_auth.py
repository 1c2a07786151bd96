"""Client authentication at the token endpoint: secret, certificate assertion, or none.

Accepts every shape the SDKs send (docs/PROTOCOL.md, "Client authentication"): secret in the body or HTTP Basic;
assertions signed RS256 or PS256, identified by ``x5t`` or ``x5t#S256``, with integer or
float times and padded or unpadded base64url. Rejects what Entra rejects, with its codes.
"""
from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from collections import OrderedDict
from typing import Any, Mapping

import jwt

from . import clouds
from .aadsts import AadError
from .directory import App, Tenant
from .issuer import is_app_only
from .signing import KeySet, SigningKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PUBLIC, SECRET, CERTIFICATE = "0", "1", "2"
_JTI_MEMORY = 50_000


class JtiCache:
    """Assertion ids seen within their lifetime.

    MSAL (Python, .NET) re-sends the same signed assertion for up to ~9 minutes, and Entra accepts
    that, so re-presenting an identical assertion is fine. What is refused is a *different*
    assertion reusing a ``jti`` that is still live: that is a forged or tampered one.
    """

    def __init__(self, limit: int = _JTI_MEMORY):
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._limit = limit

    def add(self, jti: str, exp: float, assertion: str) -> bool:
        now = time.time()
        while self._seen and (len(self._seen) >= self._limit or next(iter(self._seen.values()))[0] < now):
            self._seen.popitem(last=False)
        digest = hashlib.sha256(assertion.encode()).hexdigest()
        if jti in self._seen:
            return self._seen[jti][1] == digest
        self._seen[jti] = (exp, digest)
        return True


def _basic(headers: Mapping[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
    except ValueError:
        return None
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def authenticate(tenant: Tenant, form: Mapping[str, str], headers: Mapping[str, str],
                 token_urls: set[str], jtis: JtiCache, keys: KeySet, issuer: str) -> tuple[App, str]:
    """Return the calling app and how it authenticated ('0' public, '1' secret, '2' cert)."""
    basic = _basic(headers)
    client_id = form.get("client_id") or (basic[0] if basic else "")
    if not client_id:
        raise AadError(900144, {"param": "client_id"})
    app = tenant.app_by_client_id(client_id)
    if app is None:
        raise AadError(700016, {"client_id": client_id, "tenant": tenant.id})
    secret = form.get("client_secret") or (basic[1] if basic else None)
    assertion = form.get("client_assertion")
    if app.public or not app.confidential:
        if secret or assertion:
            raise AadError(700025)
        return app, PUBLIC
    if secret:
        return app, _check_secret(app, secret)
    if assertion:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AadError(900144, {"param": "client_assertion_type"})
        return app, _check_assertion(tenant, app, assertion, token_urls, jtis, keys, issuer)
    raise AadError(7000218)


def _check_secret(app: App, value: str) -> str:
    secret = app.secret_matches(value)
    if secret is None:
        raise AadError(7000215, {"client_id": app.client_id})
    if secret.expires is not None and secret.expires < time.time():
        raise AadError(7000222, {"client_id": app.client_id})
    return SECRET


def unverified_header(assertion: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise AadError(50027) from None


def signed_claims(assertion: str, key: Any, algorithms: list[str], code: int) -> dict[str, Any]:
    """An assertion's claims once its signature holds (AADSTS ``code`` if not); the rest is the caller's."""
    try:
        return jwt.decode(assertion, key, algorithms=algorithms, options={
            "verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.PyJWTError:
        raise AadError(code, {"reason": "The provided signature value did not match the "
                                        "expected signature value."}) from None


def _check_assertion(tenant: Tenant, app: App, assertion: str, token_urls: set[str], jtis: JtiCache,
                     keys: KeySet, issuer: str) -> str:
    header = unverified_header(assertion)
    if (key := keys.by_kid(str(header.get("kid")))) is not None:  # signed by Entra itself: a federated credential
        return _check_federated(tenant, app, assertion, key, issuer)
    thumb = header.get("x5t#S256") or header.get("x5t")
    # MSAL Python pads its base64url thumbprints ('='); Entra accepts both forms.
    cert = app.cert_thumbprints.get(thumb.rstrip("=")) if isinstance(thumb, str) else None
    if cert is None:
        raise AadError(700027, {"reason": "The key was not found., Thumbprint of key used by "
                                          f"client: '{thumb}'"})
    if header.get("alg") not in ("RS256", "PS256"):
        raise AadError(700027, {"reason": "The signature algorithm is not supported."})
    claims = signed_claims(assertion, cert.public_key(), ["RS256", "PS256"], 700027)
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or exp < now or (isinstance(nbf, (int, float)) and nbf > now + 300):
        raise AadError(700024)
    if claims.get("aud") not in token_urls:
        raise AadError(700023)
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        raise AadError(700027, {"reason": "The issuer and subject must be the client id."})
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jtis.add(jti, exp, assertion):
        raise AadError(700027, {"reason": "The assertion identifier (jti) was missing or reused by another assertion."})
    return CERTIFICATE


def _check_federated(tenant: Tenant, app: App, assertion: str, key: SigningKey, issuer: str) -> str:
    """A federated identity credential: a managed identity's token for api://AzureADTokenExchange
    (or the national cloud's audience)."""
    audience = clouds.active().token_exchange
    try:
        claims = jwt.decode(assertion, key.private_key.public_key(), algorithms=["RS256"],
                            audience=audience, issuer=issuer)
    except jwt.ExpiredSignatureError:
        raise AadError(700024) from None
    except jwt.PyJWTError:
        raise AadError(70021, {"iss": "(unverified)", "sub": "(unverified)", "aud": "(unverified)"}) from None
    if not is_app_only(claims):  # idtyp is an optional claim: without it, no scp and oid == sub
        raise AadError(700229)
    subjects = {mi.principal_id for name in app.federated_identities if (mi := tenant.identity(name=name))}
    if claims.get("sub") not in subjects:
        raise AadError(70021, {"iss": claims.get("iss"), "sub": claims.get("sub"), "aud": audience})
    return CERTIFICATE
