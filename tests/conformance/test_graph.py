"""The Graph emulator against Graph's published answers (tests/conformance/recordings).

Same comparison as test_entra.py: status, client-read headers, body shape, constants; every
difference the emulator keeps is listed with its reason."""
from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest
import requests

from tests.conformance import recordings

from .recordings import challenge_params
from .test_entra import GRAPH_SCOPE, Case, check, http

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def graph_get(path: str, token: str, info: dict[str, Any], client_request_id: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if client_request_id:
        headers["client-request-id"] = client_request_id
    return http(info).get(info["endpoints"]["graph"] + path, headers=headers, timeout=10)


def me(info: dict[str, Any], admin: Any) -> requests.Response:
    return graph_get("/v1.0/me", admin.mint(user="alice", scope=GRAPH_SCOPE), info)


def app_token(admin: Any, roles: list[str]) -> str:
    return admin.mint(client="middletier-api", scope="https://graph.microsoft.com/.default", roles=roles)


def user_by_id(info: dict[str, Any], admin: Any) -> requests.Response:
    return graph_get(f"/v1.0/users/{info['users']['alice']['oid']}", app_token(admin, ["User.Read.All"]), info)


def user_without_permission(info: dict[str, Any], admin: Any) -> requests.Response:
    # The recording is a PATCH the app had no permission for; the emulator serves reads only, and
    # refuses a read without User.Read.All the same way.
    return graph_get(f"/v1.0/users/{info['users']['alice']['oid']}", app_token(admin, []), info)


def revoked(scope: str) -> Any:
    def send(info: dict[str, Any], admin: Any) -> requests.Response:
        return revoked_session(info, admin, scope)
    return send


def revoked_session(info: dict[str, Any], admin: Any, scope: str = "tokens") -> requests.Response:
    """A CAE-capable (cp1) token used after the user's tokens (or sessions) were revoked: Graph's
    claims challenge."""
    token = admin.mint(user="bob", scope=GRAPH_SCOPE, capabilities=["cp1"])
    admin.post("/graph/revoke", {"user": "bob", "scope": scope})
    try:
        return graph_get("/v1.0/me", token, info)
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


TRUNCATED = ("the documented response is marked truncated (\"truncated\": true); Graph sends @odata.context, "
             "as the same page's Example 3 shows")
UNSET = "Graph sends null for a property the directory has no value for; the emulator's users have none"
NO_PHONES = "Graph sends [] for a user with no business phone; the emulator's users have none"

CASES = [
    Case("graph-docs", "me", me, allow={"@odata.context": TRUNCATED, "mobilePhone": UNSET, "officeLocation": UNSET,
                                        "businessPhones": NO_PHONES}),
    Case("graph-docs", "user-by-id", user_by_id,
         allow={"@odata.context": TRUNCATED, "mobilePhone": UNSET, "officeLocation": UNSET,
                "businessPhones": NO_PHONES}),
    Case("graph-docs", "users-forbidden", user_without_permission, same=("error.code", "error.message")),
    Case("entra-docs", "claims-challenge-401", revoked_session,
         allow={"header www-authenticate": "Graph's challenge also names its client_id and an error_description "
                                           "(the CAE revocation reason); the document shows the parameters every "
                                           "claims challenge must have"}),
    Case("azure-sdk-for-js", "arm-session-revoked-401", revoked("sessions"),
         allow={"header www-authenticate": "recorded from Azure Resource Manager, whose challenge has no realm or "
                                           "client_id; Graph's has both (claims-challenge.md)",
                "header pragma": "ARM sends Pragma and Expires; Graph's answers in the same recording don't",
                "header expires": "ARM sends Pragma and Expires; Graph's answers in the same recording don't",
                "error.innerError": "Graph's error bodies carry innerError (graph-docs/users-forbidden); ARM's don't"},
         ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emulator_answers_as_graph_did(case: Case, devstack: dict[str, Any], admin: Any) -> None:
    check(case, devstack, admin)


def test_the_claims_challenge_carries_what_clients_parse(devstack: dict[str, Any], admin: Any) -> None:
    recorded = challenge_params(recordings.load("entra-docs", "claims-challenge-401")["response"]["headers"][
        "WWW-Authenticate"])
    response = revoked_session(devstack, admin)
    got = challenge_params(response.headers["WWW-Authenticate"])
    assert {k: got[k] for k in ("realm", "authorization_uri", "error")} == {
        k: recorded[k] for k in ("realm", "authorization_uri", "error")}
    assert got["client_id"] == GRAPH_APP_ID
    # Both claims values are standard base64 of a claims request for the access token.
    for claims in (recorded["claims"], got["claims"]):
        assert set(json.loads(base64.b64decode(claims))) == {"access_token"}


def test_a_revoked_session_is_challenged_with_an_nbf_claims_request(devstack: dict[str, Any], admin: Any) -> None:
    """The claims request inside the challenge: the recorded one (ARM, after revokeSignInSessions)
    asks for a token issued after the revocation, as the emulator's does."""
    def decoded(header: str) -> Any:
        return recordings.shape(json.loads(base64.b64decode(challenge_params(header)["claims"])))
    recorded = recordings.load("azure-sdk-for-js", "arm-session-revoked-401")["response"]["headers"]["WWW-Authenticate"]
    got = revoked_session(devstack, admin, "sessions").headers["WWW-Authenticate"]
    assert decoded(got) == decoded(recorded) == {"access_token": {"nbf": {"essential": "boolean",
                                                                          "value": "integer-string"}}}


def test_graph_headers_are_the_recorded_ones(devstack: dict[str, Any], admin: Any) -> None:
    """Graph's answer headers as recorded: content type, no caching, OData 4.0, one request id that
    doubles as client-request-id when the client sent none (and in an error's innerError)."""
    recorded = recordings.load("azure-sdk-for-js", "graph-revoke-sessions")["response"]["headers"]
    assert recorded["request-id"] == recorded["client-request-id"]
    for response in (me(devstack, admin), user_without_permission(devstack, admin)):
        for name in ("Content-Type", "Cache-Control", "OData-Version"):
            assert response.headers[name] == recorded[name], name
        assert recordings.string_format(response.headers["request-id"]) == "guid"
        assert response.headers["client-request-id"] == response.headers["request-id"]
    inner = response.json()["error"]["innerError"]
    assert inner["request-id"] == inner["client-request-id"] == response.headers["request-id"]
    sent = graph_get("/v1.0/me", "not-a-token", devstack, client_request_id="c0ffee00-0000-4000-8000-00000000000a")
    assert sent.headers["client-request-id"] == "c0ffee00-0000-4000-8000-00000000000a"
    assert sent.json()["error"]["innerError"]["client-request-id"] == "c0ffee00-0000-4000-8000-00000000000a"


HEADERS_ONLY = {("azure-sdk-for-js", "graph-revoke-sessions")}  # an endpoint the emulator doesn't serve

# Resource APIs whose answers the Graph emulator stands for (a CAE challenge is the same protocol).
RESOURCE_HOSTS = {"graph.microsoft.com", "management.azure.com"}


def test_every_graph_recording_has_a_case() -> None:
    def is_graph(source: str, name: str) -> bool:
        url = recordings.load(source, name)["request"]["url"]
        return urllib.parse.urlsplit(url).netloc in RESOURCE_HOSTS
    assert {r for r in recordings.every() if is_graph(*r)} == {(c.source, c.name) for c in CASES} | HEADERS_ONLY
