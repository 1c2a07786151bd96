"""A ``local.settings.json`` wired to a running devstack, as a user would write one by hand: only settings,
the same keys the app uses for Entra ID. ``REQUESTS_CA_BUNDLE`` is the combined bundle (machine roots +
local CA), so MSAL, azure-core and requests trust the local HTTPS endpoints without code changes.

A devstack under public names (``up --production-names``) gets production values: Microsoft's host names,
and neither ``AzureAd__DisableInstanceDiscovery`` (the Entra emulator answers instance discovery as
``login.microsoftonline.com``) nor ``KeyVault__VerifyChallengeResource`` (the vault is under
``*.vault.azure.net``); the host process then needs ``DEVSTACK_RESOLVE`` (``devstack.resolve.environment``).
"""
from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from typing import Any

from .clouds import CLOUDS, PUBLIC

CREDENTIALS = ("keyvault-certificate", "keyvault-secret", "federated", "secret")


def credential_settings(info: dict[str, Any], kind: str = "keyvault-certificate") -> dict[str, str]:
    """``AzureAd__ClientCredentials__0__*`` for one way of loading the middle tier's credential; the
    default reads the certificate from Key Vault with the managed identity: no secret in the file."""
    vault = info["vault"]["url"]
    if kind == "keyvault-certificate":
        fields = {"SourceType": "KeyVault", "KeyVaultUrl": vault, "KeyVaultCertificateName": "middletier-cert"}
    elif kind == "keyvault-secret":
        fields = {"SourceType": "KeyVaultSecret", "KeyVaultUrl": vault, "KeyVaultSecretName": "middletier-secret"}
    elif kind == "federated":
        exchange = CLOUDS[info.get("cloud", PUBLIC.name)].token_exchange
        fields = {"SourceType": "SignedAssertionFromManagedIdentity",
                  **({"TokenExchangeUrl": exchange} if exchange != PUBLIC.token_exchange else {})}
    elif kind == "secret":
        fields = {"SourceType": "ClientSecret", "ClientSecret": info["apps"]["middletier-api"]["secrets"][0]}
    else:
        raise ValueError(f"unknown credential kind {kind!r}; one of {CREDENTIALS}")
    return {"AzureAd__ClientCredentials__0__" + k: v for k, v in fields.items()}


def local_settings(info: dict[str, Any], *, port: int = 7071, credential: str = "keyvault-certificate",
                   cors: str = "http://localhost:5173,http://127.0.0.1:5173") -> dict[str, Any]:
    mt = info["apps"]["middletier-api"]
    cloud = CLOUDS[info.get("cloud", PUBLIC.name)]
    settings: dict[str, Any] = {
        "IsEncrypted": False,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AzureAd__Instance": info["instance"] + "/",
            "AzureAd__TenantId": info["tenant_id"],
            "AzureAd__ClientId": mt["client_id"],
            "AzureAd__Audience": mt["identifier_uris"][0],
            "AzureAd__Scopes": "access_as_user",
            "AzureAd__AccessTokenVersions": "2.0",
            # The devstack is not a Microsoft host: MSAL must not ask login.microsoftonline.com about it.
            "AzureAd__DisableInstanceDiscovery": "true",
            **credential_settings(info, credential),
            # The local vault is not under *.vault.azure.net, so the SDK's challenge-domain check must be off.
            "KeyVault__VerifyChallengeResource": "false",
            "DownstreamApis__Graph__BaseUrl": info["endpoints"]["graph"] + "/v1.0",
            "DownstreamApis__Graph__RelativePath": "me",
            "DownstreamApis__Graph__Scopes": f"{cloud.graph}/User.Read",
            "DownstreamApis__Orders__BaseUrl": info["endpoints"]["orders"],
            "DownstreamApis__Orders__Scopes": "api://orders/Orders.Read",
            "AzureAd__AppPermissions": "MiddleTier.Admin",
            "REQUESTS_CA_BUNDLE": info["ca_bundle"],
        },
        "Host": {"LocalHttpPort": port, "CORS": cors, "CORSCredentials": False},
    }
    public = info.get("names") or {}
    from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS
    if public.get("entra", [""])[0] in WELL_KNOWN_AUTHORITY_HOSTS:
        # MSAL asks a well-known host itself for instance metadata: here that is the emulator.
        del settings["Values"]["AzureAd__DisableInstanceDiscovery"]
    if any(n.endswith("." + cloud.keyvault_domain) for n in public.get("keyvault", [])[:1]):
        del settings["Values"]["KeyVault__VerifyChallengeResource"]
    return settings


# Points at this machine: an emulator's or Azurite's loopback URL, the development-storage shorthand, a state
# folder's CA bundle. Such a value is the devstack's to refresh; anything else is the user's to keep.
_LOCAL = re.compile(r"^(https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)|UseDevelopmentStorage=true$|"
                    r"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;)")


def blob_cache_settings(storage: str) -> dict[str, str]:
    """The deployed default's token cache (infra/main.bicep): the blob L2 in the Functions storage account
    (``AzureWebJobsStorage``), encrypted with a key of its own; here a key made once for this machine."""
    return {"AzureWebJobsStorage": storage, "TokenCache__L2": "blob",
            "TokenCache__EncryptionKey": base64.b64encode(secrets.token_bytes(32)).decode()}


def prepare_local_settings(path: Path, info: dict[str, Any], *, storage: str, port: int = 7071,
                           cors: str | None = None) -> list[str]:
    """Write ``path`` for ``up`` (the devstack, Azurite's ``storage`` connection, the encrypted blob L2), or
    bring an existing file up to date without losing the user's values: the settings that point at this
    machine follow the running devstack and Azurite, the blob L2 is added when ``TokenCache__L2`` is not set
    at all (an explicit ``none`` stays), ``cors`` (the SPA's origin) joins ``Host.CORS``. The encryption key is
    made once and kept. Returns what changed: ``["created"]``, the names updated, or nothing."""
    fresh = local_settings(info, port=port)
    fresh["Values"].update(blob_cache_settings(storage))
    if cors:
        fresh["Host"]["CORS"] = ",".join(dict.fromkeys(fresh["Host"]["CORS"].split(",") + [cors]))
    current = read_existing(path)
    if current is None:
        _write(path, fresh)
        return ["created"]
    values = current.setdefault("Values", {})
    changed = []
    for key, value in fresh["Values"].items():
        old = values.get(key)
        if key.startswith("TokenCache__") or old == value:
            continue
        ours = isinstance(old, str) and (_LOCAL.match(old) or old.endswith("/tls/bundle.pem"))
        if ours or old is None and key == "AzureWebJobsStorage":
            values[key] = value
            changed.append(key)
    if "TokenCache__L2" not in values:
        for key in ("TokenCache__L2", "TokenCache__EncryptionKey"):
            if key not in values:
                values[key] = fresh["Values"][key]
                changed.append(key)
    hosting = current.setdefault("Host", {})
    if cors and cors not in str(hosting.get("CORS", "")).split(","):
        hosting["CORS"] = ",".join(filter(None, [hosting.get("CORS", ""), cors]))
        changed.append("Host.CORS")
    if changed:
        _write(path, current)
    return changed


def read_existing(path: Path) -> dict[str, Any] | None:
    """The file's settings, None if there is none; ValueError, worded for the user, if it cannot be used (``up``
    checks this before it starts anything: a file it cannot read would otherwise fail after the banner)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e}): fix it, or delete it to have it written again") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON (line {getattr(e, 'lineno', '?')}): fix it, or delete it to "
                         "have it written again") from None
    if not isinstance(data, dict) or not isinstance(data.get("Values", {}), dict) or \
            not isinstance(data.get("Host", {}), dict):
        raise ValueError(f"{path} must be an object with \"Values\" and \"Host\" objects: fix it, or delete it "
                         "to have it written again")
    return data


def _write(path: Path, settings: dict[str, Any]) -> None:
    path.write_text(json.dumps(settings, indent=2) + "\n")
    path.chmod(0o600)


def write_local_settings(path: Path, info: dict[str, Any], *, port: int = 7071, overwrite: bool = False) -> bool:
    """Write the file unless one exists (it may hold the user's own settings). True if written."""
    if path.exists() and not overwrite:
        return False
    path.write_text(json.dumps(local_settings(info, port=port), indent=2) + "\n")
    path.chmod(0o600)
    return True
