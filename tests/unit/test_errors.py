"""shared/errors.py: the typed failures, their HTTP answers (problem bodies and Bearer challenges),
written in one place."""
from __future__ import annotations

from shared.errors import InsufficientScope, bearer_challenge, problem


def test_problem_body_and_challenge_quoting() -> None:
    status, headers, body = problem(InsufficientScope(("a", "b")), trace_id="t1")
    assert status == 403 and body["type"] == "urn:middletier:problem:insufficient_scope"
    assert body["required"] == ["a", "b"] and body["trace_id"] == "t1"
    assert 'scope="a b"' in headers["WWW-Authenticate"]
    assert bearer_challenge(error_description='say "hi"') == 'Bearer realm="", error_description="say \\"hi\\""'
