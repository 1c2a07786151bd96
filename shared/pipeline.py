"""The request path, one direction: bearer token -> validate -> authorize -> token -> downstream.

Framework-free: takes the Authorization header and returns the downstream answer or raises an
``ApiError``; ``functions.py`` adapts it to Azure Functions.
"""
from __future__ import annotations

import logging

from . import downstream, telemetry
from .authorization import Requirement, check
from .bearer import bearer_token
from .context import AppContext
from .errors import ClaimsChallenge
from .validation import Caller

log = logging.getLogger("middletier.pipeline")
USER = Requirement(callers="user")


def authenticate(ctx: AppContext, authorization: str | None) -> tuple[str, Caller]:
    token = bearer_token(authorization)
    with telemetry.span("validate"):
        return token, ctx.validator.validate(token)


def call_on_behalf_of(ctx: AppContext, authorization: str | None, api_name: str, *,
                      path: str | None = None, correlation_id: str | None = None) -> downstream.DownstreamResponse:
    """Validate a user caller (default scopes), then call ``api_name`` on their behalf."""
    token, caller = authenticate(ctx, authorization)
    check(caller, USER, ctx.settings.azure_ad)
    return call_downstream(ctx, token, caller, api_name, path=path, correlation_id=correlation_id)


def call_downstream(ctx: AppContext, token: str, caller: Caller, api_name: str, *, path: str | None = None,
                    correlation_id: str | None = None) -> downstream.DownstreamResponse:
    """Get a token for ``api_name`` — on the caller's behalf (OBO), or as the app when the API is
    configured with ``RequestAppToken`` — and call it. Every outbound call on the way shares one
    deadline (``MiddleTier__RequestBudgetSeconds``)."""
    with ctx.session.budget(ctx.settings.request_budget_seconds):
        api = ctx.settings.downstream_api(api_name)
        if api.request_app_token:
            with telemetry.span("acquire_token", tenant=caller.tid, api=api.name, kind="app"):
                access = ctx.tokens.for_app(api.scopes, caller.tid)
            with telemetry.span("downstream", api=api.name):
                try:
                    return downstream.get(ctx.session, api, access, path=path, correlation_id=correlation_id)
                except downstream.DownstreamChallenge as challenge:  # CAE for the app: a new token, once
                    log.info("downstream %s sent a claims challenge to the app's token; re-acquiring once", api.name)
                    access = ctx.tokens.for_app(api.scopes, caller.tid, claims_challenge=challenge.claims)
                try:
                    return downstream.get(ctx.session, api, access, path=path, correlation_id=correlation_id)
                except downstream.DownstreamChallenge:
                    from .errors import UpstreamError
                    raise UpstreamError(api.name, f"The downstream API {api.name} challenged the app's token.",
                                        502) from None
        return _on_behalf_of(ctx, token, caller, api, path, correlation_id)


def _on_behalf_of(ctx: AppContext, token: str, caller: Caller, api: "downstream.DownstreamApi", path: str | None,
                  correlation_id: str | None) -> downstream.DownstreamResponse:
    ad = ctx.settings.azure_ad
    with telemetry.span("acquire_token", tenant=caller.tid, api=api.name, kind="obo"):
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
