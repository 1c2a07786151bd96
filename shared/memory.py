"""What a cached entry really holds in memory, for the caches' byte budgets.

A JSON length undercounts Python objects by ~1.4× for an MSAL partition: every dict, str and
number carries a header, every dict a hash table, and the allocator rounds each block up.
``held_bytes`` sums ``sys.getsizeof`` (rounded to the allocator's blocks) over the containers
and strings of a JSON-like value (an MSAL cache partition's data, a token's claims); the
constants below add what an entry holds besides that value, measured with tracemalloc on
CPython 3.11 (bench/cache_memory.py --default-caps and tests/security/test_memory_bounds.py
re-measure them). A string is counted once per value; one referenced from everywhere (MSAL's
literal field names) is not counted, since dropping the entry frees none of it. Cost: ~20 µs
for an OBO partition, paid when a partition is saved or a token first validated, never on a
cache hit.
"""
from __future__ import annotations

import sys
from typing import Any

# A Partition besides its ``data``: the dataclass and its __dict__, its lock, the key string, the
# ``hot`` memo (a dict, one (token, until) tuple and float; the token string itself is MSAL's
# access-token secret, shared) and the L1's own bookkeeping per entry (cachetools' TLRUCache:
# data and size dict slots, an _Item, a heap slot). Measured: ~1.0 KB; rounded up.
PARTITION_OVERHEAD = 1280
# Each further scope set remembered in ``hot`` (a dict slot, a tuple, a float, the scopes tuple).
HOT_ENTRY = 256
# A TokenValidator memo entry besides its claims: the Caller and _Validated objects, their
# frozensets, the SHA-256 hex key and the TLRUCache bookkeeping. Measured: ~1.1 KB; rounded up.
VALIDATOR_OVERHEAD = 1280

_getsizeof = sys.getsizeof
_refcount = sys.getrefcount
# A string referenced from more places than this is shared (MSAL's literal field names and
# credential types, interned by the compiler): dropping one entry frees none of it.
SHARED_REFS = 64


def _block(n: int) -> int:
    """What the allocator hands out for an n-byte object: pymalloc's 16-byte size classes up to
    512 bytes, glibc malloc's 8-byte header and 16-byte alignment above."""
    return (n + 15 if n <= 512 else n + 23) & -16


def held_bytes(value: Any) -> int:
    """Bytes held by a JSON-like value (dicts, lists, tuples, strings, numbers), as allocated: each
    container and each string counted once, strings shared far beyond this value not at all."""
    seen: set[int] = set()

    def leaf(obj: Any) -> int:
        if type(obj) is str:
            if id(obj) in seen or _refcount(obj) > SHARED_REFS:
                return 0
            seen.add(id(obj))
            return _block(_getsizeof(obj))
        if isinstance(obj, (dict, list, tuple)):
            return walk(obj)
        return 0 if obj is None else _block(_getsizeof(obj))

    def walk(obj: Any) -> int:
        size = _block(_getsizeof(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                size += leaf(k) + leaf(v)
        else:
            for v in obj:
                size += leaf(v)
        return size

    return leaf(value)


# TokenCache__L1MaxBytes bounds everything held per caller token: the L1 partitions and the
# validator's memo of proven tokens share it, in about the ratio of their entries' sizes.
VALIDATOR_SHARE = 0.4


def validator_memo_bytes(l1_max_bytes: int) -> int:
    """The validator memo's share of the per-token byte budget; the L1 partitions get the rest."""
    return int(l1_max_bytes * VALIDATOR_SHARE)
