"""The process's outbound HTTP session: pooled, bounded, and honest about the last answer.

MSAL turns Entra's 4xx answers into dicts and drops the status line and headers; the session remembers,
per thread and request, the last response's status and ``Retry-After`` so Entra's 429 can be forwarded as
503 + ``Retry-After``, that call's own (``forget()`` starts each request with none). Retries happen only
on connection failures (nothing was sent), once: never on a token POST that may have been processed.
Every call's timeouts are capped by the request's one deadline (``deadline.py``).
"""
from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import deadline
from .config import CONNECT_TIMEOUT, AzureAdSettings, default


def parse_retry_after(value: object) -> int | None:
    """``Retry-After`` as delta-seconds (0..3600), else None. Dates and junk are ignored, never raised."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), 3600)


class OutboundSession(requests.Session):
    """``default_timeout`` applies to every call that names none: MSAL ignores its own ``timeout``
    argument when given an ``http_client``, and no outbound call may go without a deadline."""

    DEFAULT_TIMEOUT = (CONNECT_TIMEOUT, default(AzureAdSettings, "timeout_seconds"))

    def __init__(self, default_timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, pool_size: int = 32) -> None:
        super().__init__()
        self.default_timeout = default_timeout
        self._last = threading.local()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size,
                              max_retries=Retry(total=1, connect=1, read=False, status=0, other=0, redirect=0,
                                                backoff_factor=0.1, backoff_jitter=0.1, raise_on_status=False))
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Every timeout (connect, read) is capped by the request's deadline (``deadline.py``); a spent
        budget is a ``requests.Timeout`` before anything is sent."""
        self._last.status, self._last.retry_after = None, None
        timeout = kwargs.get("timeout") or self.default_timeout
        if deadline.spent():
            raise requests.Timeout("the request's time budget is spent")
        kwargs["timeout"] = tuple(deadline.bounded(t) for t in timeout) if isinstance(timeout, tuple) \
            else deadline.bounded(float(timeout))
        response = super().request(method, url, *args, **kwargs)
        self._last.status = response.status_code
        self._last.retry_after = parse_retry_after(response.headers.get("Retry-After")) \
            if response.status_code == 429 or response.status_code >= 500 else None
        return response

    def throttled_for(self) -> int | None:
        """The ``Retry-After`` of this thread's last call, if it failed with 429/5xx: never another upstream's
        (Graph's 3600 s for one user must not become Entra's answer to another); per-caller memory is
        ``shared/throttle.py``'s."""
        return getattr(self._last, "retry_after", None)

    def forget(self) -> None:
        """Drop this thread's last answer: a worker thread serves many requests, none may see another's."""
        self._last.status, self._last.retry_after = None, None

    def last_status(self) -> int | None:
        return getattr(self._last, "status", None)
