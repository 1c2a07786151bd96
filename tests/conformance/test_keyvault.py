"""The Key Vault emulator held against Key Vault's own recorded traffic.

Each recording under tests/conformance/recordings/ whose name starts ``kv-`` is replayed as the
equivalent request to a running devstack (same method and path form, the devstack's vault, a token
from its managed-identity endpoint, the vault state the recording had: a disabled secret, a secret
with an expiry, two versions...). The answer must have the recording's status, the headers clients
read, and the recording's body shape (``recordings.shape``). Where a field cannot match, ALLOW names
it with the reason; an allowance that no longer differs fails too, so none can go stale.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.client import session
from devstack.launch import Admin

from . import recordings

Diff = tuple[str, Any, Any]

# Headers the SDKs read (azure-core: content-type to decode, x-ms-request-id / x-ms-client-request-id
# in logs and errors, WWW-Authenticate for the challenge, Retry-After for retries; the Key Vault
# clients log the x-ms-keyvault-* ones). A recorded one must be sent by the emulator too.
CLIENT_READ = ("content-type", "www-authenticate", "retry-after", "x-ms-request-id", "x-ms-client-request-id",
               "x-ms-keyvault-service-version", "x-ms-keyvault-region")


def assert_conforms(record: dict[str, Any], response: requests.Response, allow: dict[str, str], *,
                    items: bool = True) -> None:
    """Status, client-read headers and body shape as recorded, except the allowed paths (each with
    its reason, and each must really differ). ``items=False``: a list's items are compared by kind
    instead (test_lists_conform), since which item comes first depends on the vault's contents."""
    recorded = record["response"]
    found: dict[str, Diff] = {}
    if response.status_code != recorded["status"]:
        found["status"] = ("status", recorded["status"], response.status_code)
    got = {k.lower(): v for k, v in response.headers.items()}
    for name, value in ((k.lower(), v) for k, v in recorded["headers"].items()):
        if name not in CLIENT_READ:
            continue
        if name not in got:
            found[f"header:{name}"] = (f"header:{name}", value, "<absent>")
        elif name == "content-type" and not recordings.same_media_type(value, got[name]):
            found[f"header:{name}"] = (f"header:{name}", value, got[name])
        elif name == "www-authenticate" and challenge_shape(value) != challenge_shape(got[name]):
            found[f"header:{name}"] = (f"header:{name}", challenge_shape(value), challenge_shape(got[name]))
    body = response.json() if "json" in got.get("content-type", "") else response.text
    recorded_body = recorded["body"]
    if not items:
        recorded_body, body = {**recorded_body, "value": []}, {**body, "value": []}
    for path, (was, now) in recordings.differences(recordings.shape(recorded_body), recordings.shape(body)).items():
        found[f"body.{path}"] = (path, was, now)
    unexplained = {k: v for k, v in found.items() if k not in allow}
    assert not unexplained, f"{record['source']['path']}: differs from Azure where no reason is given: {unexplained}"
    stale = set(allow) - set(found)
    assert not stale, f"allowed differences that no longer differ (remove them): {stale}"


def challenge_shape(header: str) -> dict[str, str]:
    """Key Vault's challenge as the SDKs parse it: the scheme, the parameter names, the resource
    itself, and the authorization's form (an https authority ending in a tenant)."""
    params = recordings.challenge_params(header)
    out = {"scheme": header.partition(" ")[0], "params": ",".join(sorted(params))}
    if "resource" in params:
        out["resource"] = params["resource"]
    if "authorization" in params:
        out["authorization"] = "https-authority/tenant" if re.fullmatch(
            r"https://[^/]+(:\d+)?/[\w.-]+", params["authorization"]) else params["authorization"]
    return out


# --- the devstack side -------------------------------------------------------------------------------
class Vault:
    """The devstack's vault, read the way the SDK reads it."""

    def __init__(self, info: dict[str, Any], admin: Admin):
        self.info, self.admin = info, admin
        self.url = info["vault"]["url"]
        self.http = session(info["ca_bundle"])
        self._token = ""
        self.version = ""  # conformance-secret's older version, set by the fixture

    def token(self, identity: str | None = None) -> str:
        params = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
        if identity:
            params["client_id"] = self.info["managed_identities"][identity]["client_id"]
        r = requests.get(self.info["endpoints"]["identity"], params=params,
                         headers={"X-IDENTITY-HEADER": self.info["identity_header"]}, timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])

    def send(self, record: dict[str, Any], path: str, *, token: str | None = "reader", method: str | None = None,
             query: dict[str, str] | None = None, url: str | None = None) -> requests.Response:
        """The recording's request (method, api-version, x-ms-client-request-id) on the devstack's vault."""
        req = record["request"]
        api = parse_qs(urlsplit(req["url"]).query).get("api-version", ["7.5"])[0]
        headers = {k: v for k, v in req["headers"].items() if k.lower() in ("x-ms-client-request-id",
                                                                              "content-type", "accept")}
        if token == "reader":
            self._token = self._token or self.token()
            headers["Authorization"] = f"Bearer {self._token}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        body = req.get("body")
        if (method or req["method"]) == "PUT" and body is None:
            body = {"value": "conformance"}  # recordings left the body out; Key Vault needs one to set a secret
        return self.http.request(method or req["method"], url or self.url + path,
                                 params=None if url else {"api-version": api, **(query or {})},
                                 json=body if (method or req["method"]) in ("PUT", "POST") else None,
                                 headers=headers, timeout=10)


@pytest.fixture(scope="module")
def vault(devstack: dict[str, Any]) -> Vault:
    v = Vault(devstack, Admin(devstack))
    # The state the recordings had: a secret with an expiry and two versions, a disabled secret.
    v.version = v.admin.post("/keyvault/secret", {"name": "conformance-secret", "value": "one",
                                                  "exp": 2527401600})["version"]
    v.admin.post("/keyvault/secret", {"name": "conformance-secret", "value": "two", "exp": 2527401600})
    v.admin.post("/keyvault/secret", {"name": "conformance-disabled", "value": "x", "enabled": False})
    return v


def cert_version(vault: Vault) -> str:
    r = vault.send({"request": {"method": "GET", "url": "?api-version=7.3", "headers": {}}},
                   "/certificates/middletier-cert")
    return str(r.json()["id"].rsplit("/", 1)[1])


# --- the recordings, each with its equivalent request and what may differ ---------------------------------
Case = tuple[str, str, Callable[[Vault, dict[str, Any]], requests.Response], dict[str, str]]

NO_PEM = ("the devstack's certificate is imported as PKCS#12, the app's format; Key Vault keeps a PEM "
          "policy's secret as application/x-pem-file, the same members and types")

SECRETS: list[Case] = [
    ("azure-sdk-for-cpp", "kv-secret-get-latest",
     lambda v, r: v.send(r, "/secrets/middletier-secret"), {}),
    ("azure-sdk-for-python", "kv-secret-get-latest-slash",
     lambda v, r: v.send(r, "/secrets/conformance-secret/"), {}),
    ("azure-sdk-for-python", "kv-secret-get-by-version",
     lambda v, r: v.send(r, f"/secrets/conformance-secret/{v.version}"), {}),
    ("azure-sdk-for-cpp", "kv-certificate-secret-pfx",
     lambda v, r: v.send(r, f"/secrets/middletier-cert/{cert_version(v)}"), {}),
    ("azure-sdk-for-cpp", "kv-certificate-secret-pem",
     lambda v, r: v.send(r, f"/secrets/middletier-cert/{cert_version(v)}"), {}),
]

ERRORS: list[Case] = [
    ("azure-sdk-for-cpp", "kv-secret-not-found", lambda v, r: v.send(r, "/secrets/no-such-secret"), {}),
    ("azure-sdk-for-js", "kv-secret-not-found-2019", lambda v, r: v.send(r, "/secrets/no-such-secret/"), {}),
    ("azure-sdk-for-cpp", "kv-certificate-not-found", lambda v, r: v.send(r, "/certificates/no-such-cert"), {}),
    ("azure-sdk-for-js", "kv-secret-disabled-403", lambda v, r: v.send(r, "/secrets/conformance-disabled/"), {}),
    ("azure-sdk-for-js", "kv-challenge-401",
     lambda v, r: v.send(r, "/secrets/conformance-secret", token=None), {}),
    ("azure-sdk-for-python", "kv-challenge-401-akv10000",
     lambda v, r: v.send(r, "/secrets/conformance-secret", token=None), {}),
]

LISTS: list[Case] = [
    # maxresults=1 makes the devstack's few secrets span pages, as the recorded vault's 50 did at 25.
    ("azure-sdk-for-cpp", "kv-secret-list-first-page",
     lambda v, r: v.send(r, "/secrets", query={"maxresults": "1"}), {}),
    ("azure-sdk-for-cpp", "kv-secret-list-next-page",
     lambda v, r: v.send(r, "", url=v.send(r, "/secrets", query={"maxresults": "1"}).json()["nextLink"]), {}),
    ("azure-sdk-for-cpp", "kv-secret-list-last-page", lambda v, r: v.send(r, "/secrets"), {}),
    ("azure-sdk-for-cpp", "kv-secret-versions", lambda v, r: v.send(r, "/secrets/conformance-secret/versions"), {}),
]

CERTIFICATES: list[Case] = [
    ("azure-sdk-for-cpp", "kv-certificate-get-latest", lambda v, r: v.send(r, "/certificates/middletier-cert"), {
        "body.pending": "Key Vault issued the recorded certificate (create) and keeps its pending operation; the "
                        "devstack's certificates are imported, and an imported one has none (kv-certificate-import)."
                        " No SDK call the app makes reads it.",
        "body.policy.lifetime_actions": "Key Vault gave the issued certificate its default AutoRenew action; an "
                                        "imported certificate's policy has none ([] in kv-certificate-import). "
                                        "The app never reads the policy."}),
    ("azure-sdk-for-cpp", "kv-certificate-get-version",
     lambda v, r: v.send(r, f"/certificates/middletier-cert/{cert_version(v)}"), {}),
    # The import itself is a write the devstack's identities may not make; the bundle it returns is
    # what an imported certificate looks like, which is what the devstack holds.
    ("azure-sdk-for-cpp", "kv-certificate-import",
     lambda v, r: v.send(r, "/certificates/middletier-cert", method="GET"), {}),
]

WRITES: list[Case] = [
    ("azure-sdk-for-cpp", "kv-secret-set", lambda v, r: v.send(r, "/secrets/conformance-secret"), {
        "status": "the recorded caller could write; the devstack's identities hold Key Vault Secrets User "
                  "(read only), so Key Vault's answer to them is 403 ForbiddenByRbac, which this sends",
        "body.value": "a refusal has no secret bundle (see the body check below)",
        "body.id": "a refusal has no secret bundle", "body.attributes": "a refusal has no secret bundle",
        "body.error": "a refusal has an error body instead, the same shape as kv-secret-disabled-403"}),
]

LIST_PAGES = {n: ["kv-secret-list-first-page", "kv-secret-list-next-page", "kv-secret-list-last-page"]
              for n in ("kv-secret-list-first-page", "kv-secret-list-next-page", "kv-secret-list-last-page")}

ALL = SECRETS + ERRORS + LISTS + CERTIFICATES + WRITES


def _ids(cases: list[Case]) -> list[str]:
    return [f"{s}/{n}" for s, n, _, _ in cases]


@pytest.mark.parametrize("source,name,send,allow", SECRETS, ids=_ids(SECRETS))
def test_secret_reads_conform(vault: Vault, source: str, name: str, send: Any, allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(vault, record)
    assert_conforms(record, response, allow)
    secret = response.json()
    assert secret["id"].startswith(vault.url + "/secrets/") and re.fullmatch(r"[0-9a-f]{32}", secret["id"][-32:])
    assert ("kid" in secret) == ("kid" in record["response"]["body"])  # a certificate's secret names its key


@pytest.mark.parametrize("source,name,send,allow", ERRORS, ids=_ids(ERRORS))
def test_errors_conform(vault: Vault, source: str, name: str, send: Any, allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(vault, record)
    assert_conforms(record, response, allow)
    recorded_error = record["response"]["body"]["error"]
    assert response.json()["error"]["code"] == recorded_error["code"]
    assert response.json()["error"].get("innererror") == recorded_error.get("innererror")
    if response.status_code == 401:
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', response.headers["WWW-Authenticate"]))
        assert challenge == {"authorization": vault.info["authority"], "resource": "https://vault.azure.net"}
        assert response.json()["error"]["message"] == "AKV10000: Request is missing a Bearer or PoP token."


@pytest.mark.parametrize("source,name,send,allow", LISTS, ids=_ids(LISTS))
def test_lists_conform(vault: Vault, source: str, name: str, send: Any, allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(vault, record)
    assert_conforms(record, response, allow, items=False)
    page, recorded = response.json(), record["response"]["body"]
    assert ("nextLink" in page) and (page["nextLink"] is None) == (recorded["nextLink"] is None)
    assert page["value"], "a page the devstack answers has items, as every recorded page has"
    # Every kind of item the emulator lists (plain secret, certificate's secret) has a recorded shape
    # on one of the recorded pages of the same list (the last page held plain secrets only).
    recorded_kinds = {_kind(i) for n in LIST_PAGES.get(name, [name])
                      for i in recordings.load(source, n)["response"]["body"]["value"]}
    assert {_kind(i) for i in page["value"]} <= recorded_kinds, page["value"]


def _kind(item: dict[str, Any]) -> str:
    """An item's shape without attributes.nbf/exp: Key Vault sends those when a secret has them
    (a certificate's secret always; a plain one if set, as kv-secret-get-by-version's was), so they
    tell nothing about the kind of item."""
    shaped = recordings.shape(item)
    shaped["attributes"] = {k: v for k, v in shaped["attributes"].items() if k not in ("nbf", "exp")}
    return json.dumps(shaped, sort_keys=True)  # member order means nothing to a JSON client


def test_paging_reaches_every_secret_once(vault: Vault) -> None:
    """Following nextLink from maxresults=1 lists what one page of 25 lists, each name once."""
    record = recordings.load("azure-sdk-for-cpp", "kv-secret-list-first-page")
    whole = vault.send(record, "/secrets").json()["value"]
    names, url = [], None
    response = vault.send(record, "/secrets", query={"maxresults": "1"})
    while True:
        page = response.json()
        names += [item["id"] for item in page["value"]]
        url = page["nextLink"]
        if url is None:
            break
        assert "$skiptoken=" in url and url.startswith(vault.url + "/secrets?")
        response = vault.send(record, "", url=url)
    assert names == [item["id"] for item in whole] and len(set(names)) == len(names) >= 3
    assert vault.send(record, "/secrets", query={"maxresults": "26"}).status_code == 400  # Key Vault's limit is 25


@pytest.mark.parametrize("source,name,send,allow", CERTIFICATES, ids=_ids(CERTIFICATES))
def test_certificates_conform(vault: Vault, source: str, name: str, send: Any, allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(vault, record)
    assert_conforms(record, response, allow)
    cert = response.json()
    version = cert["id"].rsplit("/", 1)[1]
    assert cert["sid"] == f"{vault.url}/secrets/middletier-cert/{version}"
    assert cert["kid"] == f"{vault.url}/keys/middletier-cert/{version}"


@pytest.mark.parametrize("source,name,send,allow", WRITES, ids=_ids(WRITES))
def test_writes_are_refused_as_key_vault_refuses_a_reader(vault: Vault, source: str, name: str, send: Any,
                                                          allow: dict[str, str]) -> None:
    record = recordings.load(source, name)
    response = send(vault, record)
    assert_conforms(record, response, allow)
    assert response.status_code == 403 and response.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    assert "secrets/setSecret/action" in response.json()["error"]["message"]
    refusal = recordings.load("azure-sdk-for-js", "kv-secret-disabled-403")["response"]["body"]
    assert recordings.shape(response.json()) == recordings.shape(refusal)
    # The write was refused: the secret still has the value it had.
    assert vault.send(record, "/secrets/conformance-secret", method="GET").json()["value"] == "two"


def test_every_key_vault_recording_is_held() -> None:
    held = {(s, n) for s, n, _, _ in ALL}
    on_disk = {(s, n) for s, n in recordings.every() if n.startswith("kv-")}
    assert on_disk == held, f"recordings without a test: {on_disk - held}; tests without a recording: {held - on_disk}"
    assert len(held) >= 15


def test_client_request_id_is_echoed(vault: Vault) -> None:
    record = recordings.load("azure-sdk-for-cpp", "kv-secret-get-latest")
    rid = str(uuid.uuid4())
    record = {**record, "request": {**record["request"], "headers": {"x-ms-client-request-id": rid}}}
    response = vault.send(record, "/secrets/middletier-secret")
    assert response.headers["x-ms-client-request-id"] == rid
    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["x-ms-request-id"])


def test_the_sdk_follows_the_emulators_next_links(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-keyvault-secrets pages with maxresults and follows nextLink as it does on Key Vault."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient
    monkeypatch.setenv("IDENTITY_ENDPOINT", vault.info["endpoints"]["identity"])
    monkeypatch.setenv("IDENTITY_HEADER", vault.info["identity_header"])
    client = SecretClient(vault.url, ManagedIdentityCredential(), verify_challenge_resource=False,
                          connection_verify=vault.info["ca_bundle"])
    pages = list(client.list_properties_of_secrets(max_page_size=1).by_page())
    names = [p.name for page in pages for p in page]
    whole = vault.send(recordings.load("azure-sdk-for-cpp", "kv-secret-list-first-page"), "/secrets").json()["value"]
    assert len(pages) == len(whole) >= 3
    assert names == [item["id"].rsplit("/", 1)[1] for item in whole]
    versions = [p.version for p in client.list_properties_of_secret_versions("conformance-secret", max_page_size=1)]
    assert len(versions) == 2 and vault.version in versions
