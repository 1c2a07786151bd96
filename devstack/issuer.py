"""Minting tokens with Entra's claims, so MSAL builds accounts and caches as it does for real.

Access tokens are v2.0 for APIs that accept them and v1.0 for resource-owned APIs such as
Graph; ``sub`` is pairwise per app; ``aio`` is opaque to everyone but us, so we keep the
sign-in's authentication methods there (that is what lets OBO demand MFA). Refresh tokens
are opaque too: AES-GCM sealed, so the emulator holds no per-token state.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import clouds
from .directory import App, ManagedIdentity, Requested, Tenant, User
from .signing import KeyRing, b64url, json_b64url

DEFAULT_LIFETIME = 3599
CAE_LIFETIME = (20 * 3600, 28 * 3600)  # Entra's long-lived tokens for CAE-capable clients of CAE-enabled APIs
REFRESH_LIFETIME = 90 * 24 * 3600


def v2_issuer(instance: str, tid: str) -> str:
    return f"{instance}/{tid}/v2.0"


def v1_issuer(tid: str) -> str:
    """The v1 issuer differs by cloud: sts.windows.net (public, US Government), sts.chinacloudapi.cn."""
    return f"{clouds.active().v1_sts}{tid}/"


def pairwise_sub(oid: str, client_id: str) -> str:
    return b64url(hashlib.sha256(f"{oid}|{client_id}".encode()).digest())[:43]


def client_info(oid: str, tid: str) -> str:
    return json_b64url({"uid": oid, "utid": tid})


def declares_cp1(capabilities: Any) -> bool:
    """The client declared it handles claims challenges (``xms_cc`` values; case-insensitive)."""
    return isinstance(capabilities, list) and any(isinstance(c, str) and c.lower() == "cp1" for c in capabilities)


def is_app_only(claims: dict[str, Any]) -> bool:
    """How a resource tells an app-only token from a delegated one: ``idtyp`` when the resource asked
    for that optional claim, otherwise no ``scp`` and ``oid`` equal to ``sub`` (Microsoft's documented
    check; a user's ``sub`` is pairwise, never its ``oid``)."""
    if "idtyp" in claims:
        return claims["idtyp"] == "app"
    return "scp" not in claims and isinstance(claims.get("oid"), str) and claims.get("oid") == claims.get("sub")


def _audience(resource: App) -> str:
    """v1 tokens name the resource's first App ID URI, v2 ones its client id."""
    v1 = resource.access_token_version == 1
    return resource.identifier_uris[0] if v1 and resource.identifier_uris else resource.client_id


_serials = itertools.count(1)


def next_serial() -> int:
    """A process-wide, increasing number: orders sign-ins and token issuance for CAE revocation."""
    return next(_serials)


@dataclass
class AuthContext:
    """How the user signed in; travels inside ``aio`` (opaque to everyone else) and refresh tokens.

    ``session`` numbers the sign-in: OBO and refresh keep it, so revoking a user's sessions
    (CAE) catches every token derived from an older sign-in, however it was obtained.
    """

    mfa: bool = False
    capabilities: list[str] = field(default_factory=list)
    session: int = 0

    def to_aio(self, token_serial: int = 0) -> str:
        return json_b64url({"m": int(self.mfa), "s": self.session, "t": token_serial, "r": secrets.token_hex(3)})

    @classmethod
    def signed_in(cls, mfa: bool = False, capabilities: list[str] | None = None) -> "AuthContext":
        return cls(mfa=mfa, capabilities=capabilities or [], session=next_serial())

    @staticmethod
    def decode(aio: Any) -> dict[str, Any]:
        try:
            raw = json.loads(base64.urlsafe_b64decode(str(aio) + "=" * (-len(str(aio)) % 4)))
        except (ValueError, TypeError, AttributeError):
            return {}
        return raw if isinstance(raw, dict) else {}

    @classmethod
    def from_aio(cls, aio: Any) -> "AuthContext":
        raw = cls.decode(aio)
        return cls(mfa=bool(raw.get("m")), session=int(raw.get("s") or 0))


class Issuer:
    def __init__(self, keys: KeyRing, instance: str, state: Path, lifetime: int = DEFAULT_LIFETIME):
        self.keys, self.instance, self.lifetime = keys, instance, lifetime
        self.cae_lifetime: int | None = None  # None: Entra's 20-28 h for CAE tokens; set by /lifetime in tests
        key_file = state / "refresh-token.key"
        if not key_file.is_file():
            key_file.write_bytes(AESGCM.generate_key(bit_length=256))
            key_file.chmod(0o600)
        self._aead = AESGCM(key_file.read_bytes())

    def issued(self, claims: dict[str, Any], tenant_id: str) -> bool:
        """The token names this Entra's v1 or v2 issuer for the tenant, as resource servers require."""
        return claims.get("iss") in (v2_issuer(self.instance, tenant_id), v1_issuer(tenant_id))

    def _head(self, tenant: Tenant, v1: bool, aud: str, lifetime: int, aio: str) -> dict[str, Any]:
        """The claims every token starts with, in Entra's order."""
        now = int(time.time())
        return {"aud": aud, "iss": v1_issuer(tenant.id) if v1 else v2_issuer(self.instance, tenant.id),
                "iat": now, "nbf": now, "exp": now + lifetime, "aio": aio}

    def user_access_claims(self, tenant: Tenant, client: App, user: User, resource: App,
                           scopes: list[str], auth: AuthContext, client_auth: str,
                           audience: str | None = None, lifetime: int | None = None) -> dict[str, Any]:
        v1 = resource.access_token_version == 1
        cae = resource.continuous_access_evaluation and declares_cp1(auth.capabilities)
        claims: dict[str, Any] = {
            **self._head(tenant, v1, audience or _audience(resource),
                         self._lifetime(cae) if lifetime is None else lifetime, auth.to_aio(next_serial())),
            "name": user.display_name,
            "oid": user.oid,
            "rh": "0." + b64url(os.urandom(24)),
            "scp": " ".join(scopes),
            "sub": pairwise_sub(user.oid, resource.client_id),
            "tid": tenant.id,
            "uti": b64url(os.urandom(16)),
            "ver": "1.0" if v1 else "2.0",
        }
        if v1:
            claims.update(appid=client.client_id, appidacr=client_auth, upn=user.upn,
                          unique_name=user.upn, given_name=user.given_name,
                          family_name=user.surname, acr="1",
                          amr=["pwd", "mfa"] if auth.mfa else ["pwd"])
        else:
            claims.update(azp=client.client_id, azpacr=client_auth, preferred_username=user.upn)
        # Optional claims, as the resource's manifest asks: xms_cc only if the client declared cp1;
        # idtyp on user tokens only with the include_user_token property.
        if declares_cp1(auth.capabilities) and resource.access_token_claim("xms_cc"):
            claims["xms_cc"] = ["cp1"]
        if "include_user_token" in ((resource.access_token_claim("idtyp") or {}).get("additional_properties") or []):
            claims["idtyp"] = "user"
        return claims

    def _lifetime(self, cae: bool) -> int:
        if not cae:
            return self.lifetime
        return self.cae_lifetime if self.cae_lifetime is not None else random.randint(*CAE_LIFETIME)

    def _app_only(self, tenant: Tenant, resource: App, aud: str, lifetime: int, oid: str, app_id: str, acr: str,
                  *, roles: list[str], extra: dict[str, Any]) -> dict[str, Any]:
        """An app's or a managed identity's token: ``sub`` = ``oid``, no ``scp``."""
        v1 = resource.access_token_version == 1
        claims: dict[str, Any] = {
            **self._head(tenant, v1, aud, lifetime, AuthContext().to_aio()),
            "oid": oid, "sub": oid, "rh": "0." + b64url(os.urandom(24)), "tid": tenant.id,
            "uti": b64url(os.urandom(16)), "ver": "1.0" if v1 else "2.0", **extra,
        }
        claims.update({"appid": app_id, "appidacr": acr} if v1 else {"azp": app_id, "azpacr": acr})
        if roles:
            claims["roles"] = roles
        if resource.access_token_claim("idtyp"):  # an optional claim: only when the resource asks for it
            claims["idtyp"] = "app"
        return claims

    def app_access_claims(self, tenant: Tenant, client: App, resource: App, roles: list[str],
                          client_auth: str) -> dict[str, Any]:
        return self._app_only(tenant, resource, _audience(resource), self.lifetime, client.sp_oid, client.client_id,
                              client_auth, roles=roles, extra={})

    def identity_claims(self, tenant: Tenant, mi: ManagedIdentity, resource: App, audience: str) -> dict[str, Any]:
        """A managed identity's token: app-only, ``aud`` = the resource string it asked for."""
        mirid = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/devstack/providers/"
                 f"Microsoft.Web/sites/{mi.name}")
        return self._app_only(tenant, resource, audience, 24 * 3600, mi.principal_id, mi.client_id, "2",
                              roles=[], extra={"xms_mirid": mirid})

    def id_token(self, tenant: Tenant, client: App, user: User, nonce: str | None) -> str:
        claims = {
            **self._head(tenant, False, client.client_id, 3600, AuthContext().to_aio()),
            "name": user.display_name, "oid": user.oid, "preferred_username": user.upn,
            "rh": "0." + b64url(os.urandom(24)), "sub": pairwise_sub(user.oid, client.client_id),
            "tid": tenant.id, "uti": b64url(os.urandom(16)), "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        return self.keys.sign(claims, x5t=False)

    def seal_refresh(self, tenant: Tenant, client: App, user: User, auth: AuthContext) -> str:
        payload = json.dumps({"t": tenant.id, "c": client.client_id, "u": user.oid, "m": int(auth.mfa),
                              "s": auth.session, "cc": auth.capabilities,
                              "x": int(time.time()) + REFRESH_LIFETIME}).encode()
        nonce = os.urandom(12)
        return "1." + b64url(nonce + self._aead.encrypt(nonce, payload, b"rt"))

    def open_refresh(self, token: str) -> dict[str, Any] | None:
        """The refresh token's content, or None when it is not ours, tampered or expired."""
        if not token.startswith("1."):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[2:] + "=" * (-len(token[2:]) % 4))
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"rt"))
        except (ValueError, InvalidTag):
            return None
        return data if data.get("x", 0) > time.time() else None

    def user_response(self, tenant: Tenant, client: App, user: User, requested: Requested | None,
                      scopes: list[str], auth: AuthContext, client_auth: str, *,
                      want_client_info: bool, nonce: str | None = None) -> dict[str, Any]:
        """The token endpoint's JSON for grants that act for a user."""
        oidc = requested.oidc if requested else []
        body: dict[str, Any] = {"token_type": "Bearer"}
        if requested is not None:
            claims = self.user_access_claims(tenant, client, user, requested.resource, scopes, auth, client_auth)
            lifetime = claims["exp"] - claims["iat"]
            body.update(scope=" ".join(requested.as_requested + [s for s in oidc if s != "offline_access"]),
                        expires_in=lifetime, ext_expires_in=lifetime,
                        access_token=self.keys.sign(claims))
        else:  # only OIDC scopes: Entra gives a Graph token for the userinfo endpoint
            body.update(scope=" ".join(s for s in oidc if s != "offline_access"),
                        expires_in=self.lifetime, ext_expires_in=self.lifetime,
                        access_token=self.keys.sign({"aud": "https://graph.microsoft.com",
                                                     "iss": v1_issuer(tenant.id), "oid": user.oid,
                                                     "tid": tenant.id, "scp": "openid",
                                                     "exp": int(time.time()) + self.lifetime}))
        lowered = [s.lower() for s in oidc]
        if "offline_access" in lowered:
            body["refresh_token"] = self.seal_refresh(tenant, client, user, auth)
        if "openid" in lowered:
            body["id_token"] = self.id_token(tenant, client, user, nonce)
        if want_client_info:
            body["client_info"] = client_info(user.oid, tenant.id)
        return body

    def app_response(self, tenant: Tenant, client: App, resource: App, roles: list[str],
                     client_auth: str) -> dict[str, Any]:
        claims = self.app_access_claims(tenant, client, resource, roles, client_auth)
        return {"token_type": "Bearer", "expires_in": self.lifetime, "ext_expires_in": self.lifetime,
                "access_token": self.keys.sign(claims)}
