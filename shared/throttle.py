"""Failure isolation between callers for token acquisition.

``EntraThrottle``: what Entra's 429/5xx said, remembered per caller (one user's OBO for one scope set, or the
app's own token): a user told ``Retry-After`` does not call Entra again before then, and nobody else is
answered with it. (MSAL's own throttle cache keys OBO by endpoint, client id and scope, not the assertion,
replaying one user's 429 to every user: ``PerCallerHttpCache`` switches that part off.) An outage is seen by
many callers: when ``breaker_callers`` distinct callers fail within ``breaker_window`` seconds, an app-wide
breaker answers everyone for their shortest ``Retry-After`` (at most ``breaker_max_seconds``).

``AcquisitionGate``: a bound on token acquisitions that call Entra at once, so requests waiting on a slow
Entra cannot take every worker thread from requests served from cache. When full, a caller waits at most
``queue_seconds`` and never past the request's deadline (not at all while the running ones are older than
``queue_seconds``: waiting would only hold a thread), then gets a fast 503 with ``Retry-After`` (504 when the
request's budget is what ran out).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

from . import deadline
from .errors import UpstreamError

DEFAULT_SECONDS = 5  # a 429/5xx without Retry-After: MSAL's own default


def default_acquisition_limit(pool: int = 0) -> int:
    """Half the worker's thread pool (``PYTHON_THREADPOOL_THREAD_COUNT``, else the worker's ``min(32, cpus + 4)``),
    at least 2: the other half stays free for requests that need no call to Entra."""
    return max(2, (pool or min(32, (os.cpu_count() or 1) + 4)) // 2)


class EntraThrottle:
    def __init__(self, *, breaker_callers: int = 5, breaker_window: float = 30.0, breaker_max_seconds: int = 60,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.breaker_callers, self.breaker_window = breaker_callers, breaker_window
        self.breaker_max_seconds, self.max_keys = breaker_max_seconds, max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}                      # caller key -> monotonic time
        self._recent: deque[tuple[float, str, int]] = deque()   # (when, caller key, seconds) within the window
        self._open_until = 0.0                                  # the app-wide breaker

    def retry_after(self, key: str) -> int | None:
        """Seconds this caller must still wait (its own Retry-After, or the open breaker), else None."""
        now = self._clock()
        with self._lock:
            until = max(self._until.get(key, 0.0), self._open_until)
        return max(1, round(until - now)) if until > now else None

    def check(self, key: str) -> None:
        seconds = self.retry_after(key)
        if seconds is not None:
            raise UpstreamError("entra", "The identity provider asked this caller to wait (throttled or unavailable).",
                                503, seconds)

    def failed(self, key: str, retry_after: int | None) -> int:
        """Entra answered this caller 429/5xx; remember it. Returns the seconds it is held."""
        seconds = DEFAULT_SECONDS if retry_after is None else max(1, min(int(retry_after), 3600))
        now = self._clock()
        with self._lock:
            self._until[key] = max(self._until.get(key, 0.0), now + seconds)
            if len(self._until) > self.max_keys:
                for k in [k for k, t in self._until.items() if t <= now]:
                    del self._until[k]
                while len(self._until) > self.max_keys:  # oldest insertion first
                    del self._until[next(iter(self._until))]
            self._recent.append((now, key, seconds))
            while self._recent and self._recent[0][0] < now - self.breaker_window:
                self._recent.popleft()
            held = {k: s for _, k, s in self._recent}  # each caller's latest
            if len(held) >= self.breaker_callers and self._open_until <= now:
                self._open_until = now + min(min(held.values()), self.breaker_max_seconds)
                self._recent.clear()
        return seconds

    @property
    def breaker_open(self) -> bool:
        return self._open_until > self._clock()


class AcquisitionGate:
    def __init__(self, limit: int, queue_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.queue_seconds = limit, queue_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._running: dict[object, float] = {}
        self.refused = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            until = self._clock() + deadline.bounded(self.queue_seconds)  # never past the request's deadline
            while len(self._running) >= self.limit:
                now = self._clock()
                slow = now - min(self._running.values()) >= self.queue_seconds
                if slow or now >= until:
                    self.refused += 1
                    deadline.check("entra")  # the request's budget ran out in the queue: 504, not "retry"
                    raise UpstreamError("entra", "Too many token requests to the identity provider are in "
                                        "progress; retry shortly.", 503, 1)
                self._cond.wait(until - now)
            ticket = object()
            self._running[ticket] = self._clock()
        try:
            yield
        finally:
            with self._cond:
                del self._running[ticket]
                self._cond.notify()

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)


_NO_ACCOUNT = hashlib.sha256(repr(None).encode("utf-8")).hexdigest()


class PerCallerHttpCache(dict):  # type: ignore[type-arg]
    """MSAL's ``http_cache`` without its 429/5xx replays keyed by endpoint, client and scope only (OBO, client
    credentials: ``hash`` of no account); per-account entries and everything else are kept as MSAL keeps them."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, str) and key.endswith("429/5xx/Retry-After") and f"hash={_NO_ACCOUNT} " in key:
            return
        super().__setitem__(key, value)
