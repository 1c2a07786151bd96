"""L1 bounds, sealing, the L2 breaker and the two-level cache, with an in-memory backend."""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import pytest

from shared.cache import PREFIX, TokenCacheLayers
from shared.l2 import Guarded
from shared.sealing import Sealer
from shared.token_cache import Partition, PartitionStore


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._check()
        self.data[key] = value

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        self._check()
        if key in self.data:
            return None
        self.data[key] = b"x"
        return "t"

    def release_lock(self, key: str, token: str) -> None:
        self._check()
        self.data.pop(key, None)


def test_sealer_opens_only_its_own_entries() -> None:
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal("k1", b"tokens")
    assert sealer.open("k1", sealed) == b"tokens"
    assert sealer.open("k2", sealed) is None                       # moved to another key
    assert Sealer(os.urandom(32)).open("k1", sealed) is None       # another app's key
    assert sealer.open("k1", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None  # tampered
    assert sealer.open("k1", b"short") is None
    with pytest.raises(ValueError):
        Sealer.from_base64("not-32-bytes")


def test_l1_is_bounded_by_count_and_bytes() -> None:
    by_count = PartitionStore(max_partitions=3, max_bytes=10**9)
    for i in range(10):
        by_count.put(Partition(f"{i:08x}", time.time() + 60))
    assert len(by_count) == 3
    by_bytes = PartitionStore(max_partitions=1000, max_bytes=10_000)
    for i in range(100):
        by_bytes.put(Partition(f"{i:08x}", time.time() + 60, size=1000))
    assert by_bytes.bytes <= 10_000 and len(by_bytes) == 10
    huge = by_bytes.put(Partition("ffffffff", time.time() + 60, size=10**6))
    assert huge.key == "ffffffff" and by_bytes.get("ffffffff") is None  # served, not kept


def test_l1_evicts_least_recently_used() -> None:
    store = PartitionStore(max_partitions=2)
    for key in ("aaaaaaaa", "bbbbbbbb"):
        store.put(Partition(key, time.time() + 60))
    store.get("aaaaaaaa")
    store.put(Partition("cccccccc", time.time() + 60))
    assert store.get("aaaaaaaa") is not None and store.get("bbbbbbbb") is None


def layers(backend: MemoryBackend, **kw: Any) -> TokenCacheLayers:
    return TokenCacheLayers(PartitionStore(), Guarded(backend, open_seconds=kw.pop("open_seconds", 5.0)),
                            Sealer(b"k" * 32), **kw)


def test_l2_fills_a_new_instance() -> None:
    backend = MemoryBackend()
    first = layers(backend)
    part = first.partition("0badc0de" * 8, time.time() + 600)
    part.data["AccessToken"] = {"x": {"secret": "at"}}
    first.save(part, token_expires_at=time.time() + 3600)
    assert all(b"secret" not in v for v in backend.data.values())  # sealed
    second = layers(backend)
    loaded = second.partition("0badc0de" * 8, time.time() + 600)
    assert loaded.data == {"AccessToken": {"x": {"secret": "at"}}}


def test_partition_expiry_follows_the_access_token() -> None:
    cache = layers(MemoryBackend())
    part = cache.partition("1" * 64, time.time() + 7200)
    cache.save(part, token_expires_at=time.time() + 1000)
    assert part.expires_at == pytest.approx(time.time() + 700, abs=2)


def test_breaker_opens_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend()
    now = [0.0]
    guarded = Guarded(backend, failures_to_open=2, open_seconds=5, clock=lambda: now[0])
    backend.down = True
    with caplog.at_level(logging.WARNING, "middletier.cache"):
        for _ in range(10):
            assert guarded.get("k") is None
        assert backend.calls == 2 and guarded.is_open  # then no more calls while open
        now[0] = 6
        assert guarded.get("k") is None and backend.calls == 3  # half-open probe fails: stays open
        backend.down = False
        now[0] = 12
        guarded.set("k", b"v", 10)
        assert not guarded.is_open and guarded.get("k") == b"v"
    warnings = [r.message for r in caplog.records]
    assert sum("unavailable" in m for m in warnings) == 1 and sum("is back" in m for m in warnings) == 1


def test_flight_lets_one_instance_call_and_the_other_wait() -> None:
    backend = MemoryBackend()
    a, b = layers(backend, wait_seconds=0.5), layers(backend, wait_seconds=0.5)
    key = "2" * 64
    part_a, part_b = a.partition(key, time.time() + 600), b.partition(key, time.time() + 600)
    with a.flight(part_a) as leader_a:
        assert leader_a
        part_a.data["AccessToken"] = {"k": {"secret": "from-a"}}
        a.save(part_a, token_expires_at=time.time() + 3600)
        with b.flight(part_b) as leader_b:
            assert not leader_b and part_b.data == part_a.data  # b got a's result, no second call
    assert PREFIX + "lock:" + key not in backend.data  # released


def test_flight_without_a_reachable_l2_proceeds() -> None:
    backend = MemoryBackend()
    backend.down = True
    cache = layers(backend)
    with cache.flight(cache.partition("3" * 64, time.time() + 600)) as leader:
        assert leader
