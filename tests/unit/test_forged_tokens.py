"""Forged-but-perfect tokens: the tenant's real ``kid`` and claims that would pass every other check,
with one thing wrong about the signature itself — ``alg: none``, no signature, or a valid
signature of another token. Each must be refused by the check that guards it (the error's type
says which), and a control token built the same way but signed properly must pass, so every case
here fails if its defence is removed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.config import load_settings
from shared.errors import AlgorithmNotAccepted, AuthenticationError, InvalidSignature, InvalidToken, MalformedToken
from shared.signing_keys import SigningKeys
from shared.validation import TokenValidator, validate

from tests.fakes import INSTANCE, KEY, OTHER_KEY, TENANT, FakeIdP, b64, env, kid, token

SETTINGS = load_settings(env()).azure_ad


def parts(tok: str) -> tuple[str, str, str]:
    header, payload, signature = tok.split(".")
    return header, payload, signature


def header(**fields: Any) -> str:
    return b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid(KEY), **fields}))


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", FakeIdP(KEY),  # type: ignore[arg-type]
                       v1_metadata_url=SETTINGS.v1_metadata_url)


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
    signing_input = f"{header()}.{p}".encode()
    resigned = f"{header()}.{p}.{b64(jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(signing_input, KEY))}"
    assert validate(resigned, keys, SETTINGS).oid == "user-1"


FORGERIES: list[tuple[str, Callable[[], str], type[InvalidToken]]] = [
    # alg none (RFC 8725 §2.1): the canonical form has an empty signature segment
    ("alg-none-empty-signature", lambda: f"{header(alg='none')}.{parts(token())[1]}.", MalformedToken),
    ("alg-none-signature-of-this-very-token", lambda: f"{header(alg='none')}.{parts(token())[1]}.{parts(token())[2]}",
     AlgorithmNotAccepted),
    ("alg-None", lambda: f"{header(alg='None')}.{parts(token())[1]}.{b64(b'x' * 256)}", AlgorithmNotAccepted),
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
     lambda: header(typ="at+jwt") + "." + parts(token())[1] + "." + parts(token())[2], InvalidSignature),
    # keyed with public material: the public key's PEM as an HMAC secret
    ("hs256-keyed-with-the-public-key", lambda: _hs256(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), AlgorithmNotAccepted),
    # the real kid on a token signed by another key
    ("real-kid-other-key", lambda: token(OTHER_KEY), InvalidSignature),
]


def _hs256(secret: bytes) -> str:
    signing_input = f"{header(alg='HS256')}.{parts(token())[1]}"
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
                   f"{header(alg='none')}.{parts(other)[1]}.{s}"):
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
