"""The Entra emulator against real Entra traffic (tests/conformance/recordings).

Each case names a recording, sends the emulator the equivalent request, and compares what a client
reads: the status, the headers clients act on, the body's shape (``recordings.shape``) and the
values that are protocol constants. Where the emulator cannot match, the case lists the member with
the reason; a listed member that no longer differs fails the test too, so the lists stay honest.
"""
from __future__ import annotations

import base64
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.client import approve_device_code, session, sign_in
from tests.conformance import recordings

API_SCOPE = "api://middletier/access_as_user"
GRAPH_SCOPE = "https://graph.microsoft.com/User.Read"
OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"

# Headers a client acts on: caching (MSAL, HTTP caches), CORS (SPAs), throttling, challenges.
CLIENT_HEADERS = ("content-type", "cache-control", "pragma", "expires", "access-control-allow-origin",
                  "retry-after", "www-authenticate", "client-request-id")


def _tokens(value: str) -> list[str]:
    return sorted(t.strip().lower() for t in value.split(","))


def header_differences(recorded: dict[str, str], emulated: requests.structures.CaseInsensitiveDict,
                       ) -> dict[str, tuple[Any, Any]]:
    """The client-read headers the recording has, compared with the emulator's: media type (and
    charset when recorded), cache directives as a set, challenge parameter names; others verbatim."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, value in recorded.items():
        key = name.lower()
        if key not in CLIENT_HEADERS:
            continue
        got = emulated.get(key)
        if got is None:
            out[f"header {key}"] = (value, "(absent)")
            continue
        if key == "content-type":
            same = recordings.same_media_type(value, got)
        elif key in ("cache-control", "pragma"):
            same = _tokens(value) == _tokens(got)
        elif key == "www-authenticate":
            same = sorted(recordings.challenge_params(value)) == sorted(recordings.challenge_params(got))
        elif key == "retry-after":
            same = got.isdigit()
        else:
            same = value == got
        if not same:
            out[f"header {key}"] = (value, got)
    return out


@dataclass
class Case:
    source: str
    name: str
    send: Callable[[dict[str, Any], Any], requests.Response]
    allow: dict[str, str] = field(default_factory=dict)  # path -> why it can't match Azure's
    same: tuple[str, ...] = ()  # members (dotted paths) whose values must equal the recording's

    @property
    def id(self) -> str:
        return f"{self.source}/{self.name}"


def pick(body: Any, path: str) -> Any:
    """A member by dotted path (``error.code``), or None."""
    for part in path.split("."):
        body = body.get(part) if isinstance(body, dict) else None
    return body


def on_any_host(value: Any, info: dict[str, Any] | None = None) -> Any:
    """A value with the authority host (Entra's, or the emulator's) replaced by a placeholder."""
    host = info["instance"] if info else "https://login.microsoftonline.com"
    return value.replace(host, "{instance}") if isinstance(value, str) else value


def check(case: Case, info: dict[str, Any], admin: Any) -> None:
    record = recordings.load(case.source, case.name)
    expected = record["response"]
    response = case.send(info, admin)
    assert response.status_code == expected["status"], (case.id, response.text)
    found = header_differences(expected["headers"], response.headers)
    body = expected["body"]
    if isinstance(body, str):
        # The recorder cut the JSON short: what survives must still be the emulator's error and code.
        emulated = response.json()
        assert f'"error":"{emulated["error"]}"' in body and f'AADSTS{emulated["error_codes"][0]}:' in body, (
            case.id, emulated)
    elif body is not None:
        emulated = response.json()
        found.update(recordings.differences(recordings.shape(body), recordings.shape(emulated)))
        for member in case.same:
            assert on_any_host(pick(emulated, member), info) == on_any_host(pick(body, member)), (
                case.id, member, pick(emulated, member))
    unexplained = {p: d for p, d in found.items() if p not in case.allow}
    assert not unexplained, f"{case.id}: the emulator differs from Azure at {unexplained}"
    stale = sorted(set(case.allow) - set(found))
    assert not stale, f"{case.id}: allowed differences that no longer occur: {stale}"


# --- requests ----------------------------------------------------------------------------------
def http(info: dict[str, Any]) -> requests.Session:
    return session(info["ca_bundle"])


def get(path: str) -> Callable[[dict[str, Any], Any], requests.Response]:
    def send(info: dict[str, Any], admin: Any) -> requests.Response:
        url = info["instance"] + path.format(tid=info["tenant_id"], instance=info["instance"])
        return http(info).get(url, timeout=10)
    return send


def token(form: Callable[[dict[str, Any], Any], dict[str, str]], segment: str = "{tid}",
          headers: dict[str, str] | None = None) -> Callable[[dict[str, Any], Any], requests.Response]:
    def send(info: dict[str, Any], admin: Any) -> requests.Response:
        url = f"{info['instance']}/{segment.format(tid=info['tenant_id'])}/oauth2/v2.0/token"
        return http(info).post(url, data=form(info, admin), headers=headers, timeout=10)
    return send


def as_recorded(source: str, name: str) -> dict[str, str]:
    """The correlation headers the recorded request sent (MSAL.NET asks for the id back)."""
    sent = recordings.load(source, name)["request"]["headers"]
    return {k: v for k, v in sent.items() if k.lower() in ("client-request-id", "return-client-request-id")}


def certificate_assertion(info: dict[str, Any], admin: Any) -> dict[str, str]:
    """Client credentials with an assertion signed by the middle tier's registered certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    pem = open(info["apps"]["middletier-api"]["certificates"][0]["pem"], "rb").read()
    key = serialization.load_pem_private_key(pem, None)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    cid = info["apps"]["middletier-api"]["client_id"]
    now = time.time()
    assertion = jwt.encode({"aud": info["endpoints"]["token"], "iss": cid, "sub": cid, "jti": str(uuid.uuid4()),
                            "iat": now, "exp": now + 600}, key, algorithm="PS256",
                           headers={"x5t#S256": base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()})
    return {"client_id": cid, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}


def foreign_assertion(info: dict[str, Any], admin: Any) -> dict[str, str]:
    """Client credentials with an assertion signed by a key the app has no certificate for."""
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cid = info["apps"]["middletier-api"]["client_id"]
    now = time.time()
    assertion = jwt.encode({"aud": info["endpoints"]["token"], "iss": cid, "sub": cid, "jti": str(uuid.uuid4()),
                            "iat": now, "exp": now + 600}, foreign, algorithm="RS256",
                           headers={"x5t": "ksJfpgbQXOUWxOrXDSkE4gM4xVY"})  # no certificate of the app's
    return {"client_id": cid, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}


def middletier(info: dict[str, Any]) -> dict[str, str]:
    app = info["apps"]["middletier-api"]
    return {"client_id": app["client_id"], "client_secret": app["secrets"][0]}


def client_credentials(scope: str) -> Callable[[dict[str, Any], Any], dict[str, str]]:
    return lambda info, admin: {**middletier(info), "grant_type": "client_credentials", "scope": scope}


_signed_in: dict[str, str] = {}


def user_token(info: dict[str, Any], user: str) -> str:
    """The user's token for the middle tier, from a real device-code sign-in (once per user)."""
    key = f"{info['instance']}|{user}"
    if key not in _signed_in:
        _signed_in[key] = sign_in(info, user, [API_SCOPE])["access_token"]
    return _signed_in[key]


def obo(user: str, scope: str) -> Callable[[dict[str, Any], Any], dict[str, str]]:
    return lambda info, admin: {**middletier(info), "grant_type": OBO, "requested_token_use": "on_behalf_of",
                                "assertion": user_token(info, user), "scope": scope}


def refresh(info: dict[str, Any], admin: Any) -> dict[str, str]:
    """A refresh-token grant with the refresh token an OBO answer gave."""
    first = http(info).post(info["endpoints"]["token"], data=obo("alice", f"{GRAPH_SCOPE} offline_access")(info, admin),
                            timeout=10)
    return {**middletier(info), "grant_type": "refresh_token", "client_info": "1",
            "scope": f"{GRAPH_SCOPE} openid profile offline_access", "refresh_token": first.json()["refresh_token"]}


def public_refresh_cp1(info: dict[str, Any], admin: Any) -> dict[str, str]:
    """A public client's refresh-token grant declaring cp1, with the refresh token of a real sign-in."""
    signed_in = sign_in(info, "alice", [API_SCOPE])
    return {"client_id": info["apps"]["desktop-client"]["client_id"], "grant_type": "refresh_token",
            "scope": f"{API_SCOPE} openid profile offline_access", "client_info": "1",
            "refresh_token": signed_in["refresh_token"],
            "claims": '{"access_token":{"xms_cc":{"values":["cp1"]}}}'}


DEVICE_SCOPE = f"{API_SCOPE} openid profile offline_access"


def device_start(info: dict[str, Any]) -> requests.Response:
    return http(info).post(f"{info['instance']}/organizations/oauth2/v2.0/devicecode", timeout=10, data={
        "client_id": info["apps"]["desktop-client"]["client_id"], "scope": DEVICE_SCOPE})


def device_poll(info: dict[str, Any], device_code: str) -> requests.Response:
    return http(info).post(f"{info['instance']}/organizations/oauth2/v2.0/token", timeout=10, data={
        "client_id": info["apps"]["desktop-client"]["client_id"], "grant_type": DEVICE,
        "device_code": device_code, "client_info": "1", "scope": DEVICE_SCOPE})


def device_pending(info: dict[str, Any], admin: Any) -> requests.Response:
    return device_poll(info, device_start(info).json()["device_code"])


def device_token(info: dict[str, Any], admin: Any) -> requests.Response:
    flow = device_start(info).json()
    assert approve_device_code(info, flow, "alice").status_code == 200
    return device_poll(info, flow["device_code"])


def instance_discovery(segment: str) -> Callable[[dict[str, Any], Any], requests.Response]:
    def send(info: dict[str, Any], admin: Any) -> requests.Response:
        authorize = f"{info['instance']}/{segment.format(tid=info['tenant_id'])}/oauth2/v2.0/authorize"
        query = urllib.parse.urlencode({"api-version": "1.1", "authorization_endpoint": authorize})
        return http(info).get(f"{info['instance']}/common/discovery/instance?{query}", timeout=10)
    return send


# --- the cases ---------------------------------------------------------------------------------
METADATA_CONSTANTS = ("token_endpoint_auth_methods_supported", "response_modes_supported", "subject_types_supported",
                      "id_token_signing_alg_values_supported", "response_types_supported", "scopes_supported",
                      "claims_supported", "request_uri_parameter_supported", "http_logout_supported",
                      "frontchannel_logout_supported", "cloud_instance_name", "cloud_graph_host_name", "msgraph_host",
                      "rbac_url", "userinfo_endpoint")
SANITISED_TOKEN = "the recorder replaced the access token with the word 'access_token'"
ERROR_URI = ("Entra has sent error_uri with every error since at least 2022 (azure-sdk-for-js recordings "
             "v2-metadata-unknown-tenant, devicecode-pending); this document's example predates it")
NO_WINDOWS_CLOUD_NAME = ("Entra served cloud_instance_name on every key until October 2024 "
                         "(panva-wellknown/jwks-common-2024-10); the app reads kid, n, e only")

CASES = [
    # discovery
    Case("panva-wellknown", "v2-metadata-common", get("/common/v2.0/.well-known/openid-configuration"),
         same=METADATA_CONSTANTS + ("issuer", "tenant_region_scope")),
    Case("panva-wellknown", "v2-metadata-organizations", get("/organizations/v2.0/.well-known/openid-configuration"),
         same=METADATA_CONSTANTS + ("issuer", "tenant_region_scope")),
    Case("azure-sdk-for-js", "v2-metadata-organizations", get("/organizations/v2.0/.well-known/openid-configuration"),
         same=METADATA_CONSTANTS + ("tenant_region_scope",)),
    Case("azure-sdk-for-js", "v2-metadata-tenant", get("/{tid}/v2.0/.well-known/openid-configuration"),
         same=METADATA_CONSTANTS + ("tenant_region_scope",)),
    Case("azure-sdk-for-js", "v2-metadata-unknown-tenant", get("/tenant/v2.0/.well-known/openid-configuration"),
         same=("error", "error_codes")),
    Case("azure-sdk-for-js", "instance-discovery-tenant", instance_discovery("{tid}"), same=("api-version",)),
    Case("azure-sdk-for-js", "instance-discovery-named-tenant", instance_discovery("tenant"), same=("api-version",)),
    # keys
    Case("panva-wellknown", "jwks-common", get("/common/discovery/v2.0/keys"),
         allow={"keys[].cloud_instance_name": NO_WINDOWS_CLOUD_NAME}),
    Case("panva-wellknown", "jwks-organizations", get("/organizations/discovery/v2.0/keys"),
         allow={"keys[].cloud_instance_name": NO_WINDOWS_CLOUD_NAME}),
    Case("panva-wellknown", "jwks-common-2024-10", get("/common/discovery/v2.0/keys")),
    # grants
    Case("azure-sdk-for-js", "client-credentials-cp1",
         token(lambda info, admin: {**client_credentials("https://vault.azure.net/.default")(info, admin),
                                    "claims": '{"access_token":{"xms_cc":{"values":["cp1"]}}}'}),
         allow={"access_token": SANITISED_TOKEN}, same=("token_type",)),
    Case("entra-docs", "client-credentials-success", token(client_credentials("https://graph.microsoft.com/.default")),
         allow={"access_token": "the document elides the token ('eyJ0eX...iIsIng1dCI6Ik1uQ19WWmNBVGZNNXBP...')",
                "ext_expires_in": "Entra sends ext_expires_in with every token (azure-sdk-for-js/client-credentials-cp1, "
                                  "2023); the document lists the members it explains"},
         same=("token_type",)),
    Case("azure-sdk-for-net", "client-certificate-success",
         token(certificate_assertion, headers=as_recorded("azure-sdk-for-net", "client-certificate-success")),
         allow={"access_token": "the recorder replaced the access token with the word 'Sanitized'"},
         same=("token_type",)),
    Case("entra-docs", "obo-success", token(obo("alice", f"{GRAPH_SCOPE} offline_access")), same=("token_type",)),
    Case("msal-dotnet", "user-token-with-refresh", token(refresh),
         allow={"access_token": "MSAL.NET's test data replaced the access token with the word 'secret'"},
         same=("token_type",)),
    Case("azure-sdk-for-js", "refresh-token-cp1", token(public_refresh_cp1),
         allow={"access_token": "the recorder replaced the access token with the word 'access_token'",
                "foci": "the family-of-client-ids flag: Entra sends it only to Microsoft's first-party family apps "
                        "(the recording's client is Azure CLI); no app here is one",
                "id_token": "the recorder replaced the id_token with a stand-in whose segments carry base64 padding, "
                            "so it no longer has a JWT's form"},
         same=("token_type",)),
    # device code
    Case("azure-sdk-for-js", "devicecode-start", lambda info, admin: device_start(info)),
    Case("azure-sdk-for-js", "devicecode-pending", device_pending, same=("error", "error_codes")),
    Case("azure-sdk-for-js", "devicecode-token", device_token,
         allow={"access_token": SANITISED_TOKEN,
                "foci": "the family-of-client-ids flag: Entra sends it only to Microsoft's first-party family apps "
                        "(the recording's client is Azure CLI); no app here is one",
                "scope": "the recorded scopes are Key Vault's (https://vault.azure.net/...); the desktop client here "
                         "asks for the middle tier's, whose App ID URI is api://middletier, not a URL",
                "id_token": "the recorder replaced the id_token with a stand-in whose segments carry base64 padding, "
                            "so it no longer has a JWT's form"},
         same=("token_type",)),
    # errors
    Case("entra-docs", "obo-error-mfa", token(obo("carol", GRAPH_SCOPE)),
         allow={"error_uri": ERROR_URI,
                "suberror": "Entra adds suberror (basic_action) to MFA challenges today (MSAL's classification, "
                            "msal/application.py); the 2017 document shows none"},
         same=("error",)),
    Case("entra-docs", "client-credentials-invalid-scope", token(client_credentials("https://graph.microsoft.com/Nope.Read")),
         allow={"error_uri": ERROR_URI,
                "timestamp": "the document's timestamp is the placeholder 'YYYY-MM-DD HH:MM:SSZ'"},
         same=("error", "error_codes")),
    Case("azure-sdk-for-net", "client-secret-wrong-7000215",
         token(lambda info, admin: {**client_credentials("https://graph.microsoft.com/.default")(info, admin),
                                    "client_secret": "wrong"},
               headers=as_recorded("azure-sdk-for-net", "client-secret-wrong-7000215")),
         same=("error", "error_codes", "correlation_id")),
    Case("azure-sdk-for-net", "client-assertion-unknown-key-700027",
         token(foreign_assertion, headers=as_recorded("azure-sdk-for-net", "client-assertion-unknown-key-700027"))),
    Case("msal-dotnet", "invalid-resource-500011", token(client_credentials("https://foo.example.com/.default")),
         same=("error", "error_codes")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_emulator_answers_as_entra_did(case: Case, devstack: dict[str, Any], admin: Any) -> None:
    check(case, devstack, admin)


def is_entra(source: str, name: str) -> bool:
    """A recording of Entra's own endpoints (login.* hosts); other helpers record Key Vault, managed
    identity and Graph under the same source folders."""
    url = recordings.load(source, name)["request"]["url"]
    return urllib.parse.urlsplit(url).netloc.split("/")[0].startswith("login.")


def test_every_entra_recording_has_a_case() -> None:
    have = {(c.source, c.name) for c in CASES}
    assert {r for r in recordings.every() if is_entra(*r)} == have


def test_the_comparison_catches_a_changed_member_type_and_a_missing_member() -> None:
    recorded = recordings.shape({"expires_in": 3599, "error_codes": [1], "trace_id": "0c4b0a8e-1f7e-4b8e-9d1c-2f3a4b5c6d7e"})
    assert recordings.differences(recorded, recordings.shape({"expires_in": "3599", "error_codes": [1]})) == {
        "expires_in": ("number", "integer-string"), "trace_id": ("guid", "(absent)")}
    assert recordings.challenge_params('Bearer realm="", error="insufficient_claims", claims="e30="') == {
        "realm": "", "error": "insufficient_claims", "claims": "e30="}
    assert header_differences({"Content-Type": "application/json; charset=utf-8"},
                              requests.structures.CaseInsensitiveDict({"content-type": "application/json"})) == {
        "header content-type": ("application/json; charset=utf-8", "application/json")}
