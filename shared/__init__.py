"""What a function author needs, in one import (in the spirit of pyjwt's ``jwt``)::

    from shared import Call, Requirement, endpoint

    @endpoint(Requirement(callers="user"), downstream=("Graph",))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        return call.downstream("Graph")                 # on the caller's behalf (OBO)

``call.downstream(name, path=..., method=..., body=..., as_app=True)`` calls as the app instead.
"""
from .authorization import Requirement
from .downstream import DownstreamResponse
from .errors import ApiError
from .functions import endpoint
from .pipeline import Call

__all__ = ["ApiError", "Call", "DownstreamResponse", "Requirement", "endpoint"]
