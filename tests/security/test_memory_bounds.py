"""Distinct caller tokens cannot make the app hold more memory than TokenCache__L1MaxBytes.

Every distinct token costs a token-cache partition (MSAL's entries for one OBO result, the hot
memo, a lock, the L1's bookkeeping) and a validator memo entry (the token's claims). The byte
budgets must count those objects as they are held, not the JSON they would serialize to (which
undercounts by ~1.4×): here each cache is filled far past its budget with Entra-sized entries
and tracemalloc measures what stays held.
"""
from __future__ import annotations

import base64
import gc
import json
import logging
import os
import time
import tracemalloc
import uuid
from typing import Any, Callable

import pytest

from shared import validation
from shared.token_cache import TokenCache
from shared.config import TokenCacheSettings, load_settings
from shared.context import build_token_cache
from shared.memory import validator_memo_bytes
from shared.token_cache import PartitionStore, PartitionedTokenCache, partition_key

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0f5cd2d4-4a7f-4f8b-9c1e-7a3d5e2b6c11"
SCOPES = ("https://graph.microsoft.com/User.Read",)
TOLERANCE = 1.1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": "L1KfKFI_jnXbwWc22xZxw1sUHH0"}
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(os.urandom(256))))


def _claims(i: int, aud: str) -> dict[str, Any]:
    """Sized like an Entra user token's claims (~40 claims, CAE, MFA)."""
    now, oid = int(time.time()), str(uuid.UUID(int=i))
    return {"aud": aud, "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "aio": _b64(os.urandom(96)), "amr": ["pwd", "mfa"], "azp": CLIENT, "azpacr": "0",
            "family_name": "User", "given_name": f"Test{i}", "idtyp": "user", "ipaddr": "203.0.113.7",
            "name": f"Test User {i}", "oid": oid, "puid": f"1003{i:012X}", "rh": "1." + _b64(os.urandom(60)),
            "scp": "access_as_user", "sid": str(uuid.uuid4()), "sub": _b64(os.urandom(32)), "tid": TENANT,
            "upn": f"user{i}@contoso.com", "uti": _b64(os.urandom(16)), "ver": "2.0", "xms_cc": ["CP1"],
            "xms_ftd": _b64(os.urandom(48)), "xms_st": {"sub": _b64(os.urandom(32))}, "xms_tcdt": 1289241547}


def _obo_event(i: int) -> dict[str, Any]:
    """What MSAL files after an OBO to Graph: access, refresh and id token, client_info."""
    oid = str(uuid.UUID(int=i))
    id_token = _jwt({"aud": CLIENT, "oid": oid, "preferred_username": f"user{i}@contoso.com", "tid": TENANT,
                     "sub": _b64(os.urandom(32)), "name": f"Test User {i}", "ver": "2.0"})
    return {"client_id": CLIENT, "scope": list(SCOPES),
            "token_endpoint": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token",
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "data": {},
            "response": {"access_token": _jwt(_claims(i, "00000003-0000-0000-c000-000000000000")),
                         "expires_in": 4824, "token_type": "Bearer", "id_token": id_token,
                         "client_info": _b64(json.dumps({"uid": oid, "utid": TENANT}).encode()),
                         "refresh_token": "1.AQ" + _b64(os.urandom(1000)), "scope": SCOPES[0]}}


def _cache_a_caller(layers: TokenCache, cache: PartitionedTokenCache, i: int) -> None:
    """The OBO miss path of Tokens.for_user, minus the network."""
    entry = layers.open(partition_key(f"assertion-{i}"), expires_at=time.time() + 3600)
    event = _obo_event(i)
    with entry.bound():
        cache.add(event)
    entry.commit(event["response"], SCOPES)


@pytest.fixture(autouse=True)
def _synthetic_tokens_are_not_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's secrets registry (tests/secrets_registry.py) keeps every token MSAL files in this
    process for the log scan; these synthetic tokens would be counted as held by the cache."""
    from ..secrets_registry import REGISTRY
    monkeypatch.setattr(REGISTRY, "add_token_response", lambda *args, **kwargs: None)


def _held_after(fill: Callable[[], object]) -> tuple[int, object]:
    """Bytes still held (tracemalloc) by what ``fill`` builds and returns."""
    gc.collect()
    # The suite records every log record at DEBUG (the session's log scan), and pytest keeps a test's
    # records in memory: MSAL's DEBUG lines would be counted as held. What the app holds is measured.
    logging.disable(logging.INFO)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()
        logging.disable(logging.NOTSET)


def test_l1_partitions_hold_no_more_memory_than_the_byte_budget() -> None:
    budget = 2 * 1024 * 1024
    cache = PartitionedTokenCache()
    _cache_a_caller(TokenCache(PartitionStore()), cache, 10**6)  # code-level caches allocated once

    def fill() -> TokenCache:
        layers = TokenCache(PartitionStore(max_partitions=10**6, max_bytes=budget))
        for i in range(600):  # ~3× what the budget holds
            _cache_a_caller(layers, cache, i)
        return layers

    held, layers = _held_after(fill)
    assert isinstance(layers, TokenCache) and 0 < layers.l1.bytes <= budget
    assert len(layers.l1) < 600  # the budget, not the count, is what bounded it
    assert held <= TOLERANCE * budget, f"{held / 2**20:.2f} MiB held for a {budget / 2**20:.0f} MiB budget"


def test_validator_memo_holds_no_more_memory_than_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # The signature is not what this is about: the memo keeps the claims as the token's parse returns them.
    monkeypatch.setattr(validation, "_validate", lambda parsed, keys, settings, digest: validation._caller(
        parsed.payload, TENANT, digest))
    settings = load_settings({"AzureAd__TenantId": TENANT, "AzureAd__ClientId": CLIENT,
                              "AzureAd__Scopes": "access_as_user"}).azure_ad
    budget = 1024 * 1024
    tokens = [_jwt(_claims(i, "api://middletier")) for i in range(400)]  # ~3× what the budget holds
    validation.TokenValidator(None, settings, max_bytes=budget).validate(tokens[0])  # type: ignore[arg-type]

    def fill() -> validation.TokenValidator:
        validator = validation.TokenValidator(None, settings, max_entries=10**6, max_bytes=budget)  # type: ignore[arg-type]
        for token in tokens:
            validator.validate(token)
        return validator

    held, validator = _held_after(fill)
    assert isinstance(validator, validation.TokenValidator) and len(validator._memo) < len(tokens)
    assert held <= TOLERANCE * budget, f"{held / 2**20:.2f} MiB held for a {budget / 2**20:.0f} MiB budget"


def test_one_setting_bounds_partitions_and_validator_memo_together() -> None:
    tc = TokenCacheSettings(l1_max_bytes=64 * 1024 * 1024)
    l1_bytes = build_token_cache(tc).l1._entries.maxsize
    assert 0 < validator_memo_bytes(tc.l1_max_bytes) < tc.l1_max_bytes
    assert l1_bytes + validator_memo_bytes(tc.l1_max_bytes) == tc.l1_max_bytes
