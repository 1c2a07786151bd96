"""shared/validation.py check by check: what each refusal tells the client, the edges of every
bound (kid length, NumericDate range, lifetime, clock skew), the tenant rules in single- and
multi-tenant mode, when an unknown ``kid`` may refetch the tenant's keys, and the memo of proven
tokens (its time window, its expiry, its bounds), and forged-but-perfect tokens (alg none, stripped or
borrowed signatures, duplicate members signed by the real key). Refusals are checked by type
(``shared/errors.py``); their texts, what the client reads, are pinned once, in ``REFUSALS``.
In-process, no sleeps: time is injected."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import validation
from shared.config import AzureAdSettings, load_settings
from shared.errors import (AlgorithmNotAccepted, AuthenticationError, ExpiredToken, ImmatureToken, ImplausibleLifetime,
                           InvalidAudience, InvalidIssuer, InvalidSignature, InvalidSubject, InvalidTenant,
                           InvalidToken, MalformedToken, MissingClaim, UnknownSigningKey, VersionNotAccepted, problem)
from shared.memory import VALIDATOR_OVERHEAD, held_bytes, json_held_bytes
from shared.signing_keys import SigningKeys
from shared.validation import MAX_LIFETIME_SECONDS, TokenValidator, validate

from tests.fakes import APP, CLIENT, INSTANCE, KEY, OTHER_KEY, TENANT, USER, V1, FakeIdP, b64, env, kid, sign, token
from tests.fakes import idp, keys  # noqa: F401  (the shared fixtures)

SETTINGS = load_settings(env()).azure_ad
MULTI = load_settings(env(AzureAd__TenantId="organizations")).azure_ad            # any tenant
ALLOWED = load_settings(env(AzureAd__TenantId="organizations", AzureAd__AllowedTenants=TENANT)).azure_ad
ALLOWED_UPPER = load_settings(env(AzureAd__TenantId="organizations",
                                  AzureAd__AllowedTenants=TENANT.upper())).azure_ad
OTHER_TENANT = "0b5c9d1e-7a2f-4e3b-8c6d-5f4a3b2c1d0e"
SKEW = SETTINGS.clock_skew_seconds
ROLLED_KID = "rolledKid0"  # well-formed, but not (yet) in the tenant's JWKS


def v2_issuer(tid: str) -> str:
    return f"{INSTANCE}{tid}/v2.0"


def claims_of(**changes: Any) -> dict[str, Any]:
    """The claims of a good token, changed (None drops a claim)."""
    body = {**jwt.decode(token(), options={"verify_signature": False}), **changes}
    return {k: v for k, v in body.items() if v is not None}


def with_header(**fields: Any) -> str:
    return sign(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid(KEY), **fields}), json.dumps(claims_of()))


def signed(**changes: Any) -> str:
    """A good token with these claims changed, whatever their JSON types (jwt.encode refuses some)."""
    return sign(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid(KEY)}), json.dumps(claims_of(**changes)))


def with_payload_text(extra: str) -> str:
    """A good token whose payload JSON text ends with ``extra`` members."""
    return sign(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid(KEY)}), json.dumps(claims_of())[:-1] + extra + "}")


class IssuerIdP(FakeIdP):
    """Publishes an ``issuer`` on every JWKS entry, as Entra's multi-tenant JWKS does."""

    def __init__(self, issuer: str, *keys: rsa.RSAPrivateKey):
        super().__init__(*keys)
        self.key_issuer = issuer

    def get(self, url: str, timeout: Any = None) -> Any:
        response = super().get(url, timeout)
        body = response.json()
        for entry in body.get("keys", []) if isinstance(body, dict) else []:
            entry["issuer"] = self.key_issuer
        return response


def keys_for(settings: AzureAdSettings, key_issuer: str | None = None,
             *signers: rsa.RSAPrivateKey) -> tuple[FakeIdP, SigningKeys]:
    session = IssuerIdP(key_issuer, *(signers or (KEY,))) if key_issuer else FakeIdP(*(signers or (KEY,)))
    return session, SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", session,  # type: ignore[arg-type]
                                v1_metadata_url=settings.v1_metadata_url)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> float:
    """validation's clock stopped at a whole second (pyjwt keeps the real one, a second away at most)."""
    now = float(int(time.time()))
    monkeypatch.setattr(validation, "time", SimpleNamespace(time=lambda: now))
    return now


# --- every refusal, as the client reads it -----------------------------------------------------------
class Refusal(NamedTuple):
    make: Callable[[], str]
    detail: str
    settings: AzureAdSettings = SETTINGS
    key_issuer: str | None = None


MALFORMED = "The token is malformed."
GOOD = token()
H, P, S = GOOD.split(".")

REFUSALS: dict[str, Refusal] = {
    # structure: three canonical base64url segments of JSON objects
    "two-segments": Refusal(lambda: f"{H}.{P}", MALFORMED),
    "empty-signature": Refusal(lambda: f"{H}.{P}.", MALFORMED),
    "base64url-alphabet": Refusal(lambda: f"{H[:-1]}+.{P}.{S}", MALFORMED),
    "base64url-impossible-length": Refusal(lambda: f"{H}{'A' * ((1 - len(H)) % 4)}.{P}.{S}", MALFORMED),  # 4n+1
    "base64url-non-zero-trailing-bits": Refusal(lambda: f"AB.{P}.{S}", MALFORMED),
    "segment-not-json": Refusal(lambda: f"{b64('not json')}.{P}.{S}", MALFORMED),
    "segment-json-but-not-an-object": Refusal(lambda: f"{b64('[1]')}.{P}.{S}", MALFORMED),
    "non-standard-constant-in-another-claim": Refusal(lambda: with_payload_text(', "xms_x": NaN'), MALFORMED),
    "duplicate-claim": Refusal(lambda: with_payload_text(f', "aud": "{CLIENT}"'),
                               "The token is malformed: a JSON member is duplicated."),
    "header-crit": Refusal(lambda: with_header(crit=["exp"]),
                           "The token uses header extensions this API does not accept."),
    "header-b64": Refusal(lambda: with_header(b64=False),
                          "The token uses header extensions this API does not accept."),
    "exp-not-a-number": Refusal(lambda: token(exp="soon"), "The token's exp claim is not a number."),
    "exp-past-the-numeric-date-bound": Refusal(lambda: token(exp=2 ** 53 + 1),
                                               "The token's exp claim is not a number."),
    # NumericDate bound itself is a number: refused by the lifetime check, not as "not a number"
    "exp-at-the-numeric-date-bound": Refusal(lambda: token(exp=2 ** 53), "The token's lifetime is implausibly long."),
    # signature and key
    "alg-hs256": Refusal(lambda: with_header(alg="HS256"), "The token's signing algorithm is not accepted."),
    "kid-missing": Refusal(lambda: sign(json.dumps({"alg": "RS256"}), json.dumps(claims_of())),
                           "The token has no usable key identifier."),
    "kid-empty": Refusal(lambda: with_header(kid=""), "The token has no usable key identifier."),
    "kid-a-number": Refusal(lambda: with_header(kid=123), "The token has no usable key identifier."),
    "kid-of-257-chars": Refusal(lambda: with_header(kid="k" * 257), "The token has no usable key identifier."),
    "kid-of-256-chars-is-looked-up": Refusal(lambda: with_header(kid="k" * 256),
                                             "The token was not signed by a key of this tenant."),
    "kid-unknown": Refusal(lambda: token(headers={"kid": "unknown"}),
                           "The token was not signed by a key of this tenant."),
    "signed-by-another-key": Refusal(lambda: token(OTHER_KEY), "The token's signature is invalid."),
    # pyjwt's claim checks
    "expired": Refusal(lambda: token(exp=int(time.time()) - SKEW - 100), "The token has expired."),
    "not-valid-yet": Refusal(lambda: token(nbf=int(time.time()) + SKEW + 100), "The token is not valid yet."),
    "other-audience": Refusal(lambda: token(aud="api://someone-else"), "The token was not issued for this API."),
    "lacks-tid": Refusal(lambda: token(tid=None), "The token is invalid: it lacks the required tid claim."),
    "lacks-iat": Refusal(lambda: token(iat=None), "The token is invalid: it lacks the required iat claim."),
    "sub-not-a-string": Refusal(lambda: token(sub=123), "The token is invalid."),
    # ours, after the signature
    "audience-a-list": Refusal(lambda: token(aud=[CLIENT]), "The token must have exactly one audience."),
    "lifetime-too-long": Refusal(lambda: token(exp=int(time.time()) + MAX_LIFETIME_SECONDS + 3600),
                                 "The token's lifetime is implausibly long."),
    "tid-empty": Refusal(lambda: token(tid=""), "The token has no tenant."),
    "tid-a-number": Refusal(lambda: token(tid=5), "The token has no tenant."),
    "tenant-not-allowed": Refusal(lambda: token(tid=OTHER_TENANT, iss=v2_issuer(OTHER_TENANT)),
                                  "The token's tenant is not allowed.", ALLOWED),
    "another-tenant": Refusal(lambda: token(tid=OTHER_TENANT, iss=v2_issuer(OTHER_TENANT)),
                              "The token was issued by another tenant."),
    "issuer-not-a-string": Refusal(lambda: signed(iss=5), "The token's issuer is not trusted."),
    "issuer-untrusted": Refusal(lambda: token(iss="https://evil.example/v2.0"), "The token's issuer is not trusted."),
    "version-unknown": Refusal(lambda: token(ver="3.0"), "The token's version is not accepted by this API."),
    "version-missing": Refusal(lambda: token(ver=None), "The token's version is not accepted by this API."),
    "v2-issuer-with-version-1": Refusal(lambda: token(ver="1.0"), "The token's issuer does not match its version."),
    "key-of-another-issuer": Refusal(lambda: token(), "The token's signing key belongs to another issuer.",
                                     key_issuer="https://elsewhere.example/{tenantid}/v2.0"),
    "no-oid": Refusal(lambda: token(oid=None), "The token has no subject object id."),
    "idtyp-not-a-string": Refusal(lambda: token(**{**APP, "idtyp": ["app"]}), "The token's idtyp claim is malformed."),
    "idtyp-app-with-scp": Refusal(lambda: token(**{**APP, "scp": "access_as_user", "idtyp": "app"}),
                                  "The token is app-only (idtyp) yet carries delegated scopes."),
    "idtyp-user-without-scp": Refusal(lambda: token(**{**USER, "scp": None, "roles": ["MiddleTier.Admin"],
                                                       "idtyp": "user"}),
                                      "The token is a user token (idtyp) yet carries no delegated scopes."),
    "oid-equals-sub-with-scp": Refusal(lambda: token(**{**APP, "scp": "access_as_user"}),
                                       "The token's subject is an application (oid = sub) yet it carries delegated "
                                       "scopes."),
    "scp-with-a-tab": Refusal(lambda: token(scp="a\tb"), "The token's scp claim is malformed."),
}


# the check that refused each case, as a type (shared/errors.py): what code and the other tests look at
REASONS: dict[str, type[InvalidToken]] = {
    **dict.fromkeys(["two-segments", "empty-signature", "base64url-alphabet", "base64url-impossible-length",
                     "base64url-non-zero-trailing-bits", "segment-not-json", "segment-json-but-not-an-object",
                     "non-standard-constant-in-another-claim", "duplicate-claim", "header-crit", "header-b64",
                     "exp-not-a-number", "exp-past-the-numeric-date-bound", "idtyp-not-a-string", "scp-with-a-tab"],
                    MalformedToken),
    "exp-at-the-numeric-date-bound": ImplausibleLifetime, "lifetime-too-long": ImplausibleLifetime,
    "alg-hs256": AlgorithmNotAccepted,
    **dict.fromkeys(["kid-missing", "kid-empty", "kid-a-number", "kid-of-257-chars", "kid-of-256-chars-is-looked-up",
                     "kid-unknown"], UnknownSigningKey),
    "signed-by-another-key": InvalidSignature, "expired": ExpiredToken, "not-valid-yet": ImmatureToken,
    "other-audience": InvalidAudience, "audience-a-list": InvalidAudience,
    "lacks-tid": MissingClaim, "lacks-iat": MissingClaim, "sub-not-a-string": InvalidToken,
    **dict.fromkeys(["tid-empty", "tid-a-number", "tenant-not-allowed", "another-tenant"], InvalidTenant),
    **dict.fromkeys(["issuer-not-a-string", "issuer-untrusted", "v2-issuer-with-version-1", "key-of-another-issuer"],
                    InvalidIssuer),
    "version-unknown": VersionNotAccepted, "version-missing": VersionNotAccepted,
    **dict.fromkeys(["no-oid", "idtyp-app-with-scp", "idtyp-user-without-scp", "oid-equals-sub-with-scp"],
                    InvalidSubject),
}


def test_every_refusal_has_its_reason() -> None:
    assert REASONS.keys() == REFUSALS.keys()


@pytest.mark.parametrize("name,case", REFUSALS.items(), ids=REFUSALS.keys())
def test_each_refusal_tells_the_client_exactly_which_check_refused(name: str, case: Refusal) -> None:
    """The detail is the client's error_description and the problem's detail, and names the check;
    the type names it to the code."""
    _, keys_ = keys_for(case.settings, case.key_issuer)
    with pytest.raises(AuthenticationError) as err:
        validate(case.make(), keys_, case.settings)
    assert type(err.value) is REASONS[name]
    assert err.value.detail == case.detail
    assert err.value.status == 401 and err.value.code == "invalid_token"
    assert err.value.headers == {"WWW-Authenticate": f'Bearer realm="", error="invalid_token", '
                                                     f'error_description="{case.detail}"'}
    status, _, body = problem(err.value, trace_id="t")
    assert status == 401 and body["detail"] == case.detail


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "tid"])
def test_a_missing_required_claim_is_named_by_the_error(keys: SigningKeys, claim: str) -> None:
    with pytest.raises(MissingClaim) as err:
        validate(token(**{claim: None}), keys, SETTINGS)
    assert err.value.claim == claim


# --- scp: control and format characters are refused like whitespace ---------------------------------
@pytest.mark.parametrize("char", ["\x00", "\x7f", "\u200b", "\u2060", "\ue000", "\u0378", "\ud800"],
                         ids=["nul", "del", "zero-width-space", "word-joiner", "private-use", "unassigned",
                              "lone-surrogate"])
def test_scp_names_holding_a_control_or_format_character_are_refused(keys: SigningKeys, char: str) -> None:
    assert not char.isspace()  # not caught as whitespace: by its category (C*) only
    with pytest.raises(MalformedToken):
        validate(token(scp=f"access_as_user{char}"), keys, SETTINGS)


# --- accepted: the edges of every rule ---------------------------------------------------------------
class Accepted(NamedTuple):
    claims: Callable[[float], dict[str, Any]]  # the token's claims, given validation's clock
    expect: dict[str, Any]                       # Caller attributes
    settings: AzureAdSettings = SETTINGS
    key_issuer: str | None = None


ACCEPTED: dict[str, Accepted] = {
    "v2-client-is-azp": Accepted(lambda now: {}, {"client_id": "client-1", "tid": TENANT}),
    "v1-client-is-appid": Accepted(lambda now: dict(V1), {"client_id": "client-1", "tid": TENANT}),
    "no-client-claim": Accepted(lambda now: {"azp": None}, {"client_id": ""}),
    "multi-tenant-any-tenant": Accepted(lambda now: {"tid": OTHER_TENANT, "iss": v2_issuer(OTHER_TENANT)},
                                        {"tid": OTHER_TENANT}, MULTI),
    "multi-tenant-allowed-tenant": Accepted(lambda now: {}, {"tid": TENANT}, ALLOWED),
    "multi-tenant-allowed-tenant-listed-in-upper-case": Accepted(lambda now: {}, {"tid": TENANT}, ALLOWED_UPPER),
    "multi-tenant-allowed-tenant-in-upper-case": Accepted(
        lambda now: {"tid": TENANT.upper(), "iss": v2_issuer(TENANT.upper())}, {"tid": TENANT.upper()}, ALLOWED),
    "key-issuer-is-the-tenants": Accepted(lambda now: {}, {"tid": TENANT},
                                          key_issuer=INSTANCE + "{tenantid}/v2.0"),
    "key-issuer-is-the-tenants-multi-tenant": Accepted(
        lambda now: {"tid": OTHER_TENANT, "iss": v2_issuer(OTHER_TENANT)}, {"tid": OTHER_TENANT}, MULTI,
        INSTANCE + "{tenantid}/v2.0"),
    "nbf-at-the-lower-numeric-date-bound": Accepted(lambda now: {"nbf": -(2 ** 53)}, {"oid": "user-1"}),
    "lifetime-at-the-limit": Accepted(lambda now: {"exp": int(now) + MAX_LIFETIME_SECONDS}, {"oid": "user-1"}),
}


@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_tokens_at_the_edge_of_each_rule_are_accepted(frozen: float, case: Accepted) -> None:
    _, keys_ = keys_for(case.settings, case.key_issuer)
    caller = validate(token(**case.claims(frozen)), keys_, case.settings)
    assert {name: getattr(caller, name) for name in case.expect} == case.expect


@pytest.fixture(scope="module")
def wide_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def test_a_signature_whose_base64url_ends_in_x_is_canonical(wide_key: rsa.RSAPrivateKey) -> None:
    """With a 3072-bit key the signature is 384 bytes, so its last base64url character carries 6 bits
    and can be any letter — 'X' too, which the canonical spelling keeps (only '=' is stripped)."""
    _, keys_ = keys_for(SETTINGS, None, wide_key)
    for i in range(5000):
        signed = token(wide_key, headers={"kid": kid(wide_key)}, jti=f"j{i}")
        if signed.endswith("X"):
            break
    assert signed.endswith("X")
    assert validate(signed, keys_, SETTINGS).oid == "user-1"


# --- an unknown kid refetches the keys only for a token that could be valid --------------------------
class Refetch(NamedTuple):
    claims: Callable[[float], dict[str, Any]]
    refetches: bool
    settings: AzureAdSettings = SETTINGS


MAX = MAX_LIFETIME_SECONDS
REFETCH: dict[str, Refetch] = {
    "could-be-valid": Refetch(lambda now: {}, True),
    "single-tenant-other-tenant": Refetch(lambda now: {"tid": OTHER_TENANT, "iss": v2_issuer(OTHER_TENANT)}, False),
    "multi-tenant-any-tenant": Refetch(lambda now: {"tid": OTHER_TENANT, "iss": v2_issuer(OTHER_TENANT)}, True, MULTI),
    "multi-tenant-allowed-tenant": Refetch(lambda now: {}, True, ALLOWED),
    "multi-tenant-allowed-tenant-listed-in-upper-case": Refetch(lambda now: {}, True, ALLOWED_UPPER),
    "multi-tenant-tenant-not-allowed": Refetch(lambda now: {"tid": OTHER_TENANT, "iss": v2_issuer(OTHER_TENANT)},
                                               False, ALLOWED),
    "exp-just-inside-the-skew": Refetch(lambda now: {"exp": now - SKEW}, True),
    "exp-past-the-skew": Refetch(lambda now: {"exp": now - SKEW - 1}, False),
    "exp-a-second-ahead": Refetch(lambda now: {"exp": now + 1}, True),
    "exp-at-the-longest-lifetime": Refetch(lambda now: {"exp": now + MAX}, True),
    "exp-past-the-longest-lifetime": Refetch(lambda now: {"exp": now + MAX + 1}, False),
    "nbf-at-the-skew": Refetch(lambda now: {"nbf": now + SKEW}, True),
    "nbf-past-the-skew": Refetch(lambda now: {"nbf": now + SKEW + 1}, False),
    "no-nbf-iat-at-the-skew": Refetch(lambda now: {"nbf": None, "iat": now + SKEW}, True),
    "no-nbf-iat-past-the-skew": Refetch(lambda now: {"nbf": None, "iat": now + SKEW + 1}, False),
}


@pytest.mark.parametrize("case", REFETCH.values(), ids=REFETCH.keys())
def test_an_unknown_kid_refetches_the_keys_only_for_a_token_that_could_be_valid(frozen: float,
                                                                               case: Refetch) -> None:
    session, keys_ = keys_for(case.settings)
    forged = token(OTHER_KEY, headers={"kid": ROLLED_KID}, **case.claims(frozen))
    with pytest.raises(UnknownSigningKey):
        validate(forged, keys_, case.settings)
    assert session.jwks_fetches == (2 if case.refetches else 1)  # the start-up fetch, and the refetch


# --- the memo of proven tokens ---------------------------------------------------------------------
class Window(NamedTuple):
    claims: Callable[[float], dict[str, Any]]
    at_lookup: Callable[[float], float]       # the memo's clock when it looks the token up ...
    after_lookup: Callable[[float], float]    # ... and when the validator re-checks the window
    served: bool


# nbf = T + 100, exp = T + 3600 (pyjwt, on the real clock, accepts the token on a re-validation too)
WINDOWS: dict[str, Window] = {
    "at-nbf-minus-skew": Window(lambda t: {"nbf": t + 100}, lambda t: t + 100 - SKEW, lambda t: t + 100 - SKEW, True),
    "before-nbf-minus-skew": Window(lambda t: {"nbf": t + 100}, lambda t: t + 99 - SKEW, lambda t: t + 99 - SKEW,
                                    False),
    "no-nbf-at-iat-minus-skew": Window(lambda t: {"nbf": None, "iat": t + 100}, lambda t: t + 100 - SKEW,
                                       lambda t: t + 100 - SKEW, True),
    "no-nbf-before-iat-minus-skew": Window(lambda t: {"nbf": None, "iat": t + 100}, lambda t: t + 99 - SKEW,
                                           lambda t: t + 99 - SKEW, False),
    "inside-the-skew-after-exp": Window(lambda t: {}, lambda t: t + 3600 + SKEW - 1, lambda t: t + 3600 + SKEW - 1,
                                        True),
    # exp + skew: the full path's exp <= now - skew has expired it; the memo agrees
    "at-exp-plus-skew": Window(lambda t: {}, lambda t: t + 3600 + SKEW - 1, lambda t: t + 3600 + SKEW, False),
    "fractional-exp-just-past-its-second": Window(lambda t: {"exp": t + 3600.9}, lambda t: t + 3600 + SKEW - 1,
                                                  lambda t: t + 3600 + SKEW + 0.5, False),
    "past-exp-plus-skew": Window(lambda t: {}, lambda t: t + 3600 + SKEW - 1, lambda t: t + 3600 + SKEW + 1, False),
}


@pytest.mark.parametrize("case", WINDOWS.values(), ids=WINDOWS.keys())
def test_the_memo_serves_a_token_only_inside_its_window_with_skew(keys: SigningKeys, case: Window) -> None:
    t = float(int(time.time()))
    clock = [t]
    validator = TokenValidator(keys, SETTINGS, clock=lambda: clock[0])
    good = token(**{"iat": t, "exp": t + 3600, **case.claims(t)})
    first = validator.validate(good)
    lookup = validator._memo.get

    def lookup_then_tick(key: str, default: Any = None) -> Any:  # time passes between lookup and re-check
        hit = lookup(key, default)
        clock[0] = case.after_lookup(t)
        return hit

    validator._memo.get = lookup_then_tick  # type: ignore[method-assign]
    clock[0] = case.at_lookup(t)
    again = validator.validate(good)
    assert (again is first) is case.served
    assert again.oid == first.oid  # not served from the memo: validated again in full, and still good


def test_memo_entries_leave_at_their_expiry_on_the_injected_clock(keys: SigningKeys) -> None:
    t = float(int(time.time()))
    clock = [t]
    validator = TokenValidator(keys, SETTINGS, clock=lambda: clock[0])
    short = token(oid="user-short", exp=int(t) + 100)
    validator.validate(short)
    clock[0] = t + 100 + SKEW + 1  # past the short token's expiry (with skew) on the memo's clock
    validator.validate(token(oid="user-long", exp=int(t) + 3600))
    assert len(validator._memo) == 1  # the short-lived entry is gone, not held until the real clock says so


def test_the_memo_holds_at_most_max_entries(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS, max_entries=2, max_bytes=10 ** 9)
    tokens = [token(oid=f"user-{i}") for i in range(3)]
    validator.validate(tokens[0])
    first = validator.validate(tokens[1])
    assert len(validator._memo) == 2 and validator.validate(tokens[1]) is first
    validator.validate(tokens[2])
    assert len(validator._memo) == 2


def test_without_a_byte_budget_the_memo_counts_entries_not_bytes(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS, max_entries=2)
    good = token()
    first = validator.validate(good)
    assert len(validator._memo) == 1 and validator.validate(good) is first


def test_the_memo_is_bounded_to_10000_entries_by_default(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS)
    filler = validator.validate(token())
    entry = validation._Validated(filler, kid(KEY), 0.0, time.time() + 3600, 0)
    for i in range(10_000):
        validator._memo[f"filler-{i}"] = entry
    validator.validate(token(oid="user-new"))
    assert len(validator._memo) == 10_000


def test_a_byte_budget_counts_each_entry_as_its_token_and_claims_plus_the_overhead(keys: SigningKeys) -> None:
    one = TokenValidator(keys, SETTINGS, max_bytes=10 ** 9)
    signed = token(oid="user-a")
    caller = one.validate(signed)
    payload_json = base64.urlsafe_b64decode(signed.split(".")[1] + "==")
    size = VALIDATOR_OVERHEAD + held_bytes(signed) + json_held_bytes(payload_json, caller.claims)
    assert one._memo.currsize == size and size >= VALIDATOR_OVERHEAD + held_bytes(signed) + held_bytes(caller.claims)
    assert held_bytes(signed) >= len(signed)  # the token, the memo's key, is counted
    validator = TokenValidator(keys, SETTINGS, max_bytes=size + size // 2)  # room for one entry, not two
    validator.validate(token(oid="user-a"))
    validator.validate(token(oid="user-b"))
    assert len(validator._memo) == 1 and validator._memo.currsize <= size + size // 2


def test_a_token_larger_than_the_whole_budget_is_validated_but_not_memoized(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS, max_bytes=1)
    assert validator.validate(token()).oid == "user-1"
    assert len(validator._memo) == 0


# --- the caller a good token gives, v1 and v2, app-only or delegated --------------------------------
def test_valid_token_gives_the_caller(keys: SigningKeys) -> None:
    caller = validate(token(), keys, load_settings(env()).azure_ad)
    assert caller.oid == "user-1" and caller.scopes == {"access_as_user"} and not caller.is_app


def test_app_id_uri_audience_and_v1_issuer_are_accepted(keys: SigningKeys) -> None:
    v1 = token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0")
    assert validate(v1, keys, load_settings(env()).azure_ad).tid == TENANT


def test_v1_issuer_comes_from_the_v1_metadata_not_from_a_constant(idp: FakeIdP) -> None:
    """A sovereign cloud (China: sts.chinacloudapi.cn) publishes its own v1 issuer; the public
    cloud's is then refused, and a v2-only API reads no v1 document at all."""
    idp.v1_issuer = "https://sts.chinacloudapi.cn/{tenantid}/"
    settings = load_settings(env()).azure_ad
    assert settings.v1_metadata_url == INSTANCE + TENANT + "/.well-known/openid-configuration"
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=settings.v1_metadata_url)
    china = token(aud="api://middletier", iss=f"https://sts.chinacloudapi.cn/{TENANT}/", ver="1.0")
    assert validate(china, keys, settings).tid == TENANT
    with pytest.raises(InvalidIssuer):
        validate(token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0"), keys, settings)
    with pytest.raises(InvalidIssuer):
        validate(token(iss=f"https://sts.chinacloudapi.cn/{TENANT}/"), keys, settings)
    v2_only = load_settings(env(AzureAd__AccessTokenVersions="2.0")).azure_ad
    assert v2_only.v1_metadata_url is None
    assert load_settings(env(AzureAd__TenantId="organizations")).azure_ad.v1_metadata_url == \
        INSTANCE + "common/.well-known/openid-configuration"


# --- refusals by kind ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make,reason", [
    (lambda: token(aud="api://someone-else"), InvalidAudience),
    (lambda: token(exp=int(time.time()) - 400), ExpiredToken),
    (lambda: token(nbf=int(time.time()) + 400), ImmatureToken),
    (lambda: token(iss="https://evil.example/v2.0"), InvalidIssuer),
    (lambda: token(tid="00000000-0000-0000-0000-000000000000",
                   iss="https://login.example.test/00000000-0000-0000-0000-000000000000/v2.0"), InvalidTenant),
    (lambda: token(OTHER_KEY), InvalidSignature),
    (lambda: token(headers={"kid": "unknown"}), UnknownSigningKey),
    (lambda: token(tid=None), MissingClaim),
    (lambda: jwt.encode({"aud": CLIENT}, "s" * 32, algorithm="HS256", headers={"kid": kid(KEY)}), AlgorithmNotAccepted),
    (lambda: "a.b.c", MalformedToken),
])
def test_invalid_tokens_are_401(keys: SigningKeys, make: Any, reason: type[InvalidToken]) -> None:
    with pytest.raises(InvalidToken) as err:
        validate(make(), keys, load_settings(env()).azure_ad)
    assert type(err.value) is reason and err.value.status == 401


def test_expiry_within_clock_skew_is_accepted(keys: SigningKeys) -> None:
    assert validate(token(exp=int(time.time()) - 200), keys, load_settings(env()).azure_ad)


@pytest.mark.parametrize("version", ["2.0", "1.0"])
@pytest.mark.parametrize("claims,is_app", [
    (USER, False),
    ({**USER, "idtyp": "user"}, False),                                   # include_user_token
    ({**USER, "roles": ["MiddleTier.Admin"]}, False),                     # a user with an app role
    ({**APP, "roles": ["MiddleTier.Admin"]}, True),                       # no idtyp requested
    (APP, True),                                                          # no idtyp, no roles (ACL mode)
    ({**APP, "roles": ["MiddleTier.Admin"], "idtyp": "app"}, True),       # idtyp requested
    ({**USER, "scp": None, "roles": ["MiddleTier.Admin"]}, False),        # no marker of an app: not app-only
    ({**APP, "idtyp": "device"}, False),
])
def test_app_only_classification_with_and_without_idtyp(keys: SigningKeys, version: str, claims: dict[str, Any],
                                                         is_app: bool) -> None:
    extra = V1 if version == "1.0" else {}
    caller = validate(token(**{**extra, **claims}), keys, load_settings(env()).azure_ad)
    assert caller.is_app is is_app


@pytest.mark.parametrize("version", ["2.0", "1.0"])
@pytest.mark.parametrize("claims,reason", [
    ({**APP, "scp": "access_as_user", "idtyp": "app"}, InvalidSubject),
    ({**USER, "scp": None, "roles": ["MiddleTier.Admin"], "idtyp": "user"}, InvalidSubject),
    ({**APP, "scp": "access_as_user"}, InvalidSubject),
    ({**APP, "idtyp": ["app"]}, MalformedToken),
])
def test_token_whose_idtyp_contradicts_its_scp_is_401(keys: SigningKeys, version: str, claims: dict[str, Any],
                                                      reason: type[InvalidToken]) -> None:
    extra = V1 if version == "1.0" else {}
    with pytest.raises(InvalidToken) as err:
        validate(token(**{**extra, **claims}), keys, load_settings(env()).azure_ad)
    assert type(err.value) is reason and err.value.status == 401
    assert 'error="invalid_token"' in err.value.headers["WWW-Authenticate"]


# --- the memo re-checks time and key; failures are never memoized --------------------------------------
def test_the_memo_is_keyed_by_the_whole_token_and_the_caller_carries_its_sha256(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS)
    good = token()
    first = validator.validate(good)
    assert first.token_hash == hashlib.sha256(good.encode()).hexdigest() and list(validator._memo) == [good]
    again = validator.validate("".join(good))  # an equal token in another string object: a hit
    assert again is first and again.token_hash == first.token_hash
    other = token(oid="user-2")
    assert validator.validate(other).token_hash == hashlib.sha256(other.encode()).hexdigest() != first.token_hash


def test_memoized_validation_rechecks_time_and_key(idp: FakeIdP, keys: SigningKeys) -> None:
    now = [time.time()]
    settings = load_settings(env()).azure_ad
    validator = TokenValidator(keys, settings, clock=lambda: now[0])
    good = token()
    first = validator.validate(good)
    assert first.token_hash and validator.validate(good) is first  # memo hit
    now[0] += 3600 + 301  # past exp + skew on the memo's clock: it must not serve the entry
    assert validator.validate(good) is not first  # re-validated in full (pyjwt uses the real clock)


def test_memoized_token_fails_once_its_key_is_withdrawn(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + "openid-configuration", idp, refresh_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    validator = TokenValidator(keys, load_settings(env()).azure_ad)
    good = token()
    validator.validate(good)
    idp.keys = [OTHER_KEY]  # the tenant stops publishing the key
    now[0] = 100            # next refresh sees it
    with pytest.raises(AuthenticationError):
        validator.validate(good)


def test_invalid_tokens_are_never_memoized(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, load_settings(env()).azure_ad)
    bad = token(aud="api://other")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            validator.validate(bad)
    assert len(validator._memo) == 0


# --- forged-but-perfect tokens -------------------------------------------------------------------------
# The tenant's real ``kid`` and claims that would pass every other check, with one thing wrong about the
# signature itself — ``alg: none``, no signature, or a valid signature of another token. Each must be
# refused by the check that guards it (the error's type says which), and a control token built the
# same way but signed properly must pass, so every case here fails if its defence is removed.
def parts(tok: str) -> tuple[str, str, str]:
    header, payload, signature = tok.split(".")
    return header, payload, signature


def forged_header(**fields: Any) -> str:
    return b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid(KEY), **fields}))


def refuse(tok: str, keys: SigningKeys, reason: type[InvalidToken]) -> None:
    with pytest.raises(InvalidToken) as err:
        validate(tok, keys, SETTINGS)
    assert err.value.status == 401 and type(err.value) is reason, err.value.detail


def test_the_control_token_is_perfect(keys: SigningKeys) -> None:
    """What the forgeries start from: the real key, the real kid, valid claims — accepted."""
    good = token()
    assert jwt.get_unverified_header(good)["kid"] == kid(KEY)
    assert validate(good, keys, SETTINGS).oid == "user-1"
    h, p, s = parts(good)
    # re-assembled from our own header helper and the same signature input: still the same token
    signing_input = f"{forged_header()}.{p}".encode()
    resigned = f"{forged_header()}.{p}.{b64(jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(signing_input, KEY))}"
    assert validate(resigned, keys, SETTINGS).oid == "user-1"


FORGERIES: list[tuple[str, Callable[[], str], type[InvalidToken]]] = [
    # alg none (RFC 8725 §2.1): the canonical form has an empty signature segment
    ("alg-none-empty-signature", lambda: f"{forged_header(alg='none')}.{parts(token())[1]}.", MalformedToken),
    ("alg-none-signature-of-this-very-token", lambda: f"{forged_header(alg='none')}.{parts(token())[1]}.{parts(token())[2]}",
     AlgorithmNotAccepted),
    ("alg-None", lambda: f"{forged_header(alg='None')}.{parts(token())[1]}.{b64(b'x' * 256)}", AlgorithmNotAccepted),
    ("alg-missing", lambda: f"{b64(json.dumps({'typ': 'JWT', 'kid': kid(KEY)}))}.{parts(token())[1]}."
                            f"{parts(token())[2]}", AlgorithmNotAccepted),
    # the signature stripped: two segments, or the third one empty
    ("signature-stripped", lambda: ".".join(parts(token())[:2]), MalformedToken),
    ("signature-empty", lambda: ".".join(parts(token())[:2]) + ".", MalformedToken),
    ("signature-zeros", lambda: ".".join(parts(token())[:2]) + "." + b64(bytes(256)), InvalidSignature),
    # a valid signature — by the real key — of another token
    ("signature-of-another-token", lambda: ".".join(parts(token())[:2]) + "." + parts(token(oid="user-2"))[2],
     InvalidSignature),
    ("signature-of-a-token-for-another-api", lambda: ".".join(parts(token())[:2]) + "."
     + parts(token(aud="api://other"))[2], InvalidSignature),
    ("signature-of-the-same-claims-under-another-header",
     lambda: forged_header(typ="at+jwt") + "." + parts(token())[1] + "." + parts(token())[2], InvalidSignature),
    # keyed with public material: the public key's PEM as an HMAC secret
    ("hs256-keyed-with-the-public-key", lambda: _hs256(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), AlgorithmNotAccepted),
    # the real kid on a token signed by another key
    ("real-kid-other-key", lambda: token(OTHER_KEY), InvalidSignature),
]


def _hs256(secret: bytes) -> str:
    signing_input = f"{forged_header(alg='HS256')}.{parts(token())[1]}"
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("make,reason", [(m, r) for _, m, r in FORGERIES], ids=[n for n, _, _ in FORGERIES])
def test_forged_but_perfect_tokens_are_refused_by_their_own_check(keys: SigningKeys, make: Callable[[], str],
                                                                  reason: type[InvalidToken]) -> None:
    forged = make()
    payload = jwt.decode(forged, options={"verify_signature": False}) if forged.count(".") == 2 else None
    if payload is not None:  # the claims themselves are perfect: only the signature is wrong
        assert payload["aud"] in SETTINGS.audiences and payload["tid"] == TENANT and payload["oid"]
    refuse(forged, keys, reason)


def test_the_memo_of_proven_tokens_is_no_way_around_the_signature(keys: SigningKeys) -> None:
    """A token proven good is memoized by its hash: a forgery reusing its signature (or its header and
    payload with another signature) is another hash, validated in full, and refused."""
    validator = TokenValidator(keys, SETTINGS)
    good = token()
    assert validator.validate(good).oid == "user-1"
    h, p, s = parts(good)
    other = token(oid="attacker")
    for forged in (f"{parts(other)[0]}.{parts(other)[1]}.{s}", f"{h}.{p}.{parts(token(oid='user-3'))[2]}",
                   f"{forged_header(alg='none')}.{parts(other)[1]}.{s}"):
        with pytest.raises(AuthenticationError):
            validator.validate(forged)
    assert len(validator._memo) == 1


def test_duplicate_members_signed_by_the_real_key_are_refused(keys: SigningKeys) -> None:
    """A last-wins JSON parser would read these as perfect tokens: the real kid, our audience."""
    alg = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
    claims = jwt.decode(token(), options={"verify_signature": False})
    for head, body in (('{"alg":"RS256","kid":"attacker","kid":"%s"}' % kid(KEY), json.dumps(claims)),
                       (json.dumps({"alg": "RS256", "kid": kid(KEY)}),
                        json.dumps({**claims, "aud": "api://other"})[:-1] + ', "aud": "%s"}' % claims["aud"])):
        signing_input = f"{b64(head)}.{b64(body)}"
        forged = signing_input + "." + b64(alg.sign(signing_input.encode(), KEY))
        refuse(forged, keys, MalformedToken)
        # the control: the same claims once each, signed the same way, pass
        single = json.dumps(json.loads(body))
        clean_head = json.dumps(json.loads(head))
        signing_input = f"{b64(clean_head)}.{b64(single)}"
        assert validate(signing_input + "." + b64(alg.sign(signing_input.encode(), KEY)), keys, SETTINGS).oid


# --- one parse: every segment's spelling is checked, not skipped (strict base64url) ----------------------
def _signature_with(mark: str) -> str:
    """A good token whose signature segment (base64url of random bytes) contains ``mark``."""
    for i in range(200):
        good = token(jti=f"spelling-{i}")
        if mark in good.rsplit(".", 1)[1]:
            return good
    raise AssertionError(f"no signature with {mark!r} in 200 tokens")


def _in_signature(old: str, new: str) -> Callable[[str], str]:
    return lambda t: t.rsplit(".", 1)[0] + "." + t.rsplit(".", 1)[1].replace(old, new)


@pytest.mark.parametrize("needs,respell", [
    ("", lambda t: t[:-10] + "é" + t[-9:]),  # not ASCII
    ("-", _in_signature("-", "+")),           # base64's alphabet, not base64url's
    ("_", _in_signature("_", "/")),
    ("", lambda t: t[:-40] + "!!!!" + t[-40:]),  # skipped by a lenient decoder: the same signature bytes
    ("", lambda t: t[:-40] + "\n\n\n\n" + t[-40:]),
    ("", lambda t: t[:-40] + "====" + t[-40:]),
], ids=["non-ascii", "plus", "slash", "punctuation", "whitespace", "inner-padding"])
def test_a_segment_spelled_outside_base64url_is_malformed_even_if_it_decodes(
        keys: SigningKeys, needs: str, respell: Callable[[str], str]) -> None:
    good = _signature_with(needs) if needs else token()
    bad = respell(good)
    assert bad != good and validate(good, keys, SETTINGS).oid == "user-1"
    with pytest.raises(MalformedToken) as err:
        validate(bad, keys, SETTINGS)
    assert err.value.detail == "The token is malformed."


# --- the registered claims at their boundaries (pyjwt's comparisons, NumericDates truncated) --------------
@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> int:
    now = int(time.time())
    monkeypatch.setattr(validation.time, "time", lambda: float(now))
    return now


def test_iat_and_nbf_at_now_plus_skew_are_valid_one_second_later_not(keys: SigningKeys, frozen_now: int) -> None:
    edge = frozen_now + SKEW
    assert validate(signed(iat=edge, nbf=frozen_now), keys, SETTINGS).oid
    assert validate(signed(iat=frozen_now, nbf=edge), keys, SETTINGS).oid
    assert validate(signed(iat=edge + 0.9, nbf=frozen_now), keys, SETTINGS).oid  # truncated, as pyjwt does
    for late in (signed(iat=edge + 1, nbf=frozen_now), signed(iat=frozen_now, nbf=edge + 1)):
        with pytest.raises(ImmatureToken):
            validate(late, keys, SETTINGS)


def test_exp_at_now_minus_skew_has_expired_one_second_later_not(keys: SigningKeys, frozen_now: int) -> None:
    edge = frozen_now - SKEW
    with pytest.raises(ExpiredToken):
        validate(signed(iat=edge - 60, nbf=edge - 60, exp=edge), keys, SETTINGS)
    assert validate(signed(iat=edge - 60, nbf=edge - 60, exp=edge + 1), keys, SETTINGS).oid


@pytest.mark.parametrize("aud", ["", []])
def test_an_empty_audience_is_a_missing_one(keys: SigningKeys, aud: Any) -> None:
    with pytest.raises(MissingClaim) as err:
        validate(signed(aud=aud), keys, SETTINGS)
    assert err.value.claim == "aud" and err.value.detail == "The token is invalid: it lacks the required aud claim."


@pytest.mark.parametrize("aud", [5, {"api://x": 1}, [CLIENT, 5], True])
def test_an_audience_neither_a_string_nor_a_list_of_strings_is_not_ours(keys: SigningKeys, aud: Any) -> None:
    with pytest.raises(InvalidAudience) as err:
        validate(signed(aud=aud), keys, SETTINGS)
    assert err.value.detail == "The token was not issued for this API."


def test_a_known_kid_is_looked_up_without_judging_a_refetch(keys: SigningKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    judged = []
    real = validation._could_be_valid
    monkeypatch.setattr(validation, "_could_be_valid", lambda *a: judged.append(a) or real(*a))
    assert validate(token(), keys, SETTINGS).oid and judged == []
    with pytest.raises(UnknownSigningKey):
        validate(token(headers={"kid": "unknown"}), keys, SETTINGS)
    assert len(judged) == 1


def test_the_memo_sizes_a_token_with_wide_characters_by_walking_its_claims(keys: SigningKeys) -> None:
    validator = TokenValidator(keys, SETTINGS, max_bytes=10 ** 9)
    wide = token(name="Zoë 張")
    caller = validator.validate(wide)
    assert validator._memo.currsize == VALIDATOR_OVERHEAD + held_bytes(wide) + held_bytes(caller.claims)


def test_the_function_and_the_memo_give_the_same_caller_with_the_partition_key(keys: SigningKeys) -> None:
    good = token()
    caller = validate(good, keys, SETTINGS)
    assert caller.token_hash == hashlib.sha256(good.encode()).hexdigest() == validation.token_hash(good)
    assert TokenValidator(keys, SETTINGS).validate(good) == caller


@pytest.mark.parametrize("scp", ["access_as_user\tUser.Read", "access_as_user\x00", "a\x7fb", "User.Read\u00a0x"])
def test_a_scope_list_with_a_control_or_other_whitespace_is_malformed(keys: SigningKeys, scp: str) -> None:
    with pytest.raises(MalformedToken) as err:
        validate(token(scp=scp), keys, SETTINGS)
    assert err.value.detail == "The token's scp claim is malformed."


def test_a_key_of_another_type_never_verifies(keys: SigningKeys) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    parsed = validation._parts(token())
    with pytest.raises(InvalidSignature) as err:
        validation._verify_signature(ec.generate_private_key(ec.SECP256R1()).public_key(), parsed)
    assert err.value.detail == "The token's signature is invalid."
