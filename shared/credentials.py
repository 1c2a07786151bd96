"""The app's own client credential, in the shape MSAL's ConfidentialClientApplication takes.

Descriptions come from ``AzureAd__ClientCredentials__N__*`` (Microsoft.Identity.Web's names)
and are tried in order; the first that loads wins:

- ``ClientSecret``: ``ClientSecret`` (local development only)
- ``KeyVault``: a Key Vault certificate (``KeyVaultUrl``, ``KeyVaultCertificateName``) read as its secret (PFX + key)
- ``KeyVaultSecret``: a client secret stored in Key Vault (``KeyVaultUrl``, ``KeyVaultSecretName``)
- ``Path`` / ``Base64Encoded``: a PFX or PEM certificate (``CertificateDiskPath`` / ``Base64EncodedValue``)
- ``SignedAssertionFromManagedIdentity``: no secret at all; the managed identity's token for
  ``api://AzureADTokenExchange`` is the client assertion (a federated identity credential)

Key Vault is reached with unmodified ``azure-identity`` ``ManagedIdentityCredential`` and ``azure-keyvault-secrets``
``SecretClient``. Loaded material stays in memory; errors name the setting and the vault object, never a value.
"""
from __future__ import annotations

import base64
import functools
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Union

from . import deadline
from .config import CredentialDescription, KeyVaultSettings
from .errors import ApiError, ConfigurationError, UpstreamError
from .outbound import SharedTlsContext, with_shared_tls

log = logging.getLogger("middletier.credentials")

MsalCredential = Union[str, dict[str, Any]]
TOKEN_EXCHANGE = "api://AzureADTokenExchange"


@functools.cache
def azure_sdk() -> SimpleNamespace:
    """azure-identity, azure-keyvault-secrets and azure-core, imported once, by the first credential description
    that reaches Key Vault or the managed identity (``CredentialLoader._identity``), never at import: an app whose
    credential is a secret or a certificate file never loads them (issue 19: import only what the settings use)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
    from azure.core.pipeline.transport import RequestsTransport
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient
    return SimpleNamespace(AzureError=AzureError, ClientAuthenticationError=ClientAuthenticationError,
                           HttpResponseError=HttpResponseError, ResourceNotFoundError=ResourceNotFoundError,
                           RequestsTransport=RequestsTransport, ManagedIdentityCredential=ManagedIdentityCredential,
                           SecretClient=SecretClient)


def certificate_credential(data: bytes, password: str | None, key: str, *, send_x5c: bool = False) -> dict[str, Any]:
    """PFX or PEM bytes -> MSAL's credential dict, whose shape picks the assertion's (MSAL 1.39): a SHA-1
    ``thumbprint`` gives RS256 + ``x5t``; a ``public_certificate`` gives PS256 + ``x5t#S256`` and sends the
    chain (``x5c``, for subject-name/issuer authentication)."""
    from cryptography import x509  # the certificate sources only, once per credential load
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

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
    # The loaded key object, not its PEM: MSAL hands ``private_key`` to its JwtAssertionCreator as it is (as it does
    # with the key it loads itself for a ``passphrase``), and pyjwt signs with a key object directly. A PEM string
    # would be parsed and its RSA key checked again for every client assertion MSAL signs (each ~10 minutes, and
    # the cold start's first): 30-90 ms of CPU each, the largest step between Key Vault's answer and the OBO call.
    if send_x5c:
        return {"private_key": private_key,
                "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
    return {"private_key": private_key, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}


def deadline_transport(service: str, connect_timeout: float, read_timeout: float) -> Any:
    """azure-core's ``RequestsTransport`` under the request's deadline (``deadline.py``), for every SDK call made
    through it: before each attempt the deadline is checked (``BudgetSpent``, 504), each attempt's connect and
    read timeouts are capped by the time left, and so is every sleep between attempts (backoff, Retry-After).

    A transport, not per-operation kwargs: the SDKs' kwargs (``connection_timeout``, ``read_timeout``, the
    RetryPolicy's total ``timeout``) reach ``get_secret``'s own pipeline only; the token its challenge policy
    fetches from the managed identity, and azure-identity's MSAL-based managed identity client (App Service,
    Functions), send no per-call kwargs; and the RetryPolicy's ``timeout`` caps a retry's connect timeout, not
    its read timeout. A transport sees every attempt of every call."""
    class DeadlineTransport(azure_sdk().RequestsTransport):  # type: ignore[misc, name-defined]
        def send(self, request: Any, **kwargs: Any) -> Any:
            deadline.check(service)
            config = self.connection_config
            kwargs["connection_timeout"] = deadline.bounded(kwargs.get("connection_timeout") or config.timeout)
            kwargs["read_timeout"] = deadline.bounded(kwargs.get("read_timeout") or config.read_timeout)
            return super().send(request, **kwargs)

        def sleep(self, duration: float) -> None:
            super().sleep(deadline.bounded(duration))

        def _init_session(self, session: Any) -> None:
            """azure-core's session set-up, then its adapters with one TLS context per CA bundle (``outbound.py``):
            the Key Vault connection of a cold start does not parse the CA bundle again."""
            super()._init_session(session)
            for adapter in session.adapters.values():  # one instance for http:// and https://
                if not isinstance(adapter, SharedTlsContext):
                    adapter.__class__ = with_shared_tls(type(adapter))

    return DeadlineTransport(connection_timeout=connect_timeout, read_timeout=read_timeout)


class CredentialLoader:
    """Loads the first working credential description; keeps SDK clients for reuse."""

    def __init__(self, descriptions: tuple[CredentialDescription, ...], keyvault: KeyVaultSettings, *,
                 send_x5c: bool = False, user_assigned_client_id: str | None = None):
        self.descriptions, self.keyvault = descriptions, keyvault
        self.send_x5c, self.user_assigned_client_id = send_x5c, user_assigned_client_id
        self._lock = threading.Lock()
        self._identities: dict[str | None, Any] = {}
        self._vaults: dict[tuple[str, str | None], Any] = {}

    def _identity(self, client_id: str | None) -> Any:
        sdk = azure_sdk()
        with self._lock:
            if client_id not in self._identities:
                self._identities[client_id] = sdk.ManagedIdentityCredential(
                    client_id=client_id or None, retry_total=1, transport=deadline_transport(
                        "identity", self.keyvault.connect_timeout, self.keyvault.read_timeout))
            return self._identities[client_id]

    def _vault(self, url: str, client_id: str | None) -> Any:
        identity = self._identity(client_id)
        with self._lock:
            if (url, client_id) not in self._vaults:
                self._vaults[(url, client_id)] = azure_sdk().SecretClient(
                    url, identity, verify_challenge_resource=self.keyvault.verify_challenge_resource,
                    retry_total=1, retry_backoff_factor=0.2, transport=deadline_transport(
                        "keyvault", self.keyvault.connect_timeout, self.keyvault.read_timeout))
            return self._vaults[(url, client_id)]

    def _read_secret(self, desc: CredentialDescription, name_setting: str) -> Any:
        url, name = desc.require("KeyVaultUrl"), desc.require(name_setting)
        client_id = desc.get("ManagedIdentityClientId") or self.user_assigned_client_id
        sdk = azure_sdk()
        try:
            return self._vault(url, client_id).get_secret(name)
        except sdk.ResourceNotFoundError:
            reason = "was not found"
        except sdk.ClientAuthenticationError as err:
            deadline.check("identity")  # out of time while getting the vault's token
            reason = f"could not be read: the managed identity could not authenticate ({type(err).__name__})"
        except sdk.HttpResponseError as err:
            reason = "access denied: grant the identity 'Key Vault Secrets User'" if err.status_code == 403 \
                else f"answered HTTP {err.status_code}"
        except sdk.AzureError as err:  # connection refused, DNS, timeouts
            deadline.check("keyvault")  # a timeout at the request's deadline: 504, the request's lack of time
            reason = f"could not be reached ({type(err).__name__})"
        except ValueError as err:
            # The SDK refused the URL: not https, or (KeyVault__VerifyChallengeResource, on by default) the
            # vault's challenge names a resource this host is not under. It sent no token; nor will we.
            log.error("client credential from Key Vault failed: Key Vault %s secret '%s' (%s) refused by the "
                      "SDK: %s", url, name, desc.key, str(err)[:300])
            raise ConfigurationError(f"{desc.key}__KeyVaultUrl",
                                     "names a host the Key Vault SDK will not authenticate to") from None
        log.error("client credential from Key Vault failed: Key Vault %s secret '%s' (%s) %s.",
                  url, name, desc.key, reason)
        raise UpstreamError("keyvault", "The app's credential could not be loaded from Key Vault.", 503)

    def load_one(self, desc: CredentialDescription) -> MsalCredential:
        source = desc.source_type
        key = f"{desc.key}__SourceType"
        if source == "ClientSecret":
            return desc.require("ClientSecret")
        if source == "KeyVaultSecret":
            return str(self._read_secret(desc, "KeyVaultSecretName").value)
        if source == "SignedAssertionFromManagedIdentity":
            return {"client_assertion": self._federated_assertion(desc)}
        if source == "KeyVault":
            setting = f"{desc.key}__KeyVaultCertificateName"
            secret = self._read_secret(desc, "KeyVaultCertificateName")
            data = secret.value.encode() if secret.properties.content_type == "application/x-pem-file" \
                else _b64(secret.value, setting)
        elif source == "Path":
            setting = f"{desc.key}__CertificateDiskPath"
            try:
                data = Path(desc.require("CertificateDiskPath")).read_bytes()
            except OSError:
                raise ConfigurationError(setting, "names a file that cannot be read") from None
        elif source == "Base64Encoded":
            setting = f"{desc.key}__Base64EncodedValue"
            data = _b64(desc.require("Base64EncodedValue"), setting)
        elif source in ("StoreWithThumbprint", "StoreWithDistinguishedName"):
            raise ConfigurationError(key, "names a Windows certificate store, which Linux Functions do not have")
        else:
            raise ConfigurationError(key, "is not a supported credential source")
        password = None if source == "KeyVault" else desc.get("CertificatePassword")  # a vault's PFX has none
        return certificate_credential(data, password, setting, send_x5c=self.send_x5c)

    def _federated_assertion(self, desc: CredentialDescription) -> Callable[[], str]:
        identity = self._identity(desc.get("ManagedIdentityClientId") or self.user_assigned_client_id)
        scope = (desc.get("TokenExchangeUrl") or TOKEN_EXCHANGE).rstrip("/") + "/.default"
        azure_error = azure_sdk().AzureError

        def assertion() -> str:
            """Called by MSAL whenever it needs a client assertion; azure-identity caches the MI token."""
            try:
                return str(identity.get_token(scope).token)
            except azure_error as err:
                deadline.check("identity")
                log.error("managed identity token for %s (%s) failed: %s", scope, desc.key, type(err).__name__)
                raise UpstreamError("identity", "The app's managed identity could not get a token.", 503) from None
        return assertion

    def load(self) -> MsalCredential:
        """The first description that loads; the last failure if none does."""
        if not self.descriptions:
            raise ConfigurationError("AzureAd__ClientCredentials__0__SourceType",
                                     "is required (or AzureAd__ClientSecret)")
        last: ApiError | None = None
        for desc in self.descriptions:
            try:
                credential = self.load_one(desc)
                log.info("client credential loaded from %s (%s)", desc.key, desc.source_type)
                return credential
            except deadline.BudgetSpent:
                raise  # the request is out of time: the next description could not load either
            except ApiError as err:
                if len(self.descriptions) > 1:
                    log.warning("client credential %s (%s) did not load: %s", desc.key, desc.source_type, err.detail)
                last = err
        assert last is not None
        raise last


def _b64(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ConfigurationError(key, "is not base64") from None
