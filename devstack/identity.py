"""The App Service / Functions managed-identity endpoint (``IDENTITY_ENDPOINT``).

Plain HTTP on loopback, as on App Service. ``GET /msi/token?api-version=2019-08-01&resource=...``
with ``X-IDENTITY-HEADER``; ``client_id`` / ``object_id`` / ``principal_id`` / ``mi_res_id``
select a user-assigned identity. Tokens are signed by the Entra emulator's keys.

Only api-version 2019-08-01 is served (what azure-identity and MSAL send with IDENTITY_ENDPOINT);
the older 2017-09-01 (MSI_ENDPOINT, header ``secret``, ``expires_on`` as a date) is refused.
Answers are held against App Service's recorded ones by tests/conformance/test_managed_identity.py.
"""
from __future__ import annotations

import secrets
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .controls import FaultPlan, Stats
from .directory import Directory
from .issuer import Issuer
from .kit import JSON

API_VERSION = "2019-08-01"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
                status_code=status, headers=headers)


class IdentityEndpoint:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults
        self.header = secrets.token_hex(16)  # IDENTITY_HEADER: a per-run secret, as App Service rotates it

    async def token(self, request: Request) -> Response:
        fault = await self.faults.gate("identity", "token")
        if fault is not None and fault.status is not None:
            self.stats.count("identity.token", outcome=str(fault.status))
            return _error(fault.status, "The managed identity endpoint is unavailable.", fault.retry_headers())
        presented = request.headers.get("x-identity-header")
        if presented is None:
            self.stats.count("identity.token", outcome="400")
            return _error(400, "Missing X-IDENTITY-HEADER header.")
        if not secrets.compare_digest(presented.encode(), self.header.encode()):
            self.stats.count("identity.token", outcome="401")
            return _error(401, "The X-IDENTITY-HEADER header is not valid.")
        q = request.query_params
        if q.get("api-version") != API_VERSION:
            return _error(400, f"The api-version '{q.get('api-version')}' is not supported; use {API_VERSION}.")
        resource = q.get("resource", "").strip()
        if not resource:
            return _error(400, "The 'resource' query parameter is required.")
        tenant = self.directory.default
        selectors = {k: q.get(k) for k in ("client_id", "object_id", "principal_id", "mi_res_id") if q.get(k)}
        if "mi_res_id" in selectors:
            mi = tenant.identity(name=selectors["mi_res_id"].rstrip("/").rpartition("/")[2])
        elif selectors:
            mi = tenant.identity(client_id=selectors.get("client_id"),
                                 principal_id=selectors.get("object_id") or selectors.get("principal_id"))
        else:
            mi = tenant.identity()
        if mi is None:
            self.stats.count("identity.token", outcome="400")
            return _error(400, "Unable to find the managed identity requested; is it assigned to this app?")
        app = tenant.app_by_resource(resource)
        if app is None:
            self.stats.count("identity.token", outcome="400")
            return _error(400, f"AADSTS500011: The resource principal named {resource} was not found in the tenant "
                               f"named {tenant.id}.")
        claims = self.issuer.identity_claims(tenant, mi, app, resource.rstrip("/"))
        self.stats.count("identity.token", outcome="200", resource=resource, identity=mi.name)
        return JSON({"access_token": self.issuer.keys.sign(claims), "expires_on": str(claims["exp"]),
                     "resource": resource, "token_type": "Bearer", "client_id": mi.client_id})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/msi/token", self.token)])
