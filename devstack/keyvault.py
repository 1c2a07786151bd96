"""A Key Vault emulator: the secrets and certificates REST API the Azure SDKs call.

Key Vault's challenge (401, ``WWW-Authenticate: Bearer authorization="<instance>/<tenant>",
resource="https://vault.azure.net"``), token validation, and RBAC: readers hold "Key Vault Secrets
User", and no identity here may write (403 ForbiddenByRbac). A certificate's secret is its PFX, base64.
Answers follow Key Vault's recordings (tests/conformance/recordings/, checked by
tests/conformance/test_keyvault.py): ``tags`` only where Key Vault sends them, an *imported*
certificate's bundle, lists paged by ``maxresults`` (at most 25) and ``nextLink`` with a ``$skiptoken``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import clouds
from .controls import FaultPlan, Stats
from .directory import Directory, Tenant, Vault
from .issuer import Issuer, v1_issuer
from .kit import JSON, BearerRefused, ServiceError, check_bearer
from .signing import AppCertificate, b64url

PFX = "application/x-pkcs12"
SERVICE_VERSION = "devstack"  # x-ms-keyvault-service-version: Key Vault sends its build number
PAGE_SIZE = 25  # Key Vault's default and largest maxresults


def resource() -> str:
    """The challenge's resource: https://vault.azure.net in the public cloud, the cloud's domain elsewhere."""
    return clouds.active().keyvault_resource


class KvJSON(JSON):
    """Key Vault's JSON (``charset=utf-8`` in every recorded response), non-ASCII escaped."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("utf-8")


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

    @property
    def x509(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


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
        parsed = x509.load_der_x509_certificate(cert.der)
        secret = self.set_secret(name, base64.b64encode(cert.pfx_path.read_bytes()).decode(), content_type=PFX,
                                 managed=True, nbf=int(parsed.not_valid_before_utc.timestamp()),
                                 exp=int(parsed.not_valid_after_utc.timestamp()))
        self.certificates.setdefault(name, []).append(CertificateVersion(secret.version, cert.der))
        return secret

    def secret(self, name: str, version: str = "") -> SecretVersion:
        versions = self.secrets.get(name)
        if not versions:
            raise ServiceError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key "
                               "vault. If you recently deleted this secret you may be able to recover it using the "
                               "correct recovery command. For help resolving this issue, please see "
                               "https://go.microsoft.com/fwlink/?linkid=2125182")
        found = versions[-1] if not version else next((v for v in versions if v.version == version), None)
        if found is not None:
            return found
        raise ServiceError(404, "SecretNotFound",
                           f"A secret with (name/id) {name}/{version} was not found in this key vault.")


class KeyVault:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan, vault: Vault):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults
        self.vault = vault
        self.store = VaultStore()
        self.url = ""  # set by the stack once the port is known

    @property
    def tenant(self) -> Tenant:
        return self.directory.default

    def challenge(self) -> str:
        return f'Bearer authorization="{self.issuer.instance}/{self.tenant.id}", resource="{resource()}"'

    def _refused(self, reason: str) -> str:
        """Key Vault's words for each reason a bearer token is refused (kit.BearerRefused)."""
        return {"missing": "AKV10000: Request is missing a Bearer or PoP token.",
                "expired": "AKV10032: Token has expired.",
                "audience": f"AKV10022: Invalid audience. Expected {resource()}.",
                "issuer": f"AKV10032: Invalid issuer. Expected one of {v1_issuer(self.tenant.id)}.",
                }.get(reason, "AKV10013: Token validation failed.")

    def _authorize(self, request: Request, action: str = "secrets/getSecret/action") -> str:
        try:
            _, claims = check_bearer(request, self.issuer, [resource(), resource() + "/"],
                                     require=("exp", "iss", "aud"), tenant_of=lambda _: self.tenant)
        except BearerRefused as refused:
            raise ServiceError(401, "Unauthorized", self._refused(refused.reason)) from None
        caller = self.tenant.identity(principal_id=str(claims.get("oid")))
        # Readers hold "Key Vault Secrets User" (read actions only); nobody here may write.
        if caller is None or caller.name not in self.vault.readers or not action.endswith("getSecret/action"):
            raise ServiceError(403, "Forbidden", "Caller is not authorized to perform action on resource. If role "
                               "assignments, deny assignments or role definitions were changed recently, please "
                               f"observe propagation time. Action: 'Microsoft.KeyVault/vaults/{action}'",
                               inner="ForbiddenByRbac")
        return caller.name

    @staticmethod
    def _headers(request: Request) -> dict[str, str]:
        """What Key Vault sends on every answer and the SDKs log or read."""
        headers = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "-1",
                   "x-ms-request-id": str(uuid.uuid4()), "x-ms-keyvault-region": "devstack",
                   "x-ms-keyvault-service-version": SERVICE_VERSION, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("x-ms-client-request-id"):
            headers["x-ms-client-request-id"] = request.headers["x-ms-client-request-id"]
        return headers

    def _json(self, request: Request, body: Any, status: int = 200) -> Response:
        return KvJSON(body, status_code=status, headers=self._headers(request))

    def _error(self, request: Request, err: ServiceError) -> Response:
        headers = self._headers(request) | err.headers
        if err.status == 401:
            headers["WWW-Authenticate"] = self.challenge()
        return KvJSON(err.body(**({"innererror": {"code": err.inner}} if err.inner else {})),
                      status_code=err.status, headers=headers)

    async def _guard(self, request: Request, endpoint: str, action: str = "secrets/getSecret/action") -> str:
        fault = await self.faults.gate("keyvault", endpoint)
        if fault is not None and fault.status is not None:
            raise ServiceError.injected(fault, "ServiceUnavailable")
        if "api-version" not in request.query_params:
            raise ServiceError(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        return self._authorize(request, action)

    def _attributes(self, v: SecretVersion) -> dict[str, Any]:
        return {"enabled": v.enabled, **{k: t for k, t in (("nbf", v.nbf), ("exp", v.exp)) if t is not None},
                "created": v.created, "updated": v.updated, "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90}

    def _secret_item(self, name: str, v: SecretVersion, *, with_version: bool = True) -> dict[str, Any]:
        """A secret as lists show it: a certificate's secret carries contentType, managed and tags
        (even empty); a plain secret carries tags and contentType only when it has them."""
        item: dict[str, Any] = {"id": f"{self.url}/secrets/{name}" + (f"/{v.version}" if with_version else ""),
                                "attributes": self._attributes(v)}
        if v.content_type:
            item["contentType"] = v.content_type
        if v.managed:
            item["managed"] = True
        if v.tags or v.managed:
            item["tags"] = v.tags
        return item

    def _secret_bundle(self, name: str, v: SecretVersion) -> dict[str, Any]:
        bundle = {"value": v.value, **self._secret_item(name, v)}
        if v.managed:
            bundle["kid"] = f"{self.url}/keys/{name}/{v.version}"
        return bundle

    def _page(self, request: Request, path: str, items: list[dict[str, Any]]) -> Response:
        """One page of a list, as Key Vault pages: ``maxresults`` (1-25, default 25) and a
        ``nextLink`` carrying ``$skiptoken`` (null on the last page)."""
        q = request.query_params
        try:
            size = int(q.get("maxresults", PAGE_SIZE))
            offset = int(json.loads(base64.urlsafe_b64decode(q["$skiptoken"] + "==")).get("NextMarker", -1)) \
                if "$skiptoken" in q else 0
        except (ValueError, binascii.Error, AttributeError):
            return self._error(request, ServiceError(400, "BadParameter", "The skiptoken or maxresults is invalid."))
        if not 1 <= size <= PAGE_SIZE or not 0 <= offset <= len(items):
            return self._error(request, ServiceError(
                400, "BadParameter", f"maxresults must be between 1 and {PAGE_SIZE}; skiptoken invalid."))
        page = items[offset:offset + size]
        next_link = None
        if offset + size < len(items):
            token = base64.urlsafe_b64encode(json.dumps({"NextMarker": offset + size}).encode()).decode().rstrip("=")
            next_link = f"{self.url}{path}?api-version={q['api-version']}&$skiptoken={token}&maxresults={size}"
        return self._json(request, {"value": page, "nextLink": next_link})

    def _certificate_bundle(self, name: str, cert: CertificateVersion, secret: SecretVersion, *,
                            latest: bool) -> dict[str, Any]:
        """An imported certificate's bundle. Without a version Key Vault adds the policy; by version
        it adds subject, issuer and serial number instead (recorded: kv-certificate-get-*)."""
        parsed = cert.x509
        bundle: dict[str, Any] = {
            "id": f"{self.url}/certificates/{name}/{cert.version}",
            "kid": f"{self.url}/keys/{name}/{cert.version}",
            "sid": f"{self.url}/secrets/{name}/{cert.version}",
            "x5t": b64url(hashlib.sha1(cert.der).digest()),
            "cer": base64.b64encode(cert.der).decode(),
            "attributes": self._attributes(secret),
            "tags": {},
        }
        if not latest:
            bundle.update({"subject": parsed.subject.rfc4514_string(), "issuer": parsed.issuer.rfc4514_string(),
                           "serialnumber": format(parsed.serial_number, "X")})
            return bundle
        months = max(1, round((parsed.not_valid_after_utc - parsed.not_valid_before_utc).days / 30.4))
        bundle["policy"] = {
            "id": f"{self.url}/certificates/{name}/policy",
            "key_props": {"exportable": True, "kty": "RSA", "key_size": parsed.public_key().key_size,
                          "reuse_key": False},
            "secret_props": {"contentType": PFX},
            "x509_props": {"subject": parsed.subject.rfc4514_string(), "ekus": [],
                           "key_usage": ["digitalSignature", "keyEncipherment"], "validity_months": months,
                           "basic_constraints": {"ca": False}},
            "lifetime_actions": [],
            "issuer": {"name": "Unknown"},
            "attributes": {"enabled": True, "created": cert.created, "updated": cert.created},
        }
        return bundle

    async def get_secret(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        try:
            caller = await self._guard(request, "secrets")
            v = self.store.secret(name, version)
            now = time.time()
            if not v.enabled:
                raise ServiceError(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                                   inner="SecretDisabled")
            if v.exp is not None and v.exp < now:
                raise ServiceError(403, "Forbidden", "Operation get is not allowed on an expired secret.",
                                   inner="SecretExpired")
            if v.nbf is not None and v.nbf > now:
                raise ServiceError(403, "Forbidden", "Operation get is not allowed on a secret that is not yet valid.",
                                   inner="SecretNotYetValid")
        except ServiceError as err:
            # by_secret counts successful reads only; by_host: the vault's name as the client used it
            self.stats.count("keyvault.get", outcome=str(err.status), host=request.headers.get("host"))
            return self._error(request, err)
        self.stats.count("keyvault.get", secret=name, outcome="200", caller=caller, host=request.headers.get("host"))
        return self._json(request, self._secret_bundle(name, v))

    async def set_secret(self, request: Request) -> Response:
        """PUT /secrets/{name}: the token is checked, then the role, which no identity here holds."""
        try:
            await self._guard(request, "secrets", "secrets/setSecret/action")
        except ServiceError as err:
            self.stats.count("keyvault.set", outcome=str(err.status))
            return self._error(request, err)
        raise AssertionError("unreachable: no identity may write")  # pragma: no cover

    async def list_versions(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self._guard(request, "secrets")
            self.store.secret(name)  # 404 for an unknown name
        except ServiceError as err:
            return self._error(request, err)
        return self._page(request, f"/secrets/{name}/versions",
                          [self._secret_item(name, v) for v in self.store.secrets[name]])

    async def list_secrets(self, request: Request) -> Response:
        try:
            await self._guard(request, "secrets")
        except ServiceError as err:
            return self._error(request, err)
        items = [self._secret_item(n, vs[-1], with_version=False) for n, vs in sorted(self.store.secrets.items())]
        return self._page(request, "/secrets", items)

    async def get_certificate(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        try:
            await self._guard(request, "certificates")
            match = [c for c in self.store.certificates.get(name, []) if not version or c.version == version]
            if not match:
                raise ServiceError(404, "CertificateNotFound", f"A certificate with (name/id) {name} was not found in "
                                   "this key vault. If you recently deleted this certificate you may be able to "
                                   "recover it using the correct recovery command. For help resolving this issue, "
                                   "please see https://go.microsoft.com/fwlink/?linkid=2125182")
        except ServiceError as err:
            self.stats.count("keyvault.certificate", outcome=str(err.status))
            return self._error(request, err)
        cert = match[-1]
        self.stats.count("keyvault.certificate", certificate=name, outcome="200")
        secret = self.store.secret(name, cert.version)
        return self._json(request, self._certificate_bundle(name, cert, secret, latest=not version))

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/secrets", self.list_secrets),
            Route("/secrets/{name}/versions", self.list_versions),
            Route("/secrets/{name}", self.get_secret),
            Route("/secrets/{name}", self.set_secret, methods=["PUT"]),
            Route("/secrets/{name}/", self.get_secret),
            Route("/secrets/{name}/{version}", self.get_secret),
            Route("/certificates/{name}", self.get_certificate),
            Route("/certificates/{name}/", self.get_certificate),
            Route("/certificates/{name}/{version}", self.get_certificate),
        ])
