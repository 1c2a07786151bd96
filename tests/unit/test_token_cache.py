"""The partitioned MSAL cache: MSAL's real TokenCache logic over per-partition storage."""
from __future__ import annotations

import base64
import json
import threading
import time

import msal
import pytest

from shared.token_cache import PartitionStore, PartitionedTokenCache, partition_key, use_partition

SCOPE = ["https://graph.microsoft.com/User.Read"]


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def obo_event(oid: str, token: str) -> dict:
    """What MSAL hands its cache after an OBO response (client_info + id_token present)."""
    id_token = "e30." + _b64({"oid": oid, "preferred_username": f"{oid}@x", "tid": "t", "sub": oid}) + ".sig"
    return {"client_id": "mt", "scope": SCOPE, "token_endpoint": "https://login.example.test/t/oauth2/v2.0/token",
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "data": {},
            "response": {"access_token": token, "expires_in": 3600, "token_type": "Bearer", "id_token": id_token,
                         "client_info": _b64({"uid": oid, "utid": "t"}), "refresh_token": "rt-" + oid,
                         "scope": SCOPE[0]}}


def access_tokens(cache: msal.TokenCache) -> list[str]:
    return [t["secret"] for t in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)]


def test_partitions_isolate_msal_entries() -> None:
    cache, store = PartitionedTokenCache(), PartitionStore()
    alice = store.get_or_create(partition_key("assertion-alice"), time.time() + 60)
    bob = store.get_or_create(partition_key("assertion-bob"), time.time() + 60)
    with use_partition(alice):
        cache.add(obo_event("alice", "at-alice"))
    with use_partition(bob):
        assert access_tokens(cache) == []
        cache.add(obo_event("bob", "at-bob"))
        assert access_tokens(cache) == ["at-bob"]
    with use_partition(alice):
        assert access_tokens(cache) == ["at-alice"]
        assert [a["home_account_id"] for a in cache.search(msal.TokenCache.CredentialType.ACCOUNT)] == ["alice.t"]


def test_cache_refuses_use_outside_a_partition() -> None:
    with pytest.raises(RuntimeError):
        access_tokens(PartitionedTokenCache())


def test_threads_see_their_own_partition() -> None:
    cache, store = PartitionedTokenCache(), PartitionStore()
    seen: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        part = store.get_or_create(partition_key(f"assertion-{i}"), time.time() + 60)
        with use_partition(part):
            cache.add(obo_event(f"user{i}", f"at-{i}"))
            barrier.wait()  # all partitions populated concurrently before anyone reads
            seen[f"at-{i}"] = access_tokens(cache)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {f"at-{i}": [f"at-{i}"] for i in range(8)}


def test_partition_key_is_a_sha256_not_the_token() -> None:
    key = partition_key("eyJhbGciOi.payload.sig")
    assert len(key) == 64 and "eyJ" not in key


def test_store_is_bounded_and_drops_expired_partitions() -> None:
    now = [1000.0]
    store = PartitionStore(max_partitions=3, clock=lambda: now[0])
    for i in range(5):
        store.get_or_create(f"k{i}", expires_at=2000)
    assert len(store) == 3
    store.get_or_create("short", expires_at=1001)
    now[0] = 1002
    assert len(store) == 2  # "short" expired with its assertion
    fresh = store.get_or_create("short", expires_at=3000)
    assert fresh.data == {}  # the expired partition was not resurrected
