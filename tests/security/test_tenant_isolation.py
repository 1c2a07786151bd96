"""Multi-tenant isolation: another tenant's state is answered as that tenant's, never as our outage.

A downstream API that is not provisioned in the caller's tenant (AADSTS500011 from that tenant's
authority) is the caller's tenant's state: 403 ``tenant_not_provisioned``, a WARNING at most once per
tenant per interval, never a 500 nor an ERROR line per request (any allowed tenant could flood the
alerts). ``AzureAd__AllowedTenants`` matches tenant ids case-insensitively.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.launch import Admin

FABRIKAM = "f00dfeed-2b3c-4d5e-8f6a-7b8c9d0e1f2a"
http_ = requests.Session()
http_.trust_env = False


def get(host: dict[str, Any], path: str, token: str) -> requests.Response:
    return http_.get(host["url"] + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def obo_500011(admin: Admin) -> int:
    return admin.stats().get("entra.token", {}).get("by_outcome", {}).get("AADSTS500011", 0)


def log_lines(host: dict[str, Any], needle: str, level: str) -> int:
    text = Path(host["log"]).read_text(errors="replace")
    return sum(1 for line in text.splitlines() if needle in line and level in line)


@pytest.fixture(scope="module")
def multi_tenant_host(devstack: dict[str, Any], host_factory: Any) -> dict[str, Any]:
    return host_factory(devstack, AzureAd__TenantId="organizations",
                        AzureAd__AllowedTenants=f"{devstack['tenant_id']} {FABRIKAM}")


def test_a_downstream_api_missing_in_the_callers_tenant_is_403_logged_once(
        devstack: dict[str, Any], multi_tenant_host: dict[str, Any], admin: Admin) -> None:
    """dave (Fabrikam) on /api/orders: the orders API has no service principal in Fabrikam."""
    before = obo_500011(admin)
    answers = [get(multi_tenant_host, "/api/orders", admin.mint(user="dave", tenant=FABRIKAM)) for _ in range(5)]
    for r in answers:
        assert r.status_code == 403, r.text
        body = r.json()
        assert body["error"] == "tenant_not_provisioned" and body["tenant"] == FABRIKAM
        assert "Orders" in body["detail"] or "not provisioned" in body["detail"]
        assert "value" not in body
    assert obo_500011(admin) - before == 5  # each a distinct token: Entra asked each time
    time.sleep(0.5)  # the host's log is written by another process
    text = Path(multi_tenant_host["log"]).read_text(errors="replace")
    lines = [line for line in text.splitlines() if "tenant_not_provisioned" in line or "not provisioned" in line]
    assert lines and not [line for line in lines if "ERROR" in line], lines
    assert log_lines(multi_tenant_host, "not provisioned in tenant " + FABRIKAM, "WARNING") == 1
    # the home tenant's users are unaffected
    bob = get(multi_tenant_host, "/api/orders", admin.mint(user="bob"))
    assert bob.status_code == 200 and bob.json()["scope"] == "mine"


def test_allowed_tenants_match_case_insensitively(devstack: dict[str, Any], host_factory: Any, admin: Admin) -> None:
    host = host_factory(devstack, AzureAd__TenantId="organizations",
                        AzureAd__AllowedTenants=f"{devstack['tenant_id'].upper()} {FABRIKAM.upper()}")
    dave = get(host, "/api/me", admin.mint(user="dave", tenant=FABRIKAM))
    assert dave.status_code == 200, dave.text
    alice = get(host, "/api/me", admin.mint(user="alice"))
    assert alice.status_code == 200, alice.text


# --- the mapping, unit level: which codes, which mode, how often logged -------------------------------
class _Session:
    def last_status(self) -> int:
        return 400

    def throttled_for(self) -> int | None:
        return None


def _acquirer(tenant: str) -> Any:
    from shared.config import load_settings
    from tests.fakes import make_tokens
    from tests.unit.test_aadsts import ENV
    return make_tokens(load_settings({**ENV, "AzureAd__TenantId": tenant}).azure_ad, lambda: "unused",  # type: ignore
                  _Session())  # type: ignore[arg-type]


@pytest.mark.parametrize("codes,multi,status,error", [
    ([500011], True, 403, "tenant_not_provisioned"),
    ([500014], True, 403, "tenant_not_provisioned"),
    ([500011], False, 500, "configuration_error"),        # single-tenant: the tenant is ours
    ([70011], True, 500, "configuration_error"),          # a wrong scope is ours in any mode
    ([500011, 70011], True, 500, "configuration_error"),  # ours as soon as one code is ours
    ([500011, 7000215], True, 500, "invalid_client"),     # our credential first
])
def test_tenant_provisioning_codes_are_the_callers_tenant_only_in_multi_tenant_mode(
        codes: list[int], multi: bool, status: int, error: str) -> None:
    from shared.errors import ApiError
    acquirer = _acquirer("organizations" if multi else "11111111-2222-4333-8444-555555555555")
    with pytest.raises(ApiError) as raised:
        acquirer._token_or_raise({"error": "invalid_resource", "error_codes": codes}, FABRIKAM,
                                 ("api://orders/Orders.Read",))
    assert (raised.value.status, raised.value.code) == (status, error)


def test_tenant_not_provisioned_is_logged_once_per_tenant_per_interval(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from shared import tokens as acquisition
    from shared.errors import ApiError
    monkeypatch.setattr(acquisition, "_tenant_notices", {})
    acquirer = _acquirer("organizations")
    other = "0e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b"
    with caplog.at_level(logging.DEBUG, "middletier.tokens"):
        for tenant in [FABRIKAM] * 50 + [other] * 50 + [FABRIKAM.upper()]:
            with pytest.raises(ApiError) as raised:
                acquirer._token_or_raise({"error": "invalid_resource", "error_codes": [500011]}, tenant,
                                         ("api://orders/Orders.Read",))
            assert raised.value.status == 403 and "api://orders" in raised.value.detail
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]  # one per tenant, no ERROR
    real = time.monotonic
    monkeypatch.setattr(acquisition.time, "monotonic", lambda: real() + acquisition.TENANT_NOTICE_SECONDS)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "middletier.tokens"), pytest.raises(ApiError):
        acquirer._token_or_raise({"error": "invalid_resource", "error_codes": [500011]}, FABRIKAM, ())
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # again after the interval
