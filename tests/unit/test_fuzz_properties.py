"""Property-based tests (hypothesis): whatever the input, only the typed 401/403 errors come out."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.bearer import bearer_token
from shared.config import load_settings
from shared.downstream import challenge_claims
from shared.errors import AuthenticationError, InsufficientScope
from shared.signing_keys import SigningKeys
from shared.authorization import Requirement, check
from shared.validation import validate

from tests.fakes import CLIENT, INSTANCE, ISSUER, KEY, TENANT, FakeIdP, b64, env, kid, token

SETTINGS = load_settings(env()).azure_ad
KEYS = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", FakeIdP(KEY),  # type: ignore[arg-type]
                  v1_metadata_url=SETTINGS.v1_metadata_url)
NOW = int(time.time())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                              children, max_size=4),
                           max_leaves=12)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=300))
def test_header_parsing_only_refuses_with_401(value: str) -> None:
    try:
        token = bearer_token(value)
    except AuthenticationError as err:
        assert err.status == 401
        return
    assert token and " " not in token and value.strip().lower().startswith("bearer")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_validator_on_arbitrary_strings(value: str) -> None:
    try:
        validate(value, KEYS, SETTINGS)
    except AuthenticationError:
        return
    raise AssertionError("an arbitrary string validated")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5t", "b64", "zip"]),
                              json_values, max_size=5),
       payload=st.dictionaries(st.sampled_from(["aud", "iss", "exp", "nbf", "iat", "tid", "oid", "scp", "roles",
                                                "ver", "idtyp", "azp"]), json_values, max_size=10),
       signature=st.binary(max_size=300))
def test_validator_on_structured_garbage(header: dict, payload: dict, signature: bytes) -> None:
    forged = ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])
    try:
        validate(forged, KEYS, SETTINGS)
    except AuthenticationError:
        return
    raise AssertionError("an unsigned token validated")


V1_ISSUER = f"https://sts.windows.net/{TENANT}/"
OTHER_TENANT = "00000000-0000-0000-0000-000000000000"
# Near misses for each claim, mixed with arbitrary JSON: most examples then differ from a valid token
# in one or two plausible ways, which is where a missing check would show.
NEAR = {
    "aud": [CLIENT, "api://middletier", "api://other", CLIENT.upper(), [CLIENT], [CLIENT, "api://other"], ""],
    "iss": [ISSUER, V1_ISSUER, ISSUER.upper(), ISSUER + "/", INSTANCE + "{tenantid}/v2.0",
            ISSUER.replace(TENANT, "00000000-0000-0000-0000-000000000000"), "https://evil.example/v2.0"],
    "tid": [TENANT, TENANT.upper(), "00000000-0000-0000-0000-000000000000", "", "organizations"],
    "ver": ["2.0", "1.0", "2", 2.0, "3.0"],
    "exp": [NOW + 3600, NOW - 60, NOW - 3600, NOW + 47 * 3600, NOW + 49 * 3600, 2 ** 53],
    "nbf": [NOW, NOW + 60, NOW + 3600, NOW - 3600],
    "iat": [NOW, NOW + 60, NOW + 3600, NOW - 3600],
    "oid": ["user-1", "", None, 7, ["user-1"]],
    "scp": ["access_as_user", "access_as_user other", "other", ""],
    "roles": [["MiddleTier.Admin"], "MiddleTier.Admin", []],
    "idtyp": ["app", "user", ""],
}
odd_claims = st.fixed_dictionaries({}, optional={name: st.one_of(st.sampled_from(values), json_values)
                                                 for name, values in NEAR.items()})


def assert_valid(claims: dict) -> None:
    """The oracle, written from Entra's documentation, not from the validator: an accepted token has
    one of our audiences (a single string), our tenant, the issuer of our tenant matching its version,
    a version we accept, a current and plausible lifetime, and a subject object id."""
    import time
    now, skew = time.time(), SETTINGS.clock_skew_seconds
    assert isinstance(claims.get("aud"), str) and claims["aud"] in (CLIENT, "api://middletier"), claims
    assert isinstance(claims.get("tid"), str) and claims["tid"].lower() == TENANT, claims
    assert claims.get("ver") in ("1.0", "2.0") and claims.get("ver") in SETTINGS.token_versions, claims
    assert claims.get("iss") == (V1_ISSUER if claims["ver"] == "1.0" else ISSUER), claims
    for name in ("exp", "iat"):
        assert isinstance(claims.get(name), (int, float)) and not isinstance(claims[name], bool), claims
    assert now - skew <= claims["exp"] <= now + 48 * 3600, claims
    assert claims["iat"] <= now + skew, claims
    if "nbf" in claims:
        assert isinstance(claims["nbf"], (int, float)) and claims["nbf"] <= now + skew, claims
    assert isinstance(claims.get("oid"), str) and claims["oid"], claims


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=st.one_of(
    st.dictionaries(st.sampled_from(["aud", "iss", "exp", "nbf", "iat", "tid", "oid", "scp", "roles", "ver", "idtyp"]),
                    json_values, max_size=6),
    odd_claims))
@example(claims={"scp": "access_as_user other"})  # accepted: the oracle runs
@example(claims={"aud": "api://middletier", "ver": "1.0", "iss": V1_ISSUER})  # accepted as v1 (when v1 is served)
@example(claims={"tid": OTHER_TENANT, "iss": ISSUER.replace(TENANT, OTHER_TENANT)})  # refused: another tenant
@example(claims={"tid": "organizations", "iss": ISSUER.replace(TENANT, "organizations")})
def test_validator_on_correctly_signed_odd_claims(claims: dict) -> None:
    """Signed by the real key: whatever the claims, the answer is a caller, 401 or 403 — never a crash;
    and whenever a token is accepted, everything the validator promises about it holds."""
    body = {**jwt.decode(token(), options={"verify_signature": False}), **claims}
    body = {k: v for k, v in body.items() if v is not None}
    odd = jwt.api_jws.PyJWS().encode(json.dumps(body).encode(), KEY, algorithm="RS256", headers={"kid": kid(KEY)})
    try:
        caller = validate(odd, KEYS, SETTINGS)
    except AuthenticationError:
        return
    assert_valid(body)
    assert caller.oid == body["oid"] and caller.tid == body["tid"] and caller.claims == body
    try:
        check(caller, Requirement(), SETTINGS)
    except InsufficientScope:
        return


def test_the_oracle_refuses_what_the_validator_must_refuse() -> None:
    """The oracle itself can fail: each near miss of a valid token trips it."""
    import time
    base = jwt.decode(token(), options={"verify_signature": False})
    assert_valid(base)
    misses = [{"aud": "api://other"}, {"aud": [CLIENT]}, {"iss": V1_ISSUER}, {"tid": "00000000-0000-0000-0000-000000000000"},
              {"ver": "3.0"}, {"exp": time.time() - 3600}, {"exp": time.time() + 49 * 3600}, {"nbf": time.time() + 3600},
              {"iat": time.time() + 3600}, {"oid": ""}, {"ver": "1.0"}]
    for miss in misses:
        with pytest.raises(AssertionError):
            assert_valid({**base, **miss})


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_challenge_parsing_never_raises(value: str) -> None:
    result = challenge_claims(value)
    assert result is None or isinstance(result, str)
