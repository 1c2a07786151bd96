"""``up``'s local.settings.json: made once with the deployed default's encrypted blob L2 on Azurite, then kept
up to date without losing what the user wrote (devstack/settings_file.prepare_local_settings)."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from devstack.settings_file import prepare_local_settings
from shared.config import TokenCacheSettings, load

INFO: dict[str, Any] = {
    "instance": "https://127.0.0.1:8443", "tenant_id": "t", "ca_bundle": "/state/tls/bundle.pem",
    "vault": {"url": "https://127.0.0.1:8445"},
    "endpoints": {"graph": "https://127.0.0.1:8444", "orders": "https://127.0.0.1:8447/orders"},
    "apps": {"middletier-api": {"client_id": "c", "identifier_uris": ["api://middletier"], "secrets": ["s"]}},
}


def moved(port: int) -> dict[str, Any]:
    """The same devstack on other ports (``up --port 0``)."""
    return json.loads(json.dumps(INFO).replace(":8443", f":{port}").replace(":8444", f":{port + 1}"))


def test_a_new_file_has_the_encrypted_blob_cache_on_the_functions_storage(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    assert prepare_local_settings(path, INFO, storage="UseDevelopmentStorage=true") == ["created"]
    values = json.loads(path.read_text())["Values"]
    assert values["TokenCache__L2"] == "blob" and values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert "TokenCache__BlobConnectionString" not in values  # as deployed: the L2 uses AzureWebJobsStorage
    assert len(base64.b64decode(values["TokenCache__EncryptionKey"])) == 32
    assert path.stat().st_mode & 0o077 == 0
    cache = load(TokenCacheSettings, values).checked()
    assert cache.l2_disabled_reason is None and cache.blob_connection_string == "UseDevelopmentStorage=true"


def test_the_key_is_made_once_and_local_values_follow_the_devstack(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    prepare_local_settings(path, INFO, storage="UseDevelopmentStorage=true")
    settings = json.loads(path.read_text())
    key = settings["Values"]["TokenCache__EncryptionKey"]
    settings["Values"]["MyOwn__Setting"] = "https://example.com/mine"
    settings["Values"]["DownstreamApis__Orders__Scopes"] = "api://orders/Mine"  # a user's edit
    path.write_text(json.dumps(settings))
    storage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k;BlobEndpoint=http://h:1/x;"
    changed = prepare_local_settings(path, moved(9443), storage=storage, cors="http://localhost:5174")
    values = json.loads(path.read_text())["Values"]
    assert set(changed) == {"AzureAd__Instance", "DownstreamApis__Graph__BaseUrl", "AzureWebJobsStorage", "Host.CORS"}
    assert values["AzureAd__Instance"] == "https://127.0.0.1:9443/" and values["AzureWebJobsStorage"] == storage
    assert values["TokenCache__EncryptionKey"] == key
    assert values["MyOwn__Setting"] == "https://example.com/mine"
    assert values["DownstreamApis__Orders__Scopes"] == "api://orders/Mine"
    assert "http://localhost:5174" in json.loads(path.read_text())["Host"]["CORS"].split(",")
    assert prepare_local_settings(path, moved(9443), storage=storage, cors="http://localhost:5174") == []


def test_an_older_file_gets_the_cache_and_an_explicit_choice_stays(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=real;"}}))
    assert prepare_local_settings(path, INFO, storage="UseDevelopmentStorage=true")[-2:] == \
        ["TokenCache__L2", "TokenCache__EncryptionKey"]
    values = json.loads(path.read_text())["Values"]
    assert values["AzureWebJobsStorage"] == "DefaultEndpointsProtocol=https;AccountName=real;"  # not a local one
    path.write_text(json.dumps({"Values": {"TokenCache__L2": "none"}}))
    prepare_local_settings(path, INFO, storage="UseDevelopmentStorage=true")
    values = json.loads(path.read_text())["Values"]
    assert values["TokenCache__L2"] == "none" and "TokenCache__EncryptionKey" not in values
