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

from .test_entra import GRAPH_SCOPE, Case, challenge_params, check, http

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def graph_get(path: str, token: str, info: dict[str, Any]) -> requests.Response:
    return http(info).get(info["endpoints"]["graph"] + path, headers={"Authorization": f"Bearer {token}"},
                          timeout=10)


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


def revoked_session(info: dict[str, Any], admin: Any) -> requests.Response:
    """A CAE-capable (cp1) token used after the user's tokens were revoked: Graph's claims challenge."""
    token = admin.mint(user="bob", scope=GRAPH_SCOPE, capabilities=["cp1"])
    admin.post("/graph/revoke", {"user": "bob", "scope": "tokens"})
    try:
        return graph_get("/v1.0/me", token, info)
    finally:
        admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})


TRUNCATED = ("the documented response is marked truncated (\"truncated\": true); Graph sends @odata.context, "
             "as the same page's Example 3 shows")
UNSET = "Graph sends null for a property the directory has no value for; the emulator's users have none"

CASES = [
    Case("graph-docs", "me", me, allow={"@odata.context": TRUNCATED, "mobilePhone": UNSET, "officeLocation": UNSET}),
    Case("graph-docs", "user-by-id", user_by_id,
         allow={"@odata.context": TRUNCATED, "mobilePhone": UNSET, "officeLocation": UNSET}),
    Case("graph-docs", "users-forbidden", user_without_permission, same=("error.code", "error.message")),
    Case("entra-docs", "claims-challenge-401", revoked_session,
         allow={"header www-authenticate": "Graph's challenge also names its client_id and an error_description "
                                           "(the CAE revocation reason); the document shows the parameters every "
                                           "claims challenge must have"}),
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


def test_every_graph_recording_has_a_case() -> None:
    def is_graph(source: str, name: str) -> bool:
        url = recordings.load(source, name)["request"]["url"]
        return urllib.parse.urlsplit(url).netloc == "graph.microsoft.com"
    assert {r for r in recordings.every() if is_graph(*r)} == {(c.source, c.name) for c in CASES}
