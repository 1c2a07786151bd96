"""Distributed (L2) token-cache backends, and the circuit breaker that keeps them optional.

Backends store opaque bytes (already sealed by ``sealing.py``) with a TTL, and offer a short lock for
cross-instance single-flight. ``Breaker``: every call is bounded by the backend's own timeout, and made only
while the request has at least that much time left (``deadline.py``); failures open it so an outage costs
nothing per request, and it half-opens to pick up recovery without a restart.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any, Callable, Protocol

from .. import deadline
from ..config import TokenCacheSettings, default
from ..errors import ConfigurationError

log = logging.getLogger("middletier.cache")


class Backend(Protocol):
    name: str
    timeout: float  # seconds one call may take (TokenCache__L2TimeoutSeconds)

    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...
    def acquire_lock(self, key: str, ttl_ms: int) -> str | None: ...
    def release_lock(self, key: str, token: str) -> None: ...


class RedisBackend:
    """Azure Cache for Redis (or any Redis): GET/SET EX, and SET NX PX for the lock."""

    name = "redis"
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"

    def __init__(self, url: str, timeout: float):
        import redis
        self.timeout = timeout
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry_on_timeout=False, health_check_interval=30)
        self._release = self._redis.register_script(self._RELEASE)

    def get(self, key: str) -> bytes | None:
        value = self._redis.get(key)
        return bytes(value) if value is not None else None

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._redis.set(key, value, ex=max(1, ttl_seconds))

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        token = uuid.uuid4().hex
        return token if self._redis.set(key, token, nx=True, px=ttl_ms) else None

    def release_lock(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])


class BlobBackend:
    """Azure Blob Storage (the function app's own storage account; Azurite locally).

    TTL is kept in blob metadata and checked on read (lifecycle rules delete old blobs in Azure); the lock
    is a blob created with ``If-None-Match: *``, stale after its expiry (by ``clock``, the wall clock)."""

    name = "blob"

    def __init__(self, connection_string: str, container: str, timeout: float, *,
                 clock: Callable[[], float] = time.time):
        # azure-storage-blob and azure-core, imported here, once, by the app whose TokenCache__L2 is blob
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import BlobServiceClient
        self._if_not_modified = MatchConditions.IfNotModified
        self._exists, self._modified = ResourceExistsError, ResourceModifiedError
        self._not_found = ResourceNotFoundError
        self.timeout = timeout
        service = BlobServiceClient.from_connection_string(
            connection_string, connection_timeout=timeout, read_timeout=timeout, retry_total=0)
        self._container = service.get_container_client(container)
        self._created = False
        self._clock = clock

    def _ensure_container(self) -> None:
        if not self._created:
            with contextlib.suppress(self._exists):
                self._container.create_container()
            self._created = True

    def get(self, key: str) -> bytes | None:
        self._ensure_container()
        try:
            download = self._container.download_blob(key)
        except self._not_found:
            return None
        expires = float((download.properties.metadata or {}).get("expires", "0"))
        return None if expires < self._clock() else download.readall()

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._ensure_container()
        self._container.upload_blob(key, value, overwrite=True,
                                    metadata={"expires": str(int(self._clock()) + max(1, ttl_seconds))})

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        self._ensure_container()
        token = uuid.uuid4().hex
        blob = self._container.get_blob_client(key)
        expires = str(self._clock() + ttl_ms / 1000)
        with contextlib.suppress(self._exists, self._modified):
            blob.upload_blob(token.encode(), overwrite=False, metadata={"expires": expires})
            return token
        try:  # a holder that died leaves a stale lock: take it over once it has expired
            props = blob.get_blob_properties()
            if float((props.metadata or {}).get("expires", "0")) < self._clock():
                blob.upload_blob(token.encode(), overwrite=True, metadata={"expires": expires},
                                 etag=props.etag, match_condition=self._if_not_modified)
                return token
        except Exception:  # noqa: BLE001 - lost the race or the lock vanished: not ours
            return None
        return None

    def release_lock(self, key: str, token: str) -> None:
        blob = self._container.get_blob_client(key)
        with contextlib.suppress(self._not_found):
            if blob.download_blob().readall() == token.encode():
                blob.delete_blob()


def backend_for(tc: TokenCacheSettings) -> Backend:
    """The backend ``TokenCache__L2`` names (a new backend: a class above, a line here, its settings in config)."""
    if tc.l2 == "redis" and tc.redis_url:
        return RedisBackend(tc.redis_url, tc.l2_timeout_seconds)
    if tc.l2 == "blob" and tc.blob_connection_string:
        try:
            return BlobBackend(tc.blob_connection_string, tc.blob_container, tc.l2_timeout_seconds)
        except ValueError:
            raise ConfigurationError("TokenCache__BlobConnectionString", "is not a storage connection string") from None
    raise ConfigurationError("TokenCache__L2", "names no configured backend")


class Breaker:
    """Circuit breaker around a backend. Never raises: a failed call is a miss or a no-op. A call that could
    outlast the request's deadline is not made (a miss or a no-op too; an unreleased lock expires by its TTL)."""

    def __init__(self, backend: Backend, *, failures_to_open: int = 2,
                 open_seconds: float = default(TokenCacheSettings, "l2_retry_seconds"),
                 clock: Callable[[], float] = time.monotonic):
        self.backend, self.name = backend, backend.name
        self._failures_to_open, self._open_seconds, self._clock = failures_to_open, open_seconds, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.stats = {"hits": 0, "misses": 0, "writes": 0, "errors": 0, "skipped": 0}

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def _allow(self) -> bool:
        with self._lock:
            if self._short_of_time():
                self.stats["skipped"] += 1  # not the backend's failure: nothing counted against it
                return False
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at >= self._open_seconds and not self._probing:
                self._probing = True  # half-open: one trial call
                return True
            self.stats["skipped"] += 1
            return False

    def _short_of_time(self) -> bool:
        """The request's remaining time (``deadline.py``) is below one call's timeout: the call is skipped, as
        when the breaker is open. Skipped, not shortened: redis-py's socket timeouts belong to pooled
        connections shared by every thread, so a per-call bound would not be one; L2 is optional anyway."""
        left = deadline.remaining()
        return left is not None and left < self.backend.timeout

    def _succeeded(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.warning("token cache L2 (%s) is back; using it again", self.name)
            self._failures, self._opened_at, self._probing = 0, None, False

    def _failed(self, err: BaseException) -> None:
        with self._lock:
            self.stats["errors"] += 1
            self._failures += 1
            self._probing = False
            if self._opened_at is not None:
                self._opened_at = self._clock()  # still down: stay open, quietly
            elif self._failures >= self._failures_to_open:
                self._opened_at = self._clock()
                log.warning("token cache L2 (%s) unavailable (%s); serving from L1 and the identity provider "
                            "until it recovers", self.name, type(err).__name__)

    def _call(self, fn: Callable[[], Any], default: Any) -> Any:
        if not self._allow():
            return default
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - any backend failure degrades to a miss
            self._failed(err)
            return default
        self._succeeded()
        return result

    def get(self, key: str) -> bytes | None:
        value = self._call(lambda: self.backend.get(key), None)
        self.stats["hits" if value is not None else "misses"] += 1
        return value

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._call(lambda: self.backend.set(key, value, ttl_seconds), None)
        self.stats["writes"] += 1

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        return self._call(lambda: self.backend.acquire_lock(key, ttl_ms), "")  # "" = proceed without a lock

    def release_lock(self, key: str, token: str) -> None:
        if token:
            self._call(lambda: self.backend.release_lock(key, token), None)
