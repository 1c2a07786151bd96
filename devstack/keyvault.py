"""A Key Vault emulator: the secrets and certificates REST API the Azure SDKs call.

The challenge handshake is Key Vault's: a request without a token gets 401 with
``WWW-Authenticate: Bearer authorization="<instance>/<tenant>", resource="https://vault.azure.net"``;
tokens are validated (signature, audience, issuer, lifetime) and the caller must be a reader
of the vault (RBAC "Key Vault Secrets User"). A certificate's secret is its PFX, base64, with
content type ``application/x-pkcs12``, as Key Vault stores it.
"""
from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import clouds
from .controls import FaultPlan, Stats, delay
from .directory import Directory, Tenant, Vault
from .issuer import Issuer, v1_issuer, v2_issuer
from .signing import AppCertificate, b64url



def resource() -> str:
    """The challenge's resource: https://vault.azure.net in the public cloud, the cloud's domain elsewhere."""
    return clouds.active().keyvault_resource
PFX = "application/x-pkcs12"


@dataclass
class SecretVersion:
    version: str
    value: str
    content_type: str | None = None
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))
    tags: dict[str, str] = field(default_factory=dict)
    managed: bool = False


@dataclass
class CertificateVersion:
    version: str
    der: bytes
    created: int = field(default_factory=lambda: int(time.time()))


class KvError(Exception):
    def __init__(self, status: int, code: str, message: str, inner: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner


class VaultStore:
    """Versions are kept oldest first; 'latest' is the last one."""

    def __init__(self) -> None:
        self.secrets: dict[str, list[SecretVersion]] = {}
        self.certificates: dict[str, list[CertificateVersion]] = {}

    def set_secret(self, name: str, value: str, **attrs: Any) -> SecretVersion:
        version = SecretVersion(uuid.uuid4().hex, value, **attrs)
        self.secrets.setdefault(name, []).append(version)
        return version

    def import_certificate(self, name: str, cert: AppCertificate) -> SecretVersion:
        """What Key Vault does on import: a certificate version and its secret (the PFX) share a version."""
        secret = self.set_secret(name, base64.b64encode(cert.pfx_path.read_bytes()).decode(), content_type=PFX,
                                 managed=True)
        self.certificates.setdefault(name, []).append(CertificateVersion(secret.version, cert.der))
        return secret

    def secret(self, name: str, version: str = "") -> SecretVersion:
        versions = self.secrets.get(name)
        if not versions:
            raise KvError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault. "
                          "If you recently deleted this secret you may be able to recover it using the correct "
                          "recovery command. For help resolving this issue, please see "
                          "https://go.microsoft.com/fwlink/?linkid=2125182")
        if not version:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        raise KvError(404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key vault.")


class KeyVault:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan, vault: Vault):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults
        self.vault = vault
        self.store = VaultStore()
        self.url = ""  # set by the stack once the port is known

    @property
    def tenant(self) -> Tenant:
        return self.directory.default

    # --- auth ---------------------------------------------------------------------------------
    def challenge(self) -> str:
        return f'Bearer authorization="{self.issuer.instance}/{self.tenant.id}", resource="{resource()}"'

    def _authorize(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise KvError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        try:
            key = self.issuer.keys.by_kid(str(jwt.get_unverified_header(token).get("kid")))
            if key is None:
                raise jwt.InvalidSignatureError("unknown kid")
            claims = jwt.decode(token.strip(), key.private_key.public_key(), algorithms=["RS256"],
                                audience=[resource(), resource() + "/"], options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise KvError(401, "Unauthorized", "AKV10032: Token has expired.") from None
        except jwt.InvalidAudienceError:
            raise KvError(401, "Unauthorized", f"AKV10022: Invalid audience. Expected {resource()}.") from None
        except jwt.PyJWTError:
            raise KvError(401, "Unauthorized", "AKV10013: Token validation failed.") from None
        if claims.get("iss") not in (v1_issuer(self.tenant.id), v2_issuer(self.issuer.instance, self.tenant.id)):
            raise KvError(401, "Unauthorized", f"AKV10032: Invalid issuer. Expected one of {v1_issuer(self.tenant.id)}.")
        caller = self.tenant.identity(principal_id=str(claims.get("oid")))
        if caller is None or caller.name not in self.vault.readers:
            raise KvError(403, "Forbidden", "Caller is not authorized to perform action on resource. If role "
                          "assignments, deny assignments or role definitions were changed recently, please observe "
                          "propagation time. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                          "ForbiddenByRbac")
        return caller.name

    def _error(self, err: KvError) -> Response:
        body: dict[str, Any] = {"error": {"code": err.code, "message": err.message}}
        if err.inner:
            body["error"]["innererror"] = {"code": err.inner}
        headers = {"WWW-Authenticate": self.challenge()} if err.status == 401 else {}
        return JSONResponse(body, status_code=err.status, headers=headers)

    async def _guard(self, request: Request, endpoint: str) -> str:
        fault = self.faults.take("keyvault", endpoint)
        await delay(fault)
        if fault is not None and fault.status is not None:
            raise KvError(fault.status, "ServiceUnavailable", "The service is temporarily unavailable.")
        if "api-version" not in request.query_params:
            raise KvError(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        return self._authorize(request)

    # --- representations ----------------------------------------------------------------------------
    def _attributes(self, v: SecretVersion) -> dict[str, Any]:
        attrs: dict[str, Any] = {"enabled": v.enabled, "created": v.created, "updated": v.updated,
                                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
        if v.nbf is not None:
            attrs["nbf"] = v.nbf
        if v.exp is not None:
            attrs["exp"] = v.exp
        return attrs

    def _secret_item(self, name: str, v: SecretVersion, *, with_version: bool = True) -> dict[str, Any]:
        item: dict[str, Any] = {"id": f"{self.url}/secrets/{name}" + (f"/{v.version}" if with_version else ""),
                                "attributes": self._attributes(v), "tags": v.tags}
        if v.content_type:
            item["contentType"] = v.content_type
        if v.managed:
            item["managed"] = True
            item["kid"] = f"{self.url}/keys/{name}/{v.version}"
        return item

    # --- endpoints ----------------------------------------------------------------------------
    async def get_secret(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        try:
            caller = await self._guard(request, "secrets")
            v = self.store.secret(name, version)
            now = time.time()
            if not v.enabled:
                raise KvError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
            if v.exp is not None and v.exp < now:
                raise KvError(403, "Forbidden", "Operation get is not allowed on an expired secret.", "SecretExpired")
            if v.nbf is not None and v.nbf > now:
                raise KvError(403, "Forbidden", "Operation get is not allowed on a secret that is not yet valid.",
                              "SecretNotYetValid")
        except KvError as err:
            # by_secret counts successful reads only; by_host: the vault's name as the client used it
            self.stats.count("keyvault.get", outcome=str(err.status), host=request.headers.get("host"))
            return self._error(err)
        self.stats.count("keyvault.get", secret=name, outcome="200", caller=caller, host=request.headers.get("host"))
        return JSONResponse({"value": v.value, **self._secret_item(name, v)})

    async def list_versions(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self._guard(request, "secrets")
            versions = self.store.secrets.get(name)
            if not versions:
                self.store.secret(name)
        except KvError as err:
            return self._error(err)
        return JSONResponse({"value": [self._secret_item(name, v) for v in versions or []], "nextLink": None})

    async def list_secrets(self, request: Request) -> Response:
        try:
            await self._guard(request, "secrets")
        except KvError as err:
            return self._error(err)
        items = [self._secret_item(n, vs[-1], with_version=False) for n, vs in sorted(self.store.secrets.items())]
        return JSONResponse({"value": items, "nextLink": None})

    async def get_certificate(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        try:
            await self._guard(request, "certificates")
            versions = self.store.certificates.get(name)
            match = [c for c in versions or [] if not version or c.version == version]
            if not match:
                raise KvError(404, "CertificateNotFound", f"A certificate with (name/id) {name} was not found in "
                              "this key vault.")
        except KvError as err:
            self.stats.count("keyvault.certificate", outcome=str(err.status))
            return self._error(err)
        cert = match[-1]
        self.stats.count("keyvault.certificate", certificate=name, outcome="200")
        secret = self.store.secret(name, cert.version)
        return JSONResponse({
            "id": f"{self.url}/certificates/{name}/{cert.version}",
            "kid": f"{self.url}/keys/{name}/{cert.version}",
            "sid": f"{self.url}/secrets/{name}/{cert.version}",
            "x5t": b64url(hashlib.sha1(cert.der).digest()),
            "cer": base64.b64encode(cert.der).decode(),
            "attributes": {**self._attributes(secret), "recoveryLevel": "Recoverable+Purgeable"},
            "policy": {"id": f"{self.url}/certificates/{name}/policy",
                       "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
                       "secret_props": {"contentType": PFX},
                       "x509_props": {"subject": f"CN={name}", "validity_months": 12},
                       "issuer": {"name": "Self"}, "attributes": {"enabled": True}},
        })

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/secrets", self.list_secrets),
            Route("/secrets/{name}/versions", self.list_versions),
            Route("/secrets/{name}", self.get_secret),
            Route("/secrets/{name}/", self.get_secret),
            Route("/secrets/{name}/{version}", self.get_secret),
            Route("/certificates/{name}", self.get_certificate),
            Route("/certificates/{name}/", self.get_certificate),
            Route("/certificates/{name}/{version}", self.get_certificate),
        ])
