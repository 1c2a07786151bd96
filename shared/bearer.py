"""RFC 6750 §2.1: take the one bearer token out of the Authorization header, or refuse.

Strict on purpose: exactly one ``Bearer`` credential (scheme case-insensitive), token68
characters only, bounded size. Tokens in the query string or the body are not accepted.
"""
from __future__ import annotations

from .errors import InvalidRequest, MissingToken

MAX_TOKEN_BYTES = 16 * 1024
_SCHEME = "bearer"
# token68's characters (RFC 7235 §2.1) before its trailing "=": deleting them all must leave nothing. One C pass
# (bytes.translate) instead of a regex a character at a time: the header is read on every request, warm or not.
_TOKEN68 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def bearer_token(authorization: str | None) -> str:
    """The token from an Authorization header value (several headers arrive joined by ', ')."""
    if authorization is None or authorization == "":
        raise MissingToken("No bearer token was presented.")
    if len(authorization) > MAX_TOKEN_BYTES + 16:
        raise InvalidRequest("The Authorization header is too large.")
    value = authorization.strip()
    token = value[len(_SCHEME):].lstrip(" ")
    if value[:len(_SCHEME)].lower() != _SCHEME or len(token) == len(value) - len(_SCHEME) or not token.isascii() \
            or token.rstrip("=").encode().translate(None, _TOKEN68) or token.startswith("="):
        raise InvalidRequest("The Authorization header must carry exactly one Bearer token.")
    return token
