"""What a cached entry really holds in memory, for the caches' byte budgets.

A JSON length undercounts an MSAL partition's Python objects by ~1.4× (object headers, dict hash tables, allocator
rounding). ``held_bytes`` sums ``sys.getsizeof``, rounded to the allocator's blocks, over a JSON-like value (a
partition's data, a token's claims); the constants below add what an entry holds besides, measured with tracemalloc
on CPython 3.11 (re-measured by bench/cache_memory.py --default-caps and tests/security/test_memory_bounds.py).
Cost: ~20 µs per OBO partition, on save or first validation, never on a cache hit.
"""
from __future__ import annotations

import sys
from typing import Any

# A Partition besides its ``data``: the dataclass and its __dict__, its lock, the key string, the ``hot`` memo
# (a dict, one (token, until) tuple and float; the token string is MSAL's, shared) and the L1's bookkeeping
# per entry (cachetools' TLRUCache: data and size dict slots, an _Item, a heap slot). Measured: ~1.0 KB; rounded up.
PARTITION_OVERHEAD = 1280
# Each further scope set remembered in ``hot`` (a dict slot, a tuple, a float, the scopes tuple).
HOT_ENTRY = 256
# A TokenValidator memo entry besides its claims: the Caller and _Validated objects, their
# frozensets, the token's SHA-256 hex (in the Caller) and the TLRUCache bookkeeping; the token itself, the key,
# is counted apart (held_bytes). Measured: ~1.1 KB; rounded up.
VALIDATOR_OVERHEAD = 1280

_getsizeof = sys.getsizeof
_refcount = sys.getrefcount
# A string referenced from more places than this is shared (MSAL's interned field names): dropping one entry frees none.
SHARED_REFS = 64


def _block(n: int) -> int:
    """What the allocator hands out for an n-byte object: pymalloc's 16-byte size classes up to
    512 bytes, glibc malloc's 8-byte header and 16-byte alignment above."""
    return (n + 15 if n <= 512 else n + 23) & -16


def held_bytes(value: Any) -> int:
    """Bytes held by a JSON-like value (dicts, lists, tuples, strings, numbers), as allocated: each
    container and each string counted once, strings shared far beyond this value not at all."""
    if type(value) is str:  # a token: no walk (one string is counted once by itself)
        return 0 if _refcount(value) > SHARED_REFS else _block(_getsizeof(value))
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


# json_held_bytes's bound per element of ASCII JSON text, each at least what CPython 3.11 allocates for it:
# a string (a header of 49 bytes + 1, rounded to 16) per pair of quotes, a container slot (a dict entry or a list
# pointer, over-allocation included) or a scalar (int, float, bool: 32-48) per comma, a container per bracket.
JSON_BASE, JSON_STRING, JSON_VALUE, JSON_CONTAINER = 240, 72, 56, 112


def json_held_bytes(text: bytes, value: Any) -> int:
    """At least ``held_bytes(value)``, where ``value`` was parsed from the JSON ``text``: from counts C code makes
    (~1 µs for a token's claims, the walk ~20 µs) when ``text`` is ASCII without ``\\u`` escapes, so every string
    holds one byte a character; otherwise (a string may hold 2 or 4 bytes a character) the walk itself."""
    if not text.isascii() or b"\\u" in text:
        return held_bytes(value)
    return (JSON_BASE + len(text) + JSON_STRING * (text.count(b'"') // 2)
            + JSON_VALUE * text.count(b",") + JSON_CONTAINER * (text.count(b"{") + text.count(b"[")))


VALIDATOR_SHARE = 0.4  # about the ratio of a validator memo entry's size to an L1 partition's


def validator_memo_bytes(l1_max_bytes: int) -> int:
    """The validator memo's share of ``TokenCache__L1MaxBytes``, the budget for everything held per caller
    token; the L1 partitions get the rest."""
    return int(l1_max_bytes * VALIDATOR_SHARE)
