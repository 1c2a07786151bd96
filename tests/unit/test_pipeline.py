"""The request path's owner: ``admit`` (configured APIs, then authenticate, then authorize) and
``Call.downstream`` (acquire on the caller's behalf or as the app, call, one retry on a CAE claims
challenge: a second challenge is the user's to answer, or a 502 for the app's own token)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared import pipeline
from shared.authorization import Requirement
from shared.config import load_settings
from shared.downstream import DownstreamChallenge
from shared.errors import ClaimsChallenge, ConfigurationError, MissingToken, UpstreamError
from shared.outbound import OutboundSession
from shared.validation import Caller

from .test_aadsts import ENV

SETTINGS = load_settings({**ENV, "DownstreamApis__Graph__BaseUrl": "https://graph.example.test/v1.0",
                          "DownstreamApis__Graph__Scopes": "https://graph.example.test/User.Read"})
APP = Caller(oid="daemon", tid=ENV["AzureAd__TenantId"], client_id="c", scopes=frozenset(),
             roles=frozenset({"MiddleTier.Admin"}), is_app=True, claims={})
USER = Caller(oid="alice", tid=ENV["AzureAd__TenantId"], client_id="c", scopes=frozenset({"access_as_user"}),
              roles=frozenset(), is_app=False, claims={})
CLAIMS = '{"access_token":{"nbf":{"essential":true}}}'


class Tokens:
    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...], str | None]] = []

    def for_app(self, scopes: tuple[str, ...], tenant: str | None = None, claims_challenge: str | None = None) -> str:
        self.asked.append(("app", scopes, claims_challenge))
        return f"token-{len(self.asked)}"

    def for_user(self, assertion: str, caller: Caller, scopes: tuple[str, ...],
                 claims_challenge: str | None = None) -> str:
        self.asked.append(("obo:" + assertion, scopes, claims_challenge))
        return f"token-{len(self.asked)}"


def run(monkeypatch: pytest.MonkeyPatch, answers: list[Any], caller: Caller = APP, **options: Any) -> tuple[Tokens, Any]:
    tokens, seen = Tokens(), []

    def request(session: Any, api: Any, access: str, **kwargs: Any) -> Any:
        seen.append((access, kwargs["method"], kwargs["path"]))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(pipeline.downstream, "request", request)
    ctx = SimpleNamespace(settings=SETTINGS, session=OutboundSession(), tokens=tokens)
    try:
        call = pipeline.Call(caller, "trace", ctx, "the-assertion")  # type: ignore[arg-type]
        return tokens, (call.downstream("Graph", **options), seen)
    except (UpstreamError, ClaimsChallenge) as err:
        return tokens, (err, seen)


def test_on_behalf_of_the_caller_with_the_delegated_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, seen) = run(monkeypatch, ["the profile"], USER, path="me/photo", method="PATCH")
    assert answer == "the profile" and seen == [("token-1", "PATCH", "me/photo")]
    assert tokens.asked == [("obo:the-assertion", ("https://graph.example.test/User.Read",), None)]


def test_as_the_app_with_the_resources_default(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, _) = run(monkeypatch, ["users"], as_app=True)
    assert answer == "users" and tokens.asked == [("app", ("https://graph.example.test/.default",), None)]


def test_a_challenge_to_the_app_token_gets_one_new_token_with_the_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, seen) = run(monkeypatch, [DownstreamChallenge(CLAIMS), "the profile"], as_app=True)
    assert answer == "the profile" and [a[2] for a in tokens.asked] == [None, CLAIMS]
    assert [s[0] for s in seen] == ["token-1", "token-2"]


def test_a_second_challenge_is_a_502_for_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, _) = run(monkeypatch, [DownstreamChallenge("{}"), DownstreamChallenge("{}")], as_app=True)
    assert isinstance(answer, UpstreamError) and answer.status == 502 and len(tokens.asked) == 2


def test_a_second_challenge_is_the_users_to_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, (answer, _) = run(monkeypatch, [DownstreamChallenge(CLAIMS), DownstreamChallenge('{"x":1}')], USER)
    assert isinstance(answer, ClaimsChallenge) and answer.status == 401
    assert [a[2] for a in tokens.asked] == [None, CLAIMS]


def test_a_call_as_the_app_needs_one_resource_in_the_scopes() -> None:
    api = load_settings({**ENV, "DownstreamApis__Mail__BaseUrl": "https://mail.example.test",
                         "DownstreamApis__Mail__Scopes": "Mail.Read"}).downstream_api("Mail")
    with pytest.raises(ConfigurationError) as refused:
        api.app_scopes()
    assert refused.value.key == "DownstreamApis__Mail__Scopes"


def test_admit_checks_the_declared_apis_first_then_the_caller() -> None:
    ctx = SimpleNamespace(settings=SETTINGS)
    with pytest.raises(ConfigurationError) as refused:
        pipeline.admit(ctx, None, Requirement(), ("Graph", "Orders"), "t")  # type: ignore[arg-type]
    assert refused.value.key == "DownstreamApis__Orders__BaseUrl"
    with pytest.raises(MissingToken):
        pipeline.admit(ctx, None, Requirement(), ("Graph",), "t")  # type: ignore[arg-type]
