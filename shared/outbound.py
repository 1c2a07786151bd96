"""The process's outbound HTTP session: pooled, bounded, and honest about the last answer.

MSAL turns Entra's 4xx answers into dicts and drops the status line and headers; the session remembers,
per thread and request, the last response's status and ``Retry-After`` so Entra's 429 can be forwarded as
503 + ``Retry-After``, that call's own (``forget()`` starts each request with none). Retries happen only
on connection failures (nothing was sent), once: never on a token POST that may have been processed.
Every call's timeouts are capped by the request's one deadline (``deadline.py``). A static document several
readers fetch on a cold start (the tenant's OpenID metadata: the signing keys and MSAL's authority) can be
``share``d: one GET answers all who ask within a minute. New TLS connections share one verifying ``SSLContext``
per CA bundle (``SharedTlsContext``), as requests < 2.32 shared its default one: requests 2.34 and urllib3 2 build a
context and parse the whole CA bundle for every new connection (60-120 ms of CPU here, four times on a cold start).
"""
from __future__ import annotations

import copy
import functools
import os
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from . import deadline
from .config import CONNECT_TIMEOUT, AzureAdSettings, default


def parse_retry_after(value: object) -> int | None:
    """``Retry-After`` as delta-seconds (0..3600), else None. Dates and junk are ignored, never raised."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), 3600)


SHARE_SECONDS = 60.0


_tls_lock = threading.Lock()
_tls_contexts: dict[str, ssl.SSLContext] = {}


def tls_context(ca_location: str) -> ssl.SSLContext:
    """The verifying context for a CA bundle file (or folder), built once per process (two first connections at once
    wait for one build): what urllib3 builds for each connection (``create_urllib3_context``: CERT_REQUIRED,
    hostname checked), loaded with the bundle requests names."""
    if (context := _tls_contexts.get(ca_location)) is not None:
        return context
    with _tls_lock:
        if (context := _tls_contexts.get(ca_location)) is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            try:
                if os.path.isdir(ca_location):
                    context.load_verify_locations(capath=ca_location)
                else:
                    context.load_verify_locations(cafile=ca_location)
            except (ssl.SSLError, OSError) as err:  # as requests says it: an SSLError, which callers map (502/503)
                raise requests.exceptions.SSLError(f"the CA bundle {ca_location} could not be loaded "
                                                   f"({type(err).__name__})") from None
            _tls_contexts[ca_location] = context
        return context


class SharedTlsContext(HTTPAdapter):
    """An ``HTTPAdapter`` whose verified HTTPS pools share ``tls_context(bundle)``: the same bundle requests'
    ``cert_verify`` picks (``verify``'s path, else certifi's), the same checks; only parsed once. A client
    certificate (``cert``) or ``verify=False`` keeps requests' own handling."""

    @staticmethod
    def _bundle(url: str, verify: Any, cert: Any) -> str | None:
        if cert or not verify or not url.lower().startswith("https"):
            return None
        return os.fspath(verify) if isinstance(verify, (str, os.PathLike)) else DEFAULT_CA_BUNDLE_PATH

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if (bundle := self._bundle(str(request.url), verify, cert)) is not None:
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
            pool_kwargs["ssl_context"] = tls_context(bundle)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # its checks (the bundle exists) and settings, then:
        if self._bundle(url, verify, cert) is not None:
            conn.ca_certs = conn.ca_cert_dir = None  # in the pool's context already: not parsed again per connection


@functools.cache
def with_shared_tls(adapter: type[HTTPAdapter]) -> type[HTTPAdapter]:
    """``adapter`` (an SDK's own ``HTTPAdapter`` subclass) with ``SharedTlsContext``'s pools."""
    return type(f"SharedTls{adapter.__name__}", (SharedTlsContext, adapter), {})


def _within_deadline(timeout: Any) -> Any:
    """``timeout`` (seconds, or (connect, read)) capped by what is left of the request's deadline; a spent
    budget is a ``requests.Timeout`` before anything is sent."""
    left = deadline.remaining()
    if left is None:
        return timeout
    if left <= deadline.EPSILON:
        raise requests.Timeout("the request's time budget is spent")
    return (min(timeout[0], left), min(timeout[1], left)) if isinstance(timeout, tuple) else min(float(timeout), left)


def _no_netrc(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The session's ``auth``: changes nothing. Its presence keeps requests from looking in ``~/.netrc``, whose Basic
    credentials for a host would replace the call's own ``Authorization`` (a proxy keeps ``trust_env`` on)."""
    return request


def environment_once(verify: Any = True) -> tuple[bool, Any]:
    """``(trust_env, verify)`` for a session that reads the environment once, not per call.

    requests re-reads it for every call it makes with ``trust_env``: every variable scanned for proxies and
    NO_PROXY, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, ``~/.netrc``: ~1.9M instructions, 40 % of a warm request
    (bench/inprocess.py). A function app's settings are its environment, fixed for the process's life. With no
    proxy configured, the session stops trusting the environment and keeps the CA bundle it names, the one requests
    would pick; with a proxy, requests' own per-call handling stays (NO_PROXY's matching is requests'). ``~/.netrc``
    is never read (``_no_netrc``): its Basic credentials would replace a call's Authorization header."""
    if any(scheme != "no" for scheme in urllib.request.getproxies()):
        return True, verify
    return False, os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify


@dataclass
class _Shared:
    """One shared URL: its last 200 answer (content read) and when; the lock makes concurrent askers one GET."""
    seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    response: requests.Response | None = None
    at: float = float("-inf")


class OutboundSession(requests.Session):
    """``default_timeout`` applies to every call that names none: MSAL ignores its own ``timeout``
    argument when given an ``http_client``, and no outbound call may go without a deadline."""

    DEFAULT_TIMEOUT = (CONNECT_TIMEOUT, default(AzureAdSettings, "timeout_seconds"))

    def __init__(self, default_timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, pool_size: int = 32) -> None:
        super().__init__()
        self.default_timeout = default_timeout
        self._last = threading.local()
        self._shared: dict[str, _Shared] = {}
        adapter = SharedTlsContext(pool_connections=8, pool_maxsize=pool_size,
                              max_retries=Retry(total=1, connect=1, read=False, status=0, other=0, redirect=0,
                                                backoff_factor=0.1, backoff_jitter=0.1, raise_on_status=False))
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.trust_env, self.verify = environment_once(self.verify)
        self.auth = _no_netrc  # requests reads ~/.netrc (with trust_env) only for a session without auth

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Every timeout (connect, read) is capped by the request's deadline (``deadline.py``); a spent
        budget is a ``requests.Timeout`` before anything is sent."""
        self._last.answer = None
        kwargs["timeout"] = _within_deadline(kwargs.get("timeout") or self.default_timeout)
        shared = self._shared.get(str(url)) if self._shared and method == "GET" and not args \
            and not kwargs.get("params") else None
        response = super().request(method, url, *args, **kwargs) if shared is None \
            else self._shared_get(shared, str(url), kwargs)
        status = response.status_code
        self._last.answer = (status, parse_retry_after(response.headers.get("Retry-After"))
                             if status == 429 or status >= 500 else None)
        return response

    def share(self, url: str, seconds: float = SHARE_SECONDS) -> None:
        """GETs of ``url`` (no query parameters) share one answer: askers at once wait for one call (no longer
        than their own timeout), askers within ``seconds`` of a 200 get a copy of it. For a document that does not
        change per caller (Entra serves the OpenID metadata with a day's Cache-Control), never for a token call.
        Failures are not shared: the next asker calls again."""
        self._shared[url] = _Shared(seconds)

    def _shared_get(self, shared: _Shared, url: str, kwargs: dict[str, Any]) -> requests.Response:
        timeout = kwargs["timeout"]
        wait = deadline.bounded(sum(timeout) if isinstance(timeout, tuple) else timeout)
        if not shared.lock.acquire(timeout=max(0.0, wait)):
            raise requests.Timeout("another request's fetch of the same document did not finish in time")
        try:
            if shared.response is not None and time.monotonic() - shared.at < shared.seconds:
                return copy.copy(shared.response)
            # the first asker failed: this one asks itself, with what is left of its deadline after the wait
            response = super().request("GET", url, **{**kwargs, "timeout": _within_deadline(timeout)})
            if response.status_code == 200:
                _ = response.content  # read now: copies are served from it
                shared.response, shared.at = response, time.monotonic()
            return response
        finally:
            shared.lock.release()

    def throttled_for(self) -> int | None:
        """The ``Retry-After`` of this thread's last call, if it failed with 429/5xx: never another upstream's
        (Graph's 3600 s for one user must not become Entra's answer to another); per-caller memory is
        ``shared/throttle.py``'s."""
        answer = getattr(self._last, "answer", None)
        return answer[1] if answer else None

    def forget(self) -> None:
        """Drop this thread's last answer: a worker thread serves many requests, none may see another's."""
        self._last.answer = None  # (status, retry_after) of this thread's last call

    def last_status(self) -> int | None:
        answer = getattr(self._last, "answer", None)
        return answer[0] if answer else None
