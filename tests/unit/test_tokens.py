"""Tokens: credential handling (a refused credential is reloaded, but not once per request) and its
mapping of Entra's error answers to the app's typed errors."""
from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from shared import deadline, logctx
from shared import tokens as acquisition
from shared.tokens import Reply, Tokens, _is_invalid_client
from shared.config import load_settings
from tests.fakes import make_tokens
from shared.errors import (AccessDenied, ApiError, AuthenticationError, ClaimsChallenge, CredentialError,
                           TenantNotProvisioned, UpstreamError)

from .test_aadsts import ENV


def test_a_credential_entra_keeps_refusing_is_reloaded_once_per_backoff() -> None:
    now, loads = [0.0], []
    acquirer = make_tokens(load_settings(ENV).azure_ad, lambda: loads.append(1) or "secret",  # type: ignore[func-returns-value]
                      None, failure_backoff=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    acquirer._ensure_credential()
    for _ in range(5):  # five requests, each refused with the credential it saw
        acquirer._reload_credential(acquirer._generation)
    assert len(loads) == 2 and acquirer._generation == 2  # one load, one reload
    now[0] += 5.0
    acquirer._reload_credential(acquirer._generation)
    assert len(loads) == 3 and acquirer._generation == 3


def test_a_reload_by_another_request_is_not_repeated() -> None:
    loads: list[int] = []
    acquirer = make_tokens(load_settings(ENV).azure_ad, lambda: loads.append(1) or "secret",  # type: ignore[func-returns-value]
                      None)  # type: ignore[arg-type]
    acquirer._ensure_credential()
    seen = acquirer._generation
    acquirer._reload_credential(seen)
    acquirer._reload_credential(seen)  # a second request that saw the same, already replaced, credential
    assert len(loads) == 2


# --- Entra's error answers -> the app's typed errors (_token_or_raise, _is_invalid_client, _tenant_not_provisioned)
TENANT, CLIENT = ENV["AzureAd__TenantId"], ENV["AzureAd__ClientId"]
AUTHORIZE = f"https://login.example.test/{TENANT}/oauth2/v2.0/authorize"
CALLERS_TENANT = "3a5c7e9b-1d2f-4a6b-8c0d-2e4f6a8b0c1d"
GRAPH = ("https://graph.example.test/.default",)
CLAIMS = '{"access_token":{"capolids":{"essential":true,"values":["p"]}}}'


def _call(status: int | None = 400, retry_after: int | None = None) -> Reply:
    """The status and Retry-After of the call to Entra that answered, passed along with its answer."""
    return Reply({}, status, retry_after)


def _acquirer(tenant: str = TENANT) -> Tokens:
    settings = load_settings({**ENV, "AzureAd__TenantId": tenant}).azure_ad
    return make_tokens(settings, lambda: "unused", None)  # type: ignore[arg-type]  # no session: the status is passed


def _refusal(result: dict[str, Any], session: Reply | None = None, tenant: str | None = None,
             scopes: tuple[str, ...] = GRAPH, multi_tenant: bool = False) -> ApiError:
    acquirer = _acquirer("organizations" if multi_tenant else TENANT)
    call = session or _call()
    with pytest.raises(ApiError) as raised:
        acquirer._token_or_raise(result, tenant, scopes, status=call.status, retry_after=call.retry_after)
    return raised.value


def _challenge(error: str, detail: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="", authorization_uri="{AUTHORIZE}", client_id="{CLIENT}", '
                                f'error="{error}", error_description="{detail}"'}


def test_an_answer_with_a_token_is_the_token() -> None:
    assert _acquirer()._token_or_raise({"access_token": "the-token", "error": "invalid_client",
                                        "error_codes": [7000215]}) == "the-token"


CRED = "The identity provider refused this app's client credential: "
CONF = "The app's registration or downstream scopes are not valid: "
SIGN_IN = "The user must sign in again to satisfy the identity provider: "
DELEGATION = "The identity provider did not accept the token for delegation: "
BLOCKED = "The identity provider will not issue a token for this user: "
THROTTLED = "The identity provider is throttling or unavailable: "
REFUSED = "The identity provider refused the exchange: "

# result, session -> type, status, title, code, detail, headers, extra (all of it: what reaches the client)
ANSWERS = [
    ("credential, codes sorted and joined", {"error": "invalid_client", "error_codes": [7000215, 700027]}, None,
     CredentialError, 500, "Credential error", "invalid_client", CRED + "invalid_client (AADSTS700027,7000215)",
     {}, {"aadsts": [700027, 7000215]}),
    ("credential by the OAuth error alone", {"error": "invalid_client"}, None,
     CredentialError, 500, "Credential error", "invalid_client", CRED + "invalid_client", {}, {"aadsts": []}),
    ("configuration", {"error": "invalid_scope", "error_codes": [70011]}, None,
     ApiError, 500, "Configuration error", "configuration_error", CONF + "invalid_scope (AADSTS70011)",
     {}, {"aadsts": [70011]}),
    ("interaction", {"error": "invalid_grant", "error_codes": [50076]}, None,
     ClaimsChallenge, 401, "Unauthorized", "interaction_required", SIGN_IN + "invalid_grant (AADSTS50076)",
     _challenge("interaction_required", SIGN_IN + "invalid_grant (AADSTS50076)"),
     {"reason": "interaction_required", "aadsts": [50076]}),
    ("consent by code", {"error": "invalid_grant", "error_codes": [65001]}, None,
     ClaimsChallenge, 401, "Unauthorized", "consent_required", SIGN_IN + "invalid_grant (AADSTS65001)",
     _challenge("consent_required", SIGN_IN + "invalid_grant (AADSTS65001)"),
     {"reason": "consent_required", "aadsts": [65001]}),
    ("consent by the other code", {"error": "invalid_grant", "error_codes": [65004]}, None,
     ClaimsChallenge, 401, "Unauthorized", "consent_required", SIGN_IN + "invalid_grant (AADSTS65004)",
     _challenge("consent_required", SIGN_IN + "invalid_grant (AADSTS65004)"),
     {"reason": "consent_required", "aadsts": [65004]}),
    ("a claims value makes any answer a claims challenge",
     {"error": "invalid_grant", "error_codes": [53003], "claims": CLAIMS}, None,
     ClaimsChallenge, 401, "Unauthorized", "insufficient_claims", SIGN_IN + "invalid_grant (AADSTS53003)",
     {"WWW-Authenticate": f'Bearer realm="", authorization_uri="{AUTHORIZE}", client_id="{CLIENT}", '
                          f'error="insufficient_claims", error_description="{SIGN_IN}invalid_grant (AADSTS53003)", '
                          f'claims="{base64.b64encode(CLAIMS.encode()).decode()}"'},
     {"reason": "interaction_required", "claims": CLAIMS, "aadsts": [53003]}),
    ("consent by suberror", {"error": "interaction_required", "suberror": "consent_required"}, None,
     ClaimsChallenge, 401, "Unauthorized", "consent_required", SIGN_IN + "interaction_required",
     _challenge("consent_required", SIGN_IN + "interaction_required"), {"reason": "consent_required"}),
    ("another suberror", {"error": "interaction_required", "suberror": "basic_action"}, None,
     ClaimsChallenge, 401, "Unauthorized", "interaction_required", SIGN_IN + "interaction_required",
     _challenge("interaction_required", SIGN_IN + "interaction_required"), {"reason": "interaction_required"}),
    ("caller's token", {"error": "invalid_grant", "error_codes": [50013]}, None,
     AuthenticationError, 401, "Unauthorized", "invalid_token", DELEGATION + "invalid_grant (AADSTS50013)",
     {"WWW-Authenticate": 'Bearer realm="", error="invalid_token", '
                          f'error_description="{DELEGATION}invalid_grant (AADSTS50013)"'}, {}),
    ("user blocked", {"error": "invalid_grant", "error_codes": [53003, 50105]}, None,
     AccessDenied, 403, "Forbidden", "access_denied", BLOCKED + "invalid_grant (AADSTS50105,53003)",
     {}, {"aadsts": [50105, 53003]}),
    # Entra unavailable: held for its Retry-After, else MSAL's default for a 429/5xx, else not held
    ("transient, Retry-After", {"error": "temporarily_unavailable"}, _call(503, 30),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "temporarily_unavailable",
     {"Retry-After": "30"}, {"upstream": "entra"}),
    ("transient 503, no Retry-After", {"error": "server_error", "error_codes": [50000]}, _call(503),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "server_error (AADSTS50000)",
     {"Retry-After": "5"}, {"upstream": "entra"}),
    ("transient 500", {"error": "server_error", "error_codes": [50000]}, _call(500),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "server_error (AADSTS50000)",
     {"Retry-After": "5"}, {"upstream": "entra"}),
    ("transient 499", {"error": "server_error", "error_codes": [50000]}, _call(499),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "server_error (AADSTS50000)",
     {}, {"upstream": "entra"}),
    ("transient 400", {"error": "invalid_grant", "error_codes": [50196]}, _call(400),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "invalid_grant (AADSTS50196)",
     {}, {"upstream": "entra"}),
    ("transient, no status", {"error": "temporarily_unavailable"}, _call(None),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "temporarily_unavailable",
     {}, {"upstream": "entra"}),
    ("unknown error, 429", {"error": "something_new", "error_codes": [9999999]}, _call(429),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "something_new (AADSTS9999999)",
     {"Retry-After": "5"}, {"upstream": "entra"}),
    ("unknown error, 429 with Retry-After", {"error": "something_new"}, _call(429, 120),
     UpstreamError, 503, "Service Unavailable", "upstream_error", THROTTLED + "something_new",
     {"Retry-After": "120"}, {"upstream": "entra"}),
    ("unknown error", {"error": "something_new", "error_codes": [9999999]}, _call(400),
     UpstreamError, 502, "Bad Gateway", "upstream_error", REFUSED + "something_new (AADSTS9999999)",
     {}, {"upstream": "entra"}),
    ("no error at all, non-integer codes dropped", {"error_codes": ["50076", None]}, _call(400),
     UpstreamError, 502, "Bad Gateway", "upstream_error", REFUSED, {}, {"upstream": "entra"}),
]


@pytest.mark.parametrize("result,session,kind,status,title,code,detail,headers,extra",
                         [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
def test_each_entra_answer_becomes_one_typed_error(result: dict[str, Any], session: Reply | None,
                                                   kind: type[ApiError], status: int, title: str, code: str,
                                                   detail: str, headers: dict[str, str],
                                                   extra: dict[str, Any]) -> None:
    err = _refusal(result, session)
    assert type(err) is kind
    assert (err.status, err.title, err.code, err.detail, err.headers, err.extra) == (
        status, title, code, detail, headers, extra)


@pytest.mark.parametrize("result,invalid_client", [
    ({"error": "invalid_client", "error_codes": [7000215]}, True),
    ({"error": "invalid_client"}, True),                          # by the OAuth error when no code says
    ({"error": "invalid_grant", "error_codes": [7000215]}, True),  # the code decides
    ({"error_codes": [700027]}, True),
    ({"error": "invalid_client", "error_codes": [70011]}, False),  # a configuration code: no reload fixes it
    ({"error": "invalid_grant", "error_codes": [50013]}, False),
    ({"error": "invalid_grant"}, False),
    ({}, False),
    ({"access_token": "t", "error": "invalid_client", "error_codes": [7000215]}, False),
])
def test_only_a_refused_credential_is_worth_a_reload(result: dict[str, Any], invalid_client: bool) -> None:
    assert _is_invalid_client(result) is invalid_client


# --- multi-tenant: the caller's tenant lacks the resource ------------------------------------------------
@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fresh notice memory and a clock the test moves (``now[0]``)."""
    now = [1000.0]
    monkeypatch.setattr(acquisition, "_tenant_notices", {})
    monkeypatch.setattr(acquisition, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.mark.parametrize("scopes,what", [
    (GRAPH, "The downstream API https://graph.example.test"),
    (("api://middletier-downstream/Files.Read", "https://other.example.test/x"),
     "The downstream API api://middletier-downstream"),
    (("User.Read",), "A downstream API this function needs"),
    ((), "A downstream API this function needs"),
])
def test_tenant_not_provisioned_names_the_resource(notices: list[float], scopes: tuple[str, ...],
                                                   what: str) -> None:
    err = _refusal({"error": "invalid_resource", "error_codes": [500011]}, tenant=CALLERS_TENANT, scopes=scopes,
                   multi_tenant=True)
    assert type(err) is TenantNotProvisioned
    assert (err.status, err.code, err.extra) == (403, "tenant_not_provisioned",
                                                 {"tenant": CALLERS_TENANT, "aadsts": [500011]})
    assert err.detail == (f"{what} is not provisioned in your tenant ({CALLERS_TENANT}); an administrator of the "
                          "tenant must add it (grant admin consent to this application).")


@pytest.mark.parametrize("tenant,multi_tenant", [(CALLERS_TENANT, False), (None, True), (None, False)])
def test_only_multi_tenant_with_the_answering_tenant_is_it_the_tenants_state(
        notices: list[float], tenant: str | None, multi_tenant: bool) -> None:
    """Single-tenant, the answering tenant is ours: our configuration (500), as is an unknown tenant."""
    err = _refusal({"error": "invalid_resource", "error_codes": [500011]}, tenant=tenant, multi_tenant=multi_tenant)
    assert (type(err), err.status, err.code) == (ApiError, 500, "configuration_error")
    assert acquisition._tenant_notices == {}


def _not_provisioned(tenant: str, codes: list[int] = [500011], scopes: tuple[str, ...] = GRAPH) -> None:
    _refusal({"error": "invalid_resource", "error_codes": codes}, tenant=tenant, scopes=scopes, multi_tenant=True)


def _notices(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    out = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "middletier.tokens"]
    caplog.clear()
    return out


def test_a_tenant_not_provisioned_is_logged_once_per_interval(notices: list[float],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    first = ("resource https://graph.example.test is not provisioned in tenant t-1 (AADSTS500011,500014): its "
             "users get 403 tenant_not_provisioned (logged once per 600 s per tenant)")
    again = first.replace(" (logged once per 600 s per tenant)", "")
    with caplog.at_level(logging.DEBUG, "middletier.tokens"):
        _not_provisioned("t-1", [500014, 500011])
        assert _notices(caplog) == [(logging.WARNING, first)]
        notices[0] += 599.0
        _not_provisioned("T-1", [500011, 500014])  # the same tenant and codes, any case: within the interval
        assert _notices(caplog) == [(logging.DEBUG, again.replace("t-1", "T-1"))]
        notices[0] += 1.0                           # exactly TENANT_NOTICE_SECONDS after the first
        _not_provisioned("t-1", [500011, 500014])
        assert _notices(caplog) == [(logging.WARNING, first)]
        _not_provisioned("t-1", [500011], ("User.Read",))  # other codes: a notice of their own
        assert _notices(caplog) == [(logging.WARNING, "resource ? is not provisioned in tenant t-1 (AADSTS500011): "
                                                      "its users get 403 tenant_not_provisioned (logged once per "
                                                      "600 s per tenant)")]


def test_the_notice_memory_forgets_old_tenants_and_is_bounded(notices: list[float],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    memory = acquisition._tenant_notices
    _not_provisioned("a")
    notices[0] += 100.0
    _not_provisioned("b")
    notices[0] += 500.0                             # "a" is exactly TENANT_NOTICE_SECONDS old: forgotten
    _not_provisioned("c")
    assert [k[0] for k in memory] == ["b", "c"]
    notices[0] += 10.0
    _not_provisioned("a")                           # remembered again, and "b" (550 s old) is still
    assert [k[0] for k in memory] == ["b", "c", "a"]
    monkeypatch.setattr(acquisition, "TENANT_NOTICE_MAX", 3)
    notices[0] += 10.0
    _not_provisioned("d")                           # full: the oldest ("b") makes room
    assert [k[0] for k in memory] == ["c", "a", "d"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "middletier.tokens"):
        notices[0] += 10.0
        _not_provisioned("b")                       # forgotten, so noticed again
        _not_provisioned("a")                       # remembered: not
    assert [r.levelno for r in caplog.records if r.name == "middletier.tokens"] == [logging.WARNING, logging.DEBUG]


# --- the cold-start prefetch (Tokens.prefetch): the credential and the MSAL app, loaded beside validation -------
class FakeMsalApp:
    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, client_id: str, **kwargs: Any) -> None:
        FakeMsalApp.built.append({"thread": threading.current_thread().name, **kwargs})


@pytest.fixture
def no_entra(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """MSAL apps built without their authority's metadata (no network): the ones built, with their thread."""
    FakeMsalApp.built = []
    monkeypatch.setattr(acquisition.msal, "ConfidentialClientApplication", FakeMsalApp)
    return FakeMsalApp.built


class Loader:
    """A credential load that records its thread and deadline, waits for ``release`` and then does ``outcome``."""

    def __init__(self, outcome: BaseException | None = None, *, blocked: bool = False) -> None:
        self.outcome, self.calls = outcome, []  # type: list[tuple[str, float | None]]
        self.release = threading.Event()
        if not blocked:
            self.release.set()

    def __call__(self) -> str:
        self.calls.append((threading.current_thread().name, deadline.remaining()))
        self.release.wait(10)
        if self.outcome is not None:
            raise self.outcome
        return "secret"


def _prefetching(loader: Loader, budget: float = 5.0, **env: str) -> Tokens:
    acquirer = make_tokens(load_settings({**ENV, **env}).azure_ad, loader, None,  # type: ignore[arg-type]
                           failure_backoff=60.0)
    acquirer.prefetch(budget)
    return acquirer


def _in_thread(call: Callable[[], Any]) -> Any:
    """``call``'s outcome (value or exception) in another request's thread."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(_outcome(call)))
    worker.start()
    worker.join(10)
    return out[0]


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BaseException as err:  # noqa: BLE001 - the test compares it
        return err


def test_the_first_request_loads_the_credential_and_builds_the_app_in_the_background(
        no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(blocked=True)
    acquirer = _prefetching(loader, budget=5.0)
    assert acquirer._prefetch is not None and not acquirer._prefetch.done.is_set()  # started, waiting on the vault
    loader.release.set()
    with deadline.within(5.0):
        app, generation = acquirer._app(TENANT)
    assert isinstance(app, FakeMsalApp) and generation == 1
    assert [name for name, _ in loader.calls] == ["middletier-prefetch"]   # loaded once, in the background
    assert [b["thread"] for b in no_entra] == ["middletier-prefetch"]      # and the app (its discovery) there too
    left = loader.calls[0][1]
    assert left is not None and 4.0 < left <= 5.0                          # under the starting request's deadline
    assert acquirer._app(TENANT)[0] is app and len(no_entra) == 1
    assert acquirer._prefetch is None


def test_multi_tenant_prefetch_loads_the_credential_only(no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(blocked=True)
    acquirer = _prefetching(loader, AzureAd__TenantId="organizations")
    job = acquirer._prefetch
    loader.release.set()
    assert job is not None and job.done.wait(5)
    assert len(loader.calls) == 1 and acquirer._credential == "secret" and no_entra == []  # apps wait for tenants


def test_a_failed_prefetch_is_its_requests_error_and_remembered_for_the_backoff(
        no_entra: list[dict[str, Any]]) -> None:
    failure = UpstreamError("keyvault", "The app's credential could not be loaded from Key Vault.", 503)
    loader = Loader(failure)
    acquirer = _prefetching(loader)
    with pytest.raises(UpstreamError) as raised:
        acquirer._app(TENANT)
    assert raised.value is failure and raised.value.status == 503          # the same error as a load in-thread
    assert _in_thread(lambda: acquirer._app(TENANT)) is failure            # others: from memory, as today
    with pytest.raises(UpstreamError) as again:
        acquirer._app(TENANT)
    assert again.value is failure and len(loader.calls) == 1 and no_entra == []  # one vault read per backoff


def test_a_prefetch_out_of_time_is_not_remembered_nor_handed_to_another_request(
        no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(deadline.BudgetSpent("identity"))
    acquirer = _prefetching(loader)
    assert acquirer._prefetch is not None and acquirer._prefetch.done.wait(5)
    assert acquirer._failed is None                                        # the starting request's lack of time only
    loader.outcome = None
    with deadline.within(30):  # the next request (the same worker thread, as a pool reuses it): its own budget
        assert isinstance(acquirer._app(TENANT)[0], FakeMsalApp)
    assert len(loader.calls) == 2 and acquirer._prefetch is None


def test_an_unexpected_prefetch_failure_is_logged_without_its_text_and_requests_load_themselves(
        no_entra: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    loader = Loader(RuntimeError("s3cret-in-the-message"))
    with caplog.at_level(logging.INFO, logger="middletier.tokens"):
        acquirer = _prefetching(loader)
        assert acquirer._prefetch is not None and acquirer._prefetch.done.wait(5)
    logged = [r for r in caplog.records if "cold-start" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR and "RuntimeError" in logged[0].getMessage()
    assert "s3cret" not in caplog.text
    other = _in_thread(lambda: acquirer._app(TENANT))                     # a request: its own attempt, its error
    assert isinstance(other, RuntimeError) and len(loader.calls) == 2
    loader.outcome = None
    assert isinstance(acquirer._app(TENANT)[0], FakeMsalApp) and len(loader.calls) == 3
    assert acquirer._prefetch is None


def test_waiting_for_the_prefetch_is_bounded_by_the_requests_deadline(
        no_entra: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acquisition, "PREFETCH_GRACE_SECONDS", 0.05)
    loader = Loader(blocked=True)
    acquirer = _prefetching(loader, budget=30.0)
    started = time.monotonic()
    with deadline.within(0.2), pytest.raises(deadline.BudgetSpent) as raised:
        acquirer._app(TENANT)
    assert time.monotonic() - started < 1.0 and raised.value.extra["upstream"] == "keyvault"
    job = acquirer._prefetch
    loader.release.set()
    assert job is not None and job.done.wait(5)
    assert isinstance(acquirer._app(TENANT)[0], FakeMsalApp) and len(loader.calls) == 1


def test_prefetch_starts_once_and_not_after_a_credential_is_loaded(no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(blocked=True)
    acquirer = _prefetching(loader)
    first = acquirer._prefetch
    acquirer.prefetch(5.0)
    assert acquirer._prefetch is first
    loader.release.set()
    acquirer._app(TENANT)
    acquirer.prefetch(5.0)
    assert acquirer._prefetch is None and len(loader.calls) == 1


def test_the_request_that_started_a_failed_prefetch_gets_its_error_and_no_other_request_does(
        no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(deadline.BudgetSpent("keyvault"))
    with logctx.tracing("req-1"):  # the first request: it starts the prefetch, which runs out of its time
        acquirer = _prefetching(loader)
        with pytest.raises(deadline.BudgetSpent) as raised:
            acquirer._app(TENANT)
    assert len(loader.calls) == 1 and raised.value.extra["upstream"] == "keyvault"  # its own failure, not a retry
    loader.outcome = deadline.BudgetSpent("identity")
    with logctx.tracing("req-1"):  # the next request on this thread, even with the same client request id
        with pytest.raises(deadline.BudgetSpent) as again:
            acquirer._app(TENANT)
    assert len(loader.calls) == 2 and again.value.extra["upstream"] == "identity"  # its own attempt
    assert acquirer._failed is None


def test_a_prefetch_failure_is_not_kept_for_its_request_once_another_request_has_joined(
        no_entra: list[dict[str, Any]]) -> None:
    loader = Loader(deadline.BudgetSpent("keyvault"))
    with logctx.tracing("req-1"):
        acquirer = _prefetching(loader)
    assert acquirer._prefetch is not None and acquirer._prefetch.done.wait(5)
    loader.outcome = None
    with logctx.tracing("req-2"):
        assert isinstance(acquirer._app(TENANT)[0], FakeMsalApp)
    assert len(loader.calls) == 2 and acquirer._prefetch is None
