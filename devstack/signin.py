"""Browser sign-in: ``/{tenant}/oauth2/v2.0/authorize`` with authorization code + PKCE (S256 only).

A minimal login page (with a one-time-code step for users under an MFA policy or when the
``claims`` parameter asks for it), redirect URIs checked against the app registration (any
port for ``http://localhost`` on native clients, exact match for SPAs), ``state``, ``nonce``,
``login_hint``, ``prompt`` (``login``, ``none``, ``select_account``, ``consent``) and a session
cookie for single sign-on, as Entra has.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
import time
import urllib.parse
from typing import Any, Mapping

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .aadsts import AadError
from .directory import App, Directory, Tenant, User
from .grants import AuthCode, Grants, capabilities, demands_mfa, parse_claims
from .issuer import AuthContext, client_info
from .kit import read_form

COOKIE = "devstack_sso"
CODE_LIFETIME = 600
SESSION_LIFETIME = 8 * 3600
FORWARDED = ("client_id", "response_type", "redirect_uri", "scope", "state", "nonce", "code_challenge",
             "code_challenge_method", "prompt", "login_hint", "claims", "response_mode", "client_info")


def redirect_allowed(app: App, redirect_uri: str) -> tuple[bool, bool]:
    """(allowed, is_spa). Native ``http://localhost`` registrations accept any port (RFC 8252 §7.3)."""
    if redirect_uri in app.spa_redirect_uris:
        return True, True
    parts = urllib.parse.urlsplit(redirect_uri)
    for registered in app.redirect_uris:
        reg = urllib.parse.urlsplit(registered)
        if redirect_uri == registered:
            return True, False
        if reg.scheme == parts.scheme == "http" and reg.hostname == parts.hostname == "localhost" \
                and reg.port is None and (reg.path or "/") == (parts.path or "/"):
            return True, False
    return False, False


class BrowserSignIn:
    def __init__(self, directory: Directory, grants: Grants):
        self.directory, self.grants = directory, grants
        self._key = os.urandom(32)

    def _cookie(self, tenant: Tenant, user: User, auth: AuthContext) -> str:
        body = f"{tenant.id}|{user.oid}|{int(auth.mfa)}|{auth.session}|{int(time.time()) + SESSION_LIFETIME}"
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}|{mac}"

    def _session(self, request: Request, tenant: Tenant) -> tuple[User, AuthContext] | None:
        value = request.cookies.get(COOKIE, "")
        body, _, mac = value.rpartition("|")
        if not body or not hmac.compare_digest(mac, hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()):
            return None
        tid, oid, mfa, session, expires = body.split("|")
        user = tenant.user_by_oid(oid)
        if tid != tenant.id or user is None or int(expires) < time.time():
            return None
        return user, AuthContext(mfa=mfa == "1", session=int(session))

    async def authorize(self, request: Request) -> Response:
        params = await read_form(request) if request.method == "POST" else dict(request.query_params)
        try:
            tenant = self.directory.tenant(request.path_params["tenant"])
            client = tenant.app_by_client_id(params.get("client_id", ""))
            if client is None:
                raise AadError(700016, {"client_id": params.get("client_id"), "tenant": tenant.id})
            allowed, spa = redirect_allowed(client, params.get("redirect_uri", ""))
            if not allowed:
                raise AadError(50011, {"redirect_uri": params.get("redirect_uri"), "client_id": client.client_id})
        except AadError as err:  # no trustworthy redirect: show the error, as Entra does
            return _page(f"AADSTS{err.code}: {err.message()}", status=400)
        try:
            requested = self._validate(tenant, params)
        except AadError as err:
            return self._redirect_error(params, err.error_value, f"AADSTS{err.code}: {err.message()}")
        claims = parse_claims(params.get("claims"))
        prompt = params.get("prompt", "")
        needs_mfa_for = requested.resource if requested else None
        if request.method == "GET":
            session = self._session(request, tenant)
            if session and prompt not in ("login", "select_account", "consent"):
                user, auth = session
                mfa_needed = demands_mfa(claims) or bool(needs_mfa_for and tenant.mfa_policy_for(user, needs_mfa_for))
                if not mfa_needed or auth.mfa:
                    return self._issue(tenant, client, user, auth, params, spa)
            if prompt == "none":
                return self._redirect_error(params, "login_required", "AADSTS50058: A silent sign-in request was "
                                                                      "sent but no user is signed in.")
            return _login(params, "Sign in to continue to " + client.display_name)
        # POST: the login form
        user = tenant.user_by_login(params.get("username", ""))
        if user is None or not secrets.compare_digest(user.password.encode(), params.get("password", "").encode()):
            return _login(params, "Your account or password is incorrect.", status=400)
        mfa = False
        if demands_mfa(claims) or (needs_mfa_for and tenant.mfa_policy_for(user, needs_mfa_for)):
            otp = params.get("otp", "")
            if not otp:
                return _login(params, "Approve the sign-in: enter the code from your authenticator app.", otp=True,
                              status=401)
            if not user.mfa_code or not secrets.compare_digest(otp.encode(), user.mfa_code.encode()):
                return _login(params, "That verification code is not correct.", otp=True, status=400)
            mfa = True
        auth = AuthContext.signed_in(mfa=mfa, capabilities=capabilities(claims))
        response = self._issue(tenant, client, user, auth, params, spa)
        response.set_cookie(COOKIE, self._cookie(tenant, user, auth), httponly=True, samesite="lax", secure=True)
        return response

    def _validate(self, tenant: Tenant, params: Mapping[str, str]) -> Any:
        if params.get("response_type") != "code":
            raise AadError(900144, {"param": "response_type=code"}, error="unsupported_response_type")
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            # PKCE with S256 is required here (Entra requires PKCE for SPAs; plain is refused).
            raise AadError(900144, {"param": "code_challenge_method=S256"}, error="invalid_request")
        if not params.get("scope", "").strip():
            raise AadError(70011, {"scope": "(none)"})
        return tenant.resolve_scopes(params["scope"])

    def _issue(self, tenant: Tenant, client: App, user: User, auth: AuthContext, params: Mapping[str, str],
               spa: bool) -> Response:
        code = self.grants.issue_code(AuthCode(
            tenant, client, params["redirect_uri"], params["scope"], params["code_challenge"], params.get("nonce"),
            user, auth, time.time() + CODE_LIFETIME, spa))
        answer = {"code": code}
        if params.get("state") is not None:
            answer["state"] = params["state"]
        if params.get("client_info") == "1":
            answer["client_info"] = client_info(user.oid, tenant.id)
        return self._send(params, answer)

    def _redirect_error(self, params: Mapping[str, str], error: str, description: str) -> Response:
        answer = {"error": error, "error_description": description}
        if params.get("state") is not None:
            answer["state"] = params["state"]
        return self._send(params, answer)

    @staticmethod
    def _send(params: Mapping[str, str], answer: dict[str, str]) -> Response:
        mode = params.get("response_mode") or "query"
        encoded = urllib.parse.urlencode(answer)
        if mode == "form_post":
            inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in answer.items())
            return HTMLResponse(f'<!doctype html><form method="post" action="{html.escape(params["redirect_uri"])}">'
                                f'{inputs}</form><script>document.forms[0].submit()</script>')
        separator = "#" if mode == "fragment" else ("&" if "?" in params["redirect_uri"] else "?")
        return RedirectResponse(params["redirect_uri"] + separator + encoded, status_code=302)


def _login(params: Mapping[str, str], message: str, *, otp: bool = False, status: int = 200) -> HTMLResponse:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(params[k])}">'
                     for k in FORWARDED if params.get(k) is not None)
    username = html.escape(params.get("username") or params.get("login_hint") or "")
    otp_field = '<label>One-time code <input name="otp" id="otp" autocomplete="one-time-code"></label>' if otp else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sign in (devstack)</title></head>
<body><h1>Sign in</h1><p id="message">{html.escape(message)}</p>
<form method="post"><label>Email <input name="username" id="username" value="{username}" required></label>
<label>Password <input name="password" id="password" type="password" required></label>
{otp_field}{hidden}<button type="submit" id="submit">Sign in</button></form></body></html>"""
    return HTMLResponse(page, status_code=status)


def _page(message: str, status: int) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>Sign-in error</title><p id=message>{html.escape(message)}</p>",
                        status_code=status)
