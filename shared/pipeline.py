"""The request path, one direction: bearer token -> validate -> authorize -> OBO -> downstream.

Framework-free: takes the Authorization header and returns the downstream answer or raises
an ``ApiError``; ``functions.py`` adapts it to Azure Functions.
"""
from __future__ import annotations

import logging

from . import downstream, telemetry
from .bearer import bearer_token
from .context import AppContext
from .errors import ClaimsChallenge
from .validation import Caller, authorize

log = logging.getLogger("middletier.pipeline")


def authenticate(ctx: AppContext, authorization: str | None) -> tuple[str, Caller]:
    token = bearer_token(authorization)
    with telemetry.span("validate"):
        return token, ctx.validator.validate(token)


def call_on_behalf_of(ctx: AppContext, authorization: str | None, api_name: str, *,
                      path: str | None = None, correlation_id: str | None = None) -> downstream.DownstreamResponse:
    """Validate the caller, get a token for ``api_name`` on their behalf, call it, return its answer.

    Every outbound call on the way shares one deadline (``MiddleTier__RequestBudgetSeconds``)."""
    with ctx.session.budget(ctx.settings.request_budget_seconds):
        return _call(ctx, authorization, api_name, path, correlation_id)


def _call(ctx: AppContext, authorization: str | None, api_name: str, path: str | None,
          correlation_id: str | None) -> downstream.DownstreamResponse:
    api = ctx.settings.downstream_api(api_name)
    token, caller = authenticate(ctx, authorization)
    ad = ctx.settings.azure_ad
    authorize(caller, scopes=ad.scopes, roles=(), user_required=True)
    with telemetry.span("acquire_token", tenant=caller.tid, api=api.name):
        access = ctx.tokens.for_user(token, caller, api.scopes)
    try:
        with telemetry.span("downstream", api=api.name):
            return downstream.get(ctx.session, api, access, path=path, correlation_id=correlation_id)
    except downstream.DownstreamChallenge as challenge:
        log.info("downstream %s sent a claims challenge for oid=%s; re-acquiring with the claims once",
                 api.name, caller.oid)
        access = ctx.tokens.for_user(token, caller, api.scopes, claims_challenge=challenge.claims)
        try:
            return downstream.get(ctx.session, api, access, path=path, correlation_id=correlation_id)
        except downstream.DownstreamChallenge as again:
            raise ClaimsChallenge(f"The downstream API {api.name} requires the user to sign in again.",
                                  claims=again.claims, client_id=ad.client_id,
                                  authorization_uri=f"{ad.instance}{ad.tenant_id}/oauth2/v2.0/authorize") from None
