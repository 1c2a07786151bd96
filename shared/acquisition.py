"""On-Behalf-Of token acquisition: silent from the user's partition first, OBO on a miss.

One ``msal.ConfidentialClientApplication`` per process (per tenant when multi-tenant), built
on first use and reused. Entra's answers are mapped to the app's error types here, so the
rest of the app never sees an MSAL dict.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import msal
import requests
from msal.exceptions import MsalServiceError

from .config import AzureAdSettings
from .credentials import MsalCredential
from . import aadsts
from .aadsts import Kind
from .errors import (AccessDenied, ApiError, AuthenticationError, ClaimsChallenge, CredentialError,
                     TenantNotProvisioned, UpstreamError)
from .outbound import OutboundSession
from . import telemetry
from .cache import TokenCacheLayers
from .throttle import DEFAULT_SECONDS, AcquisitionGate, EntraThrottle, PerCallerHttpCache, default_acquisition_limit
from .token_cache import Partition, PartitionStore, PartitionedTokenCache, partition_key, use_partition
from .validation import Caller

log = logging.getLogger("middletier.tokens")
# A tenant whose directory lacks a downstream API fails every request of its users the same way:
# one WARNING per (tenant, codes) per interval, never a line per request (any allowed tenant could
# flood the logs and alerts). Bounded: at most TENANT_NOTICE_MAX tenants are remembered.
TENANT_NOTICE_SECONDS = 600.0
TENANT_NOTICE_MAX = 1024
_tenant_notices: dict[tuple[str, tuple[int, ...]], float] = {}
_tenant_notices_lock = threading.Lock()



@dataclass
class Counters:
    silent_hits: int = 0
    obo_calls: int = 0
    app_token_calls: int = 0
    credential_reloads: int = 0


class TokenAcquirer:
    def __init__(self, settings: AzureAdSettings, load_credential: Callable[[], MsalCredential],
                 session: OutboundSession, layers: TokenCacheLayers | None = None, *,
                 failure_backoff: float = 5.0, session_lifetime: float = 24 * 3600,
                 clock: Callable[[], float] = time.monotonic, max_concurrent: int | None = None,
                 queue_seconds: float = 0.25, throttle: EntraThrottle | None = None):
        self.settings = settings
        self._load_credential = load_credential
        self._session = session
        self.layers = layers or TokenCacheLayers(PartitionStore())
        self.session_lifetime = session_lifetime
        self.cache = PartitionedTokenCache()
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}
        self._credential: MsalCredential | None = None
        self._generation = 0          # bumped on every (re)load; a reload happens once per generation
        self._last_reload = float("-inf")
        self._failed: tuple[float, ApiError] | None = None
        self._failure_backoff = failure_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self.counters = Counters()
        # Failure isolation between callers: Entra's 429/5xx remembered per caller (not per scope, as
        # MSAL does), an app-wide breaker for outages, and a bound on concurrent calls to Entra.
        self.throttle = throttle or EntraThrottle()
        self.gate = AcquisitionGate(max_concurrent or default_acquisition_limit(), queue_seconds)

    # --- the credential and the MSAL app ----------------------------------------------------------
    def _ensure_credential(self) -> MsalCredential:
        """Load once, single-flight (callers hold the lock). A failure is remembered for a few
        seconds so a Key Vault outage costs one attempt per backoff, not one per request."""
        if self._credential is not None:
            return self._credential
        if self._failed is not None and self._clock() - self._failed[0] < self._failure_backoff:
            raise self._failed[1]
        try:
            self._credential = self._load_credential()
        except ApiError as err:
            self._failed = (self._clock(), err)
            raise
        self._failed = None
        self._generation += 1
        return self._credential

    def _app(self, tenant: str) -> tuple[msal.ConfidentialClientApplication, int]:
        app = self._apps.get(tenant)
        if app is not None:
            return app, self._generation
        with self._lock:
            if tenant not in self._apps:
                credential = self._ensure_credential()
                self._apps[tenant] = self._call_entra(lambda: msal.ConfidentialClientApplication(
                    self.settings.client_id, client_credential=credential,
                    authority=f"{self.settings.instance}{tenant}", token_cache=self.cache,
                    http_client=self._session, http_cache=PerCallerHttpCache(), client_capabilities=list(self.settings.client_capabilities) or None,
                    instance_discovery=not self.settings.disable_instance_discovery))
            return self._apps[tenant], self._generation

    def _reload_credential(self, seen_generation: int) -> None:
        """Entra refused the credential of ``seen_generation``: it may have rotated. Reload it, once,
        and not again within the failure backoff — a credential Entra keeps refusing costs one Key
        Vault read per backoff, not one per request."""
        with self._lock:
            if self._generation != seen_generation:
                return  # another request already reloaded it
            if self._clock() - self._last_reload < self._failure_backoff:
                return
            self._last_reload = self._clock()
            self._credential = None
            self._apps.clear()
            self.counters.credential_reloads += 1
            self._ensure_credential()

    def _tenant_for(self, caller: Caller) -> str:
        return caller.tid if self.settings.multi_tenant else self.settings.tenant_id

    # --- acquisition --------------------------------------------------------------------------
    def for_user(self, assertion: str, caller: Caller, scopes: tuple[str, ...],
                 claims_challenge: str | None = None) -> str:
        """An access token for ``scopes`` on behalf of the caller; ApiError on any failure.

        Silent first from the caller's partition (L1, else L2); OBO on a miss, by one request per
        partition in this process and, with an L2, by one instance at a time.
        """
        exp = caller.claims.get("exp")
        part = self.layers.partition(caller.token_hash or partition_key(assertion),
                                     float(exp) if isinstance(exp, (int, float)) else time.time() + 300)
        if claims_challenge is None and (hot := part.hot.get(scopes)) and time.time() < hot[1]:
            self.counters.silent_hits += 1
            telemetry.count("cache.hits", level="memo")
            return hot[0]
        with use_partition(part):
            if claims_challenge is None:  # the warm path: no lock; network only if MSAL redeems the RT
                with telemetry.span("cache_lookup"):
                    token = self._silent(caller, scopes, part)
                if token is not None:
                    telemetry.count("cache.hits", level="msal")
                    return token
            telemetry.count("cache.misses")
            with self._locked(part), self.layers.flight(part):  # one instance calls Entra; others reload its entry
                if claims_challenge is None:  # another request may have filled it while we waited
                    token = self._silent(caller, scopes, part)
                    if token is not None:
                        return token
                result, generation = self._obo(assertion, caller, scopes, claims_challenge)
                if _is_invalid_client(result):
                    log.error("Entra refused the app's client credential (AADSTS%s); reloading it once",
                              result.get("error_codes"))
                    self._reload_credential(generation)
                    result, _ = self._obo(assertion, caller, scopes, claims_challenge)
                token = self._token_or_raise(result, self._tenant_for(caller), scopes)
                self.layers.save(part, _expires_at(result))
                _remember(part, scopes, token, result)
            return token

    def for_app(self, scopes: tuple[str, ...], tenant: str | None = None, claims_challenge: str | None = None) -> str:
        """A token for the app itself (client credentials, ``<resource>/.default``), from a partition
        of its own that no user request can reach (its key is not the hash of any caller token).
        ``claims_challenge``: a resource's CAE challenge to an app token (the app declares ``cp1`` for
        client credentials too); MSAL then skips its cache and asks Entra with those claims."""
        tid = tenant if self.settings.multi_tenant and tenant else self.settings.tenant_id
        part = self.layers.partition(partition_key(f"app-only:{self.settings.client_id}:{tid}"),
                                     time.time() + 24 * 3600)
        if claims_challenge is None and (hot := part.hot.get(scopes)) and time.time() < hot[1]:
            telemetry.count("cache.hits", level="memo")
            return hot[0]
        key = f"app:{tid}:{' '.join(sorted(scopes))}"
        with use_partition(part), self._locked(part):
            app, generation = self._app(tid)
            result = self._throttled(key, lambda: app.acquire_token_for_client(list(scopes),
                                                                              claims_challenge=claims_challenge))
            if _is_invalid_client(result):
                self._reload_credential(generation)
                app, _ = self._app(tid)
                result = self._throttled(key, lambda: app.acquire_token_for_client(list(scopes),
                                                                                  claims_challenge=claims_challenge))
            token = self._token_or_raise(result, tid, scopes)
            if result.get("token_source") == "identity_provider":
                self.counters.app_token_calls += 1
                self.layers.save(part)
            _remember(part, scopes, token, result)
        return token

    def start_session(self, assertion: str, caller: Caller, scopes: tuple[str, ...]) -> str:
        """Long-running work (MIW's ``InitiateLongRunningProcessInWebApi``): OBO now, and return a
        session key under which a background job can keep getting tokens from the refresh token
        after the caller's assertion has expired. The key is a secret: keep it like one."""
        session_key = secrets.token_urlsafe(32)
        part = self.layers.l1.put(Partition(partition_key("session:" + session_key),
                                            time.time() + self.session_lifetime))
        with use_partition(part), self._locked(part):
            result, generation = self._obo(assertion, caller, scopes, None)
            if _is_invalid_client(result):
                self._reload_credential(generation)
                result, _ = self._obo(assertion, caller, scopes, None)
            self._token_or_raise(result, self._tenant_for(caller), scopes)
            self.layers.save(part)
        return session_key

    def for_session(self, session_key: str, tid: str, scopes: tuple[str, ...]) -> str:
        """A token for a long-running session: cache or refresh token only, never a new OBO."""
        part = self.layers.partition(partition_key("session:" + session_key), time.time() + self.session_lifetime)
        with use_partition(part), self._locked(part):
            app, _ = self._app(tid if self.settings.multi_tenant else self.settings.tenant_id)
            accounts = self._call_entra(app.get_accounts)  # may fetch instance metadata
            result = self._call_entra(lambda: app.acquire_token_silent_with_error(list(scopes), accounts[0])) \
                if accounts else None
            if not result or "access_token" not in result:
                raise AuthenticationError("The long-running session has expired; the user must call again.")
            self.layers.save(part)
            return str(result["access_token"])

    def _silent(self, caller: Caller, scopes: tuple[str, ...], part: Partition) -> str | None:
        app, _ = self._app(self._tenant_for(caller))
        accounts = self._call_entra(app.get_accounts)  # may fetch instance metadata
        if not accounts:
            return None
        result = self._call_entra(lambda: app.acquire_token_silent_with_error(list(scopes), accounts[0]))
        if result and "access_token" in result:
            self.counters.silent_hits += 1
            if result.get("token_source") == "identity_provider":  # MSAL used the refresh token
                self.layers.save(part, _expires_at(result))
            _remember(part, scopes, str(result["access_token"]), result)
            return str(result["access_token"])
        return None  # nothing cached, or the refresh failed: a fresh OBO decides

    def _obo(self, assertion: str, caller: Caller, scopes: tuple[str, ...],
             claims: str | None) -> tuple[dict[str, Any], int]:
        app, generation = self._app(self._tenant_for(caller))
        # Entra's throttle for this user (and this scope set), not for everyone who asks for the scope.
        key = f"obo:{caller.tid}:{caller.oid or caller.token_hash or partition_key(assertion)}:{' '.join(sorted(scopes))}"
        self.throttle.check(key)
        self.counters.obo_calls += 1
        telemetry.count("obo.calls", claims="yes" if claims else "no")
        with telemetry.span("obo", tenant=caller.tid) as span:
            result = self._throttled(key, lambda: app.acquire_token_on_behalf_of(assertion, list(scopes),
                                                                                claims_challenge=claims))
            if span is not None and "error" in result:
                span.set_attribute("error", str(result.get("error")))
        return result, generation

    @contextlib.contextmanager
    def _locked(self, part: Partition) -> Iterator[None]:
        """The partition's lock, waited for no longer than one Entra call (and the request's budget):
        a request stuck behind another's slow acquisition answers 503, it does not hold its thread."""
        wait = self.settings.timeout_seconds
        remaining = self._session.remaining()
        if remaining is not None:
            wait = min(wait, remaining)
        if not part.lock.acquire(timeout=max(0.0, wait)):
            raise UpstreamError("entra", "Another request of this caller is still waiting for the identity provider.",
                                503, 1)
        try:
            yield
        finally:
            part.lock.release()

    def _throttled(self, key: str, call: Callable[[], Any]) -> Any:
        """One call to Entra for the caller ``key``: refused while that caller (or the app, when the
        breaker is open) was told to wait; run in a bounded slot; a 429/5xx answer remembered for
        ``key`` with the failing call's own Retry-After."""
        self.throttle.check(key)
        with self.gate.slot():
            try:
                result = self._call_entra(call)
            except UpstreamError as err:
                status = self._session.last_status()
                if err.status == 503 and status is not None and (status == 429 or status >= 500):
                    held = self.throttle.failed(key, self._session.throttled_for())
                    err.headers.setdefault("Retry-After", str(held))  # how long this caller is now held
                raise
        status = self._session.last_status()
        if isinstance(result, dict) and "access_token" not in result and status is not None \
                and (status == 429 or status >= 500):
            self.throttle.failed(key, self._session.throttled_for())
        return result

    def _call_entra(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except requests.Timeout:
            raise UpstreamError("entra", "The identity provider did not answer in time.", 504) from None
        except (requests.HTTPError, MsalServiceError):
            # MSAL raises on 5xx. Its replay of 429/5xx per client and scope (every user's OBO) is off
            # (PerCallerHttpCache); ``_throttled`` remembers the answer per caller instead.
            raise UpstreamError("entra", "The identity provider is unavailable or throttling.", 503,
                                self._session.throttled_for()) from None
        except requests.RequestException:
            raise UpstreamError("entra", "The identity provider could not be reached.", 503) from None
        except ValueError as err:  # MSAL: authority metadata could not be loaded
            raise UpstreamError("entra", f"The identity provider's metadata is unavailable ({type(err).__name__}).",
                                503) from None

    def _token_or_raise(self, result: dict[str, Any], tenant: str | None = None,
                        scopes: tuple[str, ...] = ()) -> str:
        """The token, or the ApiError for Entra's answer. ``tenant``: the tenant whose authority answered."""
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", ""))
        codes = sorted({c for c in result.get("error_codes") or [] if isinstance(c, int)})
        summary = f"{error} (AADSTS{','.join(map(str, codes))})" if codes else error
        kind = aadsts.classify(error, codes)
        if kind is Kind.CREDENTIAL:
            raise CredentialError("The identity provider refused this app's client credential: " + summary, codes)
        if kind is Kind.CONFIGURATION and tenant and self.settings.multi_tenant and aadsts.is_tenant_state(codes):
            raise _tenant_not_provisioned(tenant, scopes, codes)
        if kind is Kind.CONFIGURATION:
            raise ApiError("The app's registration or downstream scopes are not valid: " + summary, 500,
                           "Configuration error", "configuration_error", extra={"aadsts": codes})
        if result.get("claims") or kind is Kind.INTERACTION:
            reason = "consent_required" if (result.get("suberror") == "consent_required" or {65001, 65004} & set(codes)) \
                else "interaction_required"
            raise ClaimsChallenge(
                "The user must sign in again to satisfy the identity provider: " + summary,
                claims=result.get("claims"), reason=reason, aadsts=codes, client_id=self.settings.client_id,
                authorization_uri=f"{self.settings.authority}/oauth2/v2.0/authorize")
        if kind is Kind.CALLER_TOKEN:
            raise AuthenticationError("The identity provider did not accept the token for delegation: " + summary)
        if kind is Kind.USER_BLOCKED:
            raise AccessDenied("The identity provider will not issue a token for this user: " + summary, codes)
        status = self._session.last_status()
        if kind is Kind.TRANSIENT or status == 429:
            # A 429/5xx holds this caller (EntraThrottle: its Retry-After, else DEFAULT_SECONDS): say so.
            held = DEFAULT_SECONDS if status is not None and (status == 429 or status >= 500) else None
            raise UpstreamError("entra", "The identity provider is throttling or unavailable: " + summary, 503,
                                self._session.throttled_for() or held)
        raise UpstreamError("entra", "The identity provider refused the exchange: " + summary, 502)


def _tenant_not_provisioned(tenant: str, scopes: tuple[str, ...], codes: list[int]) -> TenantNotProvisioned:
    """The caller's tenant lacks the resource (multi-tenant mode): 403, and a WARNING at most once per
    tenant and codes per ``TENANT_NOTICE_SECONDS``; later ones at DEBUG."""
    resource = scopes[0].rpartition("/")[0] if scopes and "/" in scopes[0] else ""
    now, key = time.monotonic(), (tenant.lower(), tuple(codes))
    with _tenant_notices_lock:
        fresh = now - _tenant_notices.get(key, float("-inf")) >= TENANT_NOTICE_SECONDS
        if fresh:
            for old in [k for k, t in _tenant_notices.items() if now - t >= TENANT_NOTICE_SECONDS]:
                del _tenant_notices[old]
            if len(_tenant_notices) >= TENANT_NOTICE_MAX:
                _tenant_notices.pop(next(iter(_tenant_notices)))
            _tenant_notices[key] = now
    log.log(logging.WARNING if fresh else logging.DEBUG,
            "resource %s is not provisioned in tenant %s (AADSTS%s): its users get 403 tenant_not_provisioned%s",
            resource or "?", tenant, ",".join(map(str, codes)),
            f" (logged once per {TENANT_NOTICE_SECONDS:.0f} s per tenant)" if fresh else "")
    return TenantNotProvisioned(tenant, resource, codes)


def _is_invalid_client(result: dict[str, Any]) -> bool:
    """Entra refused our own credential (it may have rotated: worth one reload)."""
    codes = [c for c in result.get("error_codes") or [] if isinstance(c, int)]
    return "access_token" not in result and aadsts.classify(str(result.get("error", "")), codes) is Kind.CREDENTIAL


def _remember(part: Partition, scopes: tuple[str, ...], token: str, result: dict[str, Any]) -> None:
    """Note the token MSAL returned, and until when MSAL would keep returning it: 5 minutes before
    expiry, or at half its life for long-lived (CAE) tokens, as MSAL's refresh_in does."""
    expires_in = result.get("expires_in")
    if not isinstance(expires_in, (int, float)):
        return
    now = time.time()
    until = now + expires_in - 300
    if expires_in >= 7200:
        until = min(until, now + expires_in / 2)
    if until > now:
        part.hot[scopes] = (token, until)


def _expires_at(result: dict[str, Any]) -> float | None:
    expires_in = result.get("expires_in")
    return time.time() + float(expires_in) if isinstance(expires_in, (int, float)) else None
