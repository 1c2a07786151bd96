"""The app's own client credential, in the shape MSAL's ConfidentialClientApplication takes.

Descriptions come from ``AzureAd__ClientCredentials__N__*`` (Microsoft.Identity.Web's names)
and are tried in order; the first that loads wins. Loaded material stays in memory only.
"""
from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .config import CredentialDescription
from .errors import ApiError, ConfigurationError

log = logging.getLogger("middletier.credentials")

MsalCredential = Union[str, dict[str, Any]]


def certificate_credential(data: bytes, password: str | None, key: str) -> dict[str, Any]:
    """PFX or PEM bytes -> MSAL's {private_key, public_certificate} dict."""
    pw = password.encode() if password else None
    try:
        if data.lstrip().startswith(b"-----"):
            private_key = serialization.load_pem_private_key(data, pw)
            cert = x509.load_pem_x509_certificate(data)
        else:
            private_key, cert, _ = pkcs12.load_key_and_certificates(data, pw)
    except (ValueError, TypeError):
        raise ConfigurationError(key, "is not a readable certificate with its private key") from None
    if private_key is None or cert is None:
        raise ConfigurationError(key, "must contain both the certificate and its private key")
    pem_key = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    # With the certificate (not a SHA-1 thumbprint) MSAL 1.39 signs PS256 with x5t#S256, as Entra recommends.
    return {"private_key": pem_key, "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}


def _from_path(desc: CredentialDescription) -> dict[str, Any]:
    path = Path(desc.require("CertificateDiskPath"))
    try:
        data = path.read_bytes()
    except OSError:
        raise ConfigurationError(f"{desc.key}__CertificateDiskPath", "names a file that cannot be read") from None
    return certificate_credential(data, desc.get("CertificatePassword"), f"{desc.key}__CertificateDiskPath")


def _from_base64(desc: CredentialDescription) -> dict[str, Any]:
    try:
        data = base64.b64decode(desc.require("Base64EncodedValue"), validate=True)
    except ValueError:
        raise ConfigurationError(f"{desc.key}__Base64EncodedValue", "is not base64") from None
    return certificate_credential(data, desc.get("CertificatePassword"), f"{desc.key}__Base64EncodedValue")


def load_one(desc: CredentialDescription) -> MsalCredential:
    source = desc.source_type
    if source == "ClientSecret":
        return desc.require("ClientSecret")
    if source == "Path":
        return _from_path(desc)
    if source == "Base64Encoded":
        return _from_base64(desc)
    raise ConfigurationError(f"{desc.key}__SourceType", "is not a supported credential source")


def load_credential(descriptions: tuple[CredentialDescription, ...]) -> MsalCredential:
    """The first description that loads; an error naming the last failure if none does."""
    if not descriptions:
        raise ConfigurationError("AzureAd__ClientCredentials__0__SourceType", "is required (or AzureAd__ClientSecret)")
    last: ApiError | None = None
    for desc in descriptions:
        try:
            return load_one(desc)
        except ApiError as err:
            log.warning("client credential %s (%s) did not load: %s", desc.key, desc.source_type, err.detail)
            last = err
    assert last is not None
    raise last
