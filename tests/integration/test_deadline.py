"""``MiddleTier__RequestBudgetSeconds`` is one deadline over everything a request waits on (shared/deadline.py).

Each waiter is made slower than the budget through a devstack fault (or a silent TCP server as Redis), with its
own timeout far above the budget, so only the deadline can end the wait: the request answers (504, or the status
the waiter's failure deserves) within the budget plus a small margin. Each assertion message carries the measured
worst-case latency; ``-s`` prints them as ``[deadline] <waiter>: <status> in <s> (budget <s>)``.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
import requests

from devstack.launch import Admin

from ..unit.test_l2 import SilentServer
from .test_middletier_api import call

BUDGET = 2.0
MARGIN = 0.6     # the host's own overhead: HTTP in and out, the worker's dispatch, logging
SLOW_MS = 8000   # every fault's latency: four budgets, below every waiter's own timeout
LONG = "20"      # every waiter's own timeout, seconds: far above the budget
TRIES = 2        # requests per waiter; the worst is reported


def budget_host(devstack: dict[str, Any], host_factory: Any, **settings: str) -> dict[str, Any]:
    host = host_factory(devstack, MiddleTier__RequestBudgetSeconds=str(BUDGET), AzureAd__TimeoutSeconds=LONG,
                        DownstreamApis__Graph__TimeoutSeconds=LONG, KeyVault__TimeoutSeconds=LONG,
                        MiddleTier__CredentialFailureBackoffSeconds="0", **settings)
    assert call(host).status_code == 401  # the worker and the app's context are up: only the request is timed
    return host


def timed(host: dict[str, Any], token: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    r = call(host, token)
    return r, time.monotonic() - started


def worst_of(case: str, tries: int, attempt: Callable[[], tuple[requests.Response, float]],
             statuses: tuple[int, ...] = (504,), upstream: str | None = None) -> float:
    """Run ``attempt`` ``tries`` times: each answer's status is one of ``statuses`` (naming ``upstream``), and
    the slowest comes within the budget plus the margin."""
    worst = 0.0
    for _ in range(tries):
        r, elapsed = attempt()
        assert r.status_code in statuses, f"{case}: {r.status_code} {r.text} after {elapsed:.3f}s"
        if upstream is not None:
            assert r.json()["upstream"] == upstream, r.text
        worst = max(worst, elapsed)
    print(f"\n[deadline] {case}: {r.status_code} worst {worst:.3f}s of {tries} (budget {BUDGET}s)")
    assert worst < BUDGET + MARGIN, f"{case}: worst-case {worst:.3f}s exceeds the budget {BUDGET}s + {MARGIN}s"
    return worst


def fault(admin: Admin, **spec: Any) -> None:
    admin.post("/faults", {"count": None, "latency_ms": SLOW_MS, **spec})


def fired(admin: Admin) -> int:
    return sum(f["fired"] for f in admin.http.get(admin.base + "/faults", timeout=10).json()["faults"])


def test_entra_slow_during_obo(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = budget_host(devstack, host_factory)
    assert call(host, admin.mint(user="alice")).status_code == 200  # credential, keys and app loaded
    fault(admin, service="entra", endpoint="token")
    worst_of("Entra slow (OBO)", TRIES, lambda: timed(host, admin.mint(user="alice")), upstream="entra")
    assert fired(admin) == TRIES  # each request did reach the slow Entra


def test_graph_drip_feeding_its_body(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = budget_host(devstack, host_factory)
    token = admin.mint(user="alice")
    assert call(host, token).status_code == 200  # the token is cached: only Graph's answer is slow
    # Headers at once, then a byte every 100 ms: no single read ever waits its 20 s timeout (about 40 s in all).
    fault(admin, service="graph", endpoint="me", latency_ms=0, drip_ms=100)
    worst_of("Graph drip-feeding its body", TRIES, lambda: timed(host, token), upstream="Graph")
    assert fired(admin) == TRIES


@pytest.mark.parametrize("label, credential, service, endpoint", [
    ("Key Vault slow (credential load)", "keyvault-certificate", "keyvault", "secrets"),
    ("managed identity slow (federated assertion)", "federated", "identity", "token"),
])
def test_the_credential_source_slow(devstack: dict[str, Any], host_factory: Any, admin: Admin, label: str,
                                    credential: str, service: str, endpoint: str) -> None:
    host = budget_host(devstack, host_factory, credential=credential)
    fault(admin, service=service, endpoint=endpoint)
    worst_of(label, TRIES, lambda: timed(host, admin.mint(user="alice")), upstream=service)
    admin.clear_faults()
    r = call(host, admin.mint(user="alice"))  # the source is back: the next request loads the credential
    assert r.status_code == 200, r.text


def test_jwks_slow_during_validation(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = budget_host(devstack, host_factory)  # no request validated yet: no keys held
    fault(admin, service="entra", endpoint="jwks")
    worst_of("JWKS slow during validation", TRIES, lambda: timed(host, admin.mint(user="alice")), upstream="entra")
    admin.clear_faults()
    assert call(host, admin.mint(user="alice")).status_code == 200


def test_openid_metadata_slow_during_validation(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = budget_host(devstack, host_factory)
    fault(admin, service="entra", endpoint="discovery")
    worst_of("OpenID metadata slow during validation", 1, lambda: timed(host, admin.mint(user="alice")),
             upstream="entra")


def test_l2_that_never_answers_is_not_waited_for(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    from .test_token_cache_scale import KEY
    silent = SilentServer()  # a Redis that accepts connections and never answers
    try:
        host = budget_host(devstack, host_factory, TokenCache__L2="redis", TokenCache__EncryptionKey=KEY,
                           TokenCache__RedisConnectionString=f"redis://127.0.0.1:{silent.port}/0",
                           TokenCache__L2TimeoutSeconds=LONG)
        # A call to L2 could take 20 s, more than the whole budget: it is skipped (a miss), the request served.
        worst_of("L2 (Redis) silent", TRIES, lambda: timed(host, admin.mint(user="alice")), statuses=(200,))
        assert silent.connections() == 0  # never asked
    finally:
        silent.close()


def concurrently(host: dict[str, Any], admin: Admin, tokens: tuple[str, str]) -> list[tuple[requests.Response, float]]:
    """The first request starts; once it is waiting on the slow Entra, the second starts."""
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(timed, host, tokens[0])
        waiting = threading.Event()
        deadline = time.monotonic() + 10
        while not waiting.is_set() and time.monotonic() < deadline:  # polls the devstack, not a fixed sleep
            if fired(admin) >= 1:
                waiting.set()
            else:
                waiting.wait(0.02)
        assert waiting.is_set(), "the first request never reached Entra"
        second = pool.submit(timed, host, tokens[1])
        return [first.result(), second.result()]


def test_partition_lock_wait_behind_another_request(devstack: dict[str, Any], host_factory: Any,
                                                     admin: Admin) -> None:
    host = budget_host(devstack, host_factory)
    assert call(host, admin.mint(user="alice")).status_code == 200
    fault(admin, service="entra", endpoint="token")
    token = admin.mint(user="bob")  # one caller, one partition: the second request waits for the first's lock
    (first, t1), (second, t2) = concurrently(host, admin, (token, token))
    assert first.status_code == 504 and first.json()["upstream"] == "entra", first.text
    assert second.status_code in (503, 504) and second.json()["upstream"] == "entra", second.text
    worst_of("partition lock behind a slow OBO", 1, lambda: (second, t2), statuses=(503, 504))
    assert max(t1, t2) < BUDGET + MARGIN, f"slow OBO {t1:.3f}s, behind it {t2:.3f}s"


def test_acquisition_gate_queue(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = budget_host(devstack, host_factory, MiddleTier__MaxConcurrentTokenAcquisitions="1",
                       MiddleTier__TokenAcquisitionQueueSeconds="30")
    assert call(host, admin.mint(user="alice")).status_code == 200
    fault(admin, service="entra", endpoint="token")
    # two callers: the second waits for the one slot, its queue (30 s) bounded by its budget
    (first, t1), (second, t2) = concurrently(host, admin, (admin.mint(user="bob"), admin.mint(user="carol")))
    assert first.status_code == 504, first.text
    assert second.status_code == 504 and second.json()["upstream"] == "entra", second.text
    worst_of("acquisition gate queue behind a slow OBO", 1, lambda: (second, t2))
    assert max(t1, t2) < BUDGET + MARGIN, f"slow OBO {t1:.3f}s, queued behind it {t2:.3f}s"


@pytest.fixture(autouse=True)
def no_faults_left(admin: Admin) -> Any:
    yield
    admin.clear_faults()
