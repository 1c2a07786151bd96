"""Token-cache memory and lookup cost: 100,000 distinct users through the cache layer.

Run: .venv/bin/python bench/cache_memory.py   (part of `make bench`)

Each user is one OBO result as MSAL files it (access token, refresh token, id token, account:
about 3 KB of JSON) in its own partition. Run 1 keeps L1 at its default bound (10,000 partitions)
and records RSS as users stream through; run 2 keeps everything (bound raised) and times a
lookup — find the partition, then MSAL's own search for the access token — at 1k, 10k and 100k.
"""
from __future__ import annotations

import base64
import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msal  # noqa: E402

from bench.common import machine, record  # noqa: E402
from shared.cache import TokenCacheLayers  # noqa: E402
from shared.token_cache import PartitionStore, PartitionedTokenCache, partition_key, use_partition  # noqa: E402

USERS = 100_000
SCOPE = ["https://graph.microsoft.com/User.Read"]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def obo_event(i: int) -> dict[str, Any]:
    oid = f"{i:08d}-0000-4000-8000-000000000000"
    jwtish = "eyJ0eXAiOiJKV1QifQ." + base64.urlsafe_b64encode(os.urandom(900)).decode() + ".sig"
    id_token = "e30." + _b64({"oid": oid, "preferred_username": f"user{i}@contoso.dev", "tid": "t", "sub": oid}) + ".s"
    return {"client_id": "mt", "scope": SCOPE, "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "data": {},
            "response": {"access_token": jwtish, "expires_in": 3599, "token_type": "Bearer", "id_token": id_token,
                         "client_info": _b64({"uid": oid, "utid": "t"}), "refresh_token": "1." + "r" * 600,
                         "scope": SCOPE[0]}}


def fill(layers: TokenCacheLayers, cache: PartitionedTokenCache, start: int, stop: int) -> None:
    exp = time.time() + 3600
    for i in range(start, stop):
        part = layers.partition(partition_key(f"assertion-{i}"), exp)
        with use_partition(part):
            cache.add(obo_event(i))
        layers.save(part, token_expires_at=exp + 600)


def lookup_us(layers: TokenCacheLayers, cache: PartitionedTokenCache, population: int, samples: int = 20_000) -> float:
    keys = [partition_key(f"assertion-{random.randrange(population)}") for _ in range(samples)]
    started = time.perf_counter()
    for key in keys:
        part = layers.partition(key, 0)
        with use_partition(part):
            found = cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=SCOPE)
            assert found
    return (time.perf_counter() - started) / samples * 1e6


def main() -> int:
    random.seed(7)
    cache = PartitionedTokenCache()
    baseline = rss_mb()
    bounded = TokenCacheLayers(PartitionStore())  # defaults: 10,000 partitions, 64 MB
    rss: dict[str, float] = {}
    done = 0
    for checkpoint in (1_000, 10_000, 25_000, 50_000, 100_000):
        fill(bounded, cache, done, checkpoint)
        done = checkpoint
        gc.collect()
        rss[str(checkpoint)] = round(rss_mb() - baseline, 1)
    bounded_entries, bounded_bytes = len(bounded.l1), bounded.l1.bytes
    del bounded
    gc.collect()

    unbounded = TokenCacheLayers(PartitionStore(max_partitions=USERS, max_bytes=2 * 1024**3))
    lookups: dict[str, float] = {}
    done = 0
    for population in (1_000, 10_000, 100_000):
        fill(unbounded, cache, done, population)
        done = population
        lookups[str(population)] = round(lookup_us(unbounded, cache, population), 2)

    result = {
        "command": ".venv/bin/python bench/cache_memory.py", "users": USERS, "machine": machine(),
        "bounded_l1": {"max_partitions": 10_000, "max_bytes": 64 * 1024 * 1024, "entries_at_end": bounded_entries,
                       "bytes_at_end": bounded_bytes, "rss_growth_mb_after_users": rss},
        "lookup_us_by_population": lookups,
        "lookup_ratio_100k_vs_1k": round(lookups["100000"] / lookups["1000"], 2),
    }
    path = record("cache_memory", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"-> {path}")
    plateau = rss["100000"] - rss["10000"]
    return 0 if bounded_entries <= 10_000 and plateau < 0.5 * max(rss["10000"], 1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
