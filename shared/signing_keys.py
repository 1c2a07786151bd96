"""The tenant's OIDC metadata and signing keys, cached per process.

Like Microsoft.Identity.Web: keys are refreshed every ``refresh_seconds`` (24 h by default), and a token
signed with an unknown ``kid`` triggers one refetch, so a key rollover costs one JWKS request instead of
an outage. Unlike its 5-minute slot, the refetch can't be spent for long by someone else: the validator
asks for it only for a token that could be valid (a well-formed ``kid``, our tenant, issuer and audience,
within its lifetime: all checkable before the signature), and the slot comes back after
``unknown_kid_interval`` (10 s): a forged token delays recognising a real new key by at most that, at
one JWKS request per interval. While the JWKS endpoint is down, held keys keep serving (a failed refresh
is retried after that interval, not per request); only a cold start without keys fails (503).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import jwt
import requests

from .config import CONNECT_TIMEOUT, AzureAdSettings, default
from .errors import UpstreamError
from .outbound import parse_retry_after

log = logging.getLogger("middletier.keys")


@dataclass(frozen=True)
class Metadata:
    issuer: str                # the v2 issuer template (``{tenantid}`` for multi-tenant authorities)
    jwks_uri: str


@dataclass(frozen=True)
class SigningKey:
    key: Any                  # the cryptography public key
    issuer: str | None        # the JWKS entry's "issuer", when Entra publishes one


class SigningKeys:
    def __init__(self, metadata_url: str, session: requests.Session, *, v1_metadata_url: str | None = None,
                 refresh_seconds: float = default(AzureAdSettings, "metadata_refresh_seconds"),
                 unknown_kid_interval: float = 10, timeout: float = default(AzureAdSettings, "timeout_seconds"),
                 clock: Callable[[], float] = time.monotonic):
        """``metadata_url`` is the v2 OIDC document; ``v1_metadata_url`` the v1 one, read only for its issuer
        (``https://sts.windows.net/{tenantid}/``, or ``https://sts.chinacloudapi.cn/{tenantid}/`` in China) as
        Microsoft.IdentityModel's AadIssuerValidator learns it: no cloud's issuer is written into the app."""
        self.metadata_url, self.v1_metadata_url = metadata_url, v1_metadata_url
        self._v1_issuer: str | None = None
        self._v1_failed_at = float("-inf")
        self._v1_retry = 30.0
        self._session, self._timeout, self._clock = session, timeout, clock
        self._refresh, self._unknown_interval = refresh_seconds, unknown_kid_interval
        self._lock = threading.Lock()
        self._metadata: Metadata | None = None
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = float("-inf")
        self._unknown_refetch_at = float("-inf")  # the last refetch for an unknown kid
        self._attempted_at = float("-inf")        # the last fetch of the keys, successful or not
        self.fetches = 0

    def v1_issuer(self) -> str | None:
        """The v1 issuer template (None when v1 tokens aren't accepted), read on first need and kept. A v1 outage
        is a 503 (retries rate-limited): it never refuses a valid token as untrusted, nor touches v2 tokens."""
        if self.v1_metadata_url is None or self._v1_issuer is not None:
            return self._v1_issuer
        with self._lock:
            if self._v1_issuer is None:
                if self._clock() - self._v1_failed_at < self._v1_retry:
                    raise UpstreamError("entra", "The v1 OpenID metadata is unavailable.", 503, int(self._v1_retry))
                try:
                    doc = self._get_json(self.v1_metadata_url, "v1 OpenID metadata")
                    if not isinstance(doc.get("issuer"), str):
                        raise UpstreamError("entra", "The v1 OpenID metadata lacks issuer.", 502)
                except UpstreamError:
                    self._v1_failed_at = self._clock()
                    raise
                self._v1_issuer = doc["issuer"]
        return self._v1_issuer

    @property
    def metadata(self) -> Metadata:
        self._ensure_fresh()
        assert self._metadata is not None
        return self._metadata

    def published(self, kid: str) -> bool:
        """Is ``kid`` among the keys held now? (No fetch: a memoized token re-checks its key cheaply.)"""
        self._ensure_fresh()
        return kid in self._keys

    def get(self, kid: str, *, refetch: bool = True) -> SigningKey | None:
        """The key for ``kid``, else None. An unknown ``kid`` refetches the keys if ``refetch`` (the token could be
        valid) and none was refetched in the last ``unknown_kid_interval``; a failure keeps the held keys."""
        self._ensure_fresh()
        key = self._keys.get(kid)
        if key is not None or not refetch:
            return key
        with self._lock:
            key = self._keys.get(kid)  # another thread may have refetched meanwhile
            if key is None and self._clock() - self._unknown_refetch_at >= self._unknown_interval:
                self._unknown_refetch_at = self._clock()
                self._fetch_or_keep()
                key = self._keys.get(kid)
        return key

    def _ensure_fresh(self) -> None:
        if self._keys and (self._clock() - self._fetched_at < self._refresh
                           or self._clock() - self._attempted_at < self._unknown_interval):
            return  # fresh, or a refresh just failed: keep serving the held keys, retry after the interval
        with self._lock:
            if self._keys and (self._clock() - self._fetched_at < self._refresh
                               or self._clock() - self._attempted_at < self._unknown_interval):
                return
            self._fetch_or_keep()

    def _fetch_or_keep(self) -> None:
        self._attempted_at = self._clock()
        try:
            self._fetch()
        except UpstreamError:
            if not self._keys:
                raise
            log.warning("signing-key refresh failed; keeping %d cached keys", len(self._keys))

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._session.get(url, timeout=(min(CONNECT_TIMEOUT, self._timeout), self._timeout))
        except requests.Timeout:
            raise UpstreamError("entra", f"Timed out fetching the {what}.", 504) from None
        except requests.RequestException:
            raise UpstreamError("entra", f"Could not reach the identity provider for the {what}.", 503) from None
        if response.status_code != 200:
            raise UpstreamError("entra", f"The identity provider answered {response.status_code} for the {what}.", 503,
                                parse_retry_after(response.headers.get("Retry-After")))
        try:
            body = response.json()
        except ValueError:
            raise UpstreamError("entra", f"The {what} is not JSON.", 502) from None
        if not isinstance(body, dict):
            raise UpstreamError("entra", f"The {what} is not a JSON object.", 502)
        return body

    def _fetch(self) -> None:
        if self._metadata is None:
            doc = self._get_json(self.metadata_url, "OpenID metadata")
            if not isinstance(doc.get("issuer"), str) or not isinstance(doc.get("jwks_uri"), str):
                raise UpstreamError("entra", "The OpenID metadata lacks issuer or jwks_uri.", 502)
            self._metadata = Metadata(doc["issuer"], doc["jwks_uri"])
        jwks = self._get_json(self._metadata.jwks_uri, "signing keys")
        keys: dict[str, SigningKey] = {}
        listed = jwks.get("keys")
        for raw in listed if isinstance(listed, list) else []:
            if not isinstance(raw, dict) or raw.get("kty") != "RSA" or raw.get("use", "sig") != "sig":
                continue
            issuer = raw.get("issuer")
            if issuer is not None and not isinstance(issuer, str):
                continue  # malformed: the validator compares it as a string
            try:
                parsed = jwt.PyJWK(raw, algorithm="RS256")
            except jwt.PyJWTError:
                continue
            if isinstance(parsed.key_id, str) and parsed.key_id:  # a token's kid is a non-empty string
                keys[parsed.key_id] = SigningKey(parsed.key, issuer)
        if not keys:
            raise UpstreamError("entra", "The identity provider published no usable signing keys.", 502)
        self._fetched_at = self._clock()  # before the keys: keys are never held without their fetch time
        self._keys = keys
        self.fetches += 1
        log.info("fetched %d signing keys", len(keys))
