"""Pure logic of the emulator: scope resolution, consent, error bodies, refresh tokens, faults, TLS."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509

from devstack.aadsts import AadError
from devstack.client_auth import JtiCache
from devstack.controls import Fault, FaultPlan
from devstack.directory import load_directory
from devstack.issuer import AuthContext, Issuer
from devstack.signing import KeySet
from devstack.tls import ensure_tls


@pytest.fixture(scope="module")
def tenant():
    return load_directory().default


@pytest.mark.parametrize("scope,resource,names", [
    ("User.Read", "graph", ["User.Read"]),
    ("https://graph.microsoft.com/user.read openid", "graph", ["User.Read"]),
    ("00000003-0000-0000-c000-000000000000/User.Read", "graph", ["User.Read"]),
    ("api://middletier/access_as_user offline_access", "middletier-api", ["access_as_user"]),
    ("api://middletier/.default", "middletier-api", []),
])
def test_scopes_resolve_to_one_resource(tenant, scope, resource, names):
    requested = tenant.resolve_scopes(scope)
    assert requested.resource.name == resource and requested.scopes == names


@pytest.mark.parametrize("scope,code", [
    ("User.Nope", 70011), ("api://unknown/x", 500011), ("User.Read api://middletier/access_as_user", 28000)])
def test_bad_scopes_raise_entra_codes(tenant, scope, code):
    with pytest.raises(AadError) as err:
        tenant.resolve_scopes(scope)
    assert err.value.code == code


def test_only_oidc_scopes_name_no_resource(tenant):
    assert tenant.resolve_scopes("openid profile offline_access") is None


def test_consent_from_grants_and_pre_authorization(tenant):
    mt, desktop = tenant.app_by_name("middletier-api"), tenant.app_by_name("desktop-client")
    assert tenant.check_consent(mt, tenant.resolve_scopes("User.Read")) == ["User.Read"]
    assert tenant.check_consent(desktop, tenant.resolve_scopes("api://middletier/access_as_user")) == ["access_as_user"]
    with pytest.raises(AadError) as err:
        tenant.check_consent(desktop, tenant.resolve_scopes("User.Read"))
    assert err.value.code == 65001 and err.value.suberror == "consent_required"


def test_error_body_has_entra_shape():
    body = AadError(7000215, {"client_id": "abc"}).body("corr-1")
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "'abc'" in body["error_description"] and body["correlation_id"] == "corr-1"
    assert AadError(7000215).http_status == 401 and AadError(65001).http_status == 400


def test_refresh_tokens_are_sealed(tmp_path, tenant):
    issuer = Issuer(KeySet(tmp_path / "keys"), "https://127.0.0.1:1", tmp_path)
    rt = issuer.seal_refresh(tenant, tenant.app_by_name("desktop-client"), tenant.users[0], AuthContext(mfa=True))
    data = issuer.open_refresh(rt)
    assert data["u"] == tenant.users[0].oid and data["m"] == 1
    tampered = rt[:-2] + ("A" if rt[-2] != "A" else "B") + rt[-1]
    assert issuer.open_refresh(tampered) is None
    assert issuer.open_refresh("garbage") is None and issuer.open_refresh("1.!!!") is None


def test_aio_round_trips_mfa_and_tolerates_garbage():
    assert AuthContext.from_aio(AuthContext(mfa=True).to_aio()).mfa is True
    assert AuthContext.from_aio("not base64 json").mfa is False
    assert AuthContext.from_aio(None).mfa is False


def test_jti_cache_refuses_a_reused_jti_on_another_assertion_and_forgets_expired():
    cache = JtiCache(limit=2)
    assert cache.add("a", time.time() + 60, "assertion-1")
    assert cache.add("a", time.time() + 60, "assertion-1")  # MSAL re-sends its cached assertion
    assert not cache.add("a", time.time() + 60, "assertion-2")
    assert cache.add("old", time.time() - 1, "x")
    assert cache.add("b", time.time() + 60, "y") and cache.add("c", time.time() + 60, "z")  # bounded
    assert len(cache._seen) <= 2


def test_fault_plan_counts_down_and_filters():
    plan = FaultPlan()
    plan.add(Fault(service="entra", endpoint="token", count=2, grant="on_behalf_of", status=503))
    assert plan.take("entra", "token", grant="client_credentials") is None
    assert plan.take("graph", "token", grant="on_behalf_of") is None
    assert plan.take("entra", "token", grant="on_behalf_of").status == 503
    assert plan.take("entra", "token", grant="on_behalf_of") is not None
    assert plan.take("entra", "token", grant="on_behalf_of") is None and plan.faults == []


def test_key_rotation_keeps_the_previous_key_published(tmp_path):
    keys = KeySet(tmp_path)
    before = keys.current.kid
    new = keys.rotate()
    assert [k.kid for k in keys.published] == [before, new.kid] and keys.current is new
    assert [k.kid for k in KeySet(tmp_path).published] == [before, new.kid]  # persisted


def test_tls_is_generated_once_and_bundle_trusts_both(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    first = ensure_tls(tmp_path)
    ca = first.ca_cert.read_bytes()
    second = ensure_tls(tmp_path)
    assert second.ca_cert.read_bytes() == ca
    server = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    bundle = first.bundle.read_bytes()
    assert ca in bundle and bundle.count(b"BEGIN CERTIFICATE") > 1
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(first.bundle))  # bundle pointing at itself: no duplication
    assert ensure_tls(tmp_path).bundle.read_bytes().count(ca) == 1


# --- optional claims (idtyp, xms_cc) and CAE lifetimes ----------------------------------------------
def test_idtyp_only_when_the_resource_requests_it(tmp_path):
    """Entra emits idtyp (optional claim) only for resources that ask for it; user tokens only with
    include_user_token. Without it, app-only is told by no scp and oid == sub."""
    from devstack.issuer import is_app_only
    tenant = load_directory().default
    issuer = Issuer(KeySet(tmp_path / "keys"), "https://127.0.0.1:1", tmp_path)
    daemon, api, graph = (tenant.app_by_name(n) for n in ("daemon-client", "middletier-api", "graph"))
    bare = issuer.app_access_claims(tenant, daemon, api, ["MiddleTier.Admin"], "1")
    assert "idtyp" not in bare and bare["oid"] == bare["sub"] and is_app_only(bare)
    user = issuer.user_access_claims(tenant, tenant.app_by_name("desktop-client"), tenant.users[0], api,
                                     ["access_as_user"], AuthContext(), "0")
    assert "idtyp" not in user and user["oid"] != user["sub"] and not is_app_only(user)
    api.optional_claims["access_token"] = [{"name": "idtyp"}]
    assert issuer.app_access_claims(tenant, daemon, api, [], "1")["idtyp"] == "app"
    assert "idtyp" not in issuer.user_access_claims(tenant, daemon, tenant.users[0], api, ["access_as_user"],
                                                    AuthContext(), "1")
    # Graph's registration asks for idtyp on user tokens too (include_user_token)
    graph_user = issuer.user_access_claims(tenant, api, tenant.users[0], graph, ["User.Read"], AuthContext(), "1")
    assert graph_user["idtyp"] == "user" and not is_app_only(graph_user)
    assert issuer.app_access_claims(tenant, api, graph, ["User.Read.All"], "1")["idtyp"] == "app"


@pytest.mark.parametrize("capabilities,resource,cae", [
    (["cp1"], "graph", True), (["CP1", "other"], "graph", True), ([], "graph", False),
    (["cp2"], "graph", False), (["cp1"], "middletier-api", False),
])
def test_cae_tokens_only_for_cp1_clients_of_cae_resources(tmp_path, tenant, capabilities, resource, cae):
    """xms_cc and the 20-28 h lifetime only when the client declared cp1 and the resource does CAE;
    otherwise the default (~1 h) token without xms_cc."""
    issuer = Issuer(KeySet(tmp_path / "keys"), "https://127.0.0.1:1", tmp_path)
    target = tenant.app_by_name(resource)
    claims = issuer.user_access_claims(tenant, tenant.app_by_name("middletier-api"), tenant.users[0], target,
                                       target.scopes[:1], AuthContext(capabilities=capabilities), "1")
    lifetime = claims["exp"] - claims["iat"]
    if cae:
        assert claims["xms_cc"] == ["cp1"] and 20 * 3600 <= lifetime <= 28 * 3600
    else:
        assert "xms_cc" not in claims and lifetime == issuer.lifetime
