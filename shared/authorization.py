"""What each function requires of its caller, declared next to the function.

Microsoft.Identity.Web's ``RequiredScope``, ``RequiredScopeOrAppPermission`` and app-role checks in one
small value: accepted delegated scopes, accepted app permissions (roles), and which kind of caller (a
user, an app, or either). ``None`` takes the default from ``AzureAd__Scopes``, ``AzureAd__AppPermissions``.

A token with neither ``scp`` nor ``roles`` is refused, unless ACL mode (``AzureAd__AllowWebApiToBeAuthorizedByACL``)
lists its client (``AzureAd__AllowedClientApplications``, matched against ``azp``/``appid``). ACL mode lifts
that rule and nothing else, as in Microsoft.Identity.Web (it skips only ``OnTokenValidated``'s "scp or roles"
check): it never satisfies a scope or role a function declares. A function for such callers declares none
explicitly (``Requirement(scopes=(), app_permissions=(), callers="app")``); a requirement that resolves to
nothing through empty settings refuses every caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import AzureAdSettings
from .errors import CallerKindNotAccepted, NoScopesOrRoles, ScopeNotGranted
from .validation import Caller

Callers = Literal["user", "app", "any"]


@dataclass(frozen=True)
class Requirement:
    scopes: tuple[str, ...] | None = None
    app_permissions: tuple[str, ...] | None = None
    callers: Callers = "user"

    def resolve(self, ad: AzureAdSettings) -> tuple[tuple[str, ...], tuple[str, ...]]:
        scopes = ad.scopes if self.scopes is None else self.scopes
        roles = ad.app_permissions if self.app_permissions is None else self.app_permissions
        if self.callers == "user":
            roles = ()
        if self.callers == "app":
            scopes = ()
        return scopes, roles

    def declares_nothing(self) -> bool:
        """No scope and no role required, explicitly: the lists that apply to its callers are ``()``, not settings."""
        return (self.callers == "app" or self.scopes == ()) and (self.callers == "user" or self.app_permissions == ())


def check(caller: Caller, requirement: Requirement, ad: AzureAdSettings) -> None:
    """Pass, or raise 403 ``insufficient_scope`` naming what was required, typed by the rule that refused."""
    scopes, roles = requirement.resolve(ad)
    acl_listed = ad.allow_acl and caller.client_id in ad.allowed_client_applications
    if not caller.scopes and not caller.roles and not acl_listed:  # the global rule; ACL mode lifts only this
        raise NoScopesOrRoles(scopes + roles, "The token carries neither scopes nor app roles.")
    if requirement.callers == "user" and caller.is_app:
        raise CallerKindNotAccepted(scopes,
                                    "This function acts for a signed-in user; app-only tokens are not accepted.")
    if requirement.callers == "app" and not caller.is_app:
        raise CallerKindNotAccepted(roles, "This function accepts app-only callers only.")
    if caller.scopes & set(scopes) or caller.roles & set(roles):
        return
    if not scopes and not roles and requirement.declares_nothing():
        return
    raise ScopeNotGranted(scopes + roles)
