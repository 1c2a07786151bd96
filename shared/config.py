"""Typed settings from the environment, named as Microsoft.Identity.Web names them.

Functions app settings use ``__`` for nesting (``AzureAd__ClientId``), and arrays are
``__0``, ``__1``... (``AzureAd__ClientCredentials__0__SourceType``). Settings are read and
validated once per process; a bad one raises ``ConfigurationError`` naming the key and never
the value, because values are often secrets.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import quote, urlsplit

from .errors import ConfigurationError

GENERIC_TENANTS = ("common", "organizations")


@dataclass(frozen=True)
class CredentialDescription:
    """One entry of ``AzureAd__ClientCredentials``; tried in order, like MIW."""

    source_type: str
    values: Mapping[str, str]
    key: str  # the settings prefix, for error messages

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def require(self, name: str) -> str:
        value = self.values.get(name)
        if not value:
            raise ConfigurationError(f"{self.key}__{name}", "is required for SourceType " + self.source_type)
        return value


@dataclass(frozen=True)
class KeyVaultSettings:
    # The SDK checks that the vault's host ends with the challenge resource's domain; only vaults
    # outside *.vault.azure.net (sovereign, local) need this off.
    verify_challenge_resource: bool = True
    connect_timeout: float = 3.05
    read_timeout: float = 10.0


@dataclass(frozen=True)
class AzureAdSettings:
    instance: str                 # https://login.microsoftonline.com/ (no tenant)
    tenant_id: str                # GUID, or 'organizations' / 'common' for multi-tenant
    client_id: str
    audiences: tuple[str, ...]    # client id + App ID URI(s)
    scopes: tuple[str, ...]       # accepted delegated scopes (scp)
    app_permissions: tuple[str, ...]  # accepted app roles (roles)
    credentials: tuple[CredentialDescription, ...]
    keyvault: KeyVaultSettings = field(default_factory=KeyVaultSettings)
    send_x5c: bool = False
    user_assigned_managed_identity_client_id: str | None = None
    disable_instance_discovery: bool = False
    # MIW's ClientCapabilities: "cp1" tells Entra this app handles claims challenges (CAE tokens)
    client_capabilities: tuple[str, ...] = ("cp1",)
    allowed_tenants: tuple[str, ...] = ()
    allow_acl: bool = False                  # accept tokens without scp/roles from listed clients
    allowed_client_applications: tuple[str, ...] = ()
    token_versions: tuple[str, ...] = ("1.0", "2.0")  # set "2.0" when the registration says accessTokenAcceptedVersion 2
    clock_skew_seconds: int = 300
    metadata_refresh_seconds: int = 24 * 3600
    timeout_seconds: float = 10.0

    @property
    def authority(self) -> str:
        return f"{self.instance}{self.tenant_id}"

    @property
    def v1_metadata_url(self) -> str | None:
        """The v1 OIDC document (only its issuer is used), or None when v1 tokens are refused.
        Like Microsoft.IdentityModel, ``organizations`` reads ``common``'s v1 document."""
        if "1.0" not in self.token_versions:
            return None
        tenant = "common" if self.tenant_id.lower() == "organizations" else self.tenant_id
        return f"{self.instance}{tenant}/.well-known/openid-configuration"

    @property
    def multi_tenant(self) -> bool:
        return self.tenant_id.lower() in GENERIC_TENANTS


@dataclass(frozen=True)
class DownstreamApi:
    name: str
    base_url: str
    relative_path: str
    scopes: tuple[str, ...]  # delegated: what a call on the caller's behalf (OBO) asks
    connect_timeout: float = 3.05
    read_timeout: float = 10.0

    def app_scopes(self) -> tuple[str, ...]:
        """What a call as the app asks (client credentials): ``<resource>/.default`` of the one
        resource the scopes name, as MIW's ``CallApiForAppAsync`` wants it."""
        resources = {scope.rpartition("/")[0] for scope in self.scopes}
        if len(resources) != 1 or "" in resources:
            raise ConfigurationError(f"DownstreamApis__{self.name}__Scopes",
                                     "must name one resource (<resource>/<permission>) to call the API as the app")
        return (f"{resources.pop()}/.default",)

    def url(self, path: str | None = None) -> str:
        rel = self.relative_path if path is None else path
        return self.base_url.rstrip("/") + ("/" + rel.lstrip("/") if rel else "")


# The in-process cache's bounds. The bytes are memory really held per caller token (shared/memory.py:
# ~11 KB partition + ~8 KB validator memo for an Entra-sized token), so 256 MiB lets the entry count
# bind: 10,000 callers hold about 190 MB.
L1_MAX_ENTRIES = 10_000
L1_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TokenCacheSettings:
    l1_max_entries: int = L1_MAX_ENTRIES
    l1_max_bytes: int = L1_MAX_BYTES
    l2: str = "none"                       # none | redis | blob
    redis_url: str | None = None
    blob_connection_string: str | None = None
    blob_container: str = "msal-token-cache"
    encryption_key: str | None = None      # base64, 32 bytes (AES-256-GCM)
    # Why the L2 is off although configured (the key is missing, unresolved or malformed): the
    # app then serves from L1 alone and never writes a token outside the process unencrypted.
    l2_disabled_reason: str | None = None
    l2_timeout_seconds: float = 0.5
    l2_retry_seconds: float = 5.0          # how long the breaker stays open before probing L2 again
    lock_milliseconds: int = 3000
    session_lifetime_seconds: int = 24 * 3600


@dataclass(frozen=True)
class Settings:
    azure_ad: AzureAdSettings
    downstream: Mapping[str, DownstreamApi] = field(default_factory=dict)
    request_budget_seconds: float = 25.0
    credential_failure_backoff_seconds: float = 5.0
    token_cache: TokenCacheSettings = field(default_factory=TokenCacheSettings)
    # Token acquisitions calling Entra at once (0: half the worker's thread pool, at least 2), and how
    # long a request waits for a free one before a fast 503 + Retry-After.
    max_concurrent_token_acquisitions: int = 0
    token_acquisition_queue_seconds: float = 0.25

    def downstream_api(self, name: str) -> DownstreamApi:
        try:
            return self.downstream[name]
        except KeyError:
            raise ConfigurationError(f"DownstreamApis__{name}__BaseUrl", "is not set") from None


# --- parsing helpers --------------------------------------------------------------------------
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


def _get(env: Mapping[str, str], key: str, default: str | None = None) -> str | None:
    value = env.get(key)
    if value is None or not value.strip():
        return default
    _refuse_reference(key, value)
    return value.strip()


def _refuse_reference(key: str, value: str) -> None:
    if value.strip().lower().startswith(KEY_VAULT_REFERENCE.lower()):
        # App Service replaces a Key Vault reference by the secret's value at start-up; when it
        # can't (no secret, no access for the app's identity, vault firewall), it leaves the
        # reference text in place. Using that text as the value would fail far from the cause.
        raise ConfigurationError(key, "is an unresolved Key Vault reference: check that the secret exists and "
                                      "that the app's managed identity may read it (Key Vault Secrets User)")


def _require(env: Mapping[str, str], key: str) -> str:
    value = _get(env, key)
    if value is None:
        raise ConfigurationError(key, "is required")
    return value


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A list setting: space/comma separated in one value, or indexed ``key__0``, ``key__1``..."""
    items: list[str] = []
    if (value := _get(env, key)) is not None:
        items += [s for s in re.split(r"[\s,]+", value) if s]
    i = 0
    while (value := _get(env, f"{key}__{i}")) is not None:
        items.append(value)
        i += 1
    return tuple(items)


def _bool(env: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = _get(env, key)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ConfigurationError(key, "must be true or false")


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float = 0.001,
            maximum: float = 86400 * 7) -> float:
    value = _get(env, key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(key, "must be a number") from None
    if not minimum <= number <= maximum:
        raise ConfigurationError(key, f"must be between {minimum:g} and {maximum:g}")
    return number


def _https_url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigurationError(key, "must be an absolute https:// URL")
    return value


def _guid(key: str, value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ConfigurationError(key, "must be a GUID") from None
    return value


def _credentials(env: Mapping[str, str]) -> tuple[CredentialDescription, ...]:
    found: list[CredentialDescription] = []
    i = 0
    while True:
        prefix = f"AzureAd__ClientCredentials__{i}"
        source = _get(env, f"{prefix}__SourceType")
        if source is None:
            break
        values = {k[len(prefix) + 2:]: v for k, v in env.items() if k.startswith(prefix + "__") and v}
        for name, value in values.items():
            _refuse_reference(f"{prefix}__{name}", value)
        found.append(CredentialDescription(source, values, prefix))
        i += 1
    if (secret := _get(env, "AzureAd__ClientSecret")) is not None:  # MIW's shorthand
        found.append(CredentialDescription("ClientSecret", {"ClientSecret": secret}, "AzureAd__ClientSecret"))
    return tuple(found)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting the app uses; raise ConfigurationError on the first bad one."""
    env = os.environ if env is None else env
    instance = _https_url("AzureAd__Instance", _get(env, "AzureAd__Instance", "https://login.microsoftonline.com/"))
    if not instance.endswith("/"):
        instance += "/"
    tenant_id = _require(env, "AzureAd__TenantId")
    if tenant_id.lower() not in GENERIC_TENANTS:
        _guid("AzureAd__TenantId", tenant_id)
    client_id = _guid("AzureAd__ClientId", _require(env, "AzureAd__ClientId"))
    audiences = (client_id, *_list(env, "AzureAd__Audience"), *_list(env, "AzureAd__Audiences"))
    scopes = _list(env, "AzureAd__Scopes")
    roles = _list(env, "AzureAd__AppPermissions")
    if not scopes and not roles:
        raise ConfigurationError("AzureAd__Scopes", "or AzureAd__AppPermissions is required: "
                                 "a token without a required scope or role must be refused")
    if _bool(env, "AzureAd__AllowWebApiToBeAuthorizedByACL") and not _list(env, "AzureAd__AllowedClientApplications"):
        raise ConfigurationError("AzureAd__AllowedClientApplications", "must list the client ids trusted in ACL mode")
    azure_ad = AzureAdSettings(
        instance=instance, tenant_id=tenant_id, client_id=client_id, audiences=tuple(dict.fromkeys(audiences)),
        scopes=scopes, app_permissions=roles, credentials=_credentials(env),
        keyvault=KeyVaultSettings(
            verify_challenge_resource=_bool(env, "KeyVault__VerifyChallengeResource", True),
            connect_timeout=_number(env, "KeyVault__ConnectTimeoutSeconds", 3.05, maximum=60),
            read_timeout=_number(env, "KeyVault__TimeoutSeconds", 10.0, maximum=120)),
        send_x5c=_bool(env, "AzureAd__SendX5C"),
        user_assigned_managed_identity_client_id=_get(env, "AzureAd__UserAssignedManagedIdentityClientId"),
        disable_instance_discovery=_bool(env, "AzureAd__DisableInstanceDiscovery"),
        client_capabilities=_capabilities(env),
        allowed_tenants=_list(env, "AzureAd__AllowedTenants"),
        token_versions=_versions(env),
        allow_acl=_bool(env, "AzureAd__AllowWebApiToBeAuthorizedByACL"),
        allowed_client_applications=_list(env, "AzureAd__AllowedClientApplications"),
        clock_skew_seconds=int(_number(env, "AzureAd__ClockSkewSeconds", 300, minimum=0, maximum=600)),
        metadata_refresh_seconds=int(_number(env, "AzureAd__MetadataRefreshSeconds", 24 * 3600,
                                             minimum=60, maximum=7 * 86400)),
        timeout_seconds=_number(env, "AzureAd__TimeoutSeconds", 10.0, maximum=120),
    )
    return Settings(azure_ad=azure_ad, downstream=_downstream_apis(env),
                    request_budget_seconds=_number(env, "MiddleTier__RequestBudgetSeconds", 25.0, maximum=230),
                    credential_failure_backoff_seconds=_number(env, "MiddleTier__CredentialFailureBackoffSeconds",
                                                               5.0, minimum=0, maximum=600),
                    token_cache=_token_cache(env),
                    max_concurrent_token_acquisitions=int(_number(env, "MiddleTier__MaxConcurrentTokenAcquisitions",
                                                                  0, minimum=1, maximum=1000)),
                    token_acquisition_queue_seconds=_number(env, "MiddleTier__TokenAcquisitionQueueSeconds", 0.25,
                                                            minimum=0, maximum=30))


def _token_cache(env: Mapping[str, str]) -> TokenCacheSettings:
    kind = (_get(env, "TokenCache__L2", "none") or "none").lower()
    if kind not in ("none", "redis", "blob"):
        raise ConfigurationError("TokenCache__L2", "must be none, redis or blob")
    redis_url = blob = key = disabled = None
    if kind != "none":
        try:  # an unresolved Key Vault reference costs the shared cache, not the app (like a bad key)
            redis_url = _get(env, "TokenCache__RedisConnectionString") if kind == "redis" else None
            blob = _get(env, "TokenCache__BlobConnectionString") or _get(env, "AzureWebJobsStorage") \
                if kind == "blob" else None
        except ConfigurationError as err:
            disabled = err.detail
        if disabled is None and kind == "redis" and not redis_url:
            raise ConfigurationError("TokenCache__RedisConnectionString", "is required when TokenCache__L2 is redis")
        if disabled is None and kind == "blob" and not blob:
            raise ConfigurationError("TokenCache__BlobConnectionString", "is required when TokenCache__L2 is blob")
        if disabled is None:
            key, disabled = _encryption_key(env)
    return TokenCacheSettings(
        l1_max_entries=int(_number(env, "TokenCache__L1MaxEntries", L1_MAX_ENTRIES, minimum=1, maximum=10_000_000)),
        l1_max_bytes=int(_number(env, "TokenCache__L1MaxBytes", L1_MAX_BYTES, minimum=64 * 1024,
                                 maximum=16 * 1024 ** 3)),
        l2=kind, redis_url=redis_url and redis_url_from(redis_url), blob_connection_string=blob,
        blob_container=_get(env, "TokenCache__BlobContainer", "msal-token-cache") or "msal-token-cache",
        encryption_key=key, l2_disabled_reason=disabled,
        l2_timeout_seconds=_number(env, "TokenCache__L2TimeoutSeconds", 0.5, maximum=30),
        l2_retry_seconds=_number(env, "TokenCache__L2RetrySeconds", 5.0, minimum=0, maximum=3600),
        lock_milliseconds=int(_number(env, "TokenCache__LockMilliseconds", 3000, minimum=10, maximum=60_000)),
        session_lifetime_seconds=int(_number(env, "TokenCache__SessionLifetimeSeconds", 24 * 3600, minimum=60,
                                             maximum=90 * 86400)))


def _encryption_key(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The L2 key, or why there is none usable. Not a start-up failure: a missing key costs the
    shared cache, not the app (it serves from L1), and the operator error names the setting."""
    name = "TokenCache__EncryptionKey"
    try:
        key = _get(env, name)
    except ConfigurationError as err:
        return None, err.detail
    if not key:
        return None, f"Setting {name} is required for a shared cache: tokens are never stored outside the process " \
                     "unencrypted."
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        return None, f"Setting {name} must be 32 bytes, base64-encoded."
    return key, None


def redis_url_from(value: str) -> str:
    """Accept a redis:// / rediss:// URL or Azure's StackExchange form
    ``host:6380,password=...,ssl=True,abortConnect=False``."""
    if "://" in value:
        return value
    host, *options = [p.strip() for p in value.split(",") if p.strip()]
    opts = {k.strip().lower(): v.strip() for k, _, v in (o.partition("=") for o in options)}
    scheme = "rediss" if opts.get("ssl", "false").lower() == "true" else "redis"
    password = opts.get("password")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"{scheme}://{auth}{host}/0"


def _capabilities(env: Mapping[str, str]) -> tuple[str, ...]:
    """``AzureAd__ClientCapabilities`` (default ``cp1``: the app redoes OBO on a downstream claims
    challenge, so it may get CAE tokens); ``none`` declares none."""
    values = _list(env, "AzureAd__ClientCapabilities") or ("cp1",)
    if "none" in (v.lower() for v in values):
        if len(values) > 1:
            raise ConfigurationError("AzureAd__ClientCapabilities", "is either none or a list of capabilities")
        return ()
    return values


def _versions(env: Mapping[str, str]) -> tuple[str, ...]:
    versions = _list(env, "AzureAd__AccessTokenVersions") or ("1.0", "2.0")
    if not set(versions) <= {"1.0", "2.0"}:
        raise ConfigurationError("AzureAd__AccessTokenVersions", "may only list 1.0 and 2.0")
    return versions


def _downstream_apis(env: Mapping[str, str]) -> dict[str, DownstreamApi]:
    names = sorted({k.split("__")[1] for k in env if k.startswith("DownstreamApis__") and k.count("__") >= 2})
    apis = {}
    for name in names:
        prefix = f"DownstreamApis__{name}"
        base = _https_url(f"{prefix}__BaseUrl", _require(env, f"{prefix}__BaseUrl"))
        scopes = _list(env, f"{prefix}__Scopes")
        if not scopes:
            raise ConfigurationError(f"{prefix}__Scopes", "is required")
        apis[name] = DownstreamApi(
            name=name, base_url=base, relative_path=_get(env, f"{prefix}__RelativePath", "") or "",
            scopes=scopes,
            connect_timeout=_number(env, f"{prefix}__ConnectTimeoutSeconds", 3.05, maximum=60),
            read_timeout=_number(env, f"{prefix}__TimeoutSeconds", 10.0, maximum=120))
    return apis
