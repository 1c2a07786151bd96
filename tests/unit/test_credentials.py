"""shared/credentials.py: the certificate credential MSAL signs with, and the SDKs loaded only when a setting uses them."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import jwt
import msal
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from devstack.launch import ROOT
from shared.credentials import certificate_credential

AUTHORITY = "https://login.example.test/6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f"
CLIENT_ID = "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b"


@pytest.fixture(scope="module")
def pfx() -> tuple[bytes, rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "middletier")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
            .not_valid_after(datetime.datetime(2040, 1, 1)).sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(b"mt", key, cert, None, serialization.NoEncryption()), key, cert


class Entra:
    """MSAL's http_client: the authority's metadata, and a token endpoint that keeps what it was sent."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    def get(self, url: str, **kwargs: Any) -> Any:
        doc = {"authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize", "issuer": f"{AUTHORITY}/v2.0",
               "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token"}
        return SimpleNamespace(status_code=200, text=json.dumps(doc), headers={})

    def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        self.posted.append(dict(data or {}))
        body = {"access_token": "at", "token_type": "Bearer", "expires_in": 3600}
        return SimpleNamespace(status_code=200, text=json.dumps(body), headers={})

    def close(self) -> None:
        pass


@pytest.mark.parametrize("send_x5c,algorithm", [(False, "RS256"), (True, "PS256")])
def test_msal_signs_its_client_assertion_with_the_loaded_key(pfx: Any, send_x5c: bool, algorithm: str) -> None:
    """The credential carries the key object (parsed and checked once, not per assertion), and MSAL signs with it."""
    data, key, _ = pfx
    credential = certificate_credential(data, None, "setting", send_x5c=send_x5c)
    assert isinstance(credential["private_key"], rsa.RSAPrivateKey)
    entra = Entra()
    app = msal.ConfidentialClientApplication(CLIENT_ID, client_credential=credential, authority=AUTHORITY,
                                             http_client=entra, instance_discovery=False)
    assert app.acquire_token_for_client(["api://orders/.default"])["access_token"] == "at"
    assertion = entra.posted[0]["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == algorithm and ("x5c" in header) is send_x5c
    claims = jwt.decode(assertion, key.public_key(), algorithms=[algorithm], audience=f"{AUTHORITY}/oauth2/v2.0/token")
    assert claims["iss"] == claims["sub"] == CLIENT_ID


def test_an_unreadable_certificate_names_its_setting_not_its_bytes() -> None:
    from shared.errors import ConfigurationError
    with pytest.raises(ConfigurationError) as raised:
        certificate_credential(b"not a certificate", None, "AzureAd__ClientCredentials__0__Base64EncodedValue")
    assert "AzureAd__ClientCredentials__0__Base64EncodedValue" in raised.value.detail
    assert "not a certificate" not in raised.value.detail


def test_importing_the_app_loads_no_sdk_a_setting_may_not_use() -> None:
    """Key Vault / managed identity (azure-identity, azure-keyvault, azure-core), redis, blob storage and
    OpenTelemetry load when a setting needs them, on first use: never at import (issue 19 item 2)."""
    code = ("import sys, MiddleTierApi; print([m for m in sys.modules if m.split('.')[0] in ('redis', 'opentelemetry')"
            " or m.startswith(('azure.core', 'azure.identity', 'azure.keyvault', 'azure.storage', 'azure.monitor'))"
            " or m.endswith('pkcs12')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
