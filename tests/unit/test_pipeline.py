"""The request path's downstream step for app tokens: a CAE challenge to the app's own token gets
one new token with the claims (the app declares cp1 for client credentials too), then a 502."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared import pipeline
from shared.config import load_settings
from shared.downstream import DownstreamChallenge
from shared.errors import UpstreamError
from shared.outbound import OutboundSession
from shared.validation import Caller

from .test_aadsts import ENV

SETTINGS = load_settings({**ENV, "DownstreamApis__GraphApp__BaseUrl": "https://graph.example.test/v1.0",
                          "DownstreamApis__GraphApp__Scopes": "https://graph.example.test/.default",
                          "DownstreamApis__GraphApp__RequestAppToken": "true"})
CALLER = Caller(oid="daemon", tid=ENV["AzureAd__TenantId"], client_id="c", scopes=frozenset(),
                roles=frozenset({"MiddleTier.Admin"}), is_app=True, claims={})


class Tokens:
    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def for_app(self, scopes: tuple[str, ...], tenant: str | None = None, claims_challenge: str | None = None) -> str:
        self.asked.append(claims_challenge)
        return f"token-{len(self.asked)}"


def run(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> tuple[Tokens, Any]:
    tokens, seen = Tokens(), []

    def get(session: Any, api: Any, access: str, **_: Any) -> Any:
        seen.append(access)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(pipeline.downstream, "get", get)
    ctx = SimpleNamespace(settings=SETTINGS, session=OutboundSession(), tokens=tokens)
    try:
        return tokens, (pipeline.call_downstream(ctx, "unused", CALLER, "GraphApp"), seen)  # type: ignore[arg-type]
    except UpstreamError as err:
        return tokens, (err, seen)


def test_a_challenge_to_the_app_token_gets_one_new_token_with_the_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, seen) = run(monkeypatch, [DownstreamChallenge('{"access_token":{"nbf":{"essential":true}}}'),
                                               "the profile"])
    assert answer == "the profile"
    assert tokens.asked == [None, '{"access_token":{"nbf":{"essential":true}}}'] and seen == ["token-1", "token-2"]


def test_a_second_challenge_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, _) = run(monkeypatch, [DownstreamChallenge("{}"), DownstreamChallenge("{}")])
    assert isinstance(answer, UpstreamError) and answer.status == 502 and len(tokens.asked) == 2
