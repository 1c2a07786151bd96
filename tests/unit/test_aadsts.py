"""Every AADSTS code the app maps, against Entra's published meaning, through the one mapping
(`Tokens._token_or_raise`) that turns Entra's answer into the app's HTTP answer.

The expectations are written out here, code by code, from Entra's error table — not derived
from `shared.aadsts.KINDS` — so a code moved to the wrong kind fails a test.
"""
from __future__ import annotations

from typing import Any

import pytest

from shared.aadsts import KINDS, TENANT_STATE, Kind, classify, is_tenant_state
from shared.tokens import Tokens
from shared.config import load_settings
from tests.fakes import make_tokens
from shared.errors import ApiError

ENV = {"AzureAd__Instance": "https://login.example.test/", "AzureAd__TenantId": "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f",
       "AzureAd__ClientId": "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b", "AzureAd__Scopes": "access_as_user",
       "AzureAd__ClientSecret": "unused"}

# code -> (OAuth error Entra sends with it, HTTP status the caller gets, problem "error")
EXPECTED: dict[int, tuple[str, int, str]] = {
    # the caller's token, presented as the OBO user assertion: get a new one
    50013: ("invalid_grant", 401, "invalid_token"),
    50027: ("invalid_request", 401, "invalid_token"),
    500131: ("invalid_grant", 401, "invalid_token"),
    500133: ("invalid_grant", 401, "invalid_token"),
    # the user must interact: a claims challenge (or consent) for the client
    50076: ("invalid_grant", 401, "interaction_required"),
    50079: ("invalid_grant", 401, "interaction_required"),
    50072: ("invalid_grant", 401, "interaction_required"),
    50074: ("invalid_grant", 401, "interaction_required"),
    50078: ("invalid_grant", 401, "interaction_required"),
    50158: ("invalid_grant", 401, "interaction_required"),
    65001: ("invalid_grant", 401, "consent_required"),
    65004: ("invalid_grant", 401, "consent_required"),
    50055: ("invalid_grant", 401, "interaction_required"),
    50173: ("invalid_grant", 401, "interaction_required"),
    50132: ("invalid_grant", 401, "interaction_required"),
    70043: ("invalid_grant", 401, "interaction_required"),
    50097: ("invalid_grant", 401, "interaction_required"),
    # signing in again won't help
    53003: ("invalid_grant", 403, "access_denied"),
    53000: ("invalid_grant", 403, "access_denied"),
    53001: ("invalid_grant", 403, "access_denied"),
    50005: ("invalid_grant", 403, "access_denied"),
    50105: ("invalid_grant", 403, "access_denied"),
    50053: ("invalid_grant", 403, "access_denied"),
    50057: ("invalid_grant", 403, "access_denied"),
    # this app's own credential — never the caller's fault, never a 401
    700024: ("invalid_client", 500, "invalid_client"),
    700027: ("invalid_client", 500, "invalid_client"),
    700023: ("invalid_client", 500, "invalid_client"),
    700021: ("invalid_client", 500, "invalid_client"),
    7000215: ("invalid_client", 500, "invalid_client"),
    7000222: ("invalid_client", 500, "invalid_client"),
    7000218: ("invalid_client", 500, "invalid_client"),
    70021: ("invalid_request", 500, "invalid_client"),
    # this app's registration or settings (no reload of the credential can fix these)
    700025: ("invalid_client", 500, "configuration_error"),
    700016: ("unauthorized_client", 500, "configuration_error"),
    7000112: ("unauthorized_client", 500, "configuration_error"),
    700229: ("invalid_client", 500, "configuration_error"),
    70011: ("invalid_scope", 500, "configuration_error"),
    28000: ("invalid_scope", 500, "configuration_error"),
    65005: ("invalid_client", 500, "configuration_error"),
    90009: ("invalid_request", 500, "configuration_error"),
    500011: ("invalid_resource", 500, "configuration_error"),
    500014: ("invalid_resource", 500, "configuration_error"),
    50001: ("invalid_resource", 500, "configuration_error"),
    7000114: ("invalid_grant", 500, "configuration_error"),
    90002: ("invalid_request", 500, "configuration_error"),
    50049: ("invalid_instance", 500, "configuration_error"),
    900144: ("invalid_request", 500, "configuration_error"),
    # Entra itself
    50000: ("server_error", 503, "upstream_error"),
    90033: ("temporarily_unavailable", 503, "upstream_error"),
    70012: ("server_error", 503, "upstream_error"),
    50196: ("invalid_grant", 503, "upstream_error"),
}


class _Session:
    def last_status(self) -> int:
        return 400

    def throttled_for(self) -> int | None:
        return None


@pytest.fixture(scope="module")
def acquirer() -> Tokens:
    return make_tokens(load_settings(ENV).azure_ad, lambda: "unused", _Session())  # type: ignore[arg-type]


def _answer(acquirer: Tokens, result: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as raised:
        acquirer._token_or_raise(result)
    return raised.value


def test_every_mapped_code_is_expected_here() -> None:
    assert set(KINDS) == set(EXPECTED)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_code_maps_to_its_published_meaning(acquirer: Tokens, code: int) -> None:
    error, status, problem = EXPECTED[code]
    err = _answer(acquirer, {"error": error, "error_codes": [code], "error_description": f"AADSTS{code}: ..."})
    assert (err.status, err.code) == (status, problem)
    assert str(code) in err.detail  # the operator can look it up
    if status == 401:
        assert "WWW-Authenticate" in err.headers


def test_client_assertion_out_of_time_range_is_not_the_callers_fault(acquirer: Tokens) -> None:
    """AADSTS700024 is about this app's own assertion (its clock, an expired managed-identity token
    used as a federated credential); AADSTS500133 is the caller's token. Only the latter is a 401."""
    assert _answer(acquirer, {"error": "invalid_client", "error_codes": [700024]}).status == 500
    assert _answer(acquirer, {"error": "invalid_grant", "error_codes": [500133]}).status == 401


def test_conditional_access_block_with_claims_is_a_challenge(acquirer: Tokens) -> None:
    claims = '{"access_token":{"capolids":{"essential":true,"values":["p"]}}}'
    err = _answer(acquirer, {"error": "invalid_grant", "error_codes": [53003], "claims": claims})
    assert err.status == 401 and err.code == "insufficient_claims" and "claims=" in err.headers["WWW-Authenticate"]


@pytest.mark.parametrize("error,status", [("invalid_client", 500), ("unauthorized_client", 500),
                                          ("interaction_required", 401), ("invalid_scope", 500),
                                          ("temporarily_unavailable", 503), ("something_new", 502)])
def test_unknown_codes_fall_back_to_the_oauth_error(acquirer: Tokens, error: str, status: int) -> None:
    assert _answer(acquirer, {"error": error, "error_codes": [9999999]}).status == status


def test_the_apps_own_problem_wins_when_codes_disagree() -> None:
    assert classify("invalid_grant", [500133, 700024]) is Kind.CREDENTIAL
    assert classify("invalid_grant", [50076, 70011]) is Kind.CONFIGURATION


# --- multi-tenant: the answering tenant's directory state, not this app's configuration ------------------
CALLERS_TENANT = "3a5c7e9b-1d2f-4a6b-8c0d-2e4f6a8b0c1d"


@pytest.mark.parametrize("codes,tenant_state", [
    ([500011], True), ([500014], True), ([500011, 500014], True),
    ([500011, 50013], True),     # a caller-token code beside it is not configuration: still the tenant's state
    ([500011, 9999999], True),   # nor is an unknown code
    ([], False), ([9999999], False), ([50013], False),  # no configuration code at all
    ([70011], False), ([500011, 70011], False), ([500014, 65005], False),  # this app's configuration too
])
def test_tenant_state_is_every_configuration_code_being_one_of_the_tenants(codes: list[int],
                                                                          tenant_state: bool) -> None:
    assert TENANT_STATE == {500011, 500014}
    assert is_tenant_state(codes) is tenant_state


@pytest.fixture(scope="module")
def multi_tenant_acquirer() -> Tokens:
    settings = load_settings({**ENV, "AzureAd__TenantId": "organizations"}).azure_ad
    assert settings.multi_tenant
    return make_tokens(settings, lambda: "unused", _Session())  # type: ignore[arg-type]


@pytest.mark.parametrize("error,codes,status,problem", [
    ("invalid_resource", [500011], 403, "tenant_not_provisioned"),
    ("invalid_resource", [500014], 403, "tenant_not_provisioned"),
    ("invalid_resource", [500011, 500014], 403, "tenant_not_provisioned"),
    ("invalid_grant", [500011, 50013], 403, "tenant_not_provisioned"),
    ("invalid_resource", [500011, 70011], 500, "configuration_error"),   # ours to fix as well: a 500
    ("invalid_scope", [70011], 500, "configuration_error"),
    ("invalid_resource", [9999999], 500, "configuration_error"),         # by the OAuth error alone: ours
    ("invalid_resource", [], 500, "configuration_error"),
])
def test_multi_tenant_a_missing_resource_in_the_callers_tenant_is_403(
        multi_tenant_acquirer: Tokens, error: str, codes: list[int], status: int, problem: str) -> None:
    with pytest.raises(ApiError) as raised:
        multi_tenant_acquirer._token_or_raise({"error": error, "error_codes": codes}, CALLERS_TENANT,
                                              ("https://graph.example.test/.default",))
    assert (raised.value.status, raised.value.code) == (status, problem)
    if status == 403:
        assert raised.value.extra == {"tenant": CALLERS_TENANT, "aadsts": sorted(codes)}


def test_single_tenant_a_missing_resource_stays_a_configuration_error(acquirer: Tokens) -> None:
    """With our own tenant as the authority, the service principal missing is our configuration."""
    with pytest.raises(ApiError) as raised:
        acquirer._token_or_raise({"error": "invalid_resource", "error_codes": [500011]}, ENV["AzureAd__TenantId"],
                                 ("https://graph.example.test/.default",))
    assert (raised.value.status, raised.value.code) == (500, "configuration_error")
