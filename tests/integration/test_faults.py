"""Upstream faults injected through the devstack controls: the app's answer and its latency.

Each test prints ``[fault] <case>: <status> in <seconds> (deadline <seconds>)`` (run with -s).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.launch import Admin

from .test_middletier_api import call


def timed(host: dict[str, Any], token: str) -> tuple[Any, float]:
    started = time.monotonic()
    r = call(host, token)
    return r, time.monotonic() - started


def report(case: str, status: int, elapsed: float, deadline: float) -> None:
    print(f"\n[fault] {case}: {status} in {elapsed:.3f}s (deadline {deadline:.1f}s)")
    assert elapsed < deadline + 0.5, f"{case}: {elapsed:.2f}s exceeds its deadline of {deadline}s"


@pytest.fixture(scope="module")
def quick_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    """Short deadlines so each fault shows its bound quickly."""
    return host_factory(devstack, AzureAd__TimeoutSeconds="1", DownstreamApis__Graph__TimeoutSeconds="1",
                        MiddleTier__RequestBudgetSeconds="3")


def test_entra_slower_than_its_deadline_is_504(quick_host: dict[str, Any], admin: Admin) -> None:
    assert call(quick_host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "token", "latency_ms": 2500, "count": 1})
    r, elapsed = timed(quick_host, admin.mint(user="alice"))
    assert r.status_code == 504 and r.json()["upstream"] == "entra"
    report("Entra slow (2.5 s)", r.status_code, elapsed, 1.0)


def test_entra_5xx_is_503(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__TimeoutSeconds="1")  # its own app: alice's 5xx is held for 5 s
    assert call(host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "token", "status": 500, "count": 1})
    r, elapsed = timed(host, admin.mint(user="alice"))
    assert r.status_code == 503 and r.json()["upstream"] == "entra"
    report("Entra 500", r.status_code, elapsed, 1.0)


def test_entra_429_is_503_with_retry_after_and_no_retry_storm(devstack: dict[str, Any], host_factory: Any,
                                                              admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__TimeoutSeconds="1")
    assert call(host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "token", "status": 429, "retry_after": 17, "count": None})
    try:
        before = admin.stats()["entra.token"]["by_outcome"].get("fault-429", 0)
        worst = 0.0
        for _ in range(6):
            r, elapsed = timed(host, admin.mint(user="bob"))  # six users' assertions, six OBO misses
            worst = max(worst, elapsed)
            assert r.status_code == 503 and 1 <= int(r.headers["Retry-After"]) <= 17
        upstream = admin.stats()["entra.token"]["by_outcome"]["fault-429"] - before
        # The app holds Entra's 429 for Retry-After seconds per user (not per scope, as MSAL would for
        # every user): six assertions of one user, one request reached Entra.
        assert upstream == 1, f"{upstream} token requests reached Entra for 6 calls"
        report("Entra 429 Retry-After 17 (6 calls, 1 upstream)", 503, worst, 1.0)
    finally:
        admin.clear_faults()


def test_jwks_down_with_keys_cached_keeps_serving(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack)
    assert call(host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "jwks", "status": 503, "count": None})
    admin.post("/faults", {"service": "entra", "endpoint": "discovery", "status": 503, "count": None})
    r, elapsed = timed(host, admin.mint(user="bob"))
    assert r.status_code == 200
    report("JWKS down, keys cached", r.status_code, elapsed, 10.0)


def test_jwks_down_at_cold_start_is_503(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    admin.post("/faults", {"service": "entra", "endpoint": "jwks", "status": 503, "count": None})
    host = host_factory(devstack, AzureAd__TimeoutSeconds="1")
    r, elapsed = timed(host, admin.mint(user="bob"))
    assert r.status_code == 503 and r.json()["upstream"] == "entra"
    report("JWKS down at cold start", r.status_code, elapsed, 1.0)
    admin.clear_faults()
    assert call(host, admin.mint(user="bob")).status_code == 200  # recovers without a restart


def test_downstream_5xx_is_502(quick_host: dict[str, Any], admin: Admin) -> None:
    admin.post("/faults", {"service": "graph", "endpoint": "me", "status": 500, "count": 1})
    r, elapsed = timed(quick_host, admin.mint(user="alice"))
    assert r.status_code == 502 and r.json()["upstream"] == "Graph"
    report("downstream 500", r.status_code, elapsed, 1.0)


def test_downstream_429_is_503_with_retry_after(quick_host: dict[str, Any], admin: Admin) -> None:
    admin.post("/faults", {"service": "graph", "endpoint": "me", "status": 429, "retry_after": 9, "count": 1})
    r, elapsed = timed(quick_host, admin.mint(user="alice"))
    assert r.status_code == 503 and r.headers["Retry-After"] == "9"
    report("downstream 429", r.status_code, elapsed, 1.0)


def test_downstream_timeout_is_504(quick_host: dict[str, Any], admin: Admin) -> None:
    admin.post("/faults", {"service": "graph", "endpoint": "me", "latency_ms": 2500, "count": 1})
    r, elapsed = timed(quick_host, admin.mint(user="alice"))
    assert r.status_code == 504 and r.json()["upstream"] == "Graph"
    report("downstream slow (2.5 s)", r.status_code, elapsed, 1.0)


def test_request_budget_bounds_the_sum_of_slow_calls(devstack: dict[str, Any], host_factory: Any,
                                                     admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__TimeoutSeconds="5", DownstreamApis__Graph__TimeoutSeconds="5",
                        MiddleTier__RequestBudgetSeconds="1.5")
    assert call(host, admin.mint(user="alice")).status_code == 200
    admin.post("/faults", {"service": "entra", "endpoint": "token", "latency_ms": 900, "count": 1})
    admin.post("/faults", {"service": "graph", "endpoint": "me", "latency_ms": 900, "count": 1})
    r, elapsed = timed(host, admin.mint(user="alice"))
    assert r.status_code == 504
    report("Entra 0.9 s + downstream 0.9 s, budget 1.5 s", r.status_code, elapsed, 1.5)


def test_key_vault_slow_is_bounded(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, KeyVault__TimeoutSeconds="1", MiddleTier__CredentialFailureBackoffSeconds="0")
    admin.post("/faults", {"service": "keyvault", "endpoint": "secrets", "latency_ms": 2500, "count": None})
    try:
        r, elapsed = timed(host, admin.mint(user="alice"))
        assert r.status_code == 503 and r.json()["upstream"] == "keyvault"
        report("Key Vault slow (2.5 s), SDK retries once", r.status_code, elapsed, 2.5)
    finally:
        admin.clear_faults()
    assert call(host, admin.mint(user="alice")).status_code == 200
