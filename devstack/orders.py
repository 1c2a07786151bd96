"""A second downstream API: "orders", with its own app registration, scopes and app roles.

``GET /orders``: a user token with ``Orders.Read`` gets that user's orders; an app token with the
``Orders.Read.All`` role gets everyone's. Token checks, faults and error codes as for Graph
(``graph.admit``); its error body is ``{"error": {"code", "message"}}``.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .controls import FaultPlan, Stats
from .directory import Directory, Tenant, User
from .graph import admit
from .kit import ServiceError
from .issuer import Issuer, is_app_only


def orders_for(user: User) -> list[dict[str, Any]]:
    """Two stable, made-up orders per user."""
    seed = hashlib.sha256(user.oid.encode()).hexdigest()
    return [{"id": f"ord-{seed[i * 6:(i + 1) * 6]}", "owner": user.oid, "item": item,
             "amount": int(seed[i * 4:(i + 1) * 4], 16) % 500 + 10}
            for i, item in enumerate(("keyboard", "monitor"))]


class Orders:
    def __init__(self, directory: Directory, issuer: Issuer, stats: Stats, faults: FaultPlan):
        self.directory, self.issuer, self.stats, self.faults = directory, issuer, stats, faults

    def _audiences(self) -> tuple[str, ...]:
        app = self.directory.default.app_by_name("orders-api")
        return (app.client_id, *app.identifier_uris)

    async def list_orders(self, request: Request) -> Response:
        try:
            tenant, claims = await admit(request, "orders", "orders", self.faults, self.issuer, self.directory,
                                         self._audiences())
            body = self._visible(tenant, claims)
        except ServiceError as err:
            self.stats.count("orders.list", status=str(err.status))
            return Response(json.dumps(err.body()), status_code=err.status, media_type="application/json",
                            headers=err.headers)
        self.stats.count("orders.list", status="200", caller="app" if is_app_only(claims) else "user")
        return Response(json.dumps(body), media_type="application/json", headers={"request-id": str(uuid.uuid4())})

    def _visible(self, tenant: Tenant, claims: dict[str, Any]) -> dict[str, Any]:
        if is_app_only(claims):
            if "Orders.Read.All" not in (claims.get("roles") or []):
                raise ServiceError(403, "Forbidden", "The app lacks the Orders.Read.All role.")
            return {"value": [o for u in tenant.users for o in orders_for(u)], "scope": "all"}
        if "Orders.Read" not in str(claims.get("scp", "")).split():
            raise ServiceError(403, "Forbidden", "The token lacks the Orders.Read scope.")
        user = tenant.user_by_oid(str(claims.get("oid")))
        if user is None:
            raise ServiceError(404, "NotFound", "No such user.")
        return {"value": orders_for(user), "scope": "mine"}

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/orders", self.list_orders)])
