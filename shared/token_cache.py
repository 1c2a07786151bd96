"""MSAL's token cache, partitioned per user assertion, behind one process-wide MSAL app.

MSAL Python binds a token cache to a ConfidentialClientApplication at construction, but the
app (and its HTTP pool, authority metadata, client-assertion cache) should live once per
process. So the one cache object MSAL sees reads and writes the *current partition's* data:
a ``contextvars`` variable selects it for the duration of one acquisition, in whichever
worker thread runs it. A partition is keyed by SHA-256 of the incoming token (as the MSAL
Java OBO sample and MSAL.NET do), so one user's tokens can never be served to another.

This leans on one detail of MSAL's ``TokenCache``: all reads and writes go through
``self._cache`` under ``self._lock``. tests/unit/test_token_cache.py pins that behaviour.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import msal
from cachetools import TLRUCache

from .config import L1_MAX_BYTES, L1_MAX_ENTRIES
from .memory import PARTITION_OVERHEAD

_current: contextvars.ContextVar["Partition | None"] = contextvars.ContextVar("msal_partition", default=None)


def partition_key(assertion: str) -> str:
    """SHA-256 of the incoming token: the partition key; the token itself is never stored as a key."""
    return hashlib.sha256(assertion.encode()).hexdigest()


@dataclass
class Partition:
    key: str                               # the storage key: sha256 of the assertion (or of a session key)
    expires_at: float                      # epoch seconds; after this the partition is useless
    data: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one acquisition at a time per partition
    size: int = PARTITION_OVERHEAD         # bytes held (shared.memory's estimate), for the L1 budget
    # The last access token MSAL gave per scope set, with the time until which MSAL itself would
    # return it from cache unchanged: repeat calls skip MSAL's account and token searches.
    hot: dict[tuple[str, ...], tuple[str, float]] = field(default_factory=dict)


class PartitionedTokenCache(msal.TokenCache):
    """The cache handed to MSAL; its storage is whatever partition is current."""

    @property  # type: ignore[override]
    def _cache(self) -> dict[str, Any]:
        part = _current.get()
        if part is None:
            raise RuntimeError("MSAL token cache used outside a partition")
        return part.data

    @_cache.setter
    def _cache(self, value: dict[str, Any]) -> None:
        if value:  # TokenCache.__init__ assigns {}; nothing else may replace a partition wholesale
            raise RuntimeError("partitions are not replaced wholesale")


class PartitionStore:
    """The in-process L1: bounded by entry count and by bytes, LRU, and expiry-aware.

    An entry leaves at its partition's ``expires_at`` (the assertion's expiry, or the access
    token's minus a refresh margin once one is cached), or when the budget needs room.
    """

    def __init__(self, max_partitions: int = L1_MAX_ENTRIES, max_bytes: int = L1_MAX_BYTES, clock: Any = time.time):
        self._lock = threading.Lock()
        self._clock = clock
        self.max_partitions = max_partitions
        self._entries: TLRUCache[str, Partition] = TLRUCache(
            maxsize=max_bytes, ttu=lambda _k, part, _now: part.expires_at, timer=clock,
            getsizeof=lambda part: part.size)

    def get(self, key: str) -> Partition | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, part: Partition) -> Partition:
        """Insert or re-insert (after its data or expiry changed); returns the stored partition."""
        with self._lock:
            try:
                self._entries[part.key] = part
            except ValueError:  # larger than the whole budget: serve it, don't keep it
                return part
            while len(self._entries) > self.max_partitions:
                self._entries.popitem()
            return part

    def get_or_create(self, key: str, expires_at: float) -> Partition:
        with self._lock:
            part = self._entries.get(key)
            if part is None:
                part = Partition(key, expires_at)
                self._entries[key] = part
                while len(self._entries) > self.max_partitions:
                    self._entries.popitem()
            return part

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._entries.currsize)


@contextlib.contextmanager
def use_partition(part: Partition) -> Iterator[Partition]:
    """Make ``part`` the storage of the shared MSAL cache for this thread/context.

    Reads need no partition lock (MSAL's cache lock guards the data); callers that may call
    Entra take ``part.lock`` so concurrent misses on one partition make one call."""
    token = _current.set(part)
    try:
        yield part
    finally:
        _current.reset(token)
