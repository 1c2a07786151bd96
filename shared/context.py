"""The one per-process app context: settings, HTTP session, signing keys, MSAL, built on first use.

A cold start pays for it once; a warm instance reuses it. A shared token cache whose key is missing
or an unresolved Key Vault reference is switched off with an operator error, never run unencrypted.

The first request builds it, and starts (``Tokens.prefetch``) the app's credential and MSAL app in the background
while it validates its caller's token: the cold start waits for the longer of the two chains (signing keys:
metadata -> JWKS; credential: Key Vault's challenge -> managed identity -> Key Vault), not their sum. The signing
keys and MSAL's authority read the same OpenID metadata document: the session shares that one answer
(``OutboundSession.share``). ``bench/cold_start.py`` measures it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from .config import CONNECT_TIMEOUT, Settings, TokenCacheSettings, load_settings
from .errors import ConfigurationError
from .memory import validator_memo_bytes
from .outbound import OutboundSession
from .signing_keys import SigningKeys
from .throttle import default_acquisition_limit
from .token_cache import PartitionStore, TokenCache
from .tokens import Tokens
from .validation import TokenValidator

log = logging.getLogger("middletier")
# azure-core logs each request and response at INFO, the Azure Monitor exporter's own included (each then
# exported again). Set on import: the worker configures its exporter before it loads the functions.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
logging.getLogger("azure.identity").setLevel(logging.WARNING)


@dataclass
class AppContext:
    settings: Settings
    session: OutboundSession
    tokens: Tokens
    validator: TokenValidator


def build_context(env: Mapping[str, str] | None = None) -> AppContext:
    from .credentials import CredentialLoader  # the credential's code (and its SDKs, on their first use): at build
    settings = load_settings(env)
    ad = settings.azure_ad
    session = OutboundSession(default_timeout=(min(CONNECT_TIMEOUT, ad.timeout_seconds), ad.timeout_seconds))
    metadata_url = f"{ad.authority}/v2.0/.well-known/openid-configuration"
    # MSAL's tenant discovery (msal.authority.Authority) GETs this same URL for the app's authority: one call
    session.share(metadata_url)
    keys = SigningKeys(metadata_url, session,
                       v1_metadata_url=ad.v1_metadata_url, refresh_seconds=ad.metadata_refresh_seconds,
                       timeout=ad.timeout_seconds)
    loader = CredentialLoader(ad.credentials, settings.key_vault, send_x5c=ad.send_x5c,
                              user_assigned_client_id=ad.user_assigned_managed_identity_client_id)
    tokens = Tokens(ad, loader.load, session, build_token_cache(settings.token_cache),
                   failure_backoff=settings.credential_failure_backoff_seconds,
                   session_lifetime=settings.token_cache.session_lifetime_seconds,
                   max_concurrent=settings.max_concurrent_token_acquisitions
                   or default_acquisition_limit(settings.thread_pool_size),
                   queue_seconds=settings.token_acquisition_queue_seconds)
    validator = TokenValidator(keys, ad, max_entries=settings.token_cache.l1_max_entries,
                               max_bytes=validator_memo_bytes(settings.token_cache.l1_max_bytes))
    return AppContext(settings, session, tokens, validator)


def build_token_cache(tc: TokenCacheSettings) -> TokenCache:
    # one budget, shared with the validator's memo
    l1 = PartitionStore(tc.l1_max_entries, tc.l1_max_bytes - validator_memo_bytes(tc.l1_max_bytes))
    if tc.l2 == "none":
        return TokenCache(l1)
    if tc.l2_disabled_reason or tc.encryption_key is None:
        log.error("configuration error: %s The shared token cache (TokenCache__L2=%s) is OFF: this instance serves "
                  "from its in-process cache only and writes nothing outside the process until the setting is "
                  "fixed and the app restarted.", tc.l2_disabled_reason, tc.l2)
        return TokenCache(l1)
    from .token_cache import Breaker, Sealer, backend_for  # the L2 layer: imported by the apps that configure one
    l2 = Breaker(backend_for(tc), open_seconds=tc.l2_retry_seconds)
    return TokenCache(l1, l2, Sealer.from_base64(tc.encryption_key), lock_ms=tc.lock_milliseconds)


CONFIGURATION_RETRY_SECONDS = 30.0
_lock = threading.Lock()
_context: AppContext | None = None
_failure: tuple[float, ConfigurationError] | None = None


def app_context(clock: Callable[[], float] = time.monotonic) -> AppContext:
    """The process's context, built on first use; a configuration error is re-raised from memory for
    ``CONFIGURATION_RETRY_SECONDS`` (logged once per burst), then the settings are read again."""
    global _context, _failure
    if _context is not None:
        return _context
    started = time.monotonic()
    with _lock:
        if _context is None:
            if _failure is not None and clock() - _failure[0] < CONFIGURATION_RETRY_SECONDS:
                raise _failure[1]
            try:
                context = build_context()
            except ConfigurationError as err:
                log.error("configuration error: %s", err.detail)
                _failure = (clock(), err)
                raise
            _failure = None
            if context.settings.downstream:  # tokens will be needed: load the credential beside validation
                context.tokens.prefetch(context.settings.request_budget_seconds - (time.monotonic() - started))
            _context = context
        return _context

