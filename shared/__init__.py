"""What a function author needs, in one import (in the spirit of pyjwt's ``jwt``)::

    @endpoint(Requirement(callers="user"), downstream=("Graph",))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        return call.downstream("Graph")      # OBO; as_app=True: the app's own token
"""
from .authorization import Requirement
from .downstream import DownstreamResponse
from .errors import ApiError
from .functions import endpoint
from .pipeline import Call

__all__ = ["ApiError", "Call", "DownstreamResponse", "Requirement", "endpoint"]
