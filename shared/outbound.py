"""The process's outbound HTTP session: pooled, bounded, and honest about the last answer.

MSAL turns Entra's 4xx answers into dicts and drops the status line and headers; the session
remembers, per thread, the last response's status and ``Retry-After`` so a 429 from Entra
can be forwarded as 503 + ``Retry-After``. Retries happen only on connection failures
(nothing was sent), once: never on a token POST that may have been processed.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


def parse_retry_after(value: object) -> int | None:
    """``Retry-After`` as delta-seconds (0..3600), else None. Dates and junk are ignored, never raised."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), 3600)


class OutboundSession(requests.Session):
    """``default_timeout`` applies to every call that names none: MSAL ignores its own ``timeout``
    argument when given an ``http_client``, and no outbound call may go without a deadline."""

    def __init__(self, default_timeout: float | tuple[float, float] = (3.05, 10.0), pool_size: int = 32) -> None:
        super().__init__()
        self.default_timeout = default_timeout
        self._last = threading.local()
        self._throttled_until = 0.0  # the latest Retry-After any upstream asked for, as a monotonic time
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size,
                              max_retries=Retry(total=1, connect=1, read=False, status=0, other=0, redirect=0,
                                                backoff_factor=0.1, backoff_jitter=0.1, raise_on_status=False))
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self._last.status, self._last.retry_after = None, None
        timeout = kwargs.get("timeout") or self.default_timeout
        deadline = getattr(self._last, "deadline", None)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise requests.Timeout("the request's time budget is spent")
            timeout = tuple(min(t, remaining) for t in timeout) if isinstance(timeout, tuple) \
                else min(float(timeout), remaining)
        kwargs["timeout"] = timeout
        response = super().request(method, url, *args, **kwargs)
        self._last.status = response.status_code
        self._last.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if (response.status_code == 429 or response.status_code >= 500) and self._last.retry_after is not None:
            self._throttled_until = max(self._throttled_until, time.monotonic() + self._last.retry_after)
        return response

    def throttled_for(self) -> int | None:
        """Seconds left of the last Retry-After an upstream sent (MSAL replays throttled answers
        from its own cache without calling us, so the header must be remembered here)."""
        left = self._throttled_until - time.monotonic()
        return max(1, round(left)) if left > 0 else None

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Every call made by this thread inside the block shares one deadline."""
        self._last.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._last.deadline = None

    def last_status(self) -> int | None:
        return getattr(self._last, "status", None)
