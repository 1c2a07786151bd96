"""shared/signing_keys.py on its own: which JWKS entries become keys, when the keys are fetched
again, how each failure of the metadata / JWKS / v1 fetch reaches the client, and what two
requests at once cost.

HTTP goes through a real ``requests.Session`` whose transport adapter answers from a table (no
network); the clock is injected; no test sleeps."""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from shared.errors import UpstreamError, problem
from shared.signing_keys import SigningKeys
from shared.config import load_settings
from shared.errors import AuthenticationError
from shared.validation import validate
from tests.fakes import INSTANCE, KEY, TENANT, FakeIdP, env, kid, token
from tests.fakes import idp, keys  # noqa: F401  (the shared fixtures)

META = INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration"
V1_META = INSTANCE + TENANT + "/.well-known/openid-configuration"
JWKS = INSTANCE + TENANT + "/discovery/v2.0/keys"
V2_ISSUER = INSTANCE + "{tenantid}/v2.0"
V1_ISSUER = "https://sts.windows.net/{tenantid}/"
KID = "key-1"
WAIT = 10.0  # a bound on waiting for another thread, never a sleep: each wait ends at once when all is well


def jwk(kid: Any = KID, **members: Any) -> dict[str, Any]:
    """KEY's public half as a JWKS entry; a member given as None is left out."""
    entry = {**RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": kid, "use": "sig", **members}
    return {k: v for k, v in entry.items() if v is not None}


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, body if isinstance(body, bytes) else json.dumps(body).encode(), headers or {}


class Transport(BaseAdapter):
    """The session's transport: answers each URL from ``routes`` (a reply, an exception to raise, or
    a callable giving either) and records every request's URL and timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, Any] = {
            META: reply({"issuer": V2_ISSUER, "jwks_uri": JWKS}),
            V1_META: reply({"issuer": V1_ISSUER, "jwks_uri": INSTANCE + "common/discovery/keys"}),
            JWKS: reply({"keys": [jwk()]}),
        }
        self.calls: list[tuple[str, Any]] = []

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        self.calls.append((str(request.url), timeout))
        answer = self.routes[str(request.url)]
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        response = requests.Response()
        response.status_code, response._content, headers = answer
        response.headers = CaseInsensitiveDict(headers)
        response.url, response.request, response.encoding = str(request.url), request, "utf-8"
        return response

    def close(self) -> None:
        pass

    def count(self, url: str) -> int:
        return sum(1 for called, _ in self.calls if called == url)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signing_keys(transport: Transport, clock: Callable[[], float] = Clock(), *, v1: bool = True,
                 **options: Any) -> SigningKeys:
    session = requests.Session()
    session.mount("https://", transport)
    return SigningKeys(META, session, v1_metadata_url=V1_META if v1 else None, clock=clock, **options)


def held(keys: SigningKeys, *kids: Any) -> set[Any]:
    """Which of ``kids`` the keys hold now (no refetch)."""
    return {k for k in kids if keys.get(k, refetch=False) is not None}


# --- every fetch failure, as the client sees it ------------------------------------------------------
TITLES = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
NOT_JSON = reply(b"<html>maintenance</html>")


def _v1_down_twice(keys: SigningKeys, transport: Transport) -> None:
    transport.routes[V1_META] = requests.ConnectionError("refused")
    with pytest.raises(UpstreamError):
        keys.v1_issuer()


FAULTS = [
    # (what is broken, the route and its answer, a step before the failing call, the call, status, Retry-After, detail)
    ("metadata times out", META, requests.ReadTimeout("slow"), None, "keys", 504, None,
     "Timed out fetching the OpenID metadata."),
    ("metadata connect timeout is a timeout", META, requests.ConnectTimeout("slow"), None, "keys", 504, None,
     "Timed out fetching the OpenID metadata."),
    ("metadata unreachable", META, requests.ConnectionError("refused"), None, "keys", 503, None,
     "Could not reach the identity provider for the OpenID metadata."),
    ("metadata 500 with Retry-After", META, reply({}, 500, {"Retry-After": "120"}), None, "keys", 503, "120",
     "The identity provider answered 500 for the OpenID metadata."),
    ("metadata 429 without Retry-After", META, reply({}, 429), None, "keys", 503, None,
     "The identity provider answered 429 for the OpenID metadata."),
    ("metadata 404, Retry-After capped", META, reply({}, 404, {"Retry-After": "99999"}), None, "keys", 503, "3600",
     "The identity provider answered 404 for the OpenID metadata."),
    ("metadata not JSON", META, NOT_JSON, None, "keys", 502, None, "The OpenID metadata is not JSON."),
    ("metadata a JSON list", META, reply([{"issuer": V2_ISSUER}]), None, "keys", 502, None,
     "The OpenID metadata is not a JSON object."),
    ("metadata without jwks_uri", META, reply({"issuer": V2_ISSUER}), None, "keys", 502, None,
     "The OpenID metadata lacks issuer or jwks_uri."),
    ("metadata without issuer", META, reply({"jwks_uri": JWKS}), None, "keys", 502, None,
     "The OpenID metadata lacks issuer or jwks_uri."),
    ("metadata issuer not a string", META, reply({"issuer": 5, "jwks_uri": JWKS}), None, "keys", 502, None,
     "The OpenID metadata lacks issuer or jwks_uri."),
    ("JWKS times out", JWKS, requests.Timeout("slow"), None, "keys", 504, None, "Timed out fetching the signing keys."),
    ("JWKS unreachable", JWKS, requests.ConnectionError("refused"), None, "keys", 503, None,
     "Could not reach the identity provider for the signing keys."),
    ("JWKS 503 with Retry-After", JWKS, reply({}, 503, {"Retry-After": "7"}), None, "keys", 503, "7",
     "The identity provider answered 503 for the signing keys."),
    ("JWKS not JSON", JWKS, NOT_JSON, None, "keys", 502, None, "The signing keys is not JSON."),
    ("JWKS a JSON string", JWKS, reply("keys"), None, "keys", 502, None, "The signing keys is not a JSON object."),
    ("JWKS without keys", JWKS, reply({}), None, "keys", 502, None,
     "The identity provider published no usable signing keys."),
    ("JWKS with only unusable keys", JWKS, reply({"keys": [jwk(use="enc"), {"kty": "oct", "k": "c2VjcmV0"}]}),
     None, "keys", 502, None, "The identity provider published no usable signing keys."),
    ("v1 metadata times out", V1_META, requests.Timeout("slow"), None, "v1", 504, None,
     "Timed out fetching the v1 OpenID metadata."),
    ("v1 metadata unreachable", V1_META, requests.ConnectionError("refused"), None, "v1", 503, None,
     "Could not reach the identity provider for the v1 OpenID metadata."),
    ("v1 metadata 502", V1_META, reply({}, 502, {"Retry-After": "5"}), None, "v1", 503, "5",
     "The identity provider answered 502 for the v1 OpenID metadata."),
    ("v1 metadata not JSON", V1_META, NOT_JSON, None, "v1", 502, None, "The v1 OpenID metadata is not JSON."),
    ("v1 metadata a JSON list", V1_META, reply([]), None, "v1", 502, None,
     "The v1 OpenID metadata is not a JSON object."),
    ("v1 metadata without issuer", V1_META, reply({"jwks_uri": JWKS}), None, "v1", 502, None,
     "The v1 OpenID metadata lacks issuer."),
    ("v1 metadata issuer not a string", V1_META, reply({"issuer": ["x"]}), None, "v1", 502, None,
     "The v1 OpenID metadata lacks issuer."),
    ("v1 metadata asked again while down", V1_META, requests.ConnectionError("refused"), _v1_down_twice, "v1", 503,
     "30", "The v1 OpenID metadata is unavailable."),
]


@pytest.mark.parametrize("route,answer,before,call,status,retry_after,detail",
                         [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_each_fetch_failure_reaches_the_client_with_its_exact_status_retry_after_and_detail(
        route: str, answer: Any, before: Any, call: str, status: int, retry_after: str | None, detail: str) -> None:
    transport = Transport()
    keys = signing_keys(transport)
    if before:
        before(keys, transport)
    transport.routes[route] = answer
    with pytest.raises(UpstreamError) as err:
        keys.v1_issuer() if call == "v1" else keys.published(KID)
    assert problem(err.value) == (
        status, {"Retry-After": retry_after} if retry_after else {},
        {"type": "urn:middletier:problem:upstream_error", "title": TITLES[status], "status": status,
         "detail": detail, "error": "upstream_error", "upstream": "entra"})


@pytest.mark.parametrize("jwks", [{"keys": 5}, {"keys": True}, {"keys": "abc"}, {"keys": {"kid": KID}},
                                  {"keys": None}, {"keys": [jwk(kid=["a list"])]}, {"keys": [jwk(kid={"a": 1})]}])
def test_a_malformed_jwks_is_a_502_on_a_cold_start_and_keeps_the_held_keys_on_a_refresh(
        jwks: dict[str, Any]) -> None:
    """A JWKS whose "keys" is no list, or whose kid is a list or an object, used to escape as a
    TypeError: a 500 on a cold start, and a 500 (not the held keys) on each retried refresh."""
    transport, clock = Transport(), Clock()
    transport.routes[JWKS] = reply(jwks)
    with pytest.raises(UpstreamError) as err:
        signing_keys(transport, clock).published(KID)
    assert (err.value.status, err.value.detail) == (502, "The identity provider published no usable signing keys.")
    transport.routes[JWKS] = reply({"keys": [jwk()]})
    keys = signing_keys(transport, clock, refresh_seconds=100)
    assert keys.published(KID)
    transport.routes[JWKS] = reply(jwks)
    clock.now += 100
    assert keys.published(KID) and keys.get(KID, refetch=False) is not None
    assert transport.count(JWKS) == 3


# --- which JWKS entries become keys -----------------------------------------------------------------------
EC_KEY = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)

ENTRIES = [
    # (case, the JWKS "keys", the kids that must be held)
    ("use sig", [jwk("a")], {"a"}),
    ("no use member means sig", [jwk("a", use=None)], {"a"}),
    ("an encryption key is skipped, the next one kept", [jwk("e", use="enc"), jwk("a")], {"a"}),
    ("use is compared exactly", [jwk("u", use="SIG"), jwk("a")], {"a"}),
    ("an EC key is skipped", [{**EC_KEY, "kid": "ec", "use": "sig"}, jwk("a")], {"a"}),
    ("an oct key is skipped", [{"kty": "oct", "k": "c2VjcmV0", "kid": "oct"}, jwk("a")], {"a"}),
    ("an RSA key without kty is skipped", [jwk("k", kty=None), jwk("a")], {"a"}),
    ("entries that are not objects are skipped", ["a", 5, None, [], ["a"], jwk("b")], {"b"}),
    ("a malformed RSA key is skipped, the next one kept", [jwk("bad", n="!!"), jwk("a")], {"a"}),
    ("an RSA key without its exponent is skipped", [jwk("bad", e=None), jwk("a")], {"a"}),
    ("a key without kid is skipped", [jwk(None), jwk("a")], {"a"}),
    ("a key with an empty kid is skipped", [jwk(""), jwk("a")], {"a"}),
    ("a key whose kid is no string is skipped", [jwk(5), jwk(True), jwk(["x"]), jwk("a")], {"a"}),
    ("a key whose issuer is no string is skipped", [jwk("i", issuer=5), jwk("j", issuer=["x"]), jwk("a")], {"a"}),
    ("alg does not decide how an RSA key is read",
     [jwk("rs512", alg="RS512"), jwk("ps256", alg="PS256"), jwk("hs256", alg="HS256"), jwk("oaep", alg="RSA-OAEP"),
      jwk("odd", alg="none")], {"rs512", "ps256", "hs256", "oaep", "odd"}),
    ("several keys", [jwk("a"), jwk("b", use=None), jwk("c", issuer=V2_ISSUER)], {"a", "b", "c"}),
]


@pytest.mark.parametrize("entries,kept", [e[1:] for e in ENTRIES], ids=[e[0] for e in ENTRIES])
def test_which_jwks_entries_become_signing_keys(entries: list[Any], kept: set[str]) -> None:
    transport = Transport()
    transport.routes[JWKS] = reply({"keys": entries})
    keys = signing_keys(transport)
    candidates = {e.get("kid") for e in entries if isinstance(e, dict) and isinstance(e.get("kid"), str)}
    assert held(keys, *candidates) == kept
    for kid_ in kept:
        assert keys.get(kid_, refetch=False).key.public_numbers() == KEY.public_key().public_numbers()


def test_a_key_carries_the_issuer_its_jwks_entry_names() -> None:
    transport = Transport()
    transport.routes[JWKS] = reply({"keys": [jwk("a", issuer=V2_ISSUER), jwk("b")]})
    keys = signing_keys(transport)
    assert keys.get("a").issuer == V2_ISSUER and keys.get("b").issuer is None


# --- when the keys are fetched ------------------------------------------------------------------------------
EPOCHS = [0.0, -1_000_000.0, 1_000_000.0]  # the clock's origin is arbitrary (time.monotonic): only differences count


@pytest.mark.parametrize("epoch", EPOCHS)
def test_keys_are_refreshed_after_exactly_refresh_seconds_and_a_failed_refresh_is_retried_after_the_interval(
        epoch: float) -> None:
    transport, clock = Transport(), Clock(epoch)
    keys = signing_keys(transport, clock, refresh_seconds=100, unknown_kid_interval=10)
    assert keys.fetches == 0 and transport.calls == []
    steps = [
        # (seconds since the first fetch, JWKS up?, JWKS requests so far, successful fetches so far)
        (0, True, 1, 1),
        (99.999, True, 1, 1),
        (100, True, 2, 2),        # refreshed at exactly refresh_seconds
        (199.999, True, 2, 2),
        (200, False, 3, 2),       # the refresh fails: the held key keeps serving
        (209.999, False, 3, 2),   # not retried within the interval
        (210, False, 4, 2),       # retried at exactly the interval
        (220, True, 5, 3),
        (319.999, True, 5, 3),
        (320, True, 6, 4),
    ]
    for seconds, up, requested, fetched in steps:
        clock.now = epoch + seconds
        transport.routes[JWKS] = reply({"keys": [jwk()]}) if up else requests.ConnectionError("down")
        assert keys.published(KID), seconds
        assert (transport.count(JWKS), keys.fetches) == (requested, fetched), seconds
    assert transport.count(META) == 1  # the metadata is read once


@pytest.mark.parametrize("epoch", EPOCHS)
def test_the_default_refresh_is_daily_and_the_unknown_kid_slot_comes_back_after_exactly_ten_seconds(
        epoch: float) -> None:
    transport, clock = Transport(), Clock(epoch)
    keys = signing_keys(transport, clock)
    assert keys.get("rolled") is None and transport.count(JWKS) == 2      # the first fetch, then one refetch
    transport.routes[JWKS] = reply({"keys": [jwk(), jwk("rolled")]})
    clock.now = epoch + 9.999
    assert keys.get("rolled") is None and transport.count(JWKS) == 2      # the slot is spent
    assert keys.get("rolled", refetch=False) is None
    clock.now = epoch + 10
    assert keys.get("rolled", refetch=False) is None and transport.count(JWKS) == 2  # no refetch when not asked
    assert keys.get("rolled") is not None and transport.count(JWKS) == 3  # the default asks for it
    clock.now = epoch + 10 + 24 * 3600 - 0.001                            # a day after the last fetch
    assert keys.published(KID) and transport.count(JWKS) == 3
    clock.now = epoch + 10 + 24 * 3600
    assert keys.published(KID) and transport.count(JWKS) == 4
    assert keys.fetches == 4


def test_metadata_is_read_once_and_gives_the_v2_issuer_and_jwks_uri() -> None:
    transport = Transport()
    keys = signing_keys(transport)
    assert (keys.metadata.issuer, keys.metadata.jwks_uri) == (V2_ISSUER, JWKS)
    assert keys.metadata.issuer == V2_ISSUER
    assert transport.count(META) == 1 and transport.count(JWKS) == 1


@pytest.mark.parametrize("timeout,expected", [(None, (3.05, 10.0)), (2.0, (2.0, 2.0)), (30.0, (3.05, 30.0))])
def test_every_fetch_has_a_connect_and_a_read_timeout(timeout: float | None, expected: tuple[float, float]) -> None:
    transport = Transport()
    keys = signing_keys(transport, **({} if timeout is None else {"timeout": timeout}))
    keys.published(KID)
    keys.v1_issuer()
    assert transport.calls == [(META, expected), (JWKS, expected), (V1_META, expected)]


# --- the v1 issuer --------------------------------------------------------------------------------------------
def test_without_a_v1_document_there_is_no_v1_issuer_and_no_request() -> None:
    transport = Transport()
    keys = signing_keys(transport, v1=False)
    assert keys.v1_issuer() is None and transport.calls == []


@pytest.mark.parametrize("failure", [requests.ConnectionError("down"), reply({"jwks_uri": JWKS}), NOT_JSON])
def test_the_v1_issuer_is_read_once_and_a_failure_is_retried_after_exactly_30_seconds(failure: Any) -> None:
    transport, clock = Transport(), Clock()
    keys = signing_keys(transport, clock)
    transport.routes[V1_META] = failure
    with pytest.raises(UpstreamError):
        keys.v1_issuer()
    transport.routes[V1_META] = reply({"issuer": V1_ISSUER})
    clock.now += 29.999
    with pytest.raises(UpstreamError) as err:
        keys.v1_issuer()
    assert (err.value.status, err.value.headers) == (503, {"Retry-After": "30"})
    assert transport.count(V1_META) == 1
    clock.now += 0.001
    assert keys.v1_issuer() == V1_ISSUER and keys.v1_issuer() == V1_ISSUER
    assert transport.count(V1_META) == 2 and transport.count(JWKS) == 0  # the v1 issuer needs no keys


# --- two requests at once -------------------------------------------------------------------------------------
class DoorLock:
    """Stands in for the keys' lock: the thread named ``held`` stops at the door (before acquiring)
    until ``opened`` is set, which pins one interleaving of two requests."""

    def __init__(self, held: str) -> None:
        self._lock, self.held = threading.Lock(), held
        self.waiting, self.opened = threading.Event(), threading.Event()

    def __enter__(self) -> None:
        if threading.current_thread().name == self.held:
            self.waiting.set()
            assert self.opened.wait(WAIT)
        self._lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


def _run_beside(keys: SigningKeys, first: Callable[[], Any], meanwhile: Callable[[], Any]) -> Any:
    """``first`` in another thread, stopped at the lock while ``meanwhile`` runs here; its result."""
    door = DoorLock("first")
    keys._lock = door  # type: ignore[assignment]
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(first()), name="first")
    thread.start()
    assert door.waiting.wait(WAIT)
    meanwhile()
    door.opened.set()
    thread.join(WAIT)
    assert not thread.is_alive() and len(result) == 1
    return result[0]


def test_a_request_waiting_for_the_refetch_another_made_gets_the_rolled_key_without_a_second_refetch() -> None:
    transport = Transport()
    keys = signing_keys(transport)
    keys.published(KID)
    transport.routes[JWKS] = reply({"keys": [jwk(), jwk("rolled")]})
    found = _run_beside(keys, lambda: keys.get("rolled", refetch=True),
                        lambda: keys.get("rolled", refetch=True))
    assert found is not None and found.key.public_numbers() == KEY.public_key().public_numbers()
    assert transport.count(JWKS) == 2


def test_a_request_waiting_while_another_refresh_fails_serves_the_held_keys_without_another_attempt() -> None:
    transport, clock = Transport(), Clock()
    keys = signing_keys(transport, clock, refresh_seconds=100)
    keys.published(KID)
    clock.now += 100
    transport.routes[JWKS] = requests.ConnectionError("down")
    assert _run_beside(keys, lambda: keys.published(KID), lambda: keys.published(KID)) is True
    assert transport.count(JWKS) == 2 and keys.fetches == 1


def test_a_slow_v1_document_does_not_hold_up_requests_whose_key_is_held() -> None:
    """Fresh keys are served without the lock, so a v1 fetch in progress (which holds it) doesn't stall them."""
    transport, clock = Transport(), Clock()
    keys = signing_keys(transport, clock)
    keys.published(KID)
    clock.now += 20  # fresh, and the last fetch attempt longer ago than the unknown-kid interval
    entered, release = threading.Event(), threading.Event()

    def slow_v1() -> Any:
        entered.set()
        release.wait(WAIT)
        return reply({"issuer": V1_ISSUER})

    transport.routes[V1_META] = slow_v1
    thread = threading.Thread(target=keys.v1_issuer)
    thread.start()
    try:
        assert entered.wait(WAIT)
        assert keys.published(KID) and keys.get(KID) is not None and keys.metadata.jwks_uri == JWKS
        assert not release.is_set() and thread.is_alive()  # all answered while the v1 fetch held the lock
    finally:
        release.set()
        thread.join(WAIT)
    assert keys.v1_issuer() == V1_ISSUER and transport.count(JWKS) == 1


# --- what the operator sees -------------------------------------------------------------------------------------
def test_fetches_and_failed_refreshes_are_logged_with_the_key_count(caplog: pytest.LogCaptureFixture) -> None:
    transport, clock = Transport(), Clock()
    transport.routes[JWKS] = reply({"keys": [jwk("a"), jwk("b")]})
    keys = signing_keys(transport, clock, refresh_seconds=100)
    with caplog.at_level(logging.INFO, logger="middletier.keys"):
        keys.published("a")
        clock.now += 100
        transport.routes[JWKS] = reply({}, 500)
        keys.published("a")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("middletier.keys", logging.INFO, "fetched 2 signing keys"),
        ("middletier.keys", logging.WARNING, "signing-key refresh failed; keeping 2 cached keys"),
    ]


# --- through the validator, against the in-memory OpenID/JWKS stand-in (tests.fakes.FakeIdP) -------------
def test_the_v1_document_down_costs_v1_tokens_a_503_and_never_touches_v2(idp: FakeIdP) -> None:
    now = [0.0]
    settings = load_settings(env()).azure_ad
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=settings.v1_metadata_url, clock=lambda: now[0])
    v1 = token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0")
    idp.v1_down = True
    assert validate(token(), keys, settings).oid == "user-1"          # v2: no v1 document needed
    for _ in range(2):                                                 # v1: 503, the second without a fetch
        with pytest.raises(UpstreamError) as err:
            validate(v1, keys, settings)
        assert err.value.status == 503
    assert idp.v1_fetches == 1
    idp.v1_down = False
    now[0] += 30
    assert validate(v1, keys, settings).tid == TENANT and idp.v1_fetches == 2


def test_unknown_kid_refetches_once_then_is_rate_limited(idp: FakeIdP, keys: SigningKeys) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    settings = load_settings(env()).azure_ad
    validate(token(), keys, settings)
    assert idp.jwks_fetches == 1
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.keys.append(new_key)
    rolled = jwt.encode(jwt.decode(token(), options={"verify_signature": False}), new_key, algorithm="RS256",
                        headers={"kid": kid(new_key)})
    assert validate(rolled, keys, settings).oid == "user-1"
    assert idp.jwks_fetches == 2
    with pytest.raises(AuthenticationError):
        validate(token(headers={"kid": "still-unknown"}), keys, settings)
    assert idp.jwks_fetches == 2  # rate-limited: no refetch storm from garbage kids


def test_cached_keys_survive_an_idp_outage(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + "openid-configuration", idp, refresh_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    settings = load_settings(env()).azure_ad
    validate(token(), keys, settings)
    idp.down = True
    now[0] = 100  # past the refresh interval
    assert validate(token(), keys, settings).oid == "user-1"


def test_cold_start_with_idp_down_is_503(idp: FakeIdP, keys: SigningKeys) -> None:
    idp.down = True
    with pytest.raises(UpstreamError) as err:
        validate(token(), keys, load_settings(env()).azure_ad)
    assert err.value.status == 503
