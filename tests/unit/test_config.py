"""shared/config.py: settings parsed from the environment, and a bad setting named by its key,
never by its value."""
from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ConfigurationError
from tests.fakes import CLIENT, INSTANCE, TENANT, env


def test_settings_parse_lists_and_credentials() -> None:
    s = load_settings(env(**{"DownstreamApis__Graph__BaseUrl": "https://graph.example.test/v1.0",
                             "DownstreamApis__Graph__Scopes__0": "https://graph.microsoft.com/User.Read",
                             "DownstreamApis__Graph__Scopes__1": "https://graph.microsoft.com/Mail.Read",
                             "AzureAd__ClientCredentials__0__SourceType": "Path",
                             "AzureAd__ClientCredentials__0__CertificateDiskPath": "/x.pfx"}))
    assert s.azure_ad.audiences == (CLIENT, "api://middletier")
    assert s.azure_ad.authority == INSTANCE + TENANT
    assert s.downstream_api("Graph").scopes == ("https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read")
    assert [c.source_type for c in s.azure_ad.credentials] == ["Path", "ClientSecret"]


@pytest.mark.parametrize("overrides,key", [
    ({"AzureAd__ClientId": "not-a-guid"}, "AzureAd__ClientId"),
    ({"AzureAd__TenantId": ""}, "AzureAd__TenantId"),
    ({"AzureAd__Instance": "http://login.example.test/"}, "AzureAd__Instance"),
    ({"AzureAd__Scopes": ""}, "AzureAd__Scopes"),
    ({"AzureAd__TimeoutSeconds": "soon"}, "AzureAd__TimeoutSeconds"),
    ({"AzureAd__DisableInstanceDiscovery": "maybe"}, "AzureAd__DisableInstanceDiscovery"),
    ({"DownstreamApis__Graph__BaseUrl": "ftp://x"}, "DownstreamApis__Graph__BaseUrl"),
])
def test_bad_settings_name_the_key_never_the_value(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings(env(**overrides))
    assert err.value.key == key
    for value in overrides.values():
        if value:
            assert value not in err.value.detail
    assert "s3cret-value" not in err.value.detail


def test_client_capabilities_default_to_cp1() -> None:
    assert load_settings(env()).azure_ad.client_capabilities == ("cp1",)
    assert load_settings(env(AzureAd__ClientCapabilities="none")).azure_ad.client_capabilities == ()
    assert load_settings(env(AzureAd__ClientCapabilities__0="cp1", AzureAd__ClientCapabilities__1="cp2")
                         ).azure_ad.client_capabilities == ("cp1", "cp2")
