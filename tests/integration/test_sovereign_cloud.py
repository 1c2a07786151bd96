"""A national cloud end to end: the app, unchanged, against a devstack emulating Azure China.

Everything that differs by cloud comes from settings or from Entra's own documents: the authority
(`login.chinacloudapi.cn`), the v1 issuer (`https://sts.chinacloudapi.cn/{tid}/`, which the app
reads from the v1 metadata document instead of a constant), Graph
(`microsoftgraph.chinacloudapi.cn`), Key Vault's domain (`vault.azure.cn`, checked by the Key Vault
SDK against the challenge's resource) and a federated credential's audience
(`api://AzureADTokenExchangeChina`). Instance discovery and challenge verification stay on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest

from devstack.launch import Admin, HostFactory, start_devstack, stop

from .test_middletier_api import call


@pytest.fixture(scope="module")
def china(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Admin]]:
    proc, info = start_devstack(tmp_path_factory.mktemp("china-devstack"), "--cloud", "AzureChinaCloud",
                                "--production-names")
    yield info, Admin(info)
    stop(proc)


def settings_of(host: dict[str, Any]) -> dict[str, str]:
    return json.loads((Path(host["log"]).parent / "local.settings.json").read_text())["Values"]


def test_the_devstack_is_the_china_cloud(china: tuple[dict[str, Any], Admin]) -> None:
    info, admin = china
    tid = info["tenant_id"]
    assert info["cloud"] == "AzureChinaCloud"
    assert info["authority"] == f"https://login.chinacloudapi.cn/{tid}"
    assert info["endpoints"]["graph"] == "https://microsoftgraph.chinacloudapi.cn"
    assert info["vault"]["url"] == "https://middletier-kv.vault.azure.cn"
    v1 = admin.mint(user="alice", claims={"ver": "1.0", "iss": f"https://sts.chinacloudapi.cn/{tid}/"})
    assert jwt.decode(v1, options={"verify_signature": False})["iss"].startswith("https://sts.chinacloudapi.cn/")


@pytest.mark.parametrize("credential", ["keyvault-certificate", "federated"])
def test_the_app_works_unchanged_in_the_china_cloud(china: tuple[dict[str, Any], Admin], host_factory: HostFactory,
                                                    credential: str) -> None:
    info, admin = china
    host = host_factory(info, credential=credential, AzureAd__AccessTokenVersions="1.0 2.0")
    values = settings_of(host)
    assert values["AzureAd__Instance"] == "https://login.chinacloudapi.cn/"
    assert "AzureAd__DisableInstanceDiscovery" not in values and "KeyVault__VerifyChallengeResource" not in values
    assert values["DownstreamApis__Graph__Scopes"] == "https://microsoftgraph.chinacloudapi.cn/User.Read"
    if credential == "federated":
        assert values["AzureAd__ClientCredentials__0__TokenExchangeUrl"] == "api://AzureADTokenExchangeChina"
    r = call(host, admin.mint(user="alice"))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == info["users"]["alice"]["oid"]


def test_v1_tokens_are_checked_against_the_clouds_own_issuer(china: tuple[dict[str, Any], Admin],
                                                             host_factory: HostFactory) -> None:
    """The app learns `https://sts.chinacloudapi.cn/{tid}/` from the v1 metadata: the public
    cloud's `https://sts.windows.net/{tid}/` is refused there, whatever else the token has right."""
    info, admin = china
    tid = info["tenant_id"]
    host = host_factory(info, credential="secret", AzureAd__AccessTokenVersions="1.0 2.0")
    audience = info["apps"]["middletier-api"]["identifier_uris"][0]
    good = admin.mint(user="bob", claims={"ver": "1.0", "iss": f"https://sts.chinacloudapi.cn/{tid}/", "aud": audience})
    public = admin.mint(user="bob", claims={"ver": "1.0", "iss": f"https://sts.windows.net/{tid}/", "aud": audience})
    assert call(host, good).status_code == 200
    refused = call(host, public)
    assert refused.status_code == 401 and "issuer" in refused.json()["detail"]
