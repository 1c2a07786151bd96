"""The token endpoint's grants, as Entra enforces them. HTTP-free: form in, JSON dict out.

Each grant raises ``AadError`` with the code Entra would send; ``entra.py`` renders it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import client_auth
from .aadsts import AadError
from .directory import App, Directory, Requested, Tenant, User
from .issuer import AuthContext, Issuer, is_app_only, v2_issuer

GRANT_OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_NAMES = {GRANT_OBO: "on_behalf_of", GRANT_DEVICE: "device_code"}
DEVICE_CODE_LIFETIME = 900
DEVICE_POLL_INTERVAL = 5


def grant_name(grant_type: str) -> str:
    return GRANT_NAMES.get(grant_type, grant_type)


def parse_claims(raw: str | None) -> dict[str, Any]:
    """The ``claims`` request parameter; malformed JSON is ignored as Entra ignores it."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def capabilities(claims: dict[str, Any]) -> list[str]:
    at = claims.get("access_token") or {}
    values = (at.get("xms_cc") or {}).get("values") if isinstance(at, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else []


def demands_mfa(claims: dict[str, Any]) -> bool:
    at = claims.get("access_token") or {}
    return isinstance(at, dict) and bool(at.get("capolids") or at.get("acrs") or at.get("amr"))


def mfa_challenge(policy_id: str) -> str:
    return json.dumps({"access_token": {"capolids": {"essential": True, "values": [policy_id]}}},
                      separators=(",", ":"))


@dataclass
class DeviceCode:
    user_code: str
    tenant: Tenant
    client: App
    scope: str
    claims: dict[str, Any]
    expires_at: float
    user: User | None = None
    auth: AuthContext = field(default_factory=AuthContext)

    def needs_mfa(self, user: User) -> bool:
        if demands_mfa(self.claims):
            return True
        requested = self.tenant.resolve_scopes(self.scope)
        return bool(requested and self.tenant.mfa_policy_for(user, requested.resource))


@dataclass
class AuthCode:
    """An authorization code issued by /authorize, redeemable once with its PKCE verifier."""

    tenant: Tenant
    client: App
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    user: User
    auth: AuthContext
    expires_at: float
    spa: bool


@dataclass
class Outcome:
    """A successful grant: the JSON body plus labels for the counters."""

    body: dict[str, Any]
    client: App
    user: User | None = None


def _drop_expired(codes: dict[str, Any]) -> None:
    now = time.time()
    for stale in [c for c, v in codes.items() if v.expires_at < now]:
        del codes[stale]


class Grants:
    def __init__(self, directory: Directory, issuer: Issuer, token_urls: Callable[[Tenant, str], set[str]]):
        self.directory, self.issuer, self.token_urls = directory, issuer, token_urls
        self.jtis = client_auth.JtiCache()
        self.device_codes: dict[str, DeviceCode] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.redeemed_codes: set[str] = set()
        self._cross_origin = False  # set per request by the endpoint: did the browser send an Origin?

    def token(self, tenant_segment: str, form: Mapping[str, str], headers: Mapping[str, str]) -> Outcome:
        tenant = self.directory.tenant(tenant_segment)
        self._cross_origin = "origin" in headers
        grant = form.get("grant_type", "")
        handler = {
            "client_credentials": self._client_credentials,
            GRANT_OBO: self._on_behalf_of,
            "refresh_token": self._refresh_token,
            "password": self._password,
            GRANT_DEVICE: self._device_code,
            "authorization_code": self._authorization_code,
        }.get(grant)
        if handler is None:
            if not grant:
                raise AadError(900144, {"param": "grant_type"})
            raise AadError(70003, {"grant": grant})
        client, how = client_auth.authenticate(tenant, form, headers, self.token_urls(tenant, tenant_segment),
                                               self.jtis, self.issuer.keys, v2_issuer(self.issuer.instance, tenant.id))
        return handler(tenant, client, how, form)

    def _client_credentials(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        if how == client_auth.PUBLIC:
            raise AadError(7000218)
        scope = form.get("scope", "")
        requested = tenant.resolve_scopes(scope)
        if requested is None or not requested.default or requested.scopes:
            raise AadError(70011, {"scope": scope or "(none)"})
        roles = list(client.app_grants.get(requested.resource.name, []))
        return Outcome(self.issuer.app_response(tenant, client, requested.resource, roles, how), client)

    def _on_behalf_of(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        if how == client_auth.PUBLIC:
            raise AadError(7000218)
        if form.get("requested_token_use") != "on_behalf_of":
            raise AadError(900144, {"param": "requested_token_use"})
        assertion = form.get("assertion")
        if not assertion:
            raise AadError(900144, {"param": "assertion"})
        user, auth = self._user_assertion(tenant, client, assertion)
        cc = capabilities(parse_claims(form.get("claims"))) or auth.capabilities
        auth = AuthContext(mfa=auth.mfa, capabilities=cc, session=auth.session)
        return Outcome(self._issue_for_user(tenant, client, user, self._requested(tenant, form), auth, how, form),
                       client, user)

    def _refresh_token(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        data = self.issuer.open_refresh(form.get("refresh_token", ""))
        if data is None or data["t"] != tenant.id:
            raise AadError(70008)
        if data["c"] != client.client_id:
            raise AadError(70000)
        user = tenant.user_by_oid(data["u"])
        if user is None or not user.enabled:
            raise AadError(70008)
        auth = AuthContext(mfa=bool(data["m"]), capabilities=list(data.get("cc") or []), session=int(data.get("s", 0)))
        return Outcome(self._issue_for_user(tenant, client, user, self._requested(tenant, form), auth, how, form),
                       client, user)

    def _password(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        user = tenant.user_by_login(form.get("username", ""))
        if user is None or not secrets.compare_digest(user.password.encode(), form.get("password", "").encode()):
            raise AadError(50126)
        requested = self._requested(tenant, form)
        auth = AuthContext.signed_in(capabilities=capabilities(parse_claims(form.get("claims"))))
        return Outcome(self._issue_for_user(tenant, client, user, requested, auth, how, form), client, user)

    def issue_code(self, code: AuthCode) -> str:
        _drop_expired(self.auth_codes)
        value = "1." + secrets.token_urlsafe(48)
        self.auth_codes[value] = code
        return value

    def _authorization_code(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        code = self.auth_codes.pop(form.get("code", ""), None)
        if code is None:
            raise AadError(54005 if form.get("code") in self.redeemed_codes else 70000)
        self.redeemed_codes.add(form.get("code", ""))
        if code.client is not client or code.tenant is not tenant:
            raise AadError(70000)
        if code.expires_at < time.time():
            raise AadError(70008)
        if form.get("redirect_uri") != code.redirect_uri:
            raise AadError(70000)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or not secrets.compare_digest(digest, code.code_challenge):
            raise AadError(501481)
        if code.spa and not self._cross_origin:
            raise AadError(9002327)
        requested = tenant.resolve_scopes(code.scope)
        body = self._issue_for_user(tenant, client, code.user, requested, code.auth, how, form, nonce=code.nonce)
        return Outcome(body, client, code.user)

    def _device_code(self, tenant: Tenant, client: App, how: str, form: Mapping[str, str]) -> Outcome:
        code = form.get("device_code", "")
        flow = self.device_codes.get(code)
        if flow is None or flow.client is not client:
            raise AadError(70019)
        if flow.expires_at < time.time():
            self.device_codes.pop(code, None)
            raise AadError(70019)
        if flow.user is None:
            raise AadError(70016)
        self.device_codes.pop(code, None)
        requested = flow.tenant.resolve_scopes(flow.scope)
        return Outcome(self._issue_for_user(tenant, client, flow.user, requested, flow.auth, how, form),
                       client, flow.user)

    def _requested(self, tenant: Tenant, form: Mapping[str, str]) -> Requested | None:
        scope = form.get("scope", "")
        if not scope.strip():
            raise AadError(70011, {"scope": "(none)"})
        return tenant.resolve_scopes(scope)

    def _issue_for_user(self, tenant: Tenant, client: App, user: User, requested: Requested | None,
                        auth: AuthContext, how: str, form: Mapping[str, str],
                        nonce: str | None = None) -> dict[str, Any]:
        scopes: list[str] = []
        if requested is not None:
            scopes = tenant.check_consent(client, requested)
            policy = tenant.mfa_policy_for(user, requested.resource)
            if policy and not auth.mfa:
                raise AadError(50076, {"resource": requested.resource.client_id}, suberror="basic_action",
                               claims=mfa_challenge(policy), error="interaction_required")
        return self.issuer.user_response(tenant, client, user, requested, scopes, auth, how,
                                         want_client_info=form.get("client_info") == "1", nonce=nonce)

    def _user_assertion(self, tenant: Tenant, client: App, assertion: str) -> tuple[User, AuthContext]:
        """Validate the OBO assertion: ours, signed, unexpired, a user token, issued to the caller."""
        header = client_auth.unverified_header(assertion)
        key = self.issuer.keys.by_kid(str(header.get("kid")))
        if key is None or header.get("alg") != "RS256":
            raise AadError(50013, {"reason": "The key was not found."})
        claims = client_auth.signed_claims(assertion, key.private_key.public_key(), ["RS256"], 50013)
        if not self.issuer.issued(claims, tenant.id):
            raise AadError(50013, {"reason": "The issuer of the assertion is not valid for this tenant."})
        exp = claims.get("exp")
        now = time.time()
        if not isinstance(exp, (int, float)) or exp < now:
            raise AadError(500133, {"now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                    "exp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
                                    if isinstance(exp, (int, float)) else "(none)"})
        audiences = {client.client_id, *client.identifier_uris}
        if claims.get("aud") not in audiences:
            raise AadError(500131, {"aud": claims.get("aud"), "client_id": client.client_id})
        if is_app_only(claims) or "scp" not in claims:
            # Unverified against Entra: app-only tokens are refused as user assertions.
            raise AadError(50013, {"reason": "The assertion is not a user token."})
        user = tenant.user_by_oid(str(claims.get("oid")))
        if user is None or not user.enabled:
            raise AadError(50013, {"reason": "The user in the assertion was not found."})
        return user, AuthContext.from_aio(claims.get("aio"))

    def start_device_flow(self, tenant_segment: str, form: Mapping[str, str], verification_uri: str) -> dict[str, Any]:
        tenant = self.directory.tenant(tenant_segment)
        client_id = form.get("client_id", "")
        client = tenant.app_by_client_id(client_id)
        if client is None:
            raise AadError(700016, {"client_id": client_id, "tenant": tenant.id})
        scope = form.get("scope", "")
        if not scope.strip():
            raise AadError(70011, {"scope": "(none)"})
        tenant.resolve_scopes(scope)  # unknown resource or scope fails now, as Entra does
        _drop_expired(self.device_codes)
        user_code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9))
        device_code = secrets.token_urlsafe(48)
        self.device_codes[device_code] = DeviceCode(
            user_code, tenant, client, scope, parse_claims(form.get("claims")),
            time.time() + DEVICE_CODE_LIFETIME)
        return {
            "user_code": user_code, "device_code": device_code, "verification_uri": verification_uri,
            "expires_in": DEVICE_CODE_LIFETIME, "interval": DEVICE_POLL_INTERVAL,
            "message": f"To sign in, use a web browser to open the page {verification_uri} and enter "
                       f"the code {user_code} to authenticate.",
        }

    def pending_by_user_code(self, user_code: str) -> DeviceCode | None:
        code = user_code.strip().upper().replace("-", "")
        return next((f for f in self.device_codes.values()
                     if f.user_code == code and f.user is None and f.expires_at > time.time()), None)
