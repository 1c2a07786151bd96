"""A ``local.settings.json`` wired to a running devstack, as a user would write one by hand.

Only settings: the app reaches the emulators through the same keys it uses for Entra ID.
``REQUESTS_CA_BUNDLE`` is the combined bundle (machine roots + local CA) so MSAL, azure-core
and requests all trust the local HTTPS endpoints without code changes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def local_settings(info: dict[str, Any], *, port: int = 7071) -> dict[str, Any]:
    mt = info["apps"]["middletier-api"]
    return {
        "IsEncrypted": False,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AzureAd__Instance": info["instance"] + "/",
            "AzureAd__TenantId": info["tenant_id"],
            "AzureAd__ClientId": mt["client_id"],
            "AzureAd__Audience": mt["identifier_uris"][0],
            "AzureAd__Scopes": "access_as_user",
            # The devstack is not a Microsoft host: MSAL must not ask login.microsoftonline.com about it.
            "AzureAd__DisableInstanceDiscovery": "true",
            "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
            "AzureAd__ClientCredentials__0__ClientSecret": mt["secrets"][0],
            "DownstreamApis__Graph__BaseUrl": info["endpoints"]["graph"] + "/v1.0",
            "DownstreamApis__Graph__RelativePath": "me",
            "DownstreamApis__Graph__Scopes": "https://graph.microsoft.com/User.Read",
            "REQUESTS_CA_BUNDLE": info["ca_bundle"],
        },
        "Host": {"LocalHttpPort": port, "CORS": "http://localhost:5173,http://127.0.0.1:5173", "CORSCredentials": False},
    }


def write_local_settings(path: Path, info: dict[str, Any], *, port: int = 7071, overwrite: bool = False) -> bool:
    """Write the file unless one exists (it may hold the user's own settings). True if written."""
    if path.exists() and not overwrite:
        return False
    path.write_text(json.dumps(local_settings(info, port=port), indent=2) + "\n")
    path.chmod(0o600)
    return True
