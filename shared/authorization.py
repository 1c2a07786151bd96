"""What each function requires of its caller, declared next to the function.

Microsoft.Identity.Web's ``RequiredScope``, ``RequiredScopeOrAppPermission`` and app-role checks
in one small value: accepted delegated scopes, accepted app permissions (roles), and which kind
of caller (a user, an app, or either). ``None`` takes the default from settings
(``AzureAd__Scopes``, ``AzureAd__AppPermissions``).

A token with neither ``scp`` nor ``roles`` is refused, unless the app opts into ACL mode
(``AzureAd__AllowWebApiToBeAuthorizedByACL``) — and then only for the client applications it
lists (``AzureAd__AllowedClientApplications``, matched against ``azp``/``appid``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import AzureAdSettings
from .errors import InsufficientScope
from .validation import Caller

Callers = Literal["user", "app", "any"]


@dataclass(frozen=True)
class Requirement:
    scopes: tuple[str, ...] | None = None
    app_permissions: tuple[str, ...] | None = None
    callers: Callers = "user"
    allow_acl: bool = True   # False: even in ACL mode, this function demands its scope or role

    def resolve(self, ad: AzureAdSettings) -> tuple[tuple[str, ...], tuple[str, ...]]:
        scopes = ad.scopes if self.scopes is None else self.scopes
        roles = ad.app_permissions if self.app_permissions is None else self.app_permissions
        if self.callers == "user":
            roles = ()
        if self.callers == "app":
            scopes = ()
        return scopes, roles


def check(caller: Caller, requirement: Requirement, ad: AzureAdSettings) -> None:
    """Pass, or raise 403 ``insufficient_scope`` naming what was required."""
    scopes, roles = requirement.resolve(ad)
    if not caller.scopes and not caller.roles:
        if not (requirement.callers == "user" and caller.is_app) and requirement.allow_acl and ad.allow_acl \
                and caller.client_id in ad.allowed_client_applications:
            return
        raise InsufficientScope(scopes + roles, "The token carries neither scopes nor app roles.")
    if requirement.callers == "user" and caller.is_app:
        raise InsufficientScope(scopes, "This function acts for a signed-in user; app-only tokens are not accepted.")
    if requirement.callers == "app" and not caller.is_app:
        raise InsufficientScope(roles, "This function accepts app-only callers only.")
    if caller.scopes & set(scopes) or caller.roles & set(roles):
        return
    raise InsufficientScope(scopes + roles)
