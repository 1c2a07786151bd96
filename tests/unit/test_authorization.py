"""What each function's ``Requirement`` admits, caller kind by caller kind (``shared/authorization.py``).

In-process: callers are built as the validator would build them (``Caller``), settings through
``load_settings``. Every refusal is a 403 ``insufficient_scope`` whose challenge names exactly what
the function required; the texts of the refusals are the attribution contract and pinned once,
in ``test_refusal_texts_reach_the_client``.
"""
from __future__ import annotations

import pytest

from shared.authorization import Requirement, check
from shared.config import AzureAdSettings, load_settings
from shared.errors import CallerKindNotAccepted, InsufficientScope, NoScopesOrRoles, ScopeNotGranted, problem
from shared.signing_keys import SigningKeys
from shared.validation import Caller, validate
from tests.fakes import env, token
from tests.fakes import idp, keys  # noqa: F401  (the shared fixtures)

SCOPE, ROLE = "access_as_user", "MiddleTier.Admin"
# settings: AzureAd__Scopes=access_as_user, AzureAd__AppPermissions=MiddleTier.Admin
AD = load_settings(env(AzureAd__AppPermissions=ROLE)).azure_ad
SCOPES_ONLY = load_settings(env()).azure_ad                                        # no AppPermissions
ROLES_ONLY = load_settings(env(AzureAd__Scopes="", AzureAd__AppPermissions=ROLE)).azure_ad  # no Scopes
ACL = load_settings(env(AzureAd__AppPermissions=ROLE, AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                        AzureAd__AllowedClientApplications="client-1")).azure_ad

NEITHER = "The token carries neither scopes nor app roles."
USERS_ONLY = "This function acts for a signed-in user; app-only tokens are not accepted."
APPS_ONLY = "This function accepts app-only callers only."
LACKS = "The token lacks a required scope or app role."


def caller(scopes: tuple[str, ...] = (), roles: tuple[str, ...] = (), *, app: bool = False,
           client: str = "client-1") -> Caller:
    return Caller(oid="o-1", tid="t-1", client_id=client, scopes=frozenset(scopes), roles=frozenset(roles),
                  is_app=app, claims={})


USER = caller((SCOPE,))
USER_OTHER_SCOPE = caller(("Files.Read",))
USER_WITH_ROLE = caller(("Files.Read",), (ROLE,))   # an app role assigned to the user, in a delegated token
APP = caller(roles=(ROLE,), app=True)
APP_OTHER_ROLE = caller(roles=("MiddleTier.Reader",), app=True)
BARE_USER = caller()
BARE_APP = caller(app=True)


def refusal(requirement: Requirement, who: Caller, ad: AzureAdSettings = AD) -> InsufficientScope:
    with pytest.raises(InsufficientScope) as raised:
        check(who, requirement, ad)
    return raised.value


def assert_names(err: InsufficientScope, required: list[str]) -> None:
    """403 insufficient_scope, naming exactly ``required`` in the body and in the challenge."""
    assert (err.status, err.code) == (403, "insufficient_scope")
    assert err.extra["required"] == required
    header = err.headers["WWW-Authenticate"]
    assert header.startswith('Bearer realm="", error="insufficient_scope", ')
    if required:
        assert f', scope="{" ".join(required)}", ' in header
    else:
        assert "scope=" not in header.replace("insufficient_scope", "")


# requirement, caller, settings -> None (admitted) or the scopes/roles the refusal names
CASES = [
    # default: a user with AzureAd__Scopes; the role in settings does not count for user functions
    ("default admits a user with the scope", Requirement(), USER, AD, None),
    ("default refuses a user without it", Requirement(), USER_OTHER_SCOPE, AD, [SCOPE]),
    ("default ignores a user's app role", Requirement(), USER_WITH_ROLE, AD, [SCOPE]),
    ("default refuses an app with the role", Requirement(), APP, AD, [SCOPE]),
    # app-only functions: AzureAd__AppPermissions, users refused even with the role
    ("app admits an app with the role", Requirement(callers="app"), APP, AD, None),
    ("app refuses an app with another role", Requirement(callers="app"), APP_OTHER_ROLE, AD, [ROLE]),
    ("app refuses a user", Requirement(callers="app"), USER, AD, [ROLE]),
    ("app refuses a user holding the role", Requirement(callers="app"), USER_WITH_ROLE, AD, [ROLE]),
    # either kind: a scope or a role
    ("any admits a user with the scope", Requirement(callers="any"), USER, AD, None),
    ("any admits an app with the role", Requirement(callers="any"), APP, AD, None),
    ("any admits a user with the role", Requirement(callers="any"), USER_WITH_ROLE, AD, None),
    ("any refuses a user with neither", Requirement(callers="any"), USER_OTHER_SCOPE, AD, [SCOPE, ROLE]),
    ("any refuses an app with another role", Requirement(callers="any"), APP_OTHER_ROLE, AD, [SCOPE, ROLE]),
    # per-function lists replace the settings
    ("own scope replaces settings' (refused)", Requirement(scopes=("Files.Read",)), USER, AD, ["Files.Read"]),
    ("own scope replaces settings' (admitted)", Requirement(scopes=("Files.Read",)), USER_OTHER_SCOPE, AD, None),
    ("own role replaces settings' (refused)", Requirement(app_permissions=("MiddleTier.Reader",), callers="app"),
     APP, AD, ["MiddleTier.Reader"]),
    ("own role replaces settings' (admitted)", Requirement(app_permissions=("MiddleTier.Reader",), callers="app"),
     APP_OTHER_ROLE, AD, None),
    ("own scope, settings' role", Requirement(scopes=("Files.Read",), callers="any"), APP, AD, None),
    ("own empty scopes, settings' role", Requirement(scopes=(), callers="any"), USER, AD, [ROLE]),
    # explicitly nothing: any valid token of the declared kind that carries a scope or role
    ("user, no scope declared", Requirement(scopes=(), callers="user"), USER_OTHER_SCOPE, AD, None),
    ("user, no scope declared, app refused", Requirement(scopes=(), callers="user"), APP, AD, []),
    ("app, no role declared", Requirement(app_permissions=(), callers="app"), APP_OTHER_ROLE, AD, None),
    ("app, no role declared, user refused", Requirement(app_permissions=(), callers="app"), USER, AD, []),
    ("any, nothing declared, user", Requirement(scopes=(), app_permissions=(), callers="any"), USER_OTHER_SCOPE,
     AD, None),
    ("any, nothing declared, app", Requirement(scopes=(), app_permissions=(), callers="any"), APP_OTHER_ROLE,
     AD, None),
    # resolving to nothing through settings is not "declared nothing": every caller refused
    ("user from empty settings", Requirement(), USER, ROLES_ONLY, []),
    ("app from empty settings", Requirement(callers="app"), APP, SCOPES_ONLY, []),
    ("any, own no scope, empty settings' roles", Requirement(scopes=(), callers="any"), USER, SCOPES_ONLY, []),
    ("any, own no role, empty settings' scopes", Requirement(app_permissions=(), callers="any"), APP, ROLES_ONLY,
     []),
    # the global rule: a token with neither scp nor roles, whatever is declared
    ("bare user, default", Requirement(), BARE_USER, AD, [SCOPE]),
    ("bare app, any", Requirement(callers="any"), BARE_APP, AD, [SCOPE, ROLE]),
    ("bare app, nothing declared", Requirement(scopes=(), app_permissions=(), callers="app"), BARE_APP, AD, []),
    # ACL mode lifts the global rule for listed clients only, and satisfies no declared role
    ("ACL, listed bare app, nothing declared", Requirement(app_permissions=(), callers="app"), BARE_APP, ACL, None),
    ("ACL, listed bare app, a role declared", Requirement(callers="app"), BARE_APP, ACL, [ROLE]),
    ("ACL, unlisted bare app", Requirement(app_permissions=(), callers="app"), caller(app=True, client="client-2"),
     ACL, []),
]


@pytest.mark.parametrize("requirement,who,ad,required", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_each_requirement_admits(requirement: Requirement, who: Caller, ad: AzureAdSettings,
                                      required: list[str] | None) -> None:
    if required is None:
        assert check(who, requirement, ad) is None
    else:
        assert_names(refusal(requirement, who, ad), required)


@pytest.mark.parametrize("requirement,granted", [
    (Requirement(), "access_as_use"), (Requirement(), "access_as_user2"), (Requirement(), "ACCESS_AS_USER"),
    (Requirement(), "access_as_user.All"), (Requirement(), "api://middletier/access_as_user"),
    (Requirement(callers="app"), "MiddleTier"), (Requirement(callers="app"), "middletier.admin"),
    (Requirement(callers="app"), "MiddleTier.Admins"), (Requirement(callers="app"), "MiddleTier.Admin "),
])
def test_scopes_and_roles_match_exactly_and_case_sensitively(requirement: Requirement, granted: str) -> None:
    """A near miss — prefix, suffix, other case, a full URI — is another scope or role."""
    app = requirement.callers == "app"
    who = caller(roles=(granted,), app=True) if app else caller((granted,))
    assert_names(refusal(requirement, who), [ROLE] if app else [SCOPE])


@pytest.mark.parametrize("requirement,who,ad,detail,header_scope,reason", [
    (Requirement(callers="any"), BARE_USER, AD, NEITHER, f"{SCOPE} {ROLE}", NoScopesOrRoles),
    (Requirement(), APP, AD, USERS_ONLY, SCOPE, CallerKindNotAccepted),
    (Requirement(callers="app"), USER, AD, APPS_ONLY, ROLE, CallerKindNotAccepted),
    (Requirement(callers="any"), USER_OTHER_SCOPE, AD, LACKS, f"{SCOPE} {ROLE}", ScopeNotGranted),
    (Requirement(app_permissions=(), callers="app"), caller(app=True, client="client-2"), ACL, NEITHER, None,
     NoScopesOrRoles),
])
def test_refusal_texts_reach_the_client(requirement: Requirement, who: Caller, ad: AzureAdSettings, detail: str,
                                        header_scope: str | None, reason: type[InsufficientScope]) -> None:
    """The texts say why (attribution contract): in the problem body and in the challenge's
    error_description, next to the scopes/roles the function required; the type says it to the code."""
    err = refusal(requirement, who, ad)
    assert type(err) is reason
    scope = f'scope="{header_scope}", ' if header_scope else ""
    assert err.headers["WWW-Authenticate"] == (
        f'Bearer realm="", error="insufficient_scope", {scope}error_description="{detail}"')
    status, _, body = problem(err)
    assert (status, body["detail"], body["error"]) == (403, detail, "insufficient_scope")


# --- callers as the validator builds them from real tokens ----------------------------------------------
def test_authorization_needs_scope_or_role(keys: SigningKeys) -> None:
    settings = load_settings(env()).azure_ad
    user = validate(token(), keys, settings)
    check(user, Requirement(), settings)  # default: a user with AzureAd__Scopes
    app = validate(token(scp=None, roles=["MiddleTier.Admin"], idtyp="app"), keys, settings)
    check(app, Requirement(app_permissions=("MiddleTier.Admin",), callers="any"), settings)
    with pytest.raises(InsufficientScope) as err:
        check(app, Requirement(), settings)
    assert err.value.status == 403 and 'error="insufficient_scope"' in err.value.headers["WWW-Authenticate"]
    with pytest.raises(InsufficientScope):
        check(validate(token(scp="other"), keys, settings), Requirement(), settings)
    with pytest.raises(InsufficientScope) as bare:
        check(validate(token(scp=None), keys, settings), Requirement(callers="any"), settings)
    assert type(bare.value) is NoScopesOrRoles


def test_acl_mode_lifts_only_the_global_rule(keys: SigningKeys) -> None:
    """ACL mode (as in Microsoft.Identity.Web) lifts "a token carries scp or roles" for listed clients;
    a scope or role a function declares is still required, and only an explicit "nothing" passes."""
    settings = load_settings(env(AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                                 AzureAd__AllowedClientApplications="client-1")).azure_ad
    bare_app = validate(token(scp=None, idtyp="app"), keys, settings)
    for refused in (Requirement(callers="any"), Requirement(callers="app", app_permissions=("MiddleTier.Admin",)),
                    Requirement(scopes=("access_as_user",), app_permissions=("MiddleTier.Admin",), callers="any"),
                    Requirement(callers="user"), Requirement(scopes=(), app_permissions=(), callers="user")):
        with pytest.raises(InsufficientScope) as err:
            check(bare_app, refused, settings)
        assert not isinstance(err.value, NoScopesOrRoles)
    check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), settings)  # declares nothing
    check(bare_app, Requirement(app_permissions=(), callers="app"), settings)
    unlisted = load_settings(env(AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                                 AzureAd__AllowedClientApplications="client-2")).azure_ad
    with pytest.raises(InsufficientScope) as err:
        check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), unlisted)
    assert type(err.value) is NoScopesOrRoles
    with pytest.raises(InsufficientScope):  # outside ACL mode, the global rule holds for everyone
        check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), load_settings(env()).azure_ad)
