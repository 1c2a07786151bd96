"""The in-process L1: a user's partition of MSAL's cache, bounded by entries and bytes, LRU, expiry-aware."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cachetools import TLRUCache

from ..config import L1_MAX_BYTES, L1_MAX_ENTRIES
from ..memory import PARTITION_OVERHEAD


@dataclass
class Partition:
    key: str                               # the storage key: sha256 of the assertion (or of a session key)
    expires_at: float                      # epoch seconds; after this the partition is useless
    data: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one acquisition at a time per partition
    size: int = PARTITION_OVERHEAD         # bytes held (shared.memory's estimate), for the L1 budget
    version: str | None = None             # the L2 write it holds (None: none): a waiter takes only a newer one
    # Per scope set: MSAL's last access token, and until when MSAL would return it unchanged (repeats skip its searches)
    hot: dict[tuple[str, ...], tuple[str, float]] = field(default_factory=dict)


class PartitionStore:
    """An entry leaves at its partition's ``expires_at`` (the assertion's expiry, or the access
    token's minus a refresh margin once one is cached), or when the budget needs room."""

    def __init__(self, max_partitions: int = L1_MAX_ENTRIES, max_bytes: int = L1_MAX_BYTES, clock: Any = time.time):
        self._lock = threading.Lock()
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
            return self._insert(part)

    def get_or_create(self, key: str, expires_at: float) -> Partition:
        with self._lock:
            part = self._entries.get(key)
            return part if part is not None else self._insert(Partition(key, expires_at))

    def _insert(self, part: Partition) -> Partition:
        try:
            self._entries[part.key] = part
        except ValueError:  # larger than the whole budget: serve it, don't keep it
            return part
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
