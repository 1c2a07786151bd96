"""shared/bearer.py: the one bearer token out of the Authorization header (RFC 6750 §2.1), or a 401
whose challenge says why — exact answers, so that every mutation of the parser changes one here.
The texts the client reads are pinned once each, below; elsewhere the refusal's type is checked."""
from __future__ import annotations

import pytest

from shared.bearer import MAX_TOKEN_BYTES, bearer_token
from shared.errors import InvalidRequest, MissingToken


@pytest.mark.parametrize("value", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc-_.~+/=="])
def test_bearer_accepts_one_token(value: str) -> None:
    assert bearer_token(value) == value.split()[-1]


@pytest.mark.parametrize("value", ["Basic dXNlcjpw", "Bearer", "Bearer ", "Bearer a b", "Bearer a, Bearer b",
                                   "Bearer a\x00b", "Bearer ä", "Token abc", "Bearer " + "a" * 17000,
                                   # token68 (RFC 7235 §2.1): only spaces after the scheme, "=" only at the end
                                   "Bearer\tabc", "Bearer \tabc", "BearerXabc", "Bearerabc", "Bearer abc=X",
                                   "Bearer =abc", "Bearer ===", "Bearer a=b", "Bëarer abc", "Bearer abc,"])
def test_bearer_refuses_everything_else(value: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        bearer_token(value)
    assert err.value.status == 401
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]


def test_missing_header_has_no_error_code() -> None:  # RFC 6750 §3.1
    with pytest.raises(MissingToken) as err:
        bearer_token(None)
    assert err.value.headers["WWW-Authenticate"] == 'Bearer realm=""'


@pytest.mark.parametrize("header", [None, ""])
def test_no_header_is_a_bare_challenge(header: str | None) -> None:
    """RFC 6750 §3.1: no credentials, no error code — only `Bearer realm=""`."""
    with pytest.raises(MissingToken) as err:
        bearer_token(header)
    assert err.value.detail == "No bearer token was presented."
    assert err.value.headers["WWW-Authenticate"] == 'Bearer realm=""'


def test_the_size_limit_is_exact() -> None:
    token = "a" * (MAX_TOKEN_BYTES + 16 - len("Bearer "))
    assert bearer_token("Bearer " + token) == token  # exactly at the limit: accepted
    with pytest.raises(InvalidRequest) as err:
        bearer_token("Bearer " + token + "a")
    assert err.value.detail == "The Authorization header is too large."
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]


def test_a_malformed_header_names_the_rule() -> None:
    with pytest.raises(InvalidRequest) as err:
        bearer_token("Bearer a b")
    assert err.value.detail == "The Authorization header must carry exactly one Bearer token."
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]
