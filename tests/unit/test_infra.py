"""Offline checks of infra/ (no Bicep compiler can be installed from the registries here)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from shared.config import load_settings

from ..conftest import ROOT

BICEP = (ROOT / "infra" / "main.bicep").read_text()


def test_the_template_has_what_the_app_needs() -> None:
    for resource in ("Microsoft.Web/sites@", "Microsoft.KeyVault/vaults@", "Microsoft.Storage/storageAccounts@",
                     "Microsoft.Insights/components@", "Microsoft.Authorization/roleAssignments@",
                     "Microsoft.Cache/redis@"):
        assert f"'{resource}" in BICEP, resource
    assert "type: 'SystemAssigned'" in BICEP and "enableRbacAuthorization: true" in BICEP
    assert "4633458b-17de-408a-b874-0445c86b69e6" in BICEP  # Key Vault Secrets User
    assert "linuxFxVersion: 'Python|3.11'" in BICEP and "httpsOnly: true" in BICEP


def test_the_template_sets_valid_app_settings() -> None:
    """Every literal app setting in the template must load with the app's own settings parser."""
    settings = dict(re.findall(r"\{ name: '([A-Za-z0-9_]+)', value: '([^'$]*)' \}", BICEP))
    settings.update({"AzureAd__Instance": "https://login.microsoftonline.com/",
                     "AzureAd__TenantId": "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f",
                     "AzureAd__ClientId": "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b",
                     "TokenCache__L2": "none"})
    loaded = load_settings(settings)
    assert loaded.azure_ad.token_versions == ("2.0",)
    assert loaded.downstream_api("Graph").scopes == ("https://graph.microsoft.com/User.Read",)
    for needed in ("AzureAd__ClientId", "AzureAd__TenantId", "AzureAd__ClientCredentials__0__SourceType",
                   "DownstreamApis__Graph__BaseUrl", "TokenCache__EncryptionKey", "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        assert f"name: '{needed}'" in BICEP, needed


def test_registration_script_parses_and_covers_the_setup() -> None:
    script = (ROOT / "infra" / "app-registrations.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "infra" / "app-registrations.sh")], check=True)
    for step in ("access_as_user", "requestedAccessTokenVersion", "preAuthorizedApplications", "admin-consent",
                 "federated-credential create", "api://AzureADTokenExchange", "--is-fallback-public-client"):
        assert step in script, step


@pytest.mark.skipif(shutil.which("bicep") is None and shutil.which("az") is None,
                    reason="no Bicep compiler on this machine (it is not on PyPI, npm or Debian)")
def test_bicep_compiles() -> None:  # pragma: no cover - runs where bicep or az exists
    cmd = ["bicep", "build", "--stdout"] if shutil.which("bicep") else ["az", "bicep", "build", "--stdout", "-f"]
    subprocess.run(cmd + [str(ROOT / "infra" / "main.bicep")], check=True, capture_output=True)
