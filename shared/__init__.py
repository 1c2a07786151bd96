"""What a function author needs, in one import (in the spirit of pyjwt's ``jwt``)::

    @endpoint(Requirement(callers="user"), downstream=("Graph",))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        return call.downstream("Graph")      # OBO; as_app=True: the app's own token

The names load on first use (PEP 562), so ``import shared.config`` (tools, tests, the settings
table) does not pull in MSAL, the token cache and the Functions adapter.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .authorization import Requirement
    from .downstream import DownstreamResponse
    from .errors import ApiError
    from .functions import endpoint
    from .pipeline import Call

_HOMES = {"ApiError": "errors", "Call": "pipeline", "DownstreamResponse": "downstream",
          "Requirement": "authorization", "endpoint": "functions"}
__all__ = ["ApiError", "Call", "DownstreamResponse", "Requirement", "endpoint"]  # = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value
