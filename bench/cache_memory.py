"""Token-cache memory and lookup cost: 100,000 distinct users through the cache layer.

Run: .venv/bin/python bench/cache_memory.py   (part of `make bench`)

Each user is one OBO result as MSAL files it (access token, refresh token, id token, account:
about 3 KB of JSON) in its own partition. Run 1 keeps L1 at its default bound (10,000 partitions)
and records RSS as users stream through; run 2 keeps everything (bound raised) and times a
lookup — find the partition, then MSAL's own search for the access token — at 1k, 10k and 100k.

Run 3 (``--default-caps`` runs only this one, in a fresh process): the app's own L1 and
validator memo at the default settings (TokenCache__L1MaxEntries=10,000, TokenCache__L1MaxBytes=
256 MiB, wired as shared.context wires them), filled with realistic callers — an Entra-sized
incoming token through TokenValidator's memo, then an Entra-sized OBO result (CAE Graph access
token, refresh token, id token) filed by MSAL and remembered as acquisition does — until both
are at their bounds; RSS growth against the byte budget, and the estimate against tracemalloc.
"""
from __future__ import annotations

import base64
import gc
import json
import os
import random
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msal  # noqa: E402

from bench.common import machine, record  # noqa: E402
from shared import validation  # noqa: E402
from shared.config import L1_MAX_BYTES, L1_MAX_ENTRIES  # noqa: E402
from shared.token_cache import TokenCache  # noqa: E402
from shared.config import TokenCacheSettings, load_settings  # noqa: E402
from shared.context import build_token_cache  # noqa: E402
from shared.memory import held_bytes, validator_memo_bytes  # noqa: E402
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


def fill(layers: TokenCache, cache: PartitionedTokenCache, start: int, stop: int) -> None:
    exp = time.time() + 3600
    for i in range(start, stop):
        part = layers.partition(partition_key(f"assertion-{i}"), exp)
        with use_partition(part):
            cache.add(obo_event(i))
        layers.save(part, token_expires_at=exp + 600)


def lookup_us(layers: TokenCache, cache: PartitionedTokenCache, population: int, samples: int = 20_000) -> float:
    keys = [partition_key(f"assertion-{random.randrange(population)}") for _ in range(samples)]
    started = time.perf_counter()
    for key in keys:
        part = layers.partition(key, 0)
        with use_partition(part):
            found = cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=SCOPE)
            assert found
    return (time.perf_counter() - started) / samples * 1e6


TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API = "api://middletier"


def _b64raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": "L1KfKFI_jnXbwWc22xZxw1sUHH0", "x5t": "L1KfKFI_jnXbwWc22xZxw1sUHH0"}
    return ".".join((_b64(header), _b64(claims), _b64raw(os.urandom(256))))  # RS256-sized signature


def entra_claims(i: int, aud: str, ver: str = "2.0") -> dict[str, Any]:
    """Claims shaped and sized like Entra's (a CAE-capable user token with MFA)."""
    now, oid = int(time.time()), str(uuid.UUID(int=i))
    return {"aud": aud, "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "acct": 0, "acr": "1", "aio": _b64raw(os.urandom(96)), "amr": ["pwd", "mfa"],
            "app_displayname": "Contoso Middle Tier", "appid": "0f5cd2d4-4a7f-4f8b-9c1e-7a3d5e2b6c11",
            "appidacr": "2", "azp": "8a2c4c9e-1d3b-4f5a-9e7d-6b1c2a3d4e5f", "azpacr": "0", "family_name": "User",
            "given_name": f"Test{i}", "idtyp": "user", "ipaddr": "203.0.113.7", "name": f"Test User {i}", "oid": oid,
            "platf": "3", "puid": f"1003{i:012X}", "rh": "1." + _b64raw(os.urandom(60)),
            "scp": "access_as_user" if aud == API else "openid profile User.Read email", "sid": str(uuid.uuid4()),
            "signin_state": ["kmsi"], "sub": _b64raw(os.urandom(32)), "tenant_region_scope": "EU", "tid": TENANT,
            "unique_name": f"user{i}@contoso.com", "upn": f"user{i}@contoso.com", "uti": _b64raw(os.urandom(16)),
            "ver": ver, "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"], "xms_cc": ["CP1"],
            "xms_ftd": _b64raw(os.urandom(48)), "xms_idrel": "1 20", "xms_ssm": "1",
            "xms_st": {"sub": _b64raw(os.urandom(32))}, "xms_tcdt": 1289241547}


def realistic_obo_event(i: int) -> dict[str, Any]:
    """What MSAL files after a real OBO to Graph: access token ~2.4 KB, refresh token ~1.4 KB, id token."""
    oid = str(uuid.UUID(int=i))
    id_claims = {"aud": "0f5cd2d4-4a7f-4f8b-9c1e-7a3d5e2b6c11", "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                 "iat": int(time.time()), "nbf": int(time.time()), "exp": int(time.time()) + 3600, "name": f"Test User {i}",
                 "oid": oid, "preferred_username": f"user{i}@contoso.com", "rh": "1." + _b64raw(os.urandom(60)),
                 "sub": _b64raw(os.urandom(32)), "tid": TENANT, "uti": _b64raw(os.urandom(16)), "ver": "2.0"}
    return {"client_id": "0f5cd2d4-4a7f-4f8b-9c1e-7a3d5e2b6c11", "scope": SCOPE,
            "token_endpoint": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token",
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "data": {},
            "response": {"access_token": _jwt(entra_claims(i, "00000003-0000-0000-c000-000000000000", "1.0")),
                         "expires_in": 4824, "ext_expires_in": 4824, "token_type": "Bearer",
                         "id_token": _jwt(id_claims), "client_info": _b64({"uid": oid, "utid": TENANT}),
                         "refresh_token": "1.AQ" + _b64raw(os.urandom(1000)), "scope": SCOPE[0] + " openid profile email"}}


def serve_caller(validator: validation.TokenValidator, layers: TokenCache, cache: PartitionedTokenCache,
                 i: int) -> None:
    """One distinct caller's first request, as the app handles it, minus the network: validation
    (memoized), the partition, MSAL filing the OBO result, save, and the hot memo."""
    caller = validator.validate(_jwt(entra_claims(i, API)))
    entry = layers.open(caller.token_hash, expires_at=float(caller.claims["exp"]))
    event = realistic_obo_event(i)
    with entry.bound():
        cache.add(event)
    entry.commit(event["response"], tuple(SCOPE))


def default_caps() -> dict[str, Any]:
    """Run 3: the default caps filled with realistic callers; RSS growth vs the byte budget."""
    # Signature checks are not what this measures: the validator's own memo path runs, on the claims
    # the token's one parse returns.
    validation._validate = lambda parsed, keys, settings, digest: validation._caller(  # type: ignore[assignment]
        parsed.payload, TENANT, digest)
    tc = TokenCacheSettings()
    budget = tc.l1_max_bytes
    cache = PartitionedTokenCache()
    settings = load_settings({"AzureAd__TenantId": TENANT, "AzureAd__ClientId": "0f5cd2d4-4a7f-4f8b-9c1e-7a3d5e2b6c11",
                              "AzureAd__Scopes": "access_as_user"})
    validator = validation.TokenValidator(None, settings.azure_ad,  # type: ignore[arg-type]
                                          max_entries=tc.l1_max_entries, max_bytes=validator_memo_bytes(tc.l1_max_bytes))
    layers = build_token_cache(tc)
    serve_caller(validator, layers, cache, 10**8 + 1)  # first call allocates code-level caches
    gc.collect()

    baseline = rss_mb()
    rss: dict[str, float] = {}
    done = 0
    for checkpoint in (2_000, 5_000, 10_000, 20_000, 40_000):
        for i in range(done, checkpoint):
            serve_caller(validator, layers, cache, i)
        done = checkpoint
        gc.collect()
        rss[str(checkpoint)] = round(rss_mb() - baseline, 1)
    # The estimate against tracemalloc, on a separate small population (same code path), after the
    # RSS run so that its allocations do not pre-grow the heap the RSS run is measured on.
    small_v = validation.TokenValidator(None, settings.azure_ad, max_entries=10**6, max_bytes=2**40)  # type: ignore[arg-type]
    small_l = TokenCache(PartitionStore(max_partitions=10**6, max_bytes=2**40))
    serve_caller(small_v, small_l, cache, 10**8)  # first call allocates code-level caches
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    n = 2000
    for i in range(n):
        serve_caller(small_v, small_l, cache, 10**7 + i)
    gc.collect()
    traced = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    part = small_l.l1.get(next(iter(small_l.l1._entries)))  # one sample partition
    estimate = {"partition_bytes": (small_l.l1.bytes - 0) / len(small_l.l1),
                "validator_entry_bytes": small_v._memo.currsize / len(small_v._memo),
                "json_bytes_per_partition": len(json.dumps(part.data, separators=(",", ":"))),
                "held_bytes_of_data": held_bytes(part.data)}
    estimate["total_per_caller"] = estimate["partition_bytes"] + estimate["validator_entry_bytes"]
    estimate["tracemalloc_per_caller"] = round(traced, 1)
    estimate["estimate_over_tracemalloc"] = round(estimate["total_per_caller"] / traced, 3)
    del small_v, small_l, part
    gc.collect()

    peak = max(rss.values())
    return {"command": ".venv/bin/python bench/cache_memory.py --default-caps", "machine": machine(),
            "budget_bytes": budget, "l1_max_entries": tc.l1_max_entries,
            "l1": {"max_bytes": layers.l1._entries.maxsize, "entries": len(layers.l1), "bytes": layers.l1.bytes},
            "validator_memo": {"max_bytes": validator._memo.maxsize, "entries": len(validator._memo),
                               "bytes": int(validator._memo.currsize)},
            "estimate": {k: round(v, 1) for k, v in estimate.items()},
            "rss_baseline_mb": round(baseline, 1), "rss_growth_mb_after_callers": rss,
            "rss_growth_over_budget": round(peak * 2**20 / budget, 3),
            "target": "RSS growth <= 1.1 x TokenCache__L1MaxBytes", "met": peak * 2**20 <= 1.1 * budget}


def main() -> int:
    if "--default-caps" in sys.argv:
        result = default_caps()
        path = record("cache_memory_default_caps", result)
        print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
        print(f"-> {path}")
        return 0 if result["met"] else 1
    random.seed(7)
    cache = PartitionedTokenCache()
    baseline = rss_mb()
    bounded = TokenCache(PartitionStore())  # defaults: 10,000 partitions, 256 MiB
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

    unbounded = TokenCache(PartitionStore(max_partitions=USERS, max_bytes=2 * 1024**3))
    lookups: dict[str, float] = {}
    done = 0
    for population in (1_000, 10_000, 100_000):
        fill(unbounded, cache, done, population)
        done = population
        lookups[str(population)] = round(lookup_us(unbounded, cache, population), 2)

    result = {
        "command": ".venv/bin/python bench/cache_memory.py", "users": USERS, "machine": machine(),
        "bounded_l1": {"max_partitions": L1_MAX_ENTRIES, "max_bytes": L1_MAX_BYTES, "entries_at_end": bounded_entries,
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
