"""The devstack's admin interface (plain HTTP, loopback only): stats, faults, rotation, minting.

Tests and benchmarks drive the emulators through here. It is never part of the function app.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .aadsts import AadError
from .controls import FaultPlan, Stats, fault_from_json
from .directory import Directory, Secret, User
from .graph import Graph
from .issuer import DEFAULT_LIFETIME, AuthContext, Issuer
from .keyvault import KeyVault
from .signing import ensure_app_certificate

Handler = Callable[[Request], Awaitable[Response]]


def _json_endpoint(fn: Callable[[dict[str, Any]], Any]) -> Handler:
    """POST handlers take a JSON object and answer JSON; bad input is a 400, never a 500."""
    async def endpoint(request: Request) -> Response:
        try:
            data = await request.json() if (await request.body()) else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return JSONResponse(fn(data))
        except (ValueError, KeyError, TypeError, AadError) as err:
            return JSONResponse({"error": str(err) or type(err).__name__}, status_code=400)
    return endpoint


class Admin:
    def __init__(self, directory: Directory, issuer: Issuer, graph: Graph, keyvault: KeyVault, stats: Stats,
                 faults: FaultPlan, certs: Path, info: Callable[[], dict[str, Any]]):
        self.directory, self.issuer, self.graph, self.keyvault = directory, issuer, graph, keyvault
        self.stats, self.faults, self.certs, self.info = stats, faults, certs, info

    def rotate_secret(self, data: dict[str, Any]) -> dict[str, Any]:
        """A new client secret on the app; optionally revoke the old ones and store it in Key Vault."""
        app = self.directory.default.app_by_name(data["app"])
        secret = Secret(id=str(uuid.uuid4()), value=f"devstack-only~{app.name}~{uuid.uuid4().hex}")
        if data.get("revoke_previous"):
            app.secrets.clear()
        app.secrets.append(secret)
        answer = {"id": secret.id, "value": secret.value}
        if data.get("vault_secret"):
            answer["vault_version"] = self.keyvault.store.set_secret(data["vault_secret"], secret.value).version
        return answer

    def rotate_certificate(self, data: dict[str, Any]) -> dict[str, Any]:
        """A new certificate for the app, imported into Key Vault as a new version of the same name."""
        app = self.directory.default.app_by_name(data["app"])
        name = data["certificate"]
        cert = ensure_app_certificate(self.certs, f"{name}-{uuid.uuid4().hex[:8]}")
        if data.get("revoke_previous"):
            app.cert_thumbprints.clear()
        app.cert_thumbprints[cert.x5t] = cert.cert
        app.cert_thumbprints[cert.x5t_s256] = cert.cert
        version = self.keyvault.store.import_certificate(name, cert).version
        return {"thumbprint": cert.sha1_hex, "vault_version": version}

    def set_vault_secret(self, data: dict[str, Any]) -> dict[str, Any]:
        attrs = {k: data[k] for k in ("enabled", "nbf", "exp", "content_type") if k in data}
        return {"version": self.keyvault.store.set_secret(data["name"], data["value"], **attrs).version}

    def grant_vault(self, data: dict[str, Any]) -> dict[str, Any]:
        readers = self.keyvault.vault.readers
        if data.get("revoke"):
            readers[:] = [r for r in readers if r != data["identity"]]
        elif data["identity"] not in readers:
            readers.append(data["identity"])
        return {"readers": list(readers)}

    def expire_secrets(self, data: dict[str, Any]) -> dict[str, Any]:
        app = self.directory.default.app_by_name(data["app"])
        for s in app.secrets:
            s.expires = int(time.time()) - 1
        return {"expired": len(app.secrets)}

    def rotate_signing_key(self, data: dict[str, Any]) -> dict[str, Any]:
        key = self.issuer.keys.rotate()
        return {"kid": key.kid, "published": [k.kid for k in self.issuer.keys.published]}

    def revoke(self, data: dict[str, Any]) -> dict[str, Any]:
        """CAE events at Graph: 'tokens' (tokens issued so far), 'sessions' (sign-ins so far), 'clear'."""
        user = self.directory.default.user_by_login(data["user"])
        if user is None:
            raise KeyError(f"no user {data['user']!r}")
        return {"revoked_at": self.graph.revoke(user, data.get("scope", "tokens"))}

    def mint(self, data: dict[str, Any]) -> dict[str, Any]:
        """A user or app access token with chosen lifetime and claim overrides (tests, benchmarks);
        ``count`` > 1 returns that many distinct tokens as ``access_tokens``."""
        count = int(data.get("count", 1))
        if count > 1:
            if count > 100_000:
                raise ValueError("count must be at most 100000")
            return {"access_tokens": [self._mint_one(data)["access_token"] for _ in range(count)]}
        return self._mint_one(data)

    def _mint_one(self, data: dict[str, Any]) -> dict[str, Any]:
        tenant = self.directory.tenant(data.get("tenant", self.directory.default.id))
        client = tenant.app_by_name(data.get("client", "desktop-client"))
        requested = tenant.resolve_scopes(data.get("scope", "api://middletier/access_as_user"))
        if requested is None:
            raise ValueError("scope names no resource")
        if data.get("user"):
            user = tenant.user_by_login(data["user"])
            if user is None:
                raise KeyError(f"no user {data['user']!r}")
            claims = self.issuer.user_access_claims(
                tenant, client, user, requested.resource, requested.scopes or requested.resource.scopes,
                AuthContext.signed_in(mfa=bool(data.get("mfa")), capabilities=data.get("capabilities")), "0",
                lifetime=data.get("lifetime"))
        else:
            claims = self.issuer.app_access_claims(tenant, client, requested.resource, data.get("roles", []), "1")
            if data.get("lifetime") is not None:
                claims["exp"] = claims["iat"] + int(data["lifetime"])
        claims.update(data.get("claims") or {})
        for name in data.get("remove", []):
            claims.pop(name, None)
        token = self.issuer.keys.sign(claims, headers=data.get("headers"), tenant=data.get("signing_tenant"))
        return {"access_token": token, "claims": claims}

    def add_redirect_uri(self, data: dict[str, Any]) -> dict[str, Any]:
        """Register a redirect URI on an app (tests serve the SPA on a free port)."""
        app = self.directory.default.app_by_name(data["app"])
        target = app.spa_redirect_uris if data.get("spa") else app.redirect_uris
        if data["uri"] not in target:
            target.append(data["uri"])
        return {"redirect_uris": app.redirect_uris, "spa_redirect_uris": app.spa_redirect_uris}

    def add_users(self, data: dict[str, Any]) -> dict[str, Any]:
        """``count`` more users in the default tenant, ``<prefix>001``... (soak runs want 100+ callers);
        the same call again returns the same users."""
        count, prefix = int(data["count"]), str(data.get("prefix", "user"))
        if not 1 <= count <= 10_000 or not prefix.isalnum():
            raise ValueError("count must be between 1 and 10000 and prefix alphanumeric")
        tenant = self.directory.default
        names = [f"{prefix}{i:03d}" for i in range(1, count + 1)]
        for name in names:
            if tenant.user_by_login(name) is None:
                tenant.users.append(User(name=name, oid=str(uuid.uuid4()), display_name=name.title(),
                                         upn=f"{name}@{tenant.domain}", password=f"devstack-only~{name}"))
        return {"users": names}

    def set_lifetime(self, data: dict[str, Any]) -> dict[str, Any]:
        """Lifetime (seconds) of access tokens issued from now on, CAE ones included; tests of expiry
        and refresh use it. The default (3599) restores Entra's lifetimes (20-28 h for CAE tokens)."""
        seconds = int(data["seconds"])
        if not 1 <= seconds <= 86400:
            raise ValueError("seconds must be between 1 and 86400")
        self.issuer.lifetime = seconds
        self.issuer.cae_lifetime = None if seconds == DEFAULT_LIFETIME else seconds
        return {"lifetime": seconds}

    def set_optional_claims(self, data: dict[str, Any]) -> dict[str, Any]:
        """Edit an app registration's ``optionalClaims.accessToken`` (as the manifest does), e.g.
        ``{"app": "middletier-api", "access_token": [{"name": "idtyp"}]}``; ``[]`` removes them all."""
        tenant = self.directory.tenant(data.get("tenant", self.directory.default.id))
        app = tenant.app_by_name(data["app"])
        claims = data["access_token"]
        if not isinstance(claims, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                   for c in claims):
            raise ValueError("access_token must be a list of {name, additional_properties}")
        app.optional_claims["access_token"] = claims
        return {"app": app.name, "optional_claims": app.optional_claims}

    def set_fault(self, data: dict[str, Any]) -> dict[str, Any]:
        self.faults.add(fault_from_json(data))
        return {"faults": self.faults.describe()}

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def reset_stats(self, request: Request) -> Response:
        self.stats.reset()
        return JSONResponse({"reset": True})

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        return JSONResponse({"faults": self.faults.describe()})

    async def info_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.info())

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/info", self.info_endpoint),
            Route("/stats", self.get_stats),
            Route("/stats/reset", self.reset_stats, methods=["POST"]),
            Route("/faults", self.faults_endpoint, methods=["GET", "DELETE"]),
            Route("/faults", _json_endpoint(self.set_fault), methods=["POST"]),
            Route("/rotate/signing-key", _json_endpoint(self.rotate_signing_key), methods=["POST"]),
            Route("/rotate/secret", _json_endpoint(self.rotate_secret), methods=["POST"]),
            Route("/rotate/certificate", _json_endpoint(self.rotate_certificate), methods=["POST"]),
            Route("/keyvault/secret", _json_endpoint(self.set_vault_secret), methods=["POST"]),
            Route("/keyvault/access", _json_endpoint(self.grant_vault), methods=["POST"]),
            Route("/expire/secrets", _json_endpoint(self.expire_secrets), methods=["POST"]),
            Route("/graph/revoke", _json_endpoint(self.revoke), methods=["POST"]),
            Route("/mint", _json_endpoint(self.mint), methods=["POST"]),
            Route("/lifetime", _json_endpoint(self.set_lifetime), methods=["POST"]),
            Route("/users", _json_endpoint(self.add_users), methods=["POST"]),
            Route("/apps/redirect-uri", _json_endpoint(self.add_redirect_uri), methods=["POST"]),
            Route("/apps/optional-claims", _json_endpoint(self.set_optional_claims), methods=["POST"]),
        ])
