"""shared.memory's estimate of what a cached value holds, against tracemalloc."""
from __future__ import annotations

import gc
import json
import os
import tracemalloc
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.token_cache.layers import _size
from shared.memory import PARTITION_OVERHEAD, held_bytes, json_held_bytes


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, value
    finally:
        tracemalloc.stop()


def _document(i: int) -> dict[str, Any]:
    return json.loads(json.dumps({"AccessToken": {f"key-{i}-{n}": {"secret": os.urandom(900).hex(), "expires_on": str(n),
                                                                   "target": "a b c", "cached_at": n * 1000}
                                                  for n in range(3)},
                                  "Account": {f"acct-{i}": {"username": f"user{i}@contoso.com", "ids": [1, 2.5, None]}}}))


def test_estimate_tracks_what_a_json_like_value_really_holds() -> None:
    traced, docs = _traced(lambda: [_document(i) for i in range(200)])
    estimated = sum(held_bytes(d) for d in docs) + 200 * 64  # the list's own slots, roughly
    assert traced <= estimated <= 1.15 * traced  # never under; over by the allocator's rounding at most


def test_json_length_undercounts_what_is_held() -> None:
    doc = _document(0)
    assert held_bytes(doc) > 1.1 * len(json.dumps(doc, separators=(",", ":")))


def test_a_string_is_counted_once_and_widely_shared_ones_not_at_all() -> None:
    token = os.urandom(1000).hex()
    once = held_bytes({"a": token})
    assert held_bytes({"a": token, "b": token}) < once + 100  # same object twice: one more dict slot, no copy
    shared = "shared-field-name"
    holders = [{shared: 1} for _ in range(100)]  # e.g. MSAL's literal field names
    assert held_bytes(holders[0]) < held_bytes({"not-shared-name": 1})


def test_partition_size_counts_data_and_the_partition_around_it() -> None:
    doc = _document(1)
    assert _size(doc) >= PARTITION_OVERHEAD + held_bytes(doc)
    assert _size({}) >= PARTITION_OVERHEAD


def test_estimate_is_cheap() -> None:
    import time
    doc = _document(2)
    started = time.perf_counter()
    for _ in range(1000):
        held_bytes(doc)
    assert (time.perf_counter() - started) / 1000 < 500e-6  # ~10 µs; loose for a shared CI machine


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=40),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner, max_size=8),
    max_leaves=60)


@settings(max_examples=400, deadline=None)
@given(_JSON_VALUES, st.booleans())
def test_the_json_bound_is_never_below_the_walk(value: Any, ensure_ascii: bool) -> None:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
    parsed = json.loads(text)
    assert json_held_bytes(text, parsed) >= held_bytes(parsed)


def test_the_json_bound_of_an_entra_token_is_within_half_again_of_the_walk() -> None:
    claims = {"aud": "api://middletier", "iss": "https://login.microsoftonline.com/" + "t" * 36 + "/v2.0",
              "iat": 1700000000, "nbf": 1700000000, "exp": 1700003600, "aio": "A" * 140, "azp": "c" * 36,
              "azpacr": "0", "name": "Alice Example", "oid": "o" * 36, "preferred_username": "alice@contoso.com",
              "rh": "r" * 60, "scp": "access_as_user", "sub": "s" * 43, "tid": "t" * 36, "uti": "u" * 22,
              "ver": "2.0", "xms_cc": ["CP1"]}
    text = json.dumps(claims, separators=(",", ":")).encode()
    parsed = json.loads(text)
    assert held_bytes(parsed) <= json_held_bytes(text, parsed) <= 1.5 * held_bytes(parsed)


def test_text_whose_strings_may_be_wider_than_a_byte_a_character_is_walked() -> None:
    for value in ({"name": "José"}, {"name": "a" * 500 + "\U0001F600"}):
        for ensure_ascii in (False, True):  # raw UTF-8, or \u escapes in ASCII text
            text = json.dumps(value, ensure_ascii=ensure_ascii).encode()
            parsed = json.loads(text)
            assert json_held_bytes(text, parsed) == held_bytes(parsed)
    wide = {"name": "a" * 500 + "\U0001F600"}  # one emoji makes all 501 characters 4 bytes wide
    assert held_bytes(wide) > 4 * 500 > len(json.dumps(wide, ensure_ascii=False).encode())
