"""Hostile-token battery against the running function app (real host, real devstack).

Each case states what the attacker sends and what the API must answer: the status, the
``error`` in ``WWW-Authenticate`` (None: no error, as RFC 6750 §3.1 wants for a missing
credential), a body that does not echo the token, and never a 5xx. Sources: RFC 8725 (JWT BCP),
RFC 6750, RFC 7515, the OAuth 2.0 Security BCP and pyjwt's own test suite.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack.client import session

FOREIGN = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FOREIGN_EC = ec.generate_private_key(ec.SECP256R1())
GRAPH = "https://graph.microsoft.com/User.Read"
OTHER_TENANT = "0e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b"
http_ = requests.Session()
http_.trust_env = False


def b64(data: bytes | str) -> str:
    return base64.urlsafe_b64encode(data.encode() if isinstance(data, str) else data).rstrip(b"=").decode()


def segments(header: Any, payload: Any, signature: str = "c2ln") -> str:
    enc = (lambda v: b64(v if isinstance(v, str) else json.dumps(v)))
    return f"{enc(header)}.{enc(payload)}.{signature}"


class Kit:
    """Everything a case needs: real tokens from the devstack, its keys, and the API's address."""

    def __init__(self, devstack: dict[str, Any], admin: Any, host: dict[str, Any]):
        self.devstack, self.admin, self.host = devstack, admin, host
        self.good = admin.mint(user="alice")
        self.claims = jwt.decode(self.good, options={"verify_signature": False})
        self.header = jwt.get_unverified_header(self.good)
        keys = session(devstack["ca_bundle"]).get(devstack["endpoints"]["jwks"], timeout=10).json()["keys"]
        self.jwks = keys
        self.other_kid = next(k["kid"] for k in keys if k["kid"] != self.header["kid"])
        self.public_pem = jwt.algorithms.RSAAlgorithm.from_jwk(
            next(k for k in keys if k["kid"] == self.header["kid"])).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def mint(self, **kw: Any) -> str:
        return self.admin.mint(**kw)

    def forge(self, key: Any = FOREIGN, alg: str = "RS256", headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        body = {**self.claims, **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg,
                          headers={"kid": self.header["kid"], **(headers or {})})

    def resign(self, header: dict[str, Any], payload: dict[str, Any]) -> str:
        """Sign arbitrary header/payload JSON with the devstack's real key (via the admin mint)."""
        return self.mint(user="alice", claims=payload, headers=header)


Case = tuple[str, Callable[[Kit], dict[str, Any]], int, str | None]


def bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}, "token": token}


def raw(value: str, token: str | None = None) -> dict[str, Any]:
    return {"headers": {"Authorization": value}, "token": token}


now = lambda: int(time.time())  # noqa: E731

CASES: list[Case] = [
    # --- the Authorization header (RFC 6750) ---
    ("no-authorization-header", lambda k: {"headers": {}}, 401, None),
    ("empty-header", lambda k: raw(""), 401, None),
    ("bearer-without-token", lambda k: raw("Bearer"), 401, "invalid_request"),
    ("bearer-space-only", lambda k: raw("Bearer   "), 401, "invalid_request"),
    ("basic-scheme", lambda k: raw("Basic YWxpY2U6c2VjcmV0"), 401, "invalid_request"),
    ("digest-scheme", lambda k: raw('Digest username="alice"'), 401, "invalid_request"),
    ("token-without-scheme", lambda k: raw(k.good, k.good), 401, "invalid_request"),
    ("bearer-twice-in-one-header", lambda k: raw(f"Bearer {k.good} Bearer {k.good}", k.good), 401, "invalid_request"),
    ("two-credentials-comma", lambda k: raw(f"Bearer {k.good}, Bearer {k.good}", k.good), 401, "invalid_request"),
    ("bearer-then-basic", lambda k: raw(f"Bearer {k.good}, Basic eA==", k.good), 401, "invalid_request"),
    ("whitespace-inside-token", lambda k: raw(f"Bearer {k.good[:20]} {k.good[20:]}", k.good), 401, "invalid_request"),
    ("unicode-in-token", lambda k: raw("Bearer " + k.good[:-4] + "ü" + k.good[-3:], k.good), 401, "invalid_request"),
    # the HTTP server itself refuses control characters in a header (as Kestrel does): 400, never the app
    ("control-char-in-token", lambda k: raw("Bearer " + k.good[:30] + "\x01" + k.good[31:], k.good), 400, None),
    ("oversized-token", lambda k: bearer(k.good + "A" * 17_000), 401, "invalid_request"),
    ("token-in-query-string-only", lambda k: {"headers": {}, "query": {"access_token": k.good}, "token": k.good},
     401, None),
    ("token-in-code-param-only", lambda k: {"headers": {}, "query": {"code": k.good}, "token": k.good}, 401, None),
    # --- compact serialization (RFC 7515 §7.1) ---
    ("truncated-signature", lambda k: bearer(k.good[:-10]), 401, "invalid_token"),
    ("truncated-mid-payload", lambda k: bearer(k.good[: len(k.good) // 2]), 401, "invalid_token"),
    ("extra-segment", lambda k: bearer(k.good + ".eyJ9"), 401, "invalid_token"),
    ("five-segments-jwe-shape", lambda k: bearer("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"), 401, "invalid_token"),
    ("two-segments", lambda k: bearer(".".join(k.good.split(".")[:2])), 401, "invalid_token"),
    ("empty-signature", lambda k: bearer(".".join(k.good.split(".")[:2]) + "."), 401, "invalid_token"),
    ("non-base64-header", lambda k: bearer("!!!!." + k.good.split(".", 1)[1]), 401, "invalid_request"),
    ("non-json-header", lambda k: bearer(b64("not json") + "." + k.good.split(".", 1)[1]), 401, "invalid_token"),
    ("header-json-array", lambda k: bearer(segments(["RS256"], k.claims)), 401, "invalid_token"),
    ("payload-json-array", lambda k: bearer(segments(k.header, "[1,2]")), 401, "invalid_token"),
    ("payload-not-json", lambda k: bearer(segments(k.header, "claims")), 401, "invalid_token"),
    ("deeply-nested-header", lambda k: bearer(segments("[" * 5000 + "]" * 5000, k.claims)), 401, "invalid_token"),
    # --- algorithm confusion (RFC 8725 §2.1, §3.1) ---
    ("alg-none", lambda k: bearer(segments({"alg": "none", "typ": "JWT", "kid": k.header["kid"]}, k.claims, "")[:-1]
                                  + "."), 401, "invalid_token"),
    ("alg-none-with-signature", lambda k: bearer(segments({"alg": "none", "kid": k.header["kid"]}, k.claims)), 401,
     "invalid_token"),
    ("alg-None-capitalised", lambda k: bearer(segments({"alg": "None", "kid": k.header["kid"]}, k.claims)), 401,
     "invalid_token"),
    ("alg-NONE", lambda k: bearer(segments({"alg": "NONE", "kid": k.header["kid"]}, k.claims)), 401, "invalid_token"),
    ("hs256-with-public-key-pem", lambda k: bearer(jwt.encode(k.claims, "u" * 32, algorithm="HS256",
                                                              headers={"kid": k.header["kid"]}).split(".")[0]
                                                   + "." + _hs256(k, k.public_pem)), 401, "invalid_token"),
    ("hs256-with-modulus", lambda k: bearer(jwt.encode(k.claims, "u" * 32, algorithm="HS256",
                                                       headers={"kid": k.header["kid"]}).split(".")[0] + "."
                                            + _hs256(k, k.jwks[0]["n"].encode())), 401, "invalid_token"),
    ("rs384-foreign", lambda k: bearer(k.forge(alg="RS384")), 401, "invalid_token"),
    ("rs512-foreign", lambda k: bearer(k.forge(alg="RS512")), 401, "invalid_token"),
    ("ps256-foreign", lambda k: bearer(k.forge(alg="PS256")), 401, "invalid_token"),
    ("es256-foreign", lambda k: bearer(k.forge(FOREIGN_EC, alg="ES256")), 401, "invalid_token"),
    ("alg-header-lies-rs256-signed-ps256", lambda k: bearer(_swap_alg(k.forge(alg="PS256"), "RS256")), 401,
     "invalid_token"),
    # --- keys (RFC 8725 §3.10; jku/x5u/jwk are never followed) ---
    ("rs256-foreign-key-real-kid", lambda k: bearer(k.forge()), 401, "invalid_token"),
    ("kid-of-the-other-published-key", lambda k: bearer(k.resign({"kid": k.other_kid, "x5t": k.other_kid}, {})),
     401, "invalid_token"),
    ("kid-missing", lambda k: bearer(jwt.encode(k.claims, FOREIGN, algorithm="RS256")), 401, "invalid_token"),
    ("kid-missing-real-key", lambda k: bearer(k.resign({"kid": None}, {})), 401, "invalid_token"),
    ("kid-empty", lambda k: bearer(k.forge(headers={"kid": ""})), 401, "invalid_token"),
    ("kid-integer", lambda k: bearer(segments({"alg": "RS256", "kid": 12345}, k.claims, k.good.split(".")[2])), 401,
     "invalid_token"),
    ("kid-list", lambda k: bearer(segments({"alg": "RS256", "kid": [k.header["kid"]]}, k.claims,
                                           k.good.split(".")[2])), 401, "invalid_token"),
    ("kid-oversized", lambda k: bearer(k.forge(headers={"kid": "k" * 5000})), 401, "invalid_token"),
    ("kid-path-traversal", lambda k: bearer(k.forge(headers={"kid": "../../../../etc/passwd"})), 401, "invalid_token"),
    ("kid-sql-ish", lambda k: bearer(k.forge(headers={"kid": "' OR '1'='1"})), 401, "invalid_token"),
    ("duplicate-kid-member", lambda k: bearer(_duplicate_kid(k)), 401, "invalid_token"),
    ("jku-injection", lambda k: bearer(k.forge(headers={"jku": "https://attacker.example/keys"})), 401,
     "invalid_token"),
    ("x5u-injection", lambda k: bearer(k.forge(headers={"x5u": "https://attacker.example/cert.pem"})), 401,
     "invalid_token"),
    ("embedded-jwk", lambda k: bearer(k.forge(headers={"jwk": json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(FOREIGN.public_key()))})), 401, "invalid_token"),
    ("embedded-x5c", lambda k: bearer(k.forge(headers={"x5c": ["MIIBfake"]})), 401, "invalid_token"),
    ("crit-unknown-extension", lambda k: bearer(k.resign({"crit": ["exp-ext"], "exp-ext": 1}, {})), 401,
     "invalid_token"),
    ("b64-false-unencoded-payload", lambda k: bearer(k.resign({"b64": False, "crit": ["b64"]}, {})), 401,
     "invalid_token"),
    # --- lifetime ---
    ("expired", lambda k: bearer(k.mint(user="alice", lifetime=-600)), 401, "invalid_token"),
    ("exp-missing", lambda k: bearer(k.mint(user="alice", remove=["exp"])), 401, "invalid_token"),
    ("exp-string", lambda k: bearer(k.mint(user="alice", claims={"exp": "tomorrow"})), 401, "invalid_token"),
    ("exp-far-future", lambda k: bearer(k.mint(user="alice", claims={"exp": now() + 365 * 86400})), 401,
     "invalid_token"),
    ("nbf-future", lambda k: bearer(k.mint(user="alice", claims={"nbf": now() + 3600})), 401, "invalid_token"),
    ("iat-far-future", lambda k: bearer(k.mint(user="alice", claims={"iat": now() + 86400})), 401, "invalid_token"),
    ("iat-missing", lambda k: bearer(k.mint(user="alice", remove=["iat"])), 401, "invalid_token"),
    # --- issuer and tenant ---
    ("iss-wrong", lambda k: bearer(k.mint(user="alice", claims={"iss": "https://evil.example/v2.0"})), 401,
     "invalid_token"),
    ("iss-missing", lambda k: bearer(k.mint(user="alice", remove=["iss"])), 401, "invalid_token"),
    ("iss-other-tenant", lambda k: bearer(k.mint(user="alice", claims={
        "iss": k.claims["iss"].replace(k.claims["tid"], OTHER_TENANT), "tid": OTHER_TENANT})), 401, "invalid_token"),
    ("tid-not-matching-iss", lambda k: bearer(k.mint(user="alice", claims={"tid": OTHER_TENANT})), 401,
     "invalid_token"),
    ("tid-missing", lambda k: bearer(k.mint(user="alice", remove=["tid"])), 401, "invalid_token"),
    ("iss-template-literal", lambda k: bearer(k.mint(user="alice", claims={
        "iss": k.devstack["instance"] + "/{tenantid}/v2.0"})), 401, "invalid_token"),
    ("v1-token-when-v2-only", lambda k: bearer(k.mint(user="alice", claims={
        "ver": "1.0", "iss": f"https://sts.windows.net/{k.claims['tid']}/", "aud": "api://middletier"})), 401,
     "invalid_token"),
    ("v2-claims-with-v1-issuer", lambda k: bearer(k.mint(user="alice", claims={
        "iss": f"https://sts.windows.net/{k.claims['tid']}/"})), 401, "invalid_token"),
    ("ver-missing", lambda k: bearer(k.mint(user="alice", remove=["ver"])), 401, "invalid_token"),
    # --- audience ---
    ("aud-other-app", lambda k: bearer(k.mint(user="alice", claims={"aud": k.devstack["apps"]["spa-client"]["client_id"]})),
     401, "invalid_token"),
    ("aud-missing", lambda k: bearer(k.mint(user="alice", remove=["aud"])), 401, "invalid_token"),
    ("aud-list-with-ours", lambda k: bearer(k.mint(user="alice", claims={"aud": [k.claims["aud"], "api://other"]})),
     401, "invalid_token"),
    ("aud-list-without-ours", lambda k: bearer(k.mint(user="alice", claims={"aud": ["api://other"]})), 401,
     "invalid_token"),
    ("aud-case-changed", lambda k: bearer(k.mint(user="alice", claims={"aud": k.claims["aud"].upper()})), 401,
     "invalid_token"),
    ("downstream-token-replayed", lambda k: bearer(k.mint(user="alice", scope=GRAPH)), 401, "invalid_token"),
    ("token-for-another-apps-scope", lambda k: bearer(k.mint(user="alice", scope="https://vault.azure.net/user_impersonation")),
     401, "invalid_token"),
    ("id-token-as-access-token", lambda k: bearer(k.mint(user="alice", claims={
        "aud": k.devstack["apps"]["desktop-client"]["client_id"], "nonce": "n"}, remove=["scp"])), 401,
     "invalid_token"),
    # --- subject, scopes and roles ---
    ("oid-missing", lambda k: bearer(k.mint(user="alice", remove=["oid"])), 401, "invalid_token"),
    ("scp-and-roles-missing", lambda k: bearer(k.mint(user="alice", remove=["scp"])), 403, "insufficient_scope"),
    ("scp-other", lambda k: bearer(k.mint(user="alice", claims={"scp": "User.Read"})), 403, "insufficient_scope"),
    ("scp-superstring", lambda k: bearer(k.mint(user="alice", claims={"scp": "access_as_user_admin"})), 403,
     "insufficient_scope"),
    ("scp-case-changed", lambda k: bearer(k.mint(user="alice", claims={"scp": "ACCESS_AS_USER"})), 403,
     "insufficient_scope"),
    ("scp-as-list", lambda k: bearer(k.mint(user="alice", claims={"scp": ["access_as_user"]})), 403,
     "insufficient_scope"),
    ("scope-in-roles-of-user-token", lambda k: bearer(k.mint(user="alice", claims={"roles": ["access_as_user"]},
                                                             remove=["scp"])), 403, "insufficient_scope"),
    ("app-token-with-role", lambda k: bearer(k.mint(client="daemon-client", scope="api://middletier/.default",
                                                    roles=["MiddleTier.Admin"])), 403, "insufficient_scope"),
    ("app-token-without-role", lambda k: bearer(k.mint(client="daemon-client", scope="api://middletier/.default")),
     403, "insufficient_scope"),
    # app-only (oid == sub, or idtyp app) and delegated (scp) at once: Entra never issues it (scp is only in
    # user tokens), so the token is refused as invalid, not merely short of a scope
    ("app-token-claiming-scp", lambda k: bearer(k.mint(client="daemon-client", scope="api://middletier/.default",
                                                       claims={"scp": "access_as_user"})), 401, "invalid_token"),
    ("app-token-claiming-scp-with-idtyp", lambda k: bearer(k.mint(
        client="daemon-client", scope="api://middletier/.default",
        claims={"scp": "access_as_user", "idtyp": "app"})), 401, "invalid_token"),
    # --- accepted variants (boundaries that must NOT be refused) ---
    ("lowercase-bearer-accepted", lambda k: raw(f"bearer {k.good}", k.good), 200, None),
    ("uppercase-bearer-accepted", lambda k: raw(f"BEARER {k.good}", k.good), 200, None),
    # within our 5-minute skew the token validates, but Entra (no skew for OBO assertions) refuses it: still 401
    ("expired-within-skew-refused-by-entra", lambda k: bearer(k.mint(user="alice", lifetime=-120)), 401,
     "invalid_token"),
    ("app-id-uri-audience-accepted", lambda k: bearer(k.mint(user="alice", claims={"aud": "api://middletier"})), 200,
     None),
]


def _hs256(kit: Kit, secret: bytes) -> str:
    """An HS256 signature over the real header+payload, keyed with public material (alg confusion)."""
    import hashlib
    import hmac
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kit.header["kid"]}))
    payload = kit.good.split(".")[1]
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return payload + "." + b64(sig)


def _swap_alg(token: str, alg: str) -> str:
    header = jwt.get_unverified_header(token)
    header["alg"] = alg
    return b64(json.dumps(header)) + "." + token.split(".", 1)[1]


def _duplicate_kid(kit: Kit) -> str:
    """Header text with two kid members; signed with a foreign key (the last kid is the real one)."""
    header = '{"alg":"RS256","kid":"attacker","kid":"%s"}' % kit.header["kid"]
    signing_input = f"{b64(header)}.{kit.good.split('.')[1]}".encode()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    sig = FOREIGN.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + b64(sig)


@pytest.fixture(scope="module")
def kit(devstack: dict[str, Any], function_host: dict[str, Any]) -> Kit:
    from tests.conftest import Admin
    return Kit(devstack, Admin(devstack), function_host)


JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


@pytest.mark.parametrize("name,build,status,error", CASES, ids=[c[0] for c in CASES])
def test_hostile_token(kit: Kit, name: str, build: Callable[[Kit], dict[str, Any]], status: int,
                       error: str | None) -> None:
    spec = build(kit)
    r = http_.get(kit.host["url"] + "/api/me", headers=spec.get("headers", {}), params=spec.get("query"), timeout=30)
    assert r.status_code < 500, r.text
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:200]}"
    if status == 200:
        assert r.json()["id"] == kit.devstack["users"]["alice"]["oid"]
        return
    if status == 400:  # refused by the HTTP layer before the function ran
        assert "WWW-Authenticate" not in r.headers
        return
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm=""')
    assert dict(re.findall(r'(\w+)="([^"]*)"', challenge)).get("error") == error
    assert r.headers["Content-Type"].startswith("application/problem+json")
    token = spec.get("token")
    if token:
        assert token[:40] not in r.text and token[:40] not in challenge
    assert not JWT_LIKE.search(r.text) and not JWT_LIKE.search(challenge)


def test_battery_size() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_two_authorization_headers(kit: Kit) -> None:
    url = urlsplit(kit.host["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("GET", "/api/me")
    conn.putheader("Authorization", f"Bearer {kit.good}")
    conn.putheader("Authorization", f"Bearer {kit.good}")
    conn.endheaders()
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 401 and 'error="invalid_request"' in r.getheader("WWW-Authenticate", "")
    assert kit.good[:40] not in body


def test_garbage_kids_do_not_cause_a_jwks_fetch_storm(kit: Kit) -> None:
    before = kit.admin.stats()["entra.jwks"]["total"]
    for i in range(20):
        http_.get(kit.host["url"] + "/api/me", headers={"Authorization": "Bearer " + kit.forge(headers={"kid": f"x{i}"})},
                  timeout=30)
    assert kit.admin.stats()["entra.jwks"]["total"] - before <= 1
