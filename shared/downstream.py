"""Calling a named downstream API with the acquired token, and reading its answer carefully.

A 401 carrying a CAE claims challenge is raised as ``DownstreamChallenge`` so the pipeline can
redo OBO with those claims once; other failures become the app's error types (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import requests
import urllib3

from . import deadline
from .config import DownstreamApi

__all__ = ["DownstreamApi", "DownstreamChallenge", "DownstreamResponse", "challenge_claims", "request"]
from .errors import DownstreamRejected, UpstreamError
from .outbound import OutboundSession, parse_retry_after

PASS_THROUGH = {403, 404, 409, 410, 412}
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class DownstreamResponse:
    status: int
    content_type: str
    body: bytes


class DownstreamChallenge(Exception):
    """The downstream API wants a token with more claims (CAE, step-up)."""

    def __init__(self, claims: str):
        super().__init__("downstream claims challenge")
        self.claims = claims


_PARAM = re.compile(r'(\w+)="([^"]*)"')


def challenge_claims(www_authenticate: str) -> str | None:
    """The decoded ``claims`` of an ``insufficient_claims`` Bearer challenge, else None."""
    params = dict(_PARAM.findall(www_authenticate or ""))
    if params.get("error") != "insufficient_claims" or not params.get("claims"):
        return None
    raw = params["claims"]
    try:
        return base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _read_body(response: requests.Response, api: DownstreamApi) -> bytes:
    """The body (at most ``MAX_BODY`` + 1 bytes) as it arrives, chunk by chunk: each socket read waits no longer
    than the read timeout or the request's remaining time, and the deadline is checked between chunks, so a
    body sent a byte at a time ends with 504 at the request's deadline, not one read timeout per byte."""
    sock = getattr(response.raw.connection, "sock", None)  # urllib3 2's connection, held while streaming
    chunks, size = [], 0
    try:
        while size <= MAX_BODY:
            deadline.check(api.name)
            if sock is not None:
                sock.settimeout(max(deadline.EPSILON, deadline.bounded(api.read_timeout)))
            chunk = response.raw.read1(MAX_BODY + 1 - size, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if getattr(response.raw, "length_remaining", None) == 0:
                break  # the whole declared Content-Length is in: no read for the end of the body
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
        status = 504 if "timed out" in str(err).lower() else 502
        deadline.check(api.name)  # the budget ran out during the read: say so
        raise UpstreamError(api.name, f"The downstream API {api.name} broke off its answer.", status) from None
    return b"".join(chunks)


def request(session: OutboundSession, api: DownstreamApi, token: str, *, method: str = "GET", path: str | None = None,
            body: bytes | None = None, correlation_id: str | None = None) -> DownstreamResponse:
    """One call with the acquired token (a ``body`` is JSON); a 2xx answer keeps its content type."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if correlation_id:
        headers["client-request-id"] = correlation_id
    try:
        response = session.request(method, api.url(path), data=body, headers=headers, allow_redirects=False,
                                   timeout=(api.connect_timeout, api.read_timeout), stream=True)
    except requests.Timeout:
        raise UpstreamError(api.name, f"The downstream API {api.name} did not answer in time.", 504) from None
    except requests.RequestException:
        raise UpstreamError(api.name, f"The downstream API {api.name} could not be reached.", 502) from None
    with response:
        body = _read_body(response, api)
    if len(body) > MAX_BODY:
        raise UpstreamError(api.name, f"The downstream API {api.name} answered with too large a body.", 502)
    status = response.status_code
    if 200 <= status < 300:
        return DownstreamResponse(status, response.headers.get("Content-Type", "application/json"), body)
    if status == 401:
        if claims := challenge_claims(response.headers.get("WWW-Authenticate", "")):
            raise DownstreamChallenge(claims)
        raise UpstreamError(api.name, f"The downstream API {api.name} refused the delegated token.", 502)
    if status == 429 or status == 503:
        raise UpstreamError(api.name, f"The downstream API {api.name} is throttling or unavailable.", 503,
                            parse_retry_after(response.headers.get("Retry-After")))
    if status in PASS_THROUGH:
        raise DownstreamRejected(status, f"The downstream API {api.name} answered {status}.")
    raise UpstreamError(api.name, f"The downstream API {api.name} answered {status}.", 502)
