"""The request path, one direction: authenticate -> authorize -> acquire -> call.

Framework-free: ``admit`` takes the Authorization header and what the function declares, and hands
its body a ``Call``, whose ``downstream()`` acquires a token and calls a named API (MIW's
``CallApiForUserAsync`` / ``CallApiForAppAsync``). ``functions.py`` adapts it to Azure Functions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from . import deadline, downstream, telemetry
from .authorization import Requirement, check
from .bearer import bearer_token
from .context import AppContext
from .errors import ClaimsChallenge, UpstreamError
from .validation import Caller

log = logging.getLogger("middletier.pipeline")


def authenticate(ctx: AppContext, authorization: str | None) -> tuple[str, Caller]:
    token = bearer_token(authorization)
    with telemetry.span("validate"):
        return token, ctx.validator.validate(token)


def admit(ctx: AppContext, authorization: str | None, requirement: Requirement, apis: tuple[str, ...],
          trace_id: str) -> Call:
    """First the function's downstream APIs are configured (else ``ConfigurationError`` naming the
    setting, whoever asks), then the caller is valid and meets the requirement."""
    for name in apis:
        ctx.settings.downstream_api(name)
    token, caller = authenticate(ctx, authorization)
    check(caller, requirement, ctx.settings.azure_ad)
    return Call(caller, trace_id, ctx, token)


@dataclass(frozen=True)
class Call:
    """One authenticated, authorized request, as a function body sees it."""
    caller: Caller
    trace_id: str
    ctx: AppContext = field(repr=False)
    token: str = field(repr=False)  # the caller's own, for OBO: never logged

    def downstream(self, api: str, *, path: str | None = None, method: str = "GET", body: bytes | None = None,
                   as_app: bool = False) -> downstream.DownstreamResponse:
        """Call ``DownstreamApis__<api>__*`` on the caller's behalf (OBO), or ``as_app`` (the scopes' resource's
        ``.default``); a CAE claims challenge gets one new token. The request's one deadline
        (``MiddleTier__RequestBudgetSeconds``, ``deadline.py``) was started by ``functions.py``."""
        ctx, caller, target = self.ctx, self.caller, self.ctx.settings.downstream_api(api)
        scopes = target.app_scopes() if as_app else target.scopes

        def acquire(claims: str | None = None) -> str:
            with telemetry.span("acquire_token", tenant=caller.tid, api=api, kind="app" if as_app else "obo"):
                if as_app:
                    return ctx.tokens.for_app(scopes, caller.tid, claims_challenge=claims)
                return ctx.tokens.for_user(self.token, caller, scopes, claims_challenge=claims)

        def send(access: str) -> downstream.DownstreamResponse:
            with telemetry.span("downstream", api=api):
                return downstream.request(ctx.session, target, access, method=method, path=path, body=body,
                                          correlation_id=self.trace_id)

        if deadline.remaining() is None:  # a body run outside functions.py's deadline still gets one
            with deadline.within(ctx.settings.request_budget_seconds):
                return self._with_claims_retry(api, as_app, acquire, send)
        return self._with_claims_retry(api, as_app, acquire, send)

    def _with_claims_retry(self, api: str, as_app: bool, acquire: Callable[..., str],
                           send: Callable[[str], downstream.DownstreamResponse]) -> downstream.DownstreamResponse:
        """``send(acquire())``; a CAE claims challenge gets one new token with the claims, a second one is the
        user's to answer (401 with the challenge) or, for the app's own token, the downstream's failure (502)."""
        ctx, caller = self.ctx, self.caller
        ctx.session.forget()
        try:
            return send(acquire())
        except downstream.DownstreamChallenge as challenge:
            log.info("downstream %s sent a claims challenge (%s); re-acquiring with the claims once", api,
                     "the app's token" if as_app else f"oid={caller.oid}")
            access = acquire(challenge.claims)
        try:
            return send(access)
        except downstream.DownstreamChallenge as again:
            if as_app:
                raise UpstreamError(api, f"The downstream API {api} challenged the app's token.", 502) from None
            ad = ctx.settings.azure_ad
            raise ClaimsChallenge(f"The downstream API {api} requires the user to sign in again.",
                                  claims=again.claims, client_id=ad.client_id,
                                  authorization_uri=f"{ad.authority}/oauth2/v2.0/authorize") from None
