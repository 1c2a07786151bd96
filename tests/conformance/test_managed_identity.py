"""The managed-identity endpoint (App Service / Functions ``IDENTITY_ENDPOINT``) held against App
Service's recorded answers (azure-identity's vcrpy recordings) and the MSAL teams' fixtures of them.

Each ``mi-`` recording's equivalent request goes to the devstack's endpoint: the recorded query
(api-version, resource, the identity selector) with the devstack's header secret, resource and
identities. Status, content-type and body shape (``recordings.shape``) must match; ALLOW-style
dicts name each field that cannot, with the reason (test_keyvault.assert_conforms: an allowance
that no longer differs fails too).
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from devstack.launch import Admin

from . import recordings
from .test_keyvault import assert_conforms

VAULT = "https://vault.azure.net"  # a resource the devstack's tenant has; the recordings asked for ARM's

REDACTED = "the recording redacted the token ('redacted'); Entra's access token is a JWT, which the emulator sends"
FIXTURE_TOKEN = "the fixture's token is a placeholder ('AT'); the emulator sends a JWT"
FIXTURE_RESOURCE = "the fixture's resource is a placeholder ('R'); the emulator echoes the URL it was asked for"
FIXTURE_MEMBERS = ("MSAL's fixture leaves it out; App Service sends token_type and client_id "
                   "(mi-app-service-2019-08-01-system), as the emulator does")


def query(record: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(record["request"]["url"]).query).items()}


def ask(info: dict[str, Any], params: dict[str, str], headers: dict[str, str] | None = None) -> requests.Response:
    h = {"X-IDENTITY-HEADER": info["identity_header"]} if headers is None else headers
    return requests.get(info["endpoints"]["identity"], params=params, headers=h, timeout=10)


def as_2019(record: dict[str, Any], info: dict[str, Any]) -> dict[str, str]:
    """The recorded query in 2019-08-01 terms on the devstack: its resource, its identities."""
    q = query(record)
    params = {"api-version": "2019-08-01", "resource": VAULT}
    if "clientid" in q or "client_id" in q:  # 2017 named it clientid, 2019 client_id
        params["client_id"] = info["managed_identities"]["unrelated-identity"]["client_id"]
    if "mi_res_id" in q:
        params["mi_res_id"] = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devstack/providers/"
                               "Microsoft.ManagedIdentity/userAssignedIdentities/unrelated-identity")
    return params


Case = tuple[str, str, Callable[[dict[str, Any], dict[str, Any]], requests.Response], dict[str, str]]

TOKENS: list[Case] = [
    ("azure-sdk-for-python", "mi-app-service-2019-08-01-system",
     lambda info, r: ask(info, as_2019(r, info)), {"body.access_token": REDACTED}),
    # The 2017-09-01 recordings: the same identity and resource asked the 2019-08-01 way (the only
    # version served); the 2017 request itself is refused (test_the_2017_protocol_is_refused).
    ("azure-sdk-for-python", "mi-app-service-2017-09-01-system",
     lambda info, r: ask(info, as_2019(r, info)), {
         "body.access_token": REDACTED,
         "body.expires_on": "2017-09-01 writes expires_on as a date ('05/22/2021 17:14:33 +00:00'); 2019-08-01 as "
                            "Unix seconds in a string (mi-app-service-2019-08-01-system), which the emulator serves. "
                            "azure-identity/MSAL parse both; the app only ever asks 2019-08-01."}),
    ("azure-sdk-for-python", "mi-app-service-2017-09-01-user",
     lambda info, r: ask(info, as_2019(r, info)), {
         "body.access_token": REDACTED,
         "body.expires_on": "2017-09-01's date form; the emulator serves 2019-08-01's Unix seconds (see above)",
         "body.client_id": "the recording replaced the client id by the placeholder 'client-id'; the emulator "
                           "answers the identity's real client id, a GUID"}),
    ("msal-python", "mi-app-service-token",
     lambda info, r: ask(info, as_2019(r, info), {"X-IDENTITY-HEADER": info["identity_header"], "Metadata": "true"}),
     {"body.access_token": FIXTURE_TOKEN, "body.resource": FIXTURE_RESOURCE,
      "body.token_type": FIXTURE_MEMBERS, "body.client_id": FIXTURE_MEMBERS}),
    ("msal-python", "mi-app-service-mi-res-id",
     lambda info, r: ask(info, as_2019(r, info), {"X-IDENTITY-HEADER": info["identity_header"], "Metadata": "true"}),
     {"body.access_token": FIXTURE_TOKEN, "body.resource": FIXTURE_RESOURCE,
      "body.token_type": FIXTURE_MEMBERS, "body.client_id": FIXTURE_MEMBERS,
      "body.expires_on": "the fixture writes a JSON number (12345) to show MSAL accepts one; App Service's 2019-08-01 "
                         "answer is a string of digits (mi-app-service-2019-08-01-system), as the emulator's"}),
    ("msal-dotnet", "mi-app-service-token",
     lambda info, r: ask(info, as_2019(r, info)),
     {"body.access_token": "the fixture's token is TestConstants.ATSecret; the emulator sends a JWT",
      "body.client_id": "the fixture's client id is the placeholder 'client_id'; the emulator's is a GUID"}),
]

STATUS_TYPE = ("the MSAL fixtures disagree on statusCode's type (MSAL.NET: the string \"500\"; MSAL Python: the "
               "number 500) and no capture settles it; the emulator sends a number. azure-identity and MSAL read "
               "the HTTP status and the message, not statusCode")
ERRORS: list[Case] = [
    ("msal-dotnet", "mi-app-service-error", lambda info, r: ask(info, as_2019(r, info)),
     {"body.statusCode": STATUS_TYPE}),
    ("msal-python", "mi-app-service-error", lambda info, r: ask(info, as_2019(r, info)),
     {"body.correlationId": "MSAL Python's fixture leaves it out; MSAL.NET's (mi-app-service-error) has the "
                            "correlationId GUID App Service sends, as the emulator does"}),
]


def _ids(cases: list[Case]) -> list[str]:
    return [f"{s}/{n}" for s, n, _, _ in cases]


@pytest.mark.parametrize("source,name,send,allow", TOKENS, ids=_ids(TOKENS))
def test_token_answers_conform(devstack: dict[str, Any], source: str, name: str, send: Any,
                               allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(devstack, record)
    assert_conforms(record, response, allow)
    body = response.json()
    assert isinstance(body["expires_on"], str) and body["expires_on"].isdigit()  # 2019-08-01's form
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert str(claims["exp"]) == body["expires_on"] and claims["aud"] == body["resource"] == VAULT
    expected = "unrelated-identity" if "client_id" in as_2019(record, devstack) or "mi_res_id" in query(record) \
        else "middletier-identity"
    assert body["client_id"] == devstack["managed_identities"][expected]["client_id"] == claims["appid"]


@pytest.mark.parametrize("source,name,send,allow", ERRORS, ids=_ids(ERRORS))
def test_error_answers_conform(devstack: dict[str, Any], admin: Admin, source: str, name: str, send: Any,
                               allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    admin.post("/faults", {"service": "identity", "endpoint": "token", "status": record["response"]["status"],
                           "count": 1})
    response = send(devstack, record)
    assert_conforms(record, response, allow)
    assert response.json()["statusCode"] == response.status_code == 500 and response.json()["message"]
    assert ask(devstack, as_2019(record, devstack)).status_code == 200  # one fault, then the endpoint answers


@pytest.mark.parametrize("name", ["mi-app-service-2017-09-01-system", "mi-app-service-2017-09-01-user"])
def test_the_2017_protocol_is_refused(devstack: dict[str, Any], name: str) -> None:
    """The recorded 2017-09-01 request, as sent (header 'secret', 'clientid'), is refused: the emulator
    serves only 2019-08-01 (stricter than App Service, which still answers 2017-09-01); so is the
    2017 api-version with the right header."""
    record = recordings.load("azure-sdk-for-python", name)
    q = {**query(record), "resource": VAULT}
    as_recorded = ask(devstack, q, {"secret": devstack["identity_header"]})
    assert as_recorded.status_code == 400 and "X-IDENTITY-HEADER" in as_recorded.json()["message"]
    with_header = ask(devstack, q)
    assert with_header.status_code == 400 and "2017-09-01" in with_header.json()["message"]


def test_every_managed_identity_recording_is_held() -> None:
    held = {(s, n) for s, n, _, _ in TOKENS + ERRORS}
    on_disk = {(s, n) for s, n in recordings.every() if n.startswith("mi-")}
    assert on_disk == held, f"recordings without a test: {on_disk - held}; tests without a recording: {held - on_disk}"
