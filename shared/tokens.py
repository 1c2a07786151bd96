"""Tokens for downstream APIs (MIW's ``ITokenAcquisition``): on behalf of the caller, or as the app.

One ``msal.ConfidentialClientApplication`` per process (per tenant when multi-tenant), built on first use,
over the one ``TokenCache``, whose partitions this module opens, locks and commits (never its layers).
Entra's answers become the app's error types here: the rest of the app never sees an MSAL dict.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import msal
import requests
from msal.exceptions import MsalServiceError

from .config import AzureAdSettings, Settings, TokenCacheSettings, default
from . import aadsts, deadline, logctx
from .aadsts import Kind
from .errors import (AccessDenied, ApiError, AuthenticationError, ClaimsChallenge, CredentialError,
                     TenantNotProvisioned, UpstreamError)
from .outbound import OutboundSession
from . import telemetry
from .throttle import DEFAULT_SECONDS, AcquisitionGate, EntraThrottle, PerCallerHttpCache
from .token_cache import PartitionHandle, TokenCache, partition_key
from .validation import Caller

if TYPE_CHECKING:
    from .credentials import MsalCredential

log = logging.getLogger("middletier.tokens")
# A tenant lacking a downstream API fails every request of its users alike: one WARNING per (tenant, codes)
# per interval, never one per request (any allowed tenant could flood the logs). At most TENANT_NOTICE_MAX kept.
TENANT_NOTICE_SECONDS = 600.0
TENANT_NOTICE_MAX = 1024
_tenant_notices: dict[tuple[str, tuple[int, ...]], float] = {}
_tenant_notices_lock = threading.Lock()
IDENTITY_PROVIDER = "identity_provider"  # MSAL's token_source when it called Entra (the cache changed)
# How long past its own deadline a request waits for the cold-start prefetch to finish its last step (the prefetch
# is bounded by the same deadline; this covers the work after its last wait, e.g. parsing the certificate).
PREFETCH_GRACE_SECONDS = 1.0


@dataclasses.dataclass
class Prefetch:
    """The first request's background load of the credential and the MSAL app (``Tokens.prefetch``)."""
    owner: object | None            # the request that started it (logctx.current_request): the one to get its failure
    until: float                    # its deadline (time.monotonic), the starting request's
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    service: str = "keyvault"       # what it waits on now (for a 504 if it outlives a request's deadline)
    error: BaseException | None = None


class Reply(NamedTuple):
    """Entra's answer as MSAL gave it, with the HTTP status and Retry-After of the call that made it."""
    result: dict[str, Any]
    status: int | None = None
    retry_after: int | None = None


class Tokens:
    def __init__(self, settings: AzureAdSettings, load_credential: Callable[[], MsalCredential],
                 session: OutboundSession, cache: TokenCache | None = None, *,
                 max_concurrent: int, failure_backoff: float = default(Settings, "credential_failure_backoff_seconds"),
                 session_lifetime: float = default(TokenCacheSettings, "session_lifetime_seconds"),
                 clock: Callable[[], float] = time.monotonic, throttle: EntraThrottle | None = None,
                 queue_seconds: float = default(Settings, "token_acquisition_queue_seconds")):
        self.settings = settings
        self._load_credential = load_credential
        self._session = session
        self.cache = TokenCache() if cache is None else cache
        self.session_lifetime = session_lifetime
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}
        self._credential: MsalCredential | None = None
        self._generation = 0          # bumped on every (re)load; a reload happens once per generation
        self._last_reload = float("-inf")
        self._failed: tuple[float, ApiError] | None = None
        self._failure_backoff = failure_backoff
        self._clock = clock  # monotonic (credential backoff); the cache keeps the wall clock
        self._lock = threading.Lock()
        self._prefetch: Prefetch | None = None
        # Entra's 429/5xx remembered per caller (not per scope, as MSAL does), a breaker, a bound on calls.
        self.throttle = throttle or EntraThrottle()
        self.gate = AcquisitionGate(max_concurrent, queue_seconds)

    # --- the credential and the MSAL app ----------------------------------------------------------
    def _ensure_credential(self) -> MsalCredential:
        """Load once, single-flight (callers hold the lock); a failure is remembered for the backoff."""
        if self._credential is not None:
            return self._credential
        if self._failed is not None and self._clock() - self._failed[0] < self._failure_backoff:
            raise self._failed[1]
        try:
            self._credential = self._load_credential()
        except deadline.BudgetSpent:
            raise  # this request's lack of time, not the vault's failure: not remembered
        except ApiError as err:
            self._failed = (self._clock(), err)
            raise
        self._failed = None
        self._generation += 1
        return self._credential

    def prefetch(self, budget_seconds: float) -> None:
        """Start loading the app's credential (Key Vault: the vault's challenge, the managed identity, the read) and,
        single-tenant, building the MSAL app (its authority's metadata) in a background thread, so that a cold first
        request waits for the longer of that and its own token's validation (signing keys), not their sum.

        Called once, by the first request (``context.app_context``), never at import. The thread runs in a copy of the
        request's context (its trace id) under the same deadline, ``budget_seconds`` from now, so it ends when the
        request would have: every wait in it is bounded (``deadline.py``). Its outcome reaches requests through
        ``_app``, which waits for it (bounded): the request that started it (``logctx.current_request``, never a
        thread: the worker's pool runs the next request on it) raises its failure, once, as if it had loaded in
        its own thread; others go on as behind another request's load (a failure the backoff remembers, or their own
        attempt). Every failure is logged (its type and status: never its text)."""
        if self._prefetch is not None or self._credential is not None:
            return
        job = self._prefetch = Prefetch(logctx.current_request(), time.monotonic() + max(0.0, budget_seconds))
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self._prefetch_work, job),
                                  name="middletier-prefetch", daemon=True)
        thread.start()

    def _prefetch_work(self, job: Prefetch) -> None:
        try:
            with deadline.within(job.until - time.monotonic()):
                if self.settings.multi_tenant:  # the tenants' apps wait for their callers
                    with self._lock:
                        self._ensure_credential()
                else:
                    self._build_app(self.settings.tenant_id, job)
        except BaseException as err:  # noqa: BLE001 - for the request that started it (``_join_prefetch``)
            job.error = err
            status = getattr(err, "status", None)
            log.log(logging.INFO if isinstance(err, ApiError) else logging.ERROR,
                    "the cold-start load of the app's credential failed: %s%s", type(err).__name__,
                    f" ({status})" if status else "")
        finally:
            job.done.set()

    def _join_prefetch(self) -> None:
        """Wait for the cold-start prefetch, if one runs: no longer than this request's deadline (and the grace for
        the prefetch's last step). The request that started it raises its failure (``prefetch``)."""
        job = self._prefetch
        if job is None:
            return
        if not job.done.is_set():
            left = deadline.remaining()
            limit = max(0.0, job.until - time.monotonic()) if left is None else left
            if not job.done.wait(limit + PREFETCH_GRACE_SECONDS):
                raise deadline.BudgetSpent(job.service)
        self._prefetch = None  # done with: later requests skip it
        if job.error is not None and job.owner is not None and job.owner is logctx.current_request():
            error, job.error = job.error, None
            raise error

    def _app(self, tenant: str) -> tuple[msal.ConfidentialClientApplication, int]:
        if (app := self._apps.get(tenant)) is not None:
            return app, self._generation
        self._join_prefetch()
        return self._build_app(tenant)

    def _build_app(self, tenant: str, job: Prefetch | None = None) -> tuple[msal.ConfidentialClientApplication, int]:
        with self._lock:
            if tenant not in self._apps:
                credential = self._ensure_credential()
                if job is not None:
                    job.service = "entra"
                authority = dataclasses.replace(self.settings, tenant_id=tenant).authority
                self._apps[tenant] = self._call_entra(lambda: msal.ConfidentialClientApplication(
                    self.settings.client_id, client_credential=credential, authority=authority,
                    token_cache=self.cache.msal, http_client=self._session, http_cache=PerCallerHttpCache(),
                    client_capabilities=list(self.settings.client_capabilities) or None,
                    instance_discovery=not self.settings.disable_instance_discovery))
            return self._apps[tenant], self._generation

    def _reload_credential(self, seen_generation: int) -> None:
        """Entra refused the credential of ``seen_generation``: it may have rotated. Reload it once, and
        not again within the failure backoff (a refused credential costs one Key Vault read per backoff)."""
        with self._lock:
            if self._generation != seen_generation or self._clock() - self._last_reload < self._failure_backoff:
                return  # another request already reloaded it, or one did lately
            self._last_reload = self._clock()
            self._credential = None
            self._apps.clear()
            self._ensure_credential()

    def _with_credential(self, tenant: str, ask: Callable[[msal.ConfidentialClientApplication], Reply], *,
                         loud: bool = False) -> Reply:
        """``ask`` Entra through the tenant's app, and once more after a reload if it refused the app's own
        credential. ``loud``: log that at ERROR (a user's request; for the app's token, the reload shows)."""
        app, generation = self._app(tenant)
        reply = ask(app)
        if _is_invalid_client(reply.result):
            if loud:
                log.error("Entra refused the app's client credential (AADSTS%s); reloading it once",
                          reply.result.get("error_codes"))
            self._reload_credential(generation)
            reply = ask(self._app(tenant)[0])
        return reply

    def _tenant(self, tid: str | None) -> str:
        """The authority's tenant: the caller's (or the one asked for) in multi-tenant mode, else ours."""
        return tid if self.settings.multi_tenant and tid else self.settings.tenant_id

    # --- acquisition --------------------------------------------------------------------------
    def for_user(self, assertion: str, caller: Caller, scopes: tuple[str, ...],
                 claims_challenge: str | None = None) -> str:
        """An access token for ``scopes`` on behalf of the caller; ApiError on any failure. Silent first from
        the caller's partition; OBO on a miss, by one request per partition (with an L2, per app)."""
        exp = caller.claims.get("exp")
        entry = self.cache.open(caller.token_hash or partition_key(assertion),
                                expires_at=float(exp) if isinstance(exp, (int, float)) else None)
        if claims_challenge is None and (token := entry.remembered(scopes)):
            telemetry.count("cache.hits", level="memo")
            return token
        tenant = self._tenant(caller.tid)
        with entry.bound():
            if claims_challenge is None and entry.answerable(scopes):  # the warm path: no lock, no network
                with telemetry.span("cache_lookup"):
                    token = self._silent(tenant, scopes, entry)
                if token is not None:
                    telemetry.count("cache.hits", level="msal")
                    return token
            telemetry.count("cache.misses")
            with self._exclusive(entry, across_instances=True):  # one instance calls Entra; others reload
                if claims_challenge is None and (token := self._silent(tenant, scopes, entry)) is not None:
                    return token  # from the refresh token, or another request filled it while we waited
                reply = self._obo(assertion, caller, tenant, scopes, claims_challenge, loud=True)
                token = self._token_or_raise(reply.result, tenant, scopes, status=reply.status,
                                             retry_after=reply.retry_after)
                entry.commit(reply.result, scopes)
            return token

    def for_app(self, scopes: tuple[str, ...], tenant: str | None = None, claims_challenge: str | None = None) -> str:
        """A token for the app itself (client credentials), from a partition no caller token's hash names.
        ``claims_challenge``: a resource's CAE challenge (``cp1`` covers app tokens too): MSAL skips its cache."""
        tid = self._tenant(tenant)
        entry = self.cache.open(partition_key(f"app-only:{self.settings.client_id}:{tid}"),
                                lifetime=self.session_lifetime, follows_token=False)
        if claims_challenge is None and (token := entry.remembered(scopes)):
            telemetry.count("cache.hits", level="memo")
            return token
        key = f"app:{tid}:{' '.join(sorted(scopes))}"
        with entry.bound(), self._exclusive(entry):
            reply = self._with_credential(tid, lambda app: self._throttled(
                key, lambda: app.acquire_token_for_client(list(scopes), claims_challenge=claims_challenge)))
            token = self._token_or_raise(reply.result, tid, scopes, status=reply.status, retry_after=reply.retry_after)
            entry.commit(reply.result, scopes, changed=reply.result.get("token_source") == IDENTITY_PROVIDER)
        return token

    def start_session(self, assertion: str, caller: Caller, scopes: tuple[str, ...]) -> str:
        """Long-running work (MIW's ``InitiateLongRunningProcessInWebApi``): OBO now; the session key returned
        gets tokens from the refresh token after the assertion expired. The key is a secret: keep it so."""
        session_key = secrets.token_urlsafe(32)
        entry = self.cache.open(partition_key("session:" + session_key), lifetime=self.session_lifetime,
                                follows_token=False, new=True)
        tenant = self._tenant(caller.tid)
        with entry.bound(), self._exclusive(entry):
            reply = self._obo(assertion, caller, tenant, scopes, None)
            self._token_or_raise(reply.result, tenant, scopes, status=reply.status, retry_after=reply.retry_after)
            entry.commit(reply.result)
        return session_key

    def for_session(self, session_key: str, tid: str, scopes: tuple[str, ...]) -> str:
        """A token for a long-running session: cache or refresh token only, never a new OBO."""
        entry = self.cache.open(partition_key("session:" + session_key), lifetime=self.session_lifetime,
                                follows_token=False)
        with entry.bound(), self._exclusive(entry, across_instances=True):  # one redemption of the RT
            result = self._silent_result(self._tenant(tid), scopes)
            if not result or "access_token" not in result:
                raise AuthenticationError("The long-running session has expired; the user must call again.")
            entry.commit(result)
            return str(result["access_token"])

    def _silent_result(self, tenant: str, scopes: tuple[str, ...]) -> dict[str, Any] | None:
        """MSAL's answer from the bound partition (network only to redeem a refresh token), or None."""
        app, _ = self._app(tenant)
        accounts = self._call_entra(app.get_accounts)  # may fetch instance metadata
        if not accounts:
            return None
        return self._call_entra(lambda: app.acquire_token_silent_with_error(list(scopes), accounts[0]))  # type: ignore

    def _silent(self, tenant: str, scopes: tuple[str, ...], entry: PartitionHandle) -> str | None:
        result = self._silent_result(tenant, scopes)
        if result and "access_token" in result:
            entry.commit(result, scopes, changed=result.get("token_source") == IDENTITY_PROVIDER)  # RT redeemed
            return str(result["access_token"])
        return None  # nothing cached, or the refresh failed: a fresh OBO decides

    def _obo(self, assertion: str, caller: Caller, tenant: str, scopes: tuple[str, ...], claims: str | None, *,
             loud: bool = False) -> Reply:
        # Entra's throttle for this user (and this scope set), not for everyone who asks for the scope.
        who = caller.oid or caller.token_hash or partition_key(assertion)
        key = f"obo:{caller.tid}:{who}:{' '.join(sorted(scopes))}"

        def ask(app: msal.ConfidentialClientApplication) -> Reply:
            self.throttle.check(key)
            telemetry.count("obo.calls", claims="yes" if claims else "no")
            with telemetry.span("obo", tenant=caller.tid) as span:
                reply = self._throttled(key, lambda: app.acquire_token_on_behalf_of(assertion, list(scopes),
                                                                                   claims_challenge=claims))
                if span is not None and "error" in reply.result:
                    span.set_attribute("error", str(reply.result.get("error")))
            return reply
        return self._with_credential(tenant, ask, loud=loud)

    @contextlib.contextmanager
    def _exclusive(self, entry: PartitionHandle, *, across_instances: bool = False) -> Iterator[None]:
        """The partition's lock, waited for no longer than one Entra call (and the request's budget):
        a request stuck behind another's slow acquisition answers 503, it does not hold its thread."""
        wait = deadline.bounded(self.settings.timeout_seconds)
        with entry.exclusive(wait, across_instances=across_instances) as held:
            if not held:
                raise UpstreamError("entra", "Another request of this caller is still waiting for the identity "
                                    "provider.", 503, 1)
            yield

    def _throttled(self, key: str, call: Callable[[], Any]) -> Reply:
        """One call to Entra for the caller ``key``: refused while that caller (or, breaker open, the app) must
        wait; run in a bounded slot; a 429/5xx remembered for ``key`` with the call's own Retry-After."""
        self.throttle.check(key)
        with self.gate.slot():
            try:
                result = self._call_entra(call)
            except UpstreamError as err:
                if err.status == 503 and _failed(self._session.last_status()):
                    held = self.throttle.failed(key, self._session.throttled_for())
                    err.headers.setdefault("Retry-After", str(held))  # how long this caller is now held
                raise
        reply = Reply(result, self._session.last_status(), self._session.throttled_for())
        if isinstance(result, dict) and "access_token" not in result and _failed(reply.status):
            self.throttle.failed(key, reply.retry_after)
        return reply

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

    def _token_or_raise(self, result: dict[str, Any], tenant: str | None = None, scopes: tuple[str, ...] = (), *,
                        status: int | None = None, retry_after: int | None = None) -> str:
        """The token, or the ApiError for the answer of ``tenant``'s authority (and its HTTP status, Retry-After)."""
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
            consent = result.get("suberror") == "consent_required" or {65001, 65004} & set(codes)
            reason = "consent_required" if consent else "interaction_required"
            raise ClaimsChallenge(
                "The user must sign in again to satisfy the identity provider: " + summary,
                claims=result.get("claims"), reason=reason, aadsts=codes, client_id=self.settings.client_id,
                authorization_uri=f"{self.settings.authority}/oauth2/v2.0/authorize")
        if kind is Kind.CALLER_TOKEN:
            raise AuthenticationError("The identity provider did not accept the token for delegation: " + summary)
        if kind is Kind.USER_BLOCKED:
            raise AccessDenied("The identity provider will not issue a token for this user: " + summary, codes)
        if kind is Kind.TRANSIENT or status == 429:
            # A 429/5xx holds this caller (EntraThrottle: its Retry-After, else DEFAULT_SECONDS): say so.
            held = DEFAULT_SECONDS if _failed(status) else None
            raise UpstreamError("entra", "The identity provider is throttling or unavailable: " + summary, 503,
                                retry_after or held)
        raise UpstreamError("entra", "The identity provider refused the exchange: " + summary, 502)


def _failed(status: int | None) -> bool:
    """Entra answered 429 or 5xx: throttling or an outage, which holds the caller."""
    return status is not None and (status == 429 or status >= 500)


def _tenant_not_provisioned(tenant: str, scopes: tuple[str, ...], codes: list[int]) -> TenantNotProvisioned:
    """The caller's tenant lacks the resource (multi-tenant mode): 403, and a WARNING (later ones: DEBUG)."""
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
