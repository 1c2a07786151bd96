"""shared/sealing.py: exact answers of the L2 sealing (AES-256-GCM per entry, bound to its
partition), written so that each mutation mutmut left alive in it changes an assertion here."""
from __future__ import annotations

import base64

import pytest

from shared.token_cache.sealing import NONCE, VERSION, Sealer

KEY = bytes(range(32))


def test_a_sealed_entry_opens_only_as_sealed() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("partition-a", b"tokens")
    assert sealed[:1] == VERSION and sealer.open("partition-a", sealed) == b"tokens"
    assert sealer.open("partition-a", b"\x02" + sealed[1:]) is None      # another version byte
    shortest = Sealer(KEY).seal("k", b"")                                  # no plaintext: 1 + nonce + tag
    assert len(shortest) == 1 + NONCE + 16 and Sealer(KEY).open("k", shortest) == b""
    assert Sealer(KEY).open("k", shortest[:-1]) is None                    # one byte short of a tag


@pytest.mark.parametrize("value,why", [
    (base64.b64encode(KEY).decode()[:-1] + "!", "a character outside base64"),
    (base64.b64encode(KEY).decode().replace("A", "A\n", 1), "whitespace inside"),
    (base64.b64encode(KEY[:31]).decode(), "31 bytes"),
])
def test_the_cache_key_must_be_exactly_32_base64_bytes(value: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        Sealer.from_base64(value)
    assert str(err.value) == "the cache encryption key must be 32 bytes, base64-encoded", why


def test_a_raw_key_of_another_length_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as err:
        Sealer(KEY[:16])
    assert str(err.value) == "the cache encryption key must be 32 bytes (AES-256)"


@pytest.mark.parametrize("length", range(1, 1 + NONCE + 16))
def test_every_entry_shorter_than_the_shortest_sealed_one_is_a_miss_not_an_error(length: int) -> None:
    """Version byte right, but too short to hold a nonce and a tag: a miss. Without the length check
    AES-GCM itself refuses a nonce under 8 bytes with a ValueError, which would escape the cache."""
    truncated = (VERSION + bytes(range(64)))[:length]
    assert Sealer(KEY).open("k", truncated) is None
