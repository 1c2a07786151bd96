"""RFC 6750 §2.1: take the one bearer token out of the Authorization header, or refuse.

Strict on purpose: exactly one ``Bearer`` credential (scheme case-insensitive), token68
characters only, bounded size. Tokens in the query string or the body are not accepted.
"""
from __future__ import annotations

import re

from .errors import AuthenticationError

MAX_TOKEN_BYTES = 16 * 1024
_CREDENTIALS = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")


def bearer_token(authorization: str | None) -> str:
    """The token from an Authorization header value (several headers arrive joined by ', ')."""
    if authorization is None or authorization == "":
        raise AuthenticationError("No bearer token was presented.", error=None)
    if len(authorization) > MAX_TOKEN_BYTES + 16:
        raise AuthenticationError("The Authorization header is too large.", error="invalid_request")
    match = _CREDENTIALS.fullmatch(authorization.strip())
    if match is None:
        raise AuthenticationError("The Authorization header must carry exactly one Bearer token.",
                                  error="invalid_request")
    return match.group(1)
