"""RFC 6750 §2.1: take the one bearer token out of the Authorization header, or refuse.

Strict on purpose: exactly one ``Bearer`` credential (scheme case-insensitive), token68
characters only, bounded size. Tokens in the query string or the body are not accepted.
"""
from __future__ import annotations

import re

from .errors import InvalidRequest, MissingToken

MAX_TOKEN_BYTES = 16 * 1024
_CREDENTIALS = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")


def bearer_token(authorization: str | None) -> str:
    """The token from an Authorization header value (several headers arrive joined by ', ')."""
    if authorization is None or authorization == "":
        raise MissingToken("No bearer token was presented.")
    if len(authorization) > MAX_TOKEN_BYTES + 16:
        raise InvalidRequest("The Authorization header is too large.")
    match = _CREDENTIALS.fullmatch(authorization.strip())
    if match is None:
        raise InvalidRequest("The Authorization header must carry exactly one Bearer token.")
    return match.group(1)
