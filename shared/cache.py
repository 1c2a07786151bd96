"""The token cache's two levels: the in-process L1 and an optional shared, encrypted L2.

``partition()`` finds a user's partition in L1, else loads it from L2 (a new instance serves
an already-cached user with no OBO), else starts an empty one. ``save()`` writes it back to
both after MSAL changed it. ``flight()`` is the cross-instance single-flight: the first
instance to miss takes a short L2 lock and calls Entra; the others wait briefly for its entry.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator

from .l2 import Guarded
from .memory import HOT_ENTRY, PARTITION_OVERHEAD, held_bytes
from .sealing import Sealer
from .token_cache import Partition, PartitionStore

log = logging.getLogger("middletier.cache")

REFRESH_MARGIN = 300  # MSAL refreshes access tokens 5 minutes before they expire
PREFIX = "msal-tc:"


class TokenCacheLayers:
    def __init__(self, l1: PartitionStore, l2: Guarded | None = None, sealer: Sealer | None = None, *,
                 lock_ms: int = 3000, wait_seconds: float = 2.0, clock: Callable[[], float] = time.time):
        if l2 is not None and sealer is None:
            raise ValueError("an L2 cache needs an encryption key")
        self.l1, self.l2, self.sealer = l1, l2, sealer
        self.lock_ms, self.wait_seconds = lock_ms, wait_seconds
        self._clock = clock
        self._stripes = [threading.Lock() for _ in range(64)]  # one L2 load per key at a time

    def partition(self, key: str, expires_at: float) -> Partition:
        part = self.l1.get(key)
        if part is not None:
            return part
        with self._stripes[int(key[:8], 16) % len(self._stripes)]:
            part = self.l1.get(key)
            if part is not None:
                return part
            loaded = self._load(key)
            if loaded is not None:
                data, stored_expiry = loaded
                return self.l1.put(Partition(key, min(expires_at, stored_expiry), data, size=_size(data)))
            return self.l1.get_or_create(key, expires_at)

    def _load(self, key: str) -> tuple[dict[str, Any], float] | None:
        if self.l2 is None or self.sealer is None:
            return None
        sealed = self.l2.get(PREFIX + key)
        if sealed is None:
            return None
        plain = self.sealer.open(PREFIX + key, sealed)
        if plain is None:
            log.warning("token cache L2 entry failed authentication; treating it as a miss")
            return None
        try:
            doc = json.loads(plain)
            return doc["data"], float(doc["exp"])
        except (ValueError, KeyError, TypeError):
            return None

    def reload(self, part: Partition) -> bool:
        """Refresh ``part`` from L2 (another instance may have filled it). True if it had data."""
        loaded = self._load(part.key)
        if loaded is None or not loaded[0]:
            return False
        part.data = loaded[0]  # one assignment: readers see the old dict or the new one, never a mix
        part.size = _size(part.data)
        self.l1.put(part)  # re-accounted: the L1 budget counts what the partition now holds
        return True

    def save(self, part: Partition, token_expires_at: float | None = None) -> None:
        if token_expires_at is not None and token_expires_at - REFRESH_MARGIN > self._clock():
            part.expires_at = min(part.expires_at, token_expires_at - REFRESH_MARGIN)
        part.size = _size(part.data)
        self.l1.put(part)
        if self.l2 is not None and self.sealer is not None:
            ttl = int(part.expires_at - self._clock())
            if ttl > 0:
                doc = json.dumps({"exp": part.expires_at, "data": part.data}, separators=(",", ":")).encode()
                self.l2.set(PREFIX + part.key, self.sealer.seal(PREFIX + part.key, doc), ttl)

    @contextlib.contextmanager
    def flight(self, part: Partition) -> Iterator[bool]:
        """Yield True when this instance should call Entra; False when another instance just did
        and ``part`` now holds its result."""
        if self.l2 is None:
            yield True
            return
        lock_key = PREFIX + "lock:" + part.key
        token = self.l2.acquire_lock(lock_key, self.lock_ms)
        if token is None:  # another instance holds it: wait for its entry, briefly
            deadline = time.monotonic() + self.wait_seconds
            while time.monotonic() < deadline:
                time.sleep(0.02)
                if self.reload(part):
                    yield False
                    return
            yield True
            return
        try:
            yield True
        finally:
            self.l2.release_lock(lock_key, token)


def _size(data: dict[str, Any]) -> int:
    """Bytes a partition holding ``data`` keeps in memory (not its JSON length): MSAL's entries as
    Python objects, the partition itself, its lock and L1 slot, and one ``hot`` memo slot per
    access token beyond the first."""
    return PARTITION_OVERHEAD + held_bytes(data) + HOT_ENTRY * max(0, len(data.get("AccessToken", ())) - 1)
