"""The emulated directory: tenants, app registrations, users and consent, from a TOML file.

It answers the questions Entra answers before it issues a token: who is this client, which
resource does a scope belong to, has the client been granted it, does a policy want MFA.
"""
from __future__ import annotations

import hmac
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aadsts import AadError

DEFAULT_TENANT_FILE = Path(__file__).with_name("tenant.toml")
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
_NS = uuid.UUID("0d7c5f3a-52f4-4b1e-9a2b-5e3c1d0f6a7b")


@dataclass
class Secret:
    id: str
    value: str
    expires: int | None = None  # epoch seconds; None = never


@dataclass
class App:
    name: str
    client_id: str
    display_name: str = ""
    identifier_uris: list[str] = field(default_factory=list)
    access_token_version: int = 2
    default_resource: bool = False
    public: bool = False
    confidential: bool = False
    scopes: list[str] = field(default_factory=list)
    app_roles: list[str] = field(default_factory=list)
    pre_authorized: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    delegated_grants: dict[str, list[str]] = field(default_factory=dict)
    app_grants: dict[str, list[str]] = field(default_factory=dict)
    redirect_uris: list[str] = field(default_factory=list)
    spa_redirect_uris: list[str] = field(default_factory=list)
    federated_identities: list[str] = field(default_factory=list)  # managed identities trusted as FIC
    # The manifest's optionalClaims: {"access_token": [{"name": "idtyp", "additional_properties": [...]}]}.
    # Claims such as idtyp and xms_cc reach this resource's access tokens only when it asks for them.
    optional_claims: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # A CAE-enabled resource (Graph): a client that declares cp1 gets long-lived (20-28 h) tokens for it.
    continuous_access_evaluation: bool = False
    # thumbprints of registered certificates, filled in by the stack: b64url sha1 / sha256 -> PEM
    cert_thumbprints: dict[str, Any] = field(default_factory=dict)

    @property
    def sp_oid(self) -> str:
        """The service principal's object id: stable, distinct from the app id."""
        return str(uuid.uuid5(_NS, "sp:" + self.client_id))

    def access_token_claim(self, name: str) -> dict[str, Any] | None:
        """The optional claim ``name`` this resource requests in its access tokens, or None."""
        return next((c for c in self.optional_claims.get("access_token", []) if c.get("name") == name), None)

    def canonical_scope(self, name: str) -> str | None:
        return next((s for s in self.scopes if s.lower() == name.lower()), None)

    def secret_matches(self, value: str) -> Secret | None:
        return next((s for s in self.secrets if hmac.compare_digest(s.value.encode(), value.encode())), None)


@dataclass
class User:
    name: str
    oid: str
    display_name: str
    upn: str
    password: str
    given_name: str = ""
    surname: str = ""
    job_title: str | None = None
    mfa_code: str | None = None
    mfa_required_for: list[str] = field(default_factory=list)
    enabled: bool = True


@dataclass
class ManagedIdentity:
    name: str
    client_id: str
    principal_id: str
    system_assigned: bool = False


@dataclass
class Vault:
    name: str
    readers: list[str] = field(default_factory=list)
    secrets_from_apps: dict[str, str] = field(default_factory=dict)
    certificates: list[str] = field(default_factory=list)


@dataclass
class Requested:
    """The resource part of a scope request, resolved."""

    resource: App
    scopes: list[str]          # canonical scope names on the resource ('.default' expanded)
    as_requested: list[str]    # the strings the client sent, for the response's `scope`
    default: bool = False      # the client asked for '<resource>/.default'
    oidc: list[str] = field(default_factory=list)


@dataclass
class Tenant:
    id: str
    name: str
    domain: str
    apps: list[App]
    users: list[User]
    policy_ids: list[str]
    managed_identities: list[ManagedIdentity] = field(default_factory=list)
    vaults: list[Vault] = field(default_factory=list)
    own_signing_key: bool = False  # signs its tokens with a tenant-specific key

    def identity(self, *, client_id: str | None = None, principal_id: str | None = None,
                 name: str | None = None) -> ManagedIdentity | None:
        """A managed identity by selector; no selector means the system-assigned one."""
        if client_id is None and principal_id is None and name is None:
            return next((mi for mi in self.managed_identities if mi.system_assigned), None)
        return next((mi for mi in self.managed_identities
                     if client_id == mi.client_id or principal_id == mi.principal_id or name == mi.name), None)

    def app_by_client_id(self, client_id: str) -> App | None:
        return next((a for a in self.apps if a.client_id == client_id), None)

    def app_by_name(self, name: str) -> App:
        for a in self.apps:
            if a.name == name:
                return a
        raise KeyError(name)

    def app_by_resource(self, identifier: str) -> App | None:
        ident = identifier.rstrip("/").lower()
        return next((a for a in self.apps
                     if ident in (a.client_id.lower(), *(u.rstrip("/").lower() for u in a.identifier_uris))), None)

    def user_by_login(self, login: str) -> User | None:
        login = login.strip().lower()
        return next((u for u in self.users if login in (u.name, u.upn.lower(), u.oid)), None)

    def user_by_oid(self, oid: str) -> User | None:
        return next((u for u in self.users if u.oid == oid), None)

    def default_resource(self) -> App:
        for a in self.apps:
            if a.default_resource:
                return a
        raise AadError(500011, {"resource": "https://graph.microsoft.com", "tenant": self.id})

    def resolve_scopes(self, scope: str) -> Requested | None:
        """Map a space-separated scope string to one resource, as Entra does.

        Bare names belong to the default resource (Graph); '<uri-or-appid>/<name>' to the app
        with that identifier. More than one resource in a request is AADSTS28000.
        """
        requested = [s for s in scope.split() if s]
        oidc = [s for s in requested if s.lower() in OIDC_SCOPES]
        resource: App | None = None
        names: list[str] = []
        forms: list[str] = []
        default = False
        for item in requested:
            if item.lower() in OIDC_SCOPES:
                continue
            if "/" in item:
                ident, _, name = item.rpartition("/")
                app = self.app_by_resource(ident)
                if app is None:
                    raise AadError(500011, {"resource": ident, "tenant": self.id})
            else:
                app, name = self.default_resource(), item
            if resource is not None and app is not resource:
                raise AadError(28000, {"scope": scope})
            resource = app
            forms.append(item)
            if name == ".default":
                default = True
                continue
            canonical = app.canonical_scope(name)
            if canonical is None:
                raise AadError(70011, {"scope": item})
            names.append(canonical)
        if resource is None:
            return None
        return Requested(resource, names, forms, default, oidc)

    def consented_scopes(self, client: App, resource: App) -> list[str]:
        """Delegated permissions the client may use on the resource for any user."""
        if resource is client:
            return list(client.scopes)
        granted = list(client.delegated_grants.get(resource.name, []))
        if client.name in resource.pre_authorized:
            granted += resource.scopes
        return granted

    def check_consent(self, client: App, requested: Requested) -> list[str]:
        """Return the scopes to put in the token, or raise AADSTS65001."""
        granted = self.consented_scopes(client, requested.resource)
        names = sorted(set(granted) | set(requested.scopes)) if requested.default else requested.scopes
        if any(s not in granted for s in names):
            raise AadError(65001, {"client_id": client.client_id, "client_name": client.display_name},
                           suberror="consent_required")
        return names

    def mfa_policy_for(self, user: User, resource: App) -> str | None:
        """The id of the Conditional Access policy that wants MFA for this user and resource."""
        return self.policy_ids[0] if resource.name in user.mfa_required_for and self.policy_ids else None


@dataclass
class Directory:
    tenants: list[Tenant]

    def tenant(self, segment: str) -> Tenant:
        """Resolve the authority's tenant segment: id or domain; 'common'/'organizations' mean the
        first (home) tenant here, since the emulator has no home-realm discovery."""
        seg = segment.lower()
        if seg in ("common", "organizations"):
            return self.tenants[0]
        for t in self.tenants:
            if seg in (t.id, t.domain.lower()):
                return t
        raise AadError(90002, {"tenant": segment})

    def tenant_by_id(self, tid: str) -> Tenant | None:
        return next((t for t in self.tenants if t.id == tid), None)

    @property
    def default(self) -> Tenant:
        return self.tenants[0]


def _app(raw: dict[str, Any]) -> App:
    return App(**{**raw, "secrets": [Secret(**s) for s in raw.get("secrets", [])]})


def _user(raw: dict[str, Any], domain: str) -> User:
    return User(**{"upn": f"{raw['name']}@{domain}", **raw})


def load_directory(path: Path = DEFAULT_TENANT_FILE) -> Directory:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return Directory([Tenant(
        id=t["id"], name=t["name"], domain=t["domain"],
        apps=[_app(a) for a in t.get("apps", [])],
        users=[_user(u, t["domain"]) for u in t.get("users", [])],
        policy_ids=[p["id"] for p in t.get("policies", [])],
        managed_identities=[ManagedIdentity(**m) for m in t.get("managed_identities", [])],
        vaults=[Vault(**v) for v in t.get("vaults", [])],
        own_signing_key=bool(t.get("own_signing_key", False)),
    ) for t in data["tenants"]])
