"""shared/errors.py: the typed failures, their HTTP answers (problem bodies and Bearer challenges),
written in one place."""
from __future__ import annotations

import pytest

from shared import errors
from shared.errors import InsufficientScope, bearer_challenge, problem


def test_problem_body_and_challenge_quoting() -> None:
    status, headers, body = problem(InsufficientScope(("a", "b")), trace_id="t1")
    assert status == 403 and body["type"] == "urn:middletier:problem:insufficient_scope"
    assert body["required"] == ["a", "b"] and body["trace_id"] == "t1"
    assert 'scope="a b"' in headers["WWW-Authenticate"]
    assert bearer_challenge(error_description='say "hi"') == 'Bearer realm="", error_description="say \\"hi\\""'


# --- the typed refusals: the type is for code, the answer on the wire is the base class's ---------------
INVALID_TOKEN = [errors.MalformedToken, errors.AlgorithmNotAccepted, errors.UnknownSigningKey, errors.InvalidSignature,
                 errors.ExpiredToken, errors.ImmatureToken, errors.ImplausibleLifetime, errors.MissingClaim,
                 errors.InvalidAudience, errors.InvalidIssuer, errors.InvalidTenant, errors.VersionNotAccepted,
                 errors.InvalidSubject, errors.InvalidToken]


@pytest.mark.parametrize("kind", INVALID_TOKEN, ids=lambda k: k.__name__)
def test_every_invalid_token_reason_answers_401_invalid_token_with_its_detail(kind: type[errors.InvalidToken]) -> None:
    err = kind("The token is not good.", claim="exp")
    assert isinstance(err, errors.AuthenticationError) and err.claim == "exp"
    status, headers, body = problem(err)
    assert (status, body["error"], body["detail"], body["title"]) == (401, "invalid_token", "The token is not good.",
                                                                      "Unauthorized")
    assert headers == {"WWW-Authenticate": 'Bearer realm="", error="invalid_token", '
                                           'error_description="The token is not good."'}
    assert kind("x").claim is None


def test_a_missing_token_is_a_bare_challenge_and_a_bad_header_invalid_request() -> None:
    assert problem(errors.MissingToken("None."))[1] == {"WWW-Authenticate": 'Bearer realm=""'}
    status, headers, body = problem(errors.InvalidRequest("Bad."))
    assert (status, body["error"]) == (401, "invalid_request")
    assert headers["WWW-Authenticate"] == 'Bearer realm="", error="invalid_request", error_description="Bad."'


@pytest.mark.parametrize("kind", [errors.NoScopesOrRoles, errors.CallerKindNotAccepted, errors.ScopeNotGranted],
                         ids=lambda k: k.__name__)
def test_every_insufficient_scope_reason_answers_403_naming_what_was_required(
        kind: type[errors.InsufficientScope]) -> None:
    status, headers, body = problem(kind(("a",), "Why."))
    assert (status, body["error"], body["detail"], body["required"]) == (403, "insufficient_scope", "Why.", ["a"])
    assert headers["WWW-Authenticate"] == 'Bearer realm="", error="insufficient_scope", scope="a", error_description="Why."'
    assert kind(()).detail == "The token lacks a required scope or app role."
