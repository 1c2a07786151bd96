"""Property-based tests (hypothesis): whatever the input, only the typed 401/403 errors come out."""
from __future__ import annotations

import base64
import json

import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bearer import bearer_token
from shared.config import load_settings
from shared.downstream import challenge_claims
from shared.errors import AuthenticationError, InsufficientScope
from shared.signing_keys import SigningKeys
from shared.authorization import Requirement, check
from shared.validation import validate

from .test_auth_pieces import INSTANCE, KEY, TENANT, FakeIdP, env, kid, token

SETTINGS = load_settings(env()).azure_ad
KEYS = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", FakeIdP(KEY))  # type: ignore[arg-type]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                              children, max_size=4),
                           max_leaves=12)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=st.dictionaries(st.sampled_from(["aud", "iss", "exp", "nbf", "iat", "tid", "oid", "scp", "roles",
                                               "ver", "idtyp"]), json_values, max_size=6))
def test_validator_on_correctly_signed_odd_claims(claims: dict) -> None:
    """Signed by the real key: whatever the claims, the answer is a caller, 401 or 403 — never a crash."""
    body = json.dumps({**jwt.decode(token(), options={"verify_signature": False}), **claims}).encode()
    odd = jwt.api_jws.PyJWS().encode(body, KEY, algorithm="RS256", headers={"kid": kid(KEY)})
    try:
        caller = validate(odd, KEYS, SETTINGS)
        check(caller, Requirement(), SETTINGS)
    except (AuthenticationError, InsufficientScope):
        return


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_challenge_parsing_never_raises(value: str) -> None:
    result = challenge_claims(value)
    assert result is None or isinstance(result, str)
