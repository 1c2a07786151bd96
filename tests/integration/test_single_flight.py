"""One call to Entra per partition, also when the call is a refresh-token redemption (issue 18, item 4).

Two app contexts in this process play two instances: each its own MSAL app and L1, both on one real
redis-server L2, against the real devstack Entra. Requests start together (a barrier); what is counted
is Entra's own record of the grants it served.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

from devstack.launch import Admin, RedisServer
from devstack.settings_file import local_settings
from shared.context import AppContext, build_context
from shared.pipeline import authenticate

from .test_token_cache_scale import l2_settings


def grants(admin: Admin) -> dict[str, int]:
    return dict(admin.stats().get("entra.token", {}).get("by_grant", {}))


def entra_calls_during(admin: Admin, work: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    before = grants(admin)
    result = work()
    after = grants(admin)
    return result, {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@pytest.fixture
def instances(devstack: dict[str, Any], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> list[AppContext]:
    values = {**local_settings(devstack, credential="secret")["Values"], **l2_settings("redis", redis_server),
              "MiddleTier__MaxConcurrentTokenAcquisitions": "64"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return [build_context(), build_context()]


def together(calls: list[Callable[[], str]]) -> list[str]:
    """Run the calls at once, each in its own thread, released by one barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], str]) -> str:
        barrier.wait(10)
        return call()
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_a_new_scope_for_a_cached_caller_costs_one_call_to_entra(instances: list[AppContext],
                                                                 admin: Admin) -> None:
    """The caller's partition holds Graph's token and a refresh token; six requests (three per instance)
    then want the orders API. MSAL would redeem the refresh token for each of them: before, the warm path
    let every request do it unlocked, and a waiting instance took the partition's older L2 entry as the
    leader's answer. Now one request redeems it (or does the OBO) and the others wait for its entry."""
    a, b = instances
    assertion = admin.mint(user="alice")
    _, caller = authenticate(a, f"Bearer {assertion}")
    graph, orders = a.settings.downstream_api("Graph").scopes, a.settings.downstream_api("Orders").scopes
    _, first = entra_calls_during(admin, lambda: a.tokens.for_user(assertion, caller, graph))
    assert first == {"on_behalf_of": 1}
    calls = [lambda ctx=ctx: ctx.tokens.for_user(assertion, caller, orders) for ctx in (a, b, a, b, a, b)]
    tokens, second = entra_calls_during(admin, lambda: together(calls))
    assert sum(second.values()) == 1, second
    assert len(set(tokens)) == 1  # everyone got the one token that call produced


def test_a_long_running_session_redeems_its_refresh_token_once_across_instances(instances: list[AppContext],
                                                                                 admin: Admin) -> None:
    """The session's access token is within MSAL's 5-minute margin, so every ``for_session`` would
    redeem the refresh token; four jobs on two instances at once (before: one redemption per instance,
    the in-process lock being the only one) now cost one."""
    a, b = instances
    assertion = admin.mint(user="bob")
    _, caller = authenticate(a, f"Bearer {assertion}")
    scopes = a.settings.downstream_api("Graph").scopes
    admin.post("/lifetime", {"seconds": 120})  # shorter than MSAL's margin: the next silent call refreshes
    try:
        session = a.tokens.start_session(assertion, caller, scopes)
    finally:
        admin.post("/lifetime", {"seconds": 3599})  # the refreshed token is good for an hour
    calls = [lambda ctx=ctx: ctx.tokens.for_session(session, caller.tid, scopes) for ctx in (a, b, a, b)]
    tokens, counted = entra_calls_during(admin, lambda: together(calls))
    assert counted == {"refresh_token": 1}, counted
    assert len(set(tokens)) == 1
