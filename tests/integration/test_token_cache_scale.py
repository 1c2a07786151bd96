"""The token cache across instances: shared encrypted L2 on real Redis and real Azurite."""
from __future__ import annotations

import base64
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devstack.launch import Admin

from .test_middletier_api import call, obo_count

KEY = base64.b64encode(os.urandom(32)).decode()


# These tests are about the cache and single flight under a burst of cold OBOs, not about admission
# control (tests/security/test_failure_isolation.py): the acquisition bound is lifted so a busy CI
# machine can't turn the burst into 503s.
UNGATED = {"MiddleTier__MaxConcurrentTokenAcquisitions": "256", "MiddleTier__TokenAcquisitionQueueSeconds": "30"}


def l2_settings(kind: str, redis_server: Any = None, azurite: Any = None, **extra: str) -> dict[str, str]:
    values = {"TokenCache__L2": kind, "TokenCache__EncryptionKey": KEY}
    if kind == "redis":
        values["TokenCache__RedisConnectionString"] = redis_server.url
    else:
        values["TokenCache__BlobConnectionString"] = azurite["connection_string"]
    values.update(extra)
    return values


@pytest.fixture(params=["redis", "blob"])
def shared_l2(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":
        return l2_settings("redis", redis_server=request.getfixturevalue("redis_server"))
    return l2_settings("blob", azurite=request.getfixturevalue("azurite"))


def test_a_user_cached_by_one_instance_is_served_by_another(devstack: dict[str, Any], host_factory: Any,
                                                            admin: Admin, shared_l2: dict[str, str]) -> None:
    a, b = host_factory(devstack, **shared_l2), host_factory(devstack, **shared_l2)
    token = admin.mint(user="alice")
    before = obo_count(admin)
    assert call(a, token).json()["id"] == devstack["users"]["alice"]["oid"]
    assert obo_count(admin) == before + 1
    r = call(b, token)
    assert r.status_code == 200 and r.json()["id"] == devstack["users"]["alice"]["oid"]
    assert obo_count(admin) == before + 1  # instance B: 0 OBO calls


def test_burst_over_two_instances_costs_about_one_obo_per_user(devstack: dict[str, Any], host_factory: Any,
                                                               admin: Admin, shared_l2: dict[str, str]) -> None:
    hosts = [host_factory(devstack, **shared_l2, **UNGATED), host_factory(devstack, **shared_l2, **UNGATED)]
    tokens = [admin.mint(user=("alice", "bob")[i % 2]) for i in range(50)]  # 50 distinct assertions
    work = [(hosts[i % 2], tokens[i % 50]) for i in range(200)]
    before = obo_count(admin)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda hw: call(*hw).status_code, work))
    extra = obo_count(admin) - before - 50
    print(f"\n[{shared_l2['TokenCache__L2']}] 200 requests, 50 assertions, 2 instances: {50 + extra} OBO calls")
    assert statuses == [200] * 200
    assert 0 <= extra <= 5, f"{extra} duplicate OBO calls"


def test_isolation_under_concurrency(devstack: dict[str, Any], host_factory: Any, admin: Admin,
                                     redis_server: Any) -> None:
    settings = {**l2_settings("redis", redis_server=redis_server), **UNGATED}
    hosts = [host_factory(devstack, **settings), host_factory(devstack, **settings)]
    names = ["alice", "bob", "carol"]
    callers = [(names[i % 3], admin.mint(user=names[i % 3], mfa=True)) for i in range(100)]
    oids = {n: devstack["users"][n]["oid"] for n in names}
    work = [(hosts[i % 2], callers[i % 100]) for i in range(1000)]
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda w: (w[1][0], call(w[0], w[1][1])), work))
    wrong = [(user, r.status_code, r.text[:80]) for user, r in answers
             if r.status_code != 200 or r.json()["id"] != oids[user]]
    assert wrong == []


def test_shared_cache_holds_no_clear_text(devstack: dict[str, Any], host_factory: Any, admin: Admin,
                                          redis_server: Any, azurite: dict[str, Any]) -> None:
    tokens = {u: admin.mint(user=u, mfa=True) for u in ("alice", "bob", "carol")}
    for settings in (l2_settings("redis", redis_server=redis_server), l2_settings("blob", azurite=azurite)):
        host = host_factory(devstack, **settings)
        for token in tokens.values():
            assert call(host, token).status_code == 200
    forbidden = [*tokens.values(), *[devstack["users"][u]["oid"] for u in tokens],
                 *[devstack["users"][u]["upn"] for u in tokens], "refresh_token", "access_token"]
    r = redis_server.client()
    keys = list(r.scan_iter("*"))
    assert len(keys) >= 3
    redis_dump = b"".join(k + (r.get(k) or b"") for k in keys)
    stored = b"".join(p.read_bytes() for p in Path(azurite["location"]).rglob("*") if p.is_file())
    assert len(stored) > 0
    for text in forbidden:
        assert text.encode() not in redis_dump, f"{text[:12]} in Redis"
        assert text.encode() not in stored, f"{text[:12]} in Azurite's files"
    # Any JWT at all (an MSAL-cached access or id token), not just "eyJ": three bytes turn up in ciphertext
    # by chance (about once in 16 million positions, so in a few percent of runs).
    jwt_shape = re.compile(rb"eyJ[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")
    assert not jwt_shape.search(redis_dump) and not jwt_shape.search(stored)


def test_redis_killed_mid_run_fails_no_request_and_comes_back(devstack: dict[str, Any], host_factory: Any,
                                                              admin: Admin, redis_server: Any) -> None:
    host = host_factory(devstack, **l2_settings("redis", redis_server=redis_server, TokenCache__L2RetrySeconds="0"))
    tokens = [admin.mint(user=("alice", "bob")[i % 2]) for i in range(30)]
    statuses = [call(host, t).status_code for t in tokens[:10]]
    redis_server.kill()
    statuses += [call(host, t).status_code for t in tokens[10:20]]  # new assertions: L1 + IdP
    statuses += [call(host, t).status_code for t in tokens[:10]]    # cached ones: L1
    redis_server.start()
    statuses += [call(host, t).status_code for t in tokens[20:]]
    assert statuses == [200] * 40
    stats = redis_server.client().info("commandstats")
    assert stats.get("cmdstat_set", {}).get("calls", 0) >= 1  # the restarted Redis is written again
    log = Path(host["log"]).read_text()
    assert log.count("token cache L2 (redis) unavailable") == 1  # one warning per outage
    assert "token cache L2 (redis) is back" in log


def test_slow_l2_is_bounded(devstack: dict[str, Any], host_factory: Any, admin: Admin, redis_server: Any) -> None:
    host = host_factory(devstack, **l2_settings("redis", redis_server=redis_server,
                                                 TokenCache__L2TimeoutSeconds="0.2"))
    assert call(host, admin.mint(user="alice")).status_code == 200
    redis_server.client().execute_command("CLIENT", "PAUSE", "3000", "ALL")
    started = time.monotonic()
    statuses = [call(host, admin.mint(user="bob")).status_code for _ in range(3)]
    elapsed = time.monotonic() - started
    assert statuses == [200] * 3
    assert elapsed < 2.5, f"{elapsed:.2f}s: L2 timeouts were not bounded"


def test_tampered_or_foreign_entries_are_misses(devstack: dict[str, Any], host_factory: Any, admin: Admin,
                                                redis_server: Any) -> None:
    settings = l2_settings("redis", redis_server=redis_server)
    token = admin.mint(user="alice")
    assert call(host_factory(devstack, **settings), token).status_code == 200
    r = redis_server.client()
    for key in r.scan_iter("msal-tc:*"):
        if b":lock:" not in key:
            value = bytearray(r.get(key))
            value[-1] ^= 0x01
            r.set(key, bytes(value))
    before = obo_count(admin)
    other_key = dict(settings, TokenCache__EncryptionKey=base64.b64encode(os.urandom(32)).decode())
    assert call(host_factory(devstack, **other_key), token).status_code == 200
    assert obo_count(admin) == before + 1  # a miss, not an error


def test_long_running_session_outlives_the_assertion(devstack: dict[str, Any], admin: Admin, monkeypatch: Any) -> None:
    """A background job keeps getting tokens from the refresh token after the caller's token expired."""
    from devstack.settings_file import local_settings
    from shared.context import build_context
    from shared.pipeline import authenticate
    for key, value in local_settings(devstack, credential="secret")["Values"].items():
        monkeypatch.setenv(key, value)
    ctx = build_context()
    admin.post("/lifetime", {"seconds": 120})  # short-lived downstream tokens: MSAL must refresh them
    try:
        assertion = admin.mint(user="bob", lifetime=2)
        _, caller = authenticate(ctx, f"Bearer {assertion}")
        scopes = ctx.settings.downstream_api("Graph").scopes
        session_key = ctx.tokens.start_session(assertion, caller, scopes)
        time.sleep(max(0.0, caller.claims["exp"] - time.time()) + 0.5)  # let the assertion really expire
        before = admin.stats()["entra.token"]["by_grant"].get("refresh_token", 0)
        token = ctx.tokens.for_session(session_key, caller.tid, scopes)
    finally:
        admin.post("/lifetime", {"seconds": 3599})
    import jwt
    assert jwt.decode(token, options={"verify_signature": False})["oid"] == devstack["users"]["bob"]["oid"]
    assert admin.stats()["entra.token"]["by_grant"]["refresh_token"] == before + 1
    assert session_key not in repr(ctx.tokens.cache.l1._entries.keys())  # stored under a hash only
