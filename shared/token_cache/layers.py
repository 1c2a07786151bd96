"""The token cache's one entry point, as Microsoft.Identity.Web's ``IMsalTokenCacheProvider``.

``TokenCache.open()`` finds a partition in L1, else loads it from the sealed L2, else starts an empty one,
and returns a ``PartitionHandle``: serve a remembered token, bind MSAL's cache, take the single-flight lock
(with an L2, one instance calls Entra; the others wait briefly for its entry), commit MSAL's result to L1
and L2. ``clock`` is the wall clock (expiries); ``monotonic`` and ``sleep`` time the wait for an entry."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config import TokenCacheSettings, default
from ..deadline import bounded
from ..memory import HOT_ENTRY, PARTITION_OVERHEAD, held_bytes
from .l1 import Partition, PartitionStore
from .msal_adapter import PartitionedTokenCache, use_partition

if TYPE_CHECKING:  # an L2 and its sealing load with the settings that configure them (context.build_token_cache)
    from .l2 import Breaker
    from .sealing import Sealer

log = logging.getLogger("middletier.cache")

REFRESH_MARGIN = 300  # MSAL refreshes access tokens 5 minutes before they expire
PREFIX = "msal-tc:"


def partition_key(text: str) -> str:
    """SHA-256 of the incoming token (or of a session or app key): the partition key, as the MSAL
    Java OBO sample and MSAL.NET use; the token itself is never stored as a key."""
    return hashlib.sha256(text.encode()).hexdigest()


class TokenCache:
    def __init__(self, l1: PartitionStore | None = None, l2: Breaker | None = None, sealer: Sealer | None = None, *,
                 lock_ms: int = default(TokenCacheSettings, "lock_milliseconds"), wait_seconds: float = 10.0,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if l2 is not None and sealer is None:
            raise ValueError("an L2 cache needs an encryption key")
        self.l1, self.l2, self.sealer = PartitionStore() if l1 is None else l1, l2, sealer
        self.lock_ms, self.wait_seconds = lock_ms, wait_seconds
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._stripes = [threading.Lock() for _ in range(64)]  # one L2 load per key at a time
        self.msal = PartitionedTokenCache()  # the one cache MSAL sees: the bound partition's data

    def open(self, key: str, *, expires_at: float | None = None, lifetime: float = 300.0,
             follows_token: bool = True, new: bool = False) -> "PartitionHandle":
        """The partition ``key``, alive until ``expires_at``, else ``lifetime`` seconds. ``follows_token``:
        a commit shortens its life to the access token's (a user's; not the app's, nor a long-running
        session's). ``new``: a key nobody can have used yet (a fresh session): L2 is not asked."""
        until = self._clock() + lifetime if expires_at is None else expires_at
        part = self.l1.put(Partition(key, until)) if new else self.partition(key, until)
        return PartitionHandle(self, part, follows_token)

    def partition(self, key: str, expires_at: float) -> Partition:
        if (part := self.l1.get(key)) is not None:
            return part
        with self._stripes[int(key[:8], 16) % len(self._stripes)]:
            if (part := self.l1.get(key)) is not None:
                return part
            if (loaded := self._load(key)) is not None:
                data, stored_expiry, version = loaded
                return self.l1.put(Partition(key, min(expires_at, stored_expiry), data, size=_size(data),
                                             version=version))
            return self.l1.get_or_create(key, expires_at)

    def _load(self, key: str) -> tuple[dict[str, Any], float, str | None] | None:
        if self.l2 is None or self.sealer is None:
            return None
        if (sealed := self.l2.get(PREFIX + key)) is None:
            return None
        if (plain := self.sealer.open(PREFIX + key, sealed)) is None:
            log.warning("token cache L2 entry failed authentication; treating it as a miss")
            return None
        try:
            doc = json.loads(plain)
            return doc["data"], float(doc["exp"]), doc.get("v")
        except (ValueError, KeyError, TypeError):
            return None

    def reload(self, part: Partition) -> bool:
        """Refresh ``part`` from L2 when another instance wrote it since ``part`` was loaded or saved:
        True then. An older entry (the one ``part`` already holds) is not news. The swap happens under
        MSAL's cache lock, so an MSAL read or write in another thread sees one dict, never two."""
        loaded = self._load(part.key)
        if loaded is None or not loaded[0] or loaded[2] is None or loaded[2] == part.version:
            return False
        with self.msal._lock:
            part.data, part.version = loaded[0], loaded[2]
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
                part.version = uuid.uuid4().hex
                doc = json.dumps({"exp": part.expires_at, "v": part.version, "data": part.data},
                                 separators=(",", ":")).encode()
                self.l2.set(PREFIX + part.key, self.sealer.seal(PREFIX + part.key, doc), ttl)

    @contextlib.contextmanager
    def flight(self, part: Partition) -> Iterator[bool]:
        """Yield True when this instance should call Entra (holding the L2 lock); False when another
        instance did and ``part`` now holds its entry. A waiter polls for that entry and for the lock:
        a holder that saved and released, or died (its lock expires after ``lock_ms``), hands over
        without a second call. ``wait_seconds`` (and the request's deadline) bounds the wait."""
        if self.l2 is None:
            yield True
            return
        lock_key = PREFIX + "lock:" + part.key
        deadline = self._monotonic() + bounded(self.wait_seconds)
        while (token := self.l2.acquire_lock(lock_key, self.lock_ms)) is None:
            if self.reload(part):
                yield False
                return
            if self._monotonic() >= deadline:
                yield True  # the holder neither answered nor let go in time: this request goes itself
                return
            self._sleep(0.02)
        try:
            # Free because the last holder just saved? Its entry is the answer, unless this partition
            # already holds it; a partition read before that save would otherwise call Entra again.
            yield not self.reload(part)
        finally:
            self.l2.release_lock(lock_key, token)


class PartitionHandle:
    """One partition as acquisition sees it: serve, bind MSAL, lock, commit."""

    def __init__(self, cache: TokenCache, part: Partition, follows_token: bool):
        self.cache, self.part, self.follows_token = cache, part, follows_token

    def answerable(self, scopes: tuple[str, ...]) -> bool:
        """MSAL would answer ``scopes`` from this partition without a network call: an access token for
        them more than its 5-minute margin from expiry and not past ``refresh_on`` (MSAL's
        ``_acquire_token_silent_from_cache_and_possibly_refresh_it``). Else it would redeem the refresh
        token, which, like an OBO, one request of the partition does (``exclusive``)."""
        wanted, now = set(scopes), self.cache._clock()
        with self.cache.msal._lock:
            entries = list(self.part.data.get("AccessToken", {}).values())
        return any(_serves(at, wanted, now) for at in entries)

    def remembered(self, scopes: tuple[str, ...]) -> str | None:
        """The access token MSAL last gave for ``scopes``, while MSAL would still return it unchanged."""
        hot = self.part.hot.get(scopes)
        return hot[0] if hot and self.cache._clock() < hot[1] else None

    def bound(self) -> contextlib.AbstractContextManager[Partition]:
        """MSAL's cache reads and writes this partition inside the block."""
        return use_partition(self.part)

    @contextlib.contextmanager
    def exclusive(self, wait: float, *, across_instances: bool = False) -> Iterator[bool]:
        """Yield True holding this partition's lock (and, ``across_instances``, the L2 flight: one instance
        calls Entra, the others reload its entry); False if the lock was not free within ``wait`` seconds."""
        if not self.part.lock.acquire(timeout=max(0.0, wait)):
            yield False
            return
        try:
            with self.cache.flight(self.part) if across_instances else contextlib.nullcontext():
                yield True
        finally:
            self.part.lock.release()

    def commit(self, result: dict[str, Any], scopes: tuple[str, ...] | None = None, *, changed: bool = True) -> None:
        """After MSAL answered with ``result``: write the partition back to L1 and L2 when MSAL
        ``changed`` it, and remember its access token for ``scopes`` (when given) until 5 minutes
        before expiry, or half its life for long-lived (CAE) tokens, as MSAL's refresh_in does."""
        expires_in = result.get("expires_in")
        now = self.cache._clock()
        if changed:
            follows = self.follows_token and isinstance(expires_in, (int, float))
            self.cache.save(self.part, now + float(expires_in) if follows else None)  # type: ignore[arg-type]
        if scopes is None or not isinstance(expires_in, (int, float)):
            return
        until = now + expires_in - REFRESH_MARGIN
        if expires_in >= 7200:
            until = min(until, now + expires_in / 2)
        if until > now:
            self.part.hot[scopes] = (str(result["access_token"]), until)


def _serves(at: dict[str, Any], wanted: set[str], now: float) -> bool:
    """MSAL's access-token hit: all ``wanted`` scopes, 5 minutes or more left, not aging (``refresh_on``)."""
    try:
        return (wanted <= set(at["target"].split()) and int(at["expires_on"]) - now >= REFRESH_MARGIN
                and ("refresh_on" not in at or int(at["refresh_on"]) >= now))
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def _size(data: dict[str, Any]) -> int:
    """Memory held by a partition with ``data`` (shared/memory.py), a ``hot`` slot per access token after the first."""
    return PARTITION_OVERHEAD + held_bytes(data) + HOT_ENTRY * max(0, len(data.get("AccessToken", ())) - 1)
