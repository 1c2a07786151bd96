"""shared/throttle.py: per-caller Retry-After memory, the app-wide breaker, the acquisition gate, and
the MSAL http_cache that drops MSAL's per-scope 429/5xx replay (pinned against MSAL's own key maker)."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import pytest
from msal.throttled_http_client import ThrottledHttpClient

from shared.errors import UpstreamError
from shared.context import build_context
from shared.throttle import AcquisitionGate, EntraThrottle, PerCallerHttpCache, default_acquisition_limit
from tests.fakes import env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Answer:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.headers, self.text = status, headers, "{}"


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    def post(self, *args: object, **kwargs: object) -> Answer:
        self.calls += 1
        return Answer(429, {"Retry-After": "3600"})


def test_msal_replays_one_users_obo_429_to_another_unless_its_per_scope_replay_is_dropped() -> None:
    def obo(client: ThrottledHttpClient, assertion: str) -> None:
        client.post("https://login/tenant/oauth2/v2.0/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "client_id": "api", "scope": "User.Read",
            "assertion": assertion, "requested_token_use": "on_behalf_of"})

    upstream = Upstream()
    stock = ThrottledHttpClient(upstream, http_cache={})
    obo(stock, "alice"), obo(stock, "bob")
    assert upstream.calls == 1  # MSAL as shipped: bob's OBO answered with alice's 429
    upstream = Upstream()
    ours = ThrottledHttpClient(upstream, http_cache=PerCallerHttpCache())
    obo(ours, "alice"), obo(ours, "bob")
    assert upstream.calls == 2
    # per-account entries (a refresh token's) stay MSAL's
    upstream = Upstream()
    ours = ThrottledHttpClient(upstream, http_cache=PerCallerHttpCache())
    for _ in range(2):
        ours.post("https://login/t/oauth2/v2.0/token", data={"grant_type": "refresh_token", "client_id": "api",
                                                             "scope": "User.Read", "refresh_token": "rt"})
    assert upstream.calls == 1


def test_one_callers_retry_after_is_its_own_and_many_failing_callers_open_the_breaker() -> None:
    clock = Clock()
    t = EntraThrottle(breaker_callers=3, breaker_window=30, breaker_max_seconds=60, clock=clock)
    assert t.failed("alice", 3600) == 3600
    assert t.retry_after("alice") == 3600 and t.retry_after("bob") is None
    assert t.failed("bob", None) == 5  # no header: MSAL's default
    t.check("carol")
    t.failed("carol", 20)  # the third distinct caller: breaker open for the shortest (5 s)
    with pytest.raises(UpstreamError) as err:
        t.check("dave")
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "5"
    clock.now += 6
    t.check("dave")
    assert t.retry_after("alice") == 3594


@contextlib.contextmanager
def slot_held(gate: AcquisitionGate) -> Iterator[None]:
    """Another thread holds one of ``gate``'s slots for the block (released, and its thread joined, after it)."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.slot():
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert entered.wait(10)
        yield
    finally:
        release.set()
        worker.join(10)


def test_gate_refuses_fast_when_full_of_slow_acquisitions() -> None:
    clock = Clock()
    gate = AcquisitionGate(1, queue_seconds=0.25, clock=clock)
    with slot_held(gate):
        clock.now += 1  # the running one is older than the queue time: Entra is slow, no waiting
        with pytest.raises(UpstreamError) as err:
            with gate.slot():
                pass
        assert err.value.headers["Retry-After"] == "1" and gate.refused == 1
    with gate.slot():
        assert gate.running == 1


def test_the_acquisition_bound_is_half_the_worker_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [default_acquisition_limit(n) for n in (8, 3, 1)] == [4, 2, 2]
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert default_acquisition_limit() == 4  # Python's default pool: min(32, cpus + 4)
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "64")  # the settings given are read, not os.environ
    assert build_context(env(PYTHON_THREADPOOL_THREAD_COUNT="10")).tokens.gate.limit == 5
    assert build_context(env(PYTHON_THREADPOOL_THREAD_COUNT="10", MiddleTier__MaxConcurrentTokenAcquisitions="3")
                         ).tokens.gate.limit == 3


def test_the_gate_queue_waits_no_longer_than_the_request_budget() -> None:
    import time
    from shared import deadline
    gate = AcquisitionGate(1, queue_seconds=5.0)  # a long queue: the budget is shorter
    with slot_held(gate):
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err, deadline.within(0.3), gate.slot():
            pass
    waited = time.monotonic() - started
    assert err.value.status == 504 and gate.refused == 1
    assert 0.25 <= waited < 1.5, f"queued {waited:.3f}s with a 0.3 s budget and a 5 s queue"
