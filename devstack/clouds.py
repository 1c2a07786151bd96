"""The national clouds the devstack can stand in for: each one's host names and identifiers.

A devstack process emulates one cloud (``python -m devstack up --cloud AzureChinaCloud``). The
differences that reach an app are its authority host, the v1 token issuer (read by apps from the
v1 metadata document), Microsoft Graph's host, Key Vault's domain (the Key Vault challenge's
``resource`` and the vault host's suffix, which the Key Vault SDK compares) and the audience of a
managed identity's token used as a federated credential. Values from Microsoft's national-cloud
documentation (Microsoft Graph "national cloud deployments", Key Vault "about keys, secrets and
certificates" DNS suffixes, workload identity federation's token-exchange audiences) and Entra's
v1 metadata documents.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str                 # as `az cloud show` and Bicep's environment().name spell it
    login: str                # the authority host
    v1_sts: str               # the v1 issuer's prefix
    graph: str                # Microsoft Graph's base URL (and its App ID URI)
    keyvault_domain: str      # vaults are <name>.<domain>; the challenge resource is https://<domain>
    token_exchange: str       # a federated credential's audience

    @property
    def keyvault_resource(self) -> str:
        return f"https://{self.keyvault_domain}"

    def production_names(self) -> dict[str, list[str]]:
        """The public host names of this cloud's services, ``{vault}`` standing for the vault's name."""
        return {"entra": [self.login], "graph": [self.graph.split("://", 1)[1]],
                "keyvault": ["{vault}." + self.keyvault_domain]}


CLOUDS = {c.name: c for c in (
    Cloud("AzureCloud", "login.microsoftonline.com", "https://sts.windows.net/", "https://graph.microsoft.com",
          "vault.azure.net", "api://AzureADTokenExchange"),
    Cloud("AzureUSGovernment", "login.microsoftonline.us", "https://sts.windows.net/", "https://graph.microsoft.us",
          "vault.usgovcloudapi.net", "api://AzureADTokenExchangeUSGov"),
    Cloud("AzureChinaCloud", "login.chinacloudapi.cn", "https://sts.chinacloudapi.cn/",
          "https://microsoftgraph.chinacloudapi.cn", "vault.azure.cn", "api://AzureADTokenExchangeChina"),
)}
PUBLIC = CLOUDS["AzureCloud"]
_active = [PUBLIC]


def use(name: str) -> Cloud:
    """Emulate cloud ``name`` in this process (one cloud per devstack process)."""
    try:
        _active[0] = CLOUDS[name]
    except KeyError:
        raise ValueError(f"unknown cloud {name!r}: one of {', '.join(CLOUDS)}") from None
    return _active[0]


def active() -> Cloud:
    return _active[0]
