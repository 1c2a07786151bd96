"""The SPA sample for ``up``: the built site (clients/spa/dist) served as it is, plus the ``/config.json`` it
reads at start, generated from the running devstack and host, so nobody copies ids and URLs by hand.
The same file is written to clients/spa/public/config.json (git-ignored) for ``npm run dev``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .state import PROJECT_ROOT

DIST = PROJECT_ROOT / "clients" / "spa" / "dist"
PUBLIC_CONFIG = PROJECT_ROOT / "clients" / "spa" / "public" / "config.json"
DEFAULT_PORT = 5173  # Vite's, and the spa-client registration's redirect URIs (devstack/tenant.toml)
SCOPE = "api://middletier/access_as_user"


def spa_config(info: dict[str, Any], api_base: str) -> dict[str, Any]:
    """What clients/spa/src/main.js reads: the SPA registration, the authority, the scope and the API."""
    return {"clientId": info["apps"]["spa-client"]["client_id"], "authority": info["authority"],
            "knownAuthorities": [info["instance"].split("//", 1)[1]], "scope": SCOPE,
            "apiUrl": api_base.rstrip("/") + "/api/me"}


class SpaSite:
    """An ASGI app: /config.json from memory (set once the host is up), everything else from ``dist``."""

    def __init__(self, dist: Path = DIST):
        self.config: dict[str, Any] | None = None

        async def config(_: Any) -> JSONResponse:
            if self.config is None:  # the host is still starting: the page asks again on reload
                return JSONResponse({"error": "the devstack is still starting"}, status_code=503)
            return JSONResponse(self.config, headers={"Cache-Control": "no-store"})

        self.app = Starlette(routes=[Route("/config.json", config),
                                     Mount("/", StaticFiles(directory=str(dist), html=True))])


def write_public_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
