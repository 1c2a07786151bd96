"""Failure isolation between callers: one caller's upstream failure, throttle or slowness never
becomes another caller's answer or another caller's wait.

End to end: a devstack of the test's own (its faults touch no other test), the real local Functions
host, fault injection through the admin API. Each test prints ``[isolation] ...`` (run with -s):
the numbers for the closing note.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from devstack.launch import Admin

http = requests.Session()
http.trust_env = False
OBO = "on_behalf_of"


def call(host: dict[str, Any], token: str) -> requests.Response:
    return http.get(host["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def timed(host: dict[str, Any], token: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    r = call(host, token)
    return r, time.monotonic() - started


def obo_outcomes(admin: Admin) -> dict[str, int]:
    """Entra's OBO token requests by outcome (``ok``, ``fault-429``, ...): what reached Entra."""
    token = admin.stats().get("entra.token", {})
    return dict(token.get("by_outcome", {})) | {"obo": token.get("by_grant", {}).get(OBO, 0)}


def fault_taken(admin: Admin, initial: int) -> int:
    """How many requests a fault added with ``count=initial`` has already taken (it is gone when all did)."""
    faults = admin.http.get(admin.base + "/faults", timeout=10).json()["faults"]
    left = [f["count"] for f in faults if f.get("service") == "entra" and f.get("count") is not None]
    return initial - (left[0] if left else 0)


# --- one Retry-After per failing call, per upstream ---------------------------------------------
def test_graphs_retry_after_for_one_user_is_not_the_answer_to_another_users_entra_failure(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = private_devstack
    host = host_factory(info, AzureAd__TimeoutSeconds="2", DownstreamApis__Graph__TimeoutSeconds="2")
    alice = admin.mint(user="alice")
    assert call(host, alice).status_code == 200
    admin.post("/faults", {"service": "graph", "endpoint": "me", "status": 429, "retry_after": 3600, "count": 1})
    r = call(host, alice)
    assert r.status_code == 503 and r.headers["Retry-After"] == "3600"  # Graph's answer, to the user it throttled
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "status": 500, "count": 1})
    r = call(host, admin.mint(user="bob"))  # another user; Entra 500 without Retry-After
    print(f"\n[isolation] Graph 429 (Retry-After 3600) for alice, then Entra 500 for bob: "
          f"{r.status_code} Retry-After={r.headers.get('Retry-After')}")
    assert r.status_code == 503 and r.json()["upstream"] == "entra"
    # bob's own hold (Entra sent no Retry-After: the default 5 s), never Graph's 3600 for alice
    assert r.headers.get("Retry-After") == "5", "bob was answered with another caller's Retry-After"
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "status": 503, "retry_after": 7,
                           "count": 1})
    r = call(host, admin.mint(user="carol", mfa=True))
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"  # the failing call's own


# --- Entra's throttle per user, an app-wide breaker for outages ---------------------------------
def test_one_users_entra_429_is_not_replayed_to_another_users_cold_obo(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = private_devstack
    host = host_factory(info, AzureAd__TimeoutSeconds="2")
    assert call(host, admin.mint(user="alice")).status_code == 200  # warm: keys, credential, MSAL app
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "status": 429, "retry_after": 3600,
                           "count": 1})
    r = call(host, admin.mint(user="alice"))  # alice, cold: Entra throttles her
    assert r.status_code == 503 and r.headers["Retry-After"] == "3600"
    before = obo_outcomes(admin)
    r, elapsed = timed(host, admin.mint(user="bob"))  # bob, cold, right after
    after = obo_outcomes(admin)
    print(f"\n[isolation] bob's cold OBO right after alice's 429 (Retry-After 3600): {r.status_code} in "
          f"{elapsed:.3f}s, OBO requests reaching Entra: {after['obo'] - before['obo']}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == info["users"]["bob"]["oid"]
    assert after.get("ok", 0) - before.get("ok", 0) == 1 and after["obo"] - before["obo"] == 1
    # alice herself stays throttled, from memory: no retry storm against Entra.
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 503 and 3000 < int(r.headers["Retry-After"]) <= 3600
    assert obo_outcomes(admin)["obo"] == after["obo"]


def test_an_entra_outage_seen_by_many_users_opens_an_app_wide_breaker(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = private_devstack
    host = host_factory(info, AzureAd__TimeoutSeconds="2")
    assert call(host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "status": 503, "retry_after": 30,
                           "count": None})
    before = obo_outcomes(admin)
    users = [admin.mint(user="alice", claims={"oid": str(uuid.uuid4())}) for _ in range(9)]  # 9 distinct users
    answers = [call(host, token) for token in users]
    reached = obo_outcomes(admin)["obo"] - before["obo"]
    print(f"\n[isolation] Entra down (503, Retry-After 30), 9 distinct users: statuses "
          f"{sorted({r.status_code for r in answers})}, {reached} OBO requests reached Entra")
    assert all(r.status_code == 503 and 1 <= int(r.headers["Retry-After"]) <= 30 for r in answers)
    assert reached == 5, f"{reached} of 9 users reached Entra: one per user until the breaker opened after 5"
    admin.clear_faults()


# --- cached callers never wait behind cold ones -------------------------------------------------
def test_a_cached_caller_is_served_at_once_while_cold_obos_wait_on_a_slow_entra(
        private_devstack: tuple[dict[str, Any], Admin], host_factory: Any) -> None:
    info, admin = private_devstack
    # A worker pool of 4 threads (the Python worker's setting); the acquisition limit keeps its default.
    host = host_factory(info, PYTHON_THREADPOOL_THREAD_COUNT="4", AzureAd__TimeoutSeconds="10")
    cached = admin.mint(user="alice")
    assert call(host, cached).status_code == 200
    baseline = min(timed(host, cached)[1] for _ in range(3))
    cold = [admin.mint(user="bob") for _ in range(8)]  # 8 distinct assertions: 8 cold OBOs
    initial = 100
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "latency_ms": 4000,
                           "count": initial})
    with ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        futures = [pool.submit(timed, host, token) for token in cold]
        # Bounded wait until two cold OBOs are inside Entra's delay (the fault counts what it took).
        deadline = time.monotonic() + 10
        while fault_taken(admin, initial) < 2:
            assert time.monotonic() < deadline, "the cold OBOs never reached Entra"
        r, latency = timed(host, cached)
        cold_answers = [f.result(timeout=30) for f in futures]
        total = time.monotonic() - started
    reached = fault_taken(admin, initial)
    statuses = sorted(a.status_code for a, _ in cold_answers)
    fast_503 = [t for a, t in cold_answers if a.status_code == 503]
    print(f"\n[isolation] cached caller: {baseline * 1000:.0f} ms alone, {latency * 1000:.0f} ms while 8 cold OBOs "
          f"wait on Entra (4 s): cold statuses {statuses}, {reached} reached Entra, 503s in "
          f"{max(fast_503, default=0):.2f}s at most; all done in {total:.1f}s")
    assert r.status_code == 200 and r.json()["id"] == info["users"]["alice"]["oid"]
    assert latency < 1.0, f"a cached request took {latency:.2f}s behind cold ones"
    assert set(statuses) <= {200, 503} and 200 in statuses
    assert all(a.headers.get("Retry-After") for a, _ in cold_answers if a.status_code == 503)
    assert all(t < 1.0 for t in fast_503), "a refused cold OBO was not refused fast"

