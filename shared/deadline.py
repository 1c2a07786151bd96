"""The request's one deadline: ``MiddleTier__RequestBudgetSeconds`` over everything a request waits on.

``within()`` starts it at the top of the request path (``shared/functions.py``); every wait below reads it:
outbound HTTP timeouts (``outbound.py``), the downstream body's chunked read (``downstream.py``), the Key
Vault and managed-identity SDK calls (``credentials.py``), L2 (``token_cache/l2.py``), the acquisition
gate's queue (``throttle.py``) and the partition lock (``tokens.py``). It lives in a ``ContextVar``: the
functions host runs one request per thread, and the var is set in that thread, so no request sees
another's. Monotonic clock: wall-clock steps never move it.
"""
from __future__ import annotations

import contextvars
import time

from .errors import UpstreamError

# Below this many seconds a call could not even connect: treat the budget as spent.
EPSILON = 0.01

_clock = time.monotonic  # a module attribute: the unit tests move it
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("middletier_deadline", default=None)


class within:  # noqa: N801 - used as a function: ``with deadline.within(seconds):``
    """Every wait inside the block shares one deadline, ``seconds`` from now; a nested block keeps the
    earlier deadline (it can shorten, never lengthen, the request's); the outer one is restored on exit.
    A class, not ``@contextmanager``: entered twice per request, and a generator costs twice the instructions."""
    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> None:
        end = _clock() + max(0.0, float(self._seconds))
        current = _deadline.get()
        self._token = _deadline.set(end if current is None else min(current, end))

    def __exit__(self, *exc: object) -> None:
        _deadline.reset(self._token)


def remaining() -> float | None:
    """Seconds left of the request's budget (never negative), or None outside any request."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - _clock())


def bounded(seconds: float) -> float:
    """``seconds`` capped by the time left: for timeouts and waits (``seconds`` itself outside a request)."""
    left = remaining()
    return seconds if left is None else min(seconds, left)


def spent() -> bool:
    """True when the request has (almost) no time left; False outside any request."""
    left = remaining()
    return left is not None and left <= EPSILON


class BudgetSpent(UpstreamError):
    """504: the request's deadline passed while it waited on ``service``. The request's own lack of time, not
    the service's failure: nothing should remember it beyond this request (a credential backoff, a breaker)."""

    def __init__(self, service: str) -> None:
        super().__init__(service, f"{service} did not answer within the request's time budget.", 504)


def check(service: str) -> None:
    """Raise 504 (``BudgetSpent``, an ``UpstreamError``) when the request's budget is spent: called before each
    attempt at a slow thing."""
    if spent():
        raise BudgetSpent(service)
