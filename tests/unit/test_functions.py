"""The Azure Functions adapter: ``endpoint`` runs the body only after the pipeline admitted the
request, answers a ``DownstreamResponse`` with its own content type, and turns every failure (an
unconfigured downstream API first of all) into problem+json with the security headers."""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from shared import Call, DownstreamResponse, Requirement, endpoint, functions, pipeline
from shared.config import load_settings
from shared.validation import Caller

from .test_aadsts import ENV

SETTINGS = load_settings({**ENV, "DownstreamApis__Graph__BaseUrl": "https://graph.example.test/v1.0",
                          "DownstreamApis__Graph__Scopes": "https://graph.example.test/User.Read"})
ALICE = Caller(oid="alice", tid=ENV["AzureAd__TenantId"], client_id="c", scopes=frozenset({"access_as_user"}),
               roles=frozenset(), is_app=False, claims={})
GRAPH_TYPE = "application/json; odata.metadata=minimal; charset=utf-8"


@pytest.fixture(autouse=True)
def signed_in(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    seen: list[str | None] = []

    def authenticate(ctx: Any, header: str | None) -> tuple[str, Caller]:
        seen.append(header)
        return "the-token", ALICE
    monkeypatch.setattr(functions, "app_context", lambda: SimpleNamespace(settings=SETTINGS))
    monkeypatch.setattr(pipeline, "authenticate", authenticate)
    return seen


def request() -> func.HttpRequest:
    return func.HttpRequest("GET", "http://localhost/api/me", headers={"Authorization": "Bearer x",
                                                                      "x-ms-client-request-id": "trace-1"}, body=b"")


def test_a_downstream_answer_is_passed_on_with_its_content_type(signed_in: list[str | None]) -> None:
    @endpoint(Requirement(callers="user"), downstream=("Graph",))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        assert call.caller is ALICE and call.token == "the-token" and call.trace_id == "trace-1"
        return DownstreamResponse(200, GRAPH_TYPE, b'{"id":"alice"}')

    answer = main(request())
    assert (answer.status_code, answer.mimetype, answer.get_body()) == (200, GRAPH_TYPE, b'{"id":"alice"}')
    assert answer.headers["Cache-Control"] == "no-store" and answer.headers["x-ms-client-request-id"] == "trace-1"
    assert signed_in == ["Bearer x"] and main.downstream == ("Graph",) and main.requirement.callers == "user"
    assert "the-token" not in repr(Call(ALICE, "t", None, "the-token"))  # type: ignore[arg-type]


def test_an_http_response_is_answered_as_it_is() -> None:
    @endpoint(Requirement(callers="user"))
    def main(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        return func.HttpResponse("hi", status_code=202)

    assert (main(request()).status_code, main(request()).get_body()) == (202, b"hi")


def test_an_unconfigured_downstream_api_is_a_configuration_error_before_anything_else(
        signed_in: list[str | None]) -> None:
    ran = []

    @endpoint(Requirement(callers="user"), downstream=("Graph", "Mail"))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        ran.append(call)
        return DownstreamResponse(200, "application/json", b"{}")

    answer = main(request())
    problem = json.loads(answer.get_body())
    assert answer.status_code == 500 and answer.mimetype == "application/problem+json"
    assert problem["error"] == "configuration_error" and problem["setting"] == "DownstreamApis__Mail__BaseUrl"
    assert ran == [] and signed_in == []  # checked before the caller is even authenticated


def test_the_requirement_is_checked_before_the_body() -> None:
    @endpoint(Requirement(callers="app"))
    def main(req: func.HttpRequest, call: Call) -> DownstreamResponse:
        raise AssertionError("the body ran for a caller the requirement refuses")

    answer = main(request())
    assert answer.status_code == 403 and json.loads(answer.get_body())["error"] == "insufficient_scope"
