"""Production defaults, end to end: instance discovery on, Key Vault's challenge verification on.

Every other test turns both off (``AzureAd__DisableInstanceDiscovery=true``,
``KeyVault__VerifyChallengeResource=false``) because the devstack listens on ``127.0.0.1:<port>``.
Here the devstack serves under Microsoft's names (``up --production-names``): the Entra emulator is
``login.microsoftonline.com`` (and answers ``/common/discovery/instance`` as Entra does), Graph is
``graph.microsoft.com``, the vault ``middletier-kv.vault.azure.net``. The function host resolves those
names to the emulators inside its own process (``DEVSTACK_RESOLVE``, devstack/resolve.py); no system
file changes. The app runs with the settings it has on Azure, left at their defaults.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import jwt
import msal
import pytest
import requests

from devstack import resolve
from devstack.client import session
from devstack.launch import Admin, start_devstack, stop

from .test_middletier_api import call

# A look-alike of the vault's name that is not under vault.azure.net: a host that answers with Key
# Vault's own challenge (resource https://vault.azure.net) to be handed a vault token.
LOOKALIKE_VAULT = "middletier-kv.vault.azure.net.attacker.test"


@pytest.fixture(scope="module")
def public_devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Admin]]:
    proc, info = start_devstack(tmp_path_factory.mktemp("public-devstack"), "--production-names",
                                "--name", f"keyvault={LOOKALIKE_VAULT}")
    yield info, Admin(info)
    stop(proc)


def stat(admin: Admin, endpoint: str, label: str, value: str) -> int:
    return admin.stats().get(endpoint, {}).get(f"by_{label}", {}).get(value, 0)


def settings_of(host: dict[str, Any]) -> dict[str, str]:
    return json.loads((Path(host["log"]).parent / "local.settings.json").read_text())["Values"]


def test_the_devstack_serves_under_microsofts_names(public_devstack: tuple[dict[str, Any], Admin]) -> None:
    info, _ = public_devstack
    tid = info["tenant_id"]
    assert info["authority"] == f"https://login.microsoftonline.com/{tid}"
    assert info["vault"]["url"] == "https://middletier-kv.vault.azure.net"
    assert info["endpoints"]["graph"] == "https://graph.microsoft.com"
    mapping = resolve.parse(info["resolve"])
    ports = {name: target[1] for name, target in mapping.items()}
    assert ports["login.microsoftonline.com"] == int(info["loopback"]["entra"].rsplit(":", 1)[1])
    assert ports["middletier-kv.vault.azure.net"] == ports[LOOKALIKE_VAULT] \
        == int(info["loopback"]["keyvault"].rsplit(":", 1)[1])
    with resolve.mapped(info["resolve"]):  # TLS to the real name verifies against the local CA
        config = session(info["ca_bundle"]).get(info["endpoints"]["openid_configuration"], timeout=10).json()
    assert config["issuer"] == f"https://login.microsoftonline.com/{tid}/v2.0"
    assert config["token_endpoint"] == f"https://login.microsoftonline.com/{tid}/oauth2/v2.0/token"


def test_me_with_discovery_and_challenge_verification_on(public_devstack: tuple[dict[str, Any], Admin],
                                                         host_factory: Any) -> None:
    info, admin = public_devstack
    tid = info["tenant_id"]
    host = host_factory(info)
    values = settings_of(host)
    # The settings as infra/main.bicep writes them: real names, both switches at their defaults.
    assert values["AzureAd__Instance"] == "https://login.microsoftonline.com/"
    assert values["AzureAd__ClientCredentials__0__KeyVaultUrl"] == "https://middletier-kv.vault.azure.net"
    assert values["DownstreamApis__Graph__BaseUrl"] == "https://graph.microsoft.com/v1.0"
    assert "AzureAd__DisableInstanceDiscovery" not in values
    assert "KeyVault__VerifyChallengeResource" not in values

    minted = admin.post("/mint", {"user": "alice"})
    assert minted["claims"]["iss"] == f"https://login.microsoftonline.com/{tid}/v2.0"
    before = admin.stats()
    r = call(host, minted["access_token"])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == info["users"]["alice"]["oid"]

    after = admin.stats()

    def delta(endpoint: str, label: str, value: str) -> int:
        return (after.get(endpoint, {}).get(f"by_{label}", {}).get(value, 0)
                - before.get(endpoint, {}).get(f"by_{label}", {}).get(value, 0))

    # MSAL asked login.microsoftonline.com for the instance metadata (aliases), as it does in Azure.
    assert delta("entra.instance_discovery", "outcome", "200") >= 1
    assert delta("entra.instance_discovery", "host", "login.microsoftonline.com") >= 1
    # The certificate came from the vault under its real name, after the challenge was verified.
    assert delta("keyvault.get", "host", "middletier-kv.vault.azure.net") >= 2  # challenge (401), then the read
    assert delta("keyvault.get", "outcome", "401") >= 1
    assert delta("keyvault.get", "secret", "middletier-cert") == 1
    assert delta("identity.token", "resource", "https://vault.azure.net") == 1
    assert delta("entra.token", "grant", "on_behalf_of") == 1
    # Repeat calls: served from the cache, no second discovery or vault read.
    assert call(host, minted["access_token"]).status_code == 200
    assert stat(admin, "entra.instance_discovery", "outcome", "200") == \
        after["entra.instance_discovery"]["by_outcome"]["200"]


def test_a_vault_url_outside_the_challenge_domain_is_refused(public_devstack: tuple[dict[str, Any], Admin],
                                                             host_factory: Any) -> None:
    """The SDK's check is on: a host that answers with Key Vault's challenge but is not under
    vault.azure.net gets no token; the app answers 5xx, and no token was even requested."""
    info, admin = public_devstack
    host = host_factory(info, AzureAd__ClientCredentials__0__KeyVaultUrl=f"https://{LOOKALIKE_VAULT}/")
    assert "KeyVault__VerifyChallengeResource" not in settings_of(host)
    vault_tokens = stat(admin, "identity.token", "resource", "https://vault.azure.net")
    reads = stat(admin, "keyvault.get", "outcome", "200")
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 500, r.text  # mapped by the app: the vault URL setting is wrong
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["error"] == "configuration_error"
    assert r.json()["setting"] == "AzureAd__ClientCredentials__0__KeyVaultUrl"
    # The look-alike was asked (and challenged) without a token; no token was fetched for it.
    assert stat(admin, "keyvault.get", "host", LOOKALIKE_VAULT) >= 1
    assert stat(admin, "identity.token", "resource", "https://vault.azure.net") == vault_tokens
    assert stat(admin, "keyvault.get", "outcome", "200") == reads
    log = Path(host["log"]).read_text()
    assert "does not match the requested domain" in log, log[-2000:]  # the SDK's own refusal
    assert "unhandled" not in log
    # The control: with the check off (as every loopback test runs), the look-alike gets the token.
    unchecked = host_factory(info, AzureAd__ClientCredentials__0__KeyVaultUrl=f"https://{LOOKALIKE_VAULT}/",
                             KeyVault__VerifyChallengeResource="false")
    assert call(unchecked, admin.mint(user="alice")).status_code == 200
    assert stat(admin, "identity.token", "resource", "https://vault.azure.net") == vault_tokens + 1


def test_msal_validates_authorities_against_the_emulator(public_devstack: tuple[dict[str, Any], Admin]) -> None:
    """Unmodified MSAL, instance discovery on, in this process: a known authority works (aliases
    from /common/discovery/instance), an unknown one is refused with Entra's invalid_instance."""
    info, admin = public_devstack
    mt = info["apps"]["middletier-api"]
    with resolve.mapped(info["resolve"]):
        http = session(info["ca_bundle"])
        app = msal.ConfidentialClientApplication(mt["client_id"], client_credential=mt["secrets"][0],
                                                 authority=info["authority"], http_client=http)
        before = stat(admin, "entra.instance_discovery", "outcome", "200")
        assert app.get_accounts() == []  # looks up the authority's aliases
        assert stat(admin, "entra.instance_discovery", "outcome", "200") == before + 1
        result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
        assert "access_token" in result, result.get("error_description")
        assert jwt.decode(result["access_token"], options={"verify_signature": False})["iss"] \
            == f"https://sts.windows.net/{info['tenant_id']}/"
        refused = stat(admin, "entra.instance_discovery", "outcome", "AADSTS50049")
        with pytest.raises(ValueError, match="invalid_instance"):
            msal.ConfidentialClientApplication(mt["client_id"], client_credential=mt["secrets"][0],
                                               authority=f"https://login.contoso.test/{info['tenant_id']}",
                                               http_client=http)
        assert stat(admin, "entra.instance_discovery", "outcome", "AADSTS50049") == refused + 1


def test_instance_discovery_answers_as_entra(public_devstack: tuple[dict[str, Any], Admin]) -> None:
    info, _ = public_devstack
    url = "https://login.microsoftonline.com/common/discovery/instance"
    with resolve.mapped(info["resolve"]):
        http = session(info["ca_bundle"])

        def get(**params: str) -> requests.Response:
            return http.get(url, params=params, timeout=10)

        # MSAL's alias lookup: api-version 1.1, the v1 authorize endpoint of the common tenant.
        r = get(**{"api-version": "1.1",
                   "authorization_endpoint": "https://login.microsoftonline.com/common/oauth2/authorize"})
        assert r.status_code == 200
        body = r.json()
        assert body["tenant_discovery_endpoint"] == \
            "https://login.microsoftonline.com/common/.well-known/openid-configuration"
        assert body["api-version"] == "1.1"
        public = next(g for g in body["metadata"] if "login.microsoftonline.com" in g["aliases"])
        assert public == {"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
                          "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com",
                                      "sts.windows.net"]}
        # Authority validation: api-version 1.0, a tenant's v2.0 authorize endpoint; the endpoint alone.
        tid = info["tenant_id"]
        r = get(**{"api-version": "1.0",
                   "authorization_endpoint": f"https://login.microsoftonline.com/{tid}/oauth2/v2.0/authorize"})
        assert r.json() == {"tenant_discovery_endpoint":
                            f"https://login.microsoftonline.com/{tid}/v2.0/.well-known/openid-configuration"}
        # An alias of the public cloud is known too.
        assert get(**{"api-version": "1.1",
                      "authorization_endpoint": f"https://login.windows.net/{tid}/oauth2/v2.0/authorize"}
                   ).status_code == 200
        # What Entra refuses.
        unknown = get(**{"api-version": "1.1",
                         "authorization_endpoint": f"https://login.contoso.test/{tid}/oauth2/v2.0/authorize"})
        assert unknown.status_code == 400
        err = unknown.json()
        assert err["error"] == "invalid_instance" and err["error_codes"] == [50049]
        assert err["error_description"].startswith("AADSTS50049: Unknown or invalid instance.")
        for params in ({"authorization_endpoint": f"https://login.microsoftonline.com/{tid}/oauth2/v2.0/authorize"},
                       {"api-version": "1.1"},
                       {"api-version": "1.1", "authorization_endpoint": "http://login.microsoftonline.com/x"}):
            bad = get(**params)
            assert bad.status_code == 400 and bad.json()["error"] == "invalid_request", params
        assert http.get("https://login.microsoftonline.com/" + tid + "/discovery/instance",
                        params={"api-version": "1.1"}, timeout=10).status_code == 404


def test_loopback_devstack_knows_only_itself(devstack: dict[str, Any]) -> None:
    """Without public names the emulator is an instance of its own: it validates its own host and
    refuses login.microsoftonline.com, which it does not serve (nothing may leave for Azure)."""
    http = session(devstack["ca_bundle"])
    host = devstack["instance"].split("//", 1)[1]
    url = devstack["instance"] + "/common/discovery/instance"
    own = http.get(url, params={"api-version": "1.1", "authorization_endpoint":
                                f"{devstack['authority']}/oauth2/v2.0/authorize"}, timeout=10)
    assert own.status_code == 200
    assert own.json()["metadata"] == [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]
    microsoft = http.get(url, params={"api-version": "1.1", "authorization_endpoint":
                                      "https://login.microsoftonline.com/common/oauth2/authorize"}, timeout=10)
    assert microsoft.status_code == 400 and microsoft.json()["error"] == "invalid_instance"
