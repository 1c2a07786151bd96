"""The fakes the unit, security and fuzz tests (and bench/) share, in one place: the tenant, its
keys, the app's settings, a token minter, and the in-memory OpenID/JWKS stand-in.

Nothing here starts a process or opens a socket: ``FakeIdP`` plays the ``requests.Session`` that
``shared.signing_keys.SigningKeys`` reads the OpenID metadata and the JWKS through."""
from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import load_settings
from shared.signing_keys import SigningKeys
from shared.throttle import default_acquisition_limit
from shared.tokens import Tokens

TENANT = "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f"
CLIENT = "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b"
INSTANCE = "https://login.example.test/"
ISSUER = f"https://login.example.test/{TENANT}/v2.0"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

# claim sets: a v1 token, an app-only caller (oid == sub, no scp), a user (pairwise sub)
V1 = {"iss": f"https://sts.windows.net/{TENANT}/", "ver": "1.0", "aud": "api://middletier", "azp": None,
      "appid": "client-1"}
APP = {"scp": None, "oid": "sp-1", "sub": "sp-1"}  # a service principal: oid == sub, no scp
USER = {"sub": "pairwise-sub-of-user-1"}            # a user's sub is pairwise, never its oid


def env(**extra: str) -> dict[str, str]:
    """The app settings of a single-tenant middle tier (as environment variables), with ``extra``."""
    base = {"AzureAd__Instance": INSTANCE, "AzureAd__TenantId": TENANT, "AzureAd__ClientId": CLIENT,
            "AzureAd__Audience": "api://middletier", "AzureAd__Scopes": "access_as_user",
            "AzureAd__ClientSecret": "s3cret-value"}
    base.update(extra)
    return base


def b64(data: bytes | str) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data.encode() if isinstance(data, str) else data).rstrip(b"=").decode()


def kid(key: rsa.RSAPrivateKey) -> str:
    return str(key.public_key().public_numbers().n)[:16]


def token(key: rsa.RSAPrivateKey = KEY, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """A good v2 access token for CLIENT from TENANT, signed by ``key`` under KEY's kid; a claim given
    as None is left out."""
    now = int(time.time())
    body = {"aud": CLIENT, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 3600, "tid": TENANT,
            "oid": "user-1", "azp": "client-1", "scp": "access_as_user", "ver": "2.0"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": kid(KEY), **(headers or {})})


def sign(header: str, payload: str, key: rsa.RSAPrivateKey = KEY) -> str:
    """A token signed by ``key`` over exactly this header and payload JSON text (any JSON, even
    what jwt.encode would not write: duplicates, NaN, a non-string kid)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    algorithm = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key))}"


class FakeResponse:
    def __init__(self, body: Any, status: int = 200):
        self._body, self.status_code, self.headers = body, status, {}

    def json(self) -> Any:
        return self._body


class FakeIdP:
    """Serves metadata and a JWKS from memory and counts fetches."""

    def __init__(self, *keys: rsa.RSAPrivateKey):
        self.keys = list(keys)
        self.v1_issuer = "https://sts.windows.net/{tenantid}/"
        self.v1_down = False
        self.v1_fetches = 0
        self.jwks_fetches = 0
        self.down = False

    def get(self, url: str, timeout: Any = None) -> FakeResponse:
        if self.down:
            raise requests.ConnectionError("down")
        if url.endswith("v2.0/.well-known/openid-configuration") or url == INSTANCE + "openid-configuration":
            return FakeResponse({"issuer": INSTANCE + "{tenantid}/v2.0", "jwks_uri": INSTANCE + "keys"})
        if url.endswith("openid-configuration"):  # the v1 document: only its issuer is read
            self.v1_fetches += 1
            if self.v1_down:
                return FakeResponse({"error": "temporarily_unavailable"}, status=503)
            return FakeResponse({"issuer": self.v1_issuer, "jwks_uri": INSTANCE + "common/discovery/keys"})
        self.jwks_fetches += 1
        return FakeResponse({"keys": [dict(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key(), as_dict=True),
                                           kid=kid(k), use="sig") for k in self.keys]})


@pytest.fixture
def idp() -> FakeIdP:
    return FakeIdP(KEY)


@pytest.fixture
def keys(idp: FakeIdP) -> SigningKeys:
    return SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=load_settings(env()).azure_ad.v1_metadata_url)


def make_tokens(settings: Any, load_credential: Any, session: Any, **options: Any) -> Tokens:
    """``Tokens`` as the app builds it, with the acquisition limit of the default thread pool."""
    return Tokens(settings, load_credential, session, **{"max_concurrent": default_acquisition_limit(), **options})
