"""The per-process app context: unresolved Key Vault references, a shared cache without a usable
key (L1 only, never plaintext outside the process), and recovery from configuration errors."""
from __future__ import annotations

import base64
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from shared import context
from shared.config import load_settings
from shared.errors import ConfigurationError

REFERENCE = "@Microsoft.KeyVault(VaultName=middletier-kv;SecretName=token-cache-key)"
KEY = base64.b64encode(bytes(range(32))).decode()


def env(**extra: str) -> dict[str, str]:
    base = {"AzureAd__Instance": "https://login.example.test/", "AzureAd__TenantId": "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f",
            "AzureAd__ClientId": "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b", "AzureAd__Scopes": "access_as_user",
            "AzureAd__ClientSecret": "s3cret-value",
            "TokenCache__L2": "redis", "TokenCache__RedisConnectionString": "redis://127.0.0.1:1/0"}
    base.update(extra)
    return base


def test_an_unresolved_key_vault_reference_names_its_setting() -> None:
    """App Service leaves the reference text when it can't resolve it; it must never be used as a value."""
    with pytest.raises(ConfigurationError) as err:
        load_settings(env(AzureAd__ClientSecret=REFERENCE))
    assert err.value.key == "AzureAd__ClientSecret" and "unresolved Key Vault reference" in err.value.detail
    assert "SecretName" not in err.value.detail


@pytest.mark.parametrize("value,problem", [(None, "is required"), (REFERENCE, "unresolved Key Vault reference"),
                                           ("dG9vIHNob3J0", "32 bytes"), ("not base64!", "32 bytes")])
def test_a_shared_cache_without_a_usable_key_is_switched_off(value: str | None, problem: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    values = env() if value is None else env(TokenCache__EncryptionKey=value)
    settings = load_settings(values)  # the app still starts
    assert settings.token_cache.encryption_key is None
    assert "TokenCache__EncryptionKey" in str(settings.token_cache.l2_disabled_reason)
    assert problem in str(settings.token_cache.l2_disabled_reason)
    with caplog.at_level(logging.ERROR, logger="middletier"):
        layers = context.build_token_cache(settings.token_cache)
    assert layers.l2 is None and layers.sealer is None  # L1 only: nothing leaves the process
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "TokenCache__EncryptionKey" in logged and "OFF" in logged
    assert value is None or value not in logged


def test_a_usable_key_keeps_the_shared_cache() -> None:
    settings = load_settings(env(TokenCache__EncryptionKey=KEY))
    assert settings.token_cache.l2_disabled_reason is None
    layers = context.build_token_cache(settings.token_cache)
    assert layers.l2 is not None and layers.sealer is not None


def test_a_configuration_error_is_retried_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken setting is answered from memory for a while (logged once), then read again."""
    now = [1000.0]
    calls: list[int] = []
    outcome: list[Any] = [ConfigurationError("AzureAd__ClientId", "is required")]

    def build() -> Any:
        calls.append(1)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(context, "build_context", build)
    monkeypatch.setattr(context, "_context", None)  # both restored after the test
    monkeypatch.setattr(context, "_failure", None)
    for _ in range(3):
        with pytest.raises(ConfigurationError):
            context.app_context(clock=lambda: now[0])
    assert len(calls) == 1
    built = SimpleNamespace(settings=SimpleNamespace(downstream={}))  # no downstream API: no credential prefetch
    outcome[0] = built
    now[0] += context.CONFIGURATION_RETRY_SECONDS - 1
    with pytest.raises(ConfigurationError):
        context.app_context(clock=lambda: now[0])
    now[0] += 2
    assert context.app_context(clock=lambda: now[0]) is built
    assert len(calls) == 2


@pytest.mark.parametrize("key", ["AzureAd__ClientCredentials__0__ClientSecret",
                                 "AzureAd__ClientCredentials__0__Base64EncodedValue"])
def test_unresolved_references_in_credential_descriptions_are_refused(key: str) -> None:
    source = "ClientSecret" if key.endswith("ClientSecret") else "Base64Encoded"
    with pytest.raises(ConfigurationError) as err:
        load_settings(env(**{"AzureAd__ClientCredentials__0__SourceType": source, key: REFERENCE.lower()}))
    assert err.value.key == key and "unresolved Key Vault reference" in err.value.detail


def test_an_unresolved_redis_connection_string_costs_the_shared_cache_only() -> None:
    settings = load_settings(env(TokenCache__RedisConnectionString=REFERENCE, TokenCache__EncryptionKey=KEY,
                                 TokenCache__L1MaxEntries="77"))
    tc = settings.token_cache
    assert "TokenCache__RedisConnectionString" in str(tc.l2_disabled_reason) and tc.l1_max_entries == 77
    assert context.build_token_cache(tc).l2 is None


def test_client_capabilities_none_stands_alone() -> None:
    assert load_settings(env(AzureAd__ClientCapabilities="none")).azure_ad.client_capabilities == ()
    with pytest.raises(ConfigurationError):
        load_settings(env(AzureAd__ClientCapabilities="none cp1"))
