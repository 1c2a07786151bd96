"""Typed settings from the environment, named as Microsoft.Identity.Web names them (``__`` nests, ``__0`` indexes).

Each setting is declared once, as a field of its section's options class (MIW's options bound to a section):
``option(key, default, reader, bounds)``, typed by the field; the README's settings table documents it
(``tests/unit/test_config.py`` holds the two equal). Read once per process; a bad one raises
``ConfigurationError`` naming the key and never the value, because values are often secrets.
"""
from __future__ import annotations

import base64
import os
import re
import uuid
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import quote, urlsplit

from .errors import ConfigurationError

GENERIC_TENANTS = ("common", "organizations")
# The in-process cache's bounds; its bytes are memory really held per caller token (shared/memory.py, README).
L1_MAX_ENTRIES = 10_000
L1_MAX_BYTES = 256 * 1024 * 1024
# requests' advice for a connect timeout: a little over a multiple of 3 s, TCP's SYN retransmission interval.
# Entra's calls have no setting for it (min(this, AzureAd__TimeoutSeconds)); the other upstreams' default.
CONNECT_TIMEOUT = 3.05
S = TypeVar("S")


def option(key: str, default: Any = MISSING, read: Callable[..., Any] | None = None, **limits: Any) -> Any:
    """A field that is one setting: its key, default, bounds, and reader (by default, its type's)."""
    return field(default=default, metadata={"key": key, "read": read, "limits": limits})


def default(cls: type, name: str) -> Any:
    """A setting's declared default: a constructor's default for it is this, never a second literal."""
    return next(f.default for f in fields(cls) if f.name == name)


def section(cls: type, required: bool = False) -> Any:
    metadata = {"section": cls, "load": lambda env: load(cls, env)}
    return field(metadata=metadata) if required else field(default_factory=cls, metadata=metadata)


def load(cls: type[S], env: Mapping[str, str] | None = None, **given: Any) -> S:
    """One section from ``env`` (default: the process environment): each option read, or its default.
    ``given`` fields are set, not read; a downstream API's ``name`` is its keys' ``<Name>``."""
    env = os.environ if env is None else env
    values = dict(given)
    for f in (f for f in fields(cls) if f.name not in given):  # type: ignore[arg-type]
        m, key = f.metadata, f.metadata.get("key", "").replace("<Name>", str(given.get("name")))
        if "load" in m:  # a section, or the downstream APIs
            values[f.name] = m["load"](env)
        elif key and (value := (m["read"] or READERS.get(f.type, _get))(env, key, **m["limits"])) is not None:
            values[f.name] = int(value) if f.type == "int" else value
        elif key and f.default is MISSING:
            raise ConfigurationError(key, "is required")
    settings = cls(**values)
    return settings.checked() if hasattr(settings, "checked") else settings


def _key(section: Any, name: str) -> str:
    key = next(f.metadata["key"] for f in fields(section) if f.name == name)
    return key.replace("<Name>", getattr(section, "name", "<Name>"))  # a downstream API's, with its name


# --- readers: (env, key, **limits) -> value, None when the setting is unset --------------------------
def _get(env: Mapping[str, str], key: str) -> str | None:
    if (value := _raw(env, key)) is not None:
        _refuse_reference(key, value)
    return value


def _refuse_reference(key: str, value: str) -> None:
    if value.strip().lower().startswith("@microsoft.keyvault("):
        # App Service leaves a Key Vault reference's text in place when it can't resolve it (no secret, no
        # access, vault firewall): used as the value, it would fail far from the cause.
        raise ConfigurationError(key, "is an unresolved Key Vault reference: check that the secret exists and "
                                      "that the app's managed identity may read it (Key Vault Secrets User)")


def _raw(env: Mapping[str, str], key: str) -> str | None:
    """Unchecked: for settings that never fail start-up (telemetry; the L2's, see ``TokenCacheSettings``)."""
    return (env.get(key) or "").strip() or None


def _list(env: Mapping[str, str], key: str, choices: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """A list setting: space/comma separated in one value, or indexed ``key__0``, ``key__1``..."""
    items = [s for s in re.split(r"[\s,]+", _get(env, key) or "") if s]
    i = 0
    while (value := _get(env, f"{key}__{i}")) is not None:
        items.append(value)
        i += 1
    if choices and not set(items) <= set(choices):
        raise ConfigurationError(key, f"may only list {' and '.join(choices)}")
    return tuple(items) or None


def _bool(env: Mapping[str, str], key: str) -> bool | None:
    value = (_get(env, key) or "").lower()
    if value not in ("1", "true", "yes", "0", "false", "no", ""):
        raise ConfigurationError(key, "must be true or false")
    return value in ("1", "true", "yes") if value else None


def _number(env: Mapping[str, str], key: str, *, minimum: float = 0.001, maximum: float = 86400 * 7) -> float | None:
    value = _get(env, key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(key, "must be a number") from None
    if not minimum <= number <= maximum:
        raise ConfigurationError(key, f"must be between {minimum:g} and {maximum:g}")
    return number


def _pool_size(env: Mapping[str, str], key: str) -> int | None:
    """The worker's thread pool: like the worker, a value that is not a number means its default."""
    value = _raw(env, key) or ""
    return int(value) if value.isdigit() else None


def _choice(env: Mapping[str, str], key: str, *, choices: tuple[str, ...]) -> str | None:
    value = _get(env, key)
    if value is not None and value.lower() not in choices:
        raise ConfigurationError(key, f"must be {', '.join(choices[:-1])} or {choices[-1]}")
    return value and value.lower()


def _https(env: Mapping[str, str], key: str, slash: bool = False) -> str | None:
    value = _get(env, key)
    if value is not None and (urlsplit(value).scheme != "https" or not urlsplit(value).netloc):
        raise ConfigurationError(key, "must be an absolute https:// URL")
    return value + "/" if value and slash and not value.endswith("/") else value


def _guid(env: Mapping[str, str], key: str, generic: tuple[str, ...] = ()) -> str | None:
    value = _get(env, key)
    try:
        if value is not None and value.lower() not in generic:
            uuid.UUID(value)
    except ValueError:
        raise ConfigurationError(key, "must be a GUID") from None
    return value


def _capabilities(env: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    values = _list(env, key) or ()
    if "none" in (v.lower() for v in values) and len(values) > 1:
        raise ConfigurationError(key, "is either none or a list of capabilities")
    return () if "none" in (v.lower() for v in values) else values or None


def _credentials(env: Mapping[str, str], key: str) -> tuple[CredentialDescription, ...]:
    found: list[CredentialDescription] = []
    while (source := _get(env, f"{key}__{len(found)}__SourceType")) is not None:
        prefix = f"{key}__{len(found)}"
        values = {k[len(prefix) + 2:]: v for k, v in env.items() if k.startswith(prefix + "__") and v}
        for name, value in values.items():
            _refuse_reference(f"{prefix}__{name}", value)
        found.append(CredentialDescription(source, values, prefix))
    return tuple(found)


READERS = {"bool": _bool, "int": _number, "float": _number, "tuple[str, ...]": _list}  # by the field's type


@dataclass(frozen=True)
class CredentialDescription:
    """One entry of ``AzureAd__ClientCredentials``; tried in order, like MIW."""
    source_type: str
    values: Mapping[str, str]
    key: str  # the settings prefix, for error messages

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def require(self, name: str) -> str:
        if not (value := self.values.get(name)):
            raise ConfigurationError(f"{self.key}__{name}", "is required for SourceType " + self.source_type)
        return value


@dataclass(frozen=True, kw_only=True)
class AzureAdSettings:
    instance: str = option("AzureAd__Instance", "https://login.microsoftonline.com/", _https, slash=True)
    tenant_id: str = option("AzureAd__TenantId", read=_guid, generic=GENERIC_TENANTS)
    client_id: str = option("AzureAd__ClientId", read=_guid)
    audience: tuple[str, ...] = option("AzureAd__Audience", ())
    audiences: tuple[str, ...] = option("AzureAd__Audiences", ())  # once checked: the client id + both
    scopes: tuple[str, ...] = option("AzureAd__Scopes", ())
    app_permissions: tuple[str, ...] = option("AzureAd__AppPermissions", ())
    allow_acl: bool = option("AzureAd__AllowWebApiToBeAuthorizedByACL", False)
    allowed_client_applications: tuple[str, ...] = option("AzureAd__AllowedClientApplications", ())
    token_versions: tuple[str, ...] = option("AzureAd__AccessTokenVersions", ("1.0", "2.0"), choices=("1.0", "2.0"))
    allowed_tenants: tuple[str, ...] = option("AzureAd__AllowedTenants", ())
    credentials: tuple[CredentialDescription, ...] = option("AzureAd__ClientCredentials", (), _credentials)
    client_secret: str | None = option("AzureAd__ClientSecret", None)
    send_x5c: bool = option("AzureAd__SendX5C", False)
    user_assigned_managed_identity_client_id: str | None = option("AzureAd__UserAssignedManagedIdentityClientId", None)
    disable_instance_discovery: bool = option("AzureAd__DisableInstanceDiscovery", False)
    client_capabilities: tuple[str, ...] = option("AzureAd__ClientCapabilities", ("cp1",), _capabilities)
    clock_skew_seconds: int = option("AzureAd__ClockSkewSeconds", 300, minimum=0, maximum=600)
    metadata_refresh_seconds: int = option("AzureAd__MetadataRefreshSeconds", 24 * 3600, minimum=60, maximum=7 * 86400)
    timeout_seconds: float = option("AzureAd__TimeoutSeconds", 10.0, maximum=120)

    def checked(self) -> AzureAdSettings:
        if not self.scopes and not self.app_permissions:
            raise ConfigurationError(_key(self, "scopes"), f"or {_key(self, 'app_permissions')} is required: "
                                     "a token without a required scope or role must be refused")
        if self.allow_acl and not self.allowed_client_applications:
            raise ConfigurationError(_key(self, "allowed_client_applications"),
                                     "must list the client ids trusted in ACL mode")
        secret = self.client_secret and CredentialDescription("ClientSecret", {"ClientSecret": self.client_secret},
                                                              _key(self, "client_secret"))
        return replace(self, audiences=tuple(dict.fromkeys((self.client_id, *self.audience, *self.audiences))),
                       credentials=self.credentials + ((secret,) if secret else ()))

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


@dataclass(frozen=True, kw_only=True)
class KeyVaultSettings:
    verify_challenge_resource: bool = option("KeyVault__VerifyChallengeResource", True)
    connect_timeout: float = option("KeyVault__ConnectTimeoutSeconds", CONNECT_TIMEOUT, maximum=60)
    read_timeout: float = option("KeyVault__TimeoutSeconds", 10.0, maximum=120)


@dataclass(frozen=True)
class DownstreamApi:
    name: str
    base_url: str = option("DownstreamApis__<Name>__BaseUrl", read=_https)
    relative_path: str = option("DownstreamApis__<Name>__RelativePath", "")
    scopes: tuple[str, ...] = option("DownstreamApis__<Name>__Scopes", ())  # required: see checked
    connect_timeout: float = option("DownstreamApis__<Name>__ConnectTimeoutSeconds", CONNECT_TIMEOUT, maximum=60)
    read_timeout: float = option("DownstreamApis__<Name>__TimeoutSeconds", 10.0, maximum=120)

    def checked(self) -> DownstreamApi:
        if not self.scopes:
            raise ConfigurationError(_key(self, "scopes"), "is required")
        return self

    def app_scopes(self) -> tuple[str, ...]:
        """What a call as the app asks (client credentials): ``<resource>/.default`` of the one
        resource the scopes name, as MIW's ``CallApiForAppAsync`` wants it."""
        resources = {scope.rpartition("/")[0] for scope in self.scopes}
        if len(resources) != 1 or "" in resources:
            raise ConfigurationError(_key(self, "scopes"),
                                     "must name one resource (<resource>/<permission>) to call the API as the app")
        return (f"{resources.pop()}/.default",)

    def url(self, path: str | None = None) -> str:
        rel = self.relative_path if path is None else path
        return self.base_url.rstrip("/") + ("/" + rel.lstrip("/") if rel else "")


@dataclass(frozen=True, kw_only=True)
class TokenCacheSettings:
    l1_max_entries: int = option("TokenCache__L1MaxEntries", L1_MAX_ENTRIES, minimum=1, maximum=10_000_000)
    l1_max_bytes: int = option("TokenCache__L1MaxBytes", L1_MAX_BYTES, minimum=64 * 1024, maximum=16 * 1024 ** 3)
    l2: str = option("TokenCache__L2", "none", _choice, choices=("none", "redis", "blob"))
    redis_url: str | None = option("TokenCache__RedisConnectionString", None, _raw)
    blob_connection_string: str | None = option("TokenCache__BlobConnectionString", None, _raw)
    functions_storage: str | None = option("AzureWebJobsStorage", None, _raw)
    blob_container: str = option("TokenCache__BlobContainer", "msal-token-cache")
    encryption_key: str | None = option("TokenCache__EncryptionKey", None, _raw)
    l2_disabled_reason: str | None = None  # why the L2 is off although configured: see checked
    l2_timeout_seconds: float = option("TokenCache__L2TimeoutSeconds", 0.5, maximum=30)  # not made with less left
    l2_retry_seconds: float = option("TokenCache__L2RetrySeconds", 5.0, minimum=0, maximum=3600)
    # Outlasts a holder's queue and Entra call (AzureAd__TimeoutSeconds): a shorter lock expired under a burst of
    # 200 cold requests on 8 processes and let another process call Entra for the same partition (issue 18).
    lock_milliseconds: int = option("TokenCache__LockMilliseconds", 15_000, minimum=10, maximum=60_000)
    session_lifetime_seconds: int = option("TokenCache__SessionLifetimeSeconds", 24 * 3600, minimum=60,
                                           maximum=90 * 86400)

    def checked(self) -> TokenCacheSettings:
        """The L2's connection and key (read unchecked) count only with an L2. An unresolved Key Vault reference
        in them, or a missing or malformed key, costs the shared cache, not the app: it serves from L1 alone
        and never writes a token outside the process unencrypted."""
        name = {"redis": "redis_url", "blob": "blob_connection_string"}.get(self.l2)
        l2: dict[str, Any] = dict(redis_url=None, blob_connection_string=None, encryption_key=None)
        try:
            url = name and (self._refused(name) or self.l2 == "blob" and self._refused("functions_storage"))
        except ConfigurationError as err:
            return replace(self, **l2, l2_disabled_reason=err.detail)
        if name and not url:
            raise ConfigurationError(_key(self, name), f"is required when {_key(self, 'l2')} is {self.l2}")
        if name:
            problem = self._key_problem()
            l2.update({name: redis_url_from(url) if self.l2 == "redis" else url, "l2_disabled_reason": problem,
                       "encryption_key": None if problem else self.encryption_key})
        return replace(self, **l2)

    def _refused(self, name: str) -> str | None:
        if value := getattr(self, name):
            _refuse_reference(_key(self, name), value)
        return value

    def _key_problem(self) -> str | None:
        name = _key(self, "encryption_key")
        try:
            key = base64.b64decode(self._refused("encryption_key") or "", validate=True)
        except ConfigurationError as err:
            return err.detail
        except ValueError:  # binascii.Error
            key = b""
        if not self.encryption_key:
            return f"Setting {name} is required for a shared cache: tokens are never stored outside the process " \
                   "unencrypted."
        return None if len(key) == 32 else f"Setting {name} must be 32 bytes, base64-encoded."


@dataclass(frozen=True, kw_only=True)
class TelemetrySettings:
    """Telemetry on: the Python worker's OpenTelemetry or our own opt-in; read by ``telemetry`` on first use."""
    worker: str | None = option("PYTHON_ENABLE_OPENTELEMETRY", None, _raw)
    library_worker: str | None = option("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", None, _raw)
    mode: str | None = option("MiddleTier__Telemetry", None, _raw)
    connection_string: str | None = option("APPLICATIONINSIGHTS_CONNECTION_STRING", None, _raw)

    @property
    def enabled_by(self) -> str | None:
        on = {"worker": "true", "library_worker": "true", "mode": "otel"}  # anything else: off, never an error
        return next((_key(self, n) for n, word in on.items() if (getattr(self, n) or "").lower() == word), None)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every section, and the ``MiddleTier`` section's own options."""
    azure_ad: AzureAdSettings = section(AzureAdSettings, required=True)
    key_vault: KeyVaultSettings = section(KeyVaultSettings)
    downstream: Mapping[str, DownstreamApi] = field(default_factory=dict, metadata={
        "load": lambda env: _downstream_apis(env), "section": DownstreamApi})  # by name
    # One deadline over everything a request waits on, from its start (shared/deadline.py): the signing keys'
    # fetch during validation, Key Vault and the managed identity (every SDK attempt, retry and backoff), the L2
    # cache (a call is skipped when less time is left than TokenCache__L2TimeoutSeconds), the token-acquisition
    # queue, the per-caller lock, Entra, and the downstream API's whole answer (a body sent slowly too); past
    # it the answer is 504.
    request_budget_seconds: float = option("MiddleTier__RequestBudgetSeconds", 25.0, maximum=230)
    credential_failure_backoff_seconds: float = option("MiddleTier__CredentialFailureBackoffSeconds", 5.0,
                                                       minimum=0, maximum=600)
    max_concurrent_token_acquisitions: int = option("MiddleTier__MaxConcurrentTokenAcquisitions", 0,
                                                    minimum=1, maximum=1000)
    token_acquisition_queue_seconds: float = option("MiddleTier__TokenAcquisitionQueueSeconds", 0.25,
                                                    minimum=0, maximum=30)
    thread_pool_size: int = option("PYTHON_THREADPOOL_THREAD_COUNT", 0, _pool_size)
    token_cache: TokenCacheSettings = section(TokenCacheSettings)
    telemetry: TelemetrySettings = section(TelemetrySettings)

    def downstream_api(self, name: str) -> DownstreamApi:
        try:
            return self.downstream[name]
        except KeyError:
            raise ConfigurationError(_key(DownstreamApi, "base_url").replace("<Name>", name), "is not set") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    return load(Settings, env)  # every setting the app uses; ConfigurationError on the first bad one


def redis_url_from(value: str) -> str:
    """A redis:// / rediss:// URL, from one or from Azure's ``host:6380,password=...,ssl=True,abortConnect=False``."""
    if "://" in value:
        return value
    host, *parts = [p.strip() for p in value.split(",") if p.strip()]
    opts = {k.strip().lower(): v.strip() for k, _, v in (o.partition("=") for o in parts)}
    scheme = "rediss" if opts.get("ssl", "false").lower() == "true" else "redis"
    auth = f":{quote(password, safe='')}@" if (password := opts.get("password")) else ""
    return f"{scheme}://{auth}{host}/0"


def _downstream_apis(env: Mapping[str, str]) -> dict[str, DownstreamApi]:
    names = sorted({k.split("__")[1] for k in env if k.startswith("DownstreamApis__") and k.count("__") >= 2})
    return {name: load(DownstreamApi, env, name=name) for name in names}
