"""shared/config.py: settings parsed from the environment, and a bad setting named by its key,
never by its value; each setting declared once, and the README's table is that declaration."""
from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Iterator

import pytest

from devstack.launch import ROOT
from shared.config import (READERS, KeyVaultSettings, Settings, TelemetrySettings, TokenCacheSettings, _get, _number,
                           load, load_settings)
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


def test_key_vault_is_its_own_section() -> None:
    s = load_settings(env(KeyVault__TimeoutSeconds="5", KeyVault__VerifyChallengeResource="false"))
    assert (s.key_vault.read_timeout, s.key_vault.connect_timeout, s.key_vault.verify_challenge_resource) == \
        (5.0, 3.05, False)
    with pytest.raises(ConfigurationError) as err:
        load_settings(env(KeyVault__ConnectTimeoutSeconds="61"))
    assert err.value.key == "KeyVault__ConnectTimeoutSeconds"


def test_a_section_left_unset_is_its_declared_defaults() -> None:
    """Each default is written once, in the declaration: a section read from nothing is its class's defaults."""
    for section in (KeyVaultSettings, TokenCacheSettings, TelemetrySettings):
        assert load(section, {}) == section()
    settings = load_settings(env())
    assert settings.token_cache == TokenCacheSettings() and settings.key_vault == KeyVaultSettings()


@pytest.mark.parametrize("values,source", [
    ({}, None), ({"PYTHON_ENABLE_OPENTELEMETRY": "True "}, "PYTHON_ENABLE_OPENTELEMETRY"),
    ({"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"),
    ({"MiddleTier__Telemetry": "OTEL"}, "MiddleTier__Telemetry"),
    ({"PYTHON_ENABLE_OPENTELEMETRY": "1", "MiddleTier__Telemetry": "yes"}, None),  # off, never an error
])
def test_telemetry_is_turned_on_by_the_worker_or_our_opt_in(values: dict[str, str], source: str | None) -> None:
    assert load(TelemetrySettings, values).enabled_by == source


@pytest.mark.parametrize("value,size", [("8", 8), ("", 0), ("many", 0), ("-1", 0)])
def test_the_worker_thread_pool_is_read_as_the_worker_reads_it(value: str, size: int) -> None:
    assert load_settings(env(PYTHON_THREADPOOL_THREAD_COUNT=value)).thread_pool_size == size


def test_the_readme_settings_table_is_the_declaration() -> None:
    """Every declared setting has its README row, in the declaration's order, with its default and bounds;
    every row is a declared setting."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| setting | meaning | default (bounds) |"):].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [(cells[0].strip("`"), cells[2]) for cells in rows] == list(documented(Settings))


def documented(cls: type) -> Iterator[tuple[str, str]]:
    """(key, default and bounds as the README shows them) of every setting ``cls`` declares."""
    def number(x: float) -> str:
        return f"{int(x):,}" if x == int(x) else f"{x:g}"
    for f in fields(cls):
        m = f.metadata
        if "section" in m:
            yield from documented(m["section"])
        elif "key" in m:
            d, limits = f.default, m["limits"]
            shown = "required" if d is MISSING else "" if d in (None, (), "") else f"`{str(d).lower()}`" \
                if isinstance(d, bool) else f"`{number(d)}`" if isinstance(d, (int, float)) else \
                f"`{' '.join(d)}`" if isinstance(d, tuple) else f"`{d}`"
            if "choices" in limits:
                shown += f" ({', '.join(limits['choices'])})"
            elif (m["read"] or READERS.get(f.type, _get)) is _number:
                bounds = {**(_number.__kwdefaults__ or {}), **limits}
                shown += f" ({number(bounds['minimum'])}–{number(bounds['maximum'])})"
            yield m["key"], shown
