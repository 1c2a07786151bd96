"""Unit tests for the request path's pure pieces: header parsing, settings, validation, errors."""
from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.bearer import bearer_token
from shared.config import load_settings
from shared.errors import AuthenticationError, ConfigurationError, InsufficientScope, bearer_challenge, problem
from shared.signing_keys import SigningKeys
from shared.authorization import Requirement, check
from shared.validation import validate

TENANT = "6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f"
CLIENT = "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b"
INSTANCE = "https://login.example.test/"
ISSUER = f"https://login.example.test/{TENANT}/v2.0"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def env(**extra: str) -> dict[str, str]:
    base = {"AzureAd__Instance": INSTANCE, "AzureAd__TenantId": TENANT, "AzureAd__ClientId": CLIENT,
            "AzureAd__Audience": "api://middletier", "AzureAd__Scopes": "access_as_user",
            "AzureAd__ClientSecret": "s3cret-value"}
    base.update(extra)
    return base


# --- bearer header ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc-_.~+/=="])
def test_bearer_accepts_one_token(value: str) -> None:
    assert bearer_token(value) == value.split()[-1]


@pytest.mark.parametrize("value", ["Basic dXNlcjpw", "Bearer", "Bearer ", "Bearer a b", "Bearer a, Bearer b",
                                   "Bearer a\x00b", "Bearer ä", "Token abc", "Bearer " + "a" * 17000])
def test_bearer_refuses_everything_else(value: str) -> None:
    with pytest.raises(AuthenticationError) as err:
        bearer_token(value)
    assert err.value.status == 401
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]


def test_missing_header_has_no_error_code() -> None:  # RFC 6750 §3.1
    with pytest.raises(AuthenticationError) as err:
        bearer_token(None)
    assert err.value.headers["WWW-Authenticate"] == 'Bearer realm=""'


# --- settings --------------------------------------------------------------------------------------
def test_settings_parse_lists_and_credentials() -> None:
    s = load_settings(env(**{"DownstreamApis__Graph__BaseUrl": "https://graph.example.test/v1.0",
                             "DownstreamApis__Graph__Scopes__0": "https://graph.microsoft.com/User.Read",
                             "DownstreamApis__Graph__Scopes__1": "https://graph.microsoft.com/Mail.Read",
                             "AzureAd__ClientCredentials__0__SourceType": "Path",
                             "AzureAd__ClientCredentials__0__CertificateDiskPath": "/x.pfx"}))
    assert s.azure_ad.audiences == (CLIENT, "api://middletier")
    assert s.azure_ad.authority == INSTANCE + TENANT
    assert s.downstream_api("Graph").scopes == ("https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read")
    assert [c.source_type for c in s.azure_ad.credentials] == ["Path", "ClientSecret"]


@pytest.mark.parametrize("overrides,key", [
    ({"AzureAd__ClientId": "not-a-guid"}, "AzureAd__ClientId"),
    ({"AzureAd__TenantId": ""}, "AzureAd__TenantId"),
    ({"AzureAd__Instance": "http://login.example.test/"}, "AzureAd__Instance"),
    ({"AzureAd__Scopes": ""}, "AzureAd__Scopes"),
    ({"AzureAd__TimeoutSeconds": "soon"}, "AzureAd__TimeoutSeconds"),
    ({"AzureAd__DisableInstanceDiscovery": "maybe"}, "AzureAd__DisableInstanceDiscovery"),
    ({"DownstreamApis__Graph__BaseUrl": "ftp://x"}, "DownstreamApis__Graph__BaseUrl"),
])
def test_bad_settings_name_the_key_never_the_value(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings(env(**overrides))
    assert err.value.key == key
    for value in overrides.values():
        if value:
            assert value not in err.value.detail
    assert "s3cret-value" not in err.value.detail


# --- validation ------------------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, body: Any, status: int = 200):
        self._body, self.status_code, self.headers = body, status, {}

    def json(self) -> Any:
        return self._body


class FakeIdP:
    """Serves metadata and a JWKS from memory and counts fetches."""

    def __init__(self, *keys: rsa.RSAPrivateKey):
        self.keys = list(keys)
        self.v1_issuer = "https://sts.windows.net/{tenantid}/"
        self.v1_down = False
        self.v1_fetches = 0
        self.jwks_fetches = 0
        self.down = False

    def get(self, url: str, timeout: Any = None) -> FakeResponse:
        import requests
        if self.down:
            raise requests.ConnectionError("down")
        if url.endswith("v2.0/.well-known/openid-configuration") or url == INSTANCE + "openid-configuration":
            return FakeResponse({"issuer": INSTANCE + "{tenantid}/v2.0", "jwks_uri": INSTANCE + "keys"})
        if url.endswith("openid-configuration"):  # the v1 document: only its issuer is read
            self.v1_fetches += 1
            if self.v1_down:
                return FakeResponse({"error": "temporarily_unavailable"}, status=503)
            return FakeResponse({"issuer": self.v1_issuer, "jwks_uri": INSTANCE + "common/discovery/keys"})
        self.jwks_fetches += 1
        return FakeResponse({"keys": [dict(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key(), as_dict=True),
                                           kid=kid(k), use="sig") for k in self.keys]})


def kid(key: rsa.RSAPrivateKey) -> str:
    return str(key.public_key().public_numbers().n)[:16]


def token(key: rsa.RSAPrivateKey = KEY, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"aud": CLIENT, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 3600, "tid": TENANT,
            "oid": "user-1", "azp": "client-1", "scp": "access_as_user", "ver": "2.0"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": kid(KEY), **(headers or {})})


@pytest.fixture
def idp() -> FakeIdP:
    return FakeIdP(KEY)


@pytest.fixture
def keys(idp: FakeIdP) -> SigningKeys:
    return SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=load_settings(env()).azure_ad.v1_metadata_url)


def test_valid_token_gives_the_caller(keys: SigningKeys) -> None:
    caller = validate(token(), keys, load_settings(env()).azure_ad)
    assert caller.oid == "user-1" and caller.scopes == {"access_as_user"} and not caller.is_app


def test_app_id_uri_audience_and_v1_issuer_are_accepted(keys: SigningKeys) -> None:
    v1 = token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0")
    assert validate(v1, keys, load_settings(env()).azure_ad).tid == TENANT


def test_v1_issuer_comes_from_the_v1_metadata_not_from_a_constant(idp: FakeIdP) -> None:
    """A sovereign cloud (China: sts.chinacloudapi.cn) publishes its own v1 issuer; the public
    cloud's is then refused, and a v2-only API reads no v1 document at all."""
    idp.v1_issuer = "https://sts.chinacloudapi.cn/{tenantid}/"
    settings = load_settings(env()).azure_ad
    assert settings.v1_metadata_url == INSTANCE + TENANT + "/.well-known/openid-configuration"
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=settings.v1_metadata_url)
    china = token(aud="api://middletier", iss=f"https://sts.chinacloudapi.cn/{TENANT}/", ver="1.0")
    assert validate(china, keys, settings).tid == TENANT
    with pytest.raises(AuthenticationError, match="issuer"):
        validate(token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0"), keys, settings)
    with pytest.raises(AuthenticationError, match="does not match its version"):
        validate(token(iss=f"https://sts.chinacloudapi.cn/{TENANT}/"), keys, settings)
    v2_only = load_settings(env(AzureAd__AccessTokenVersions="2.0")).azure_ad
    assert v2_only.v1_metadata_url is None
    assert load_settings(env(AzureAd__TenantId="organizations")).azure_ad.v1_metadata_url == \
        INSTANCE + "common/.well-known/openid-configuration"


def test_the_v1_document_down_costs_v1_tokens_a_503_and_never_touches_v2(idp: FakeIdP) -> None:
    from shared.errors import UpstreamError
    now = [0.0]
    settings = load_settings(env()).azure_ad
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       v1_metadata_url=settings.v1_metadata_url, clock=lambda: now[0])
    v1 = token(aud="api://middletier", iss=f"https://sts.windows.net/{TENANT}/", ver="1.0")
    idp.v1_down = True
    assert validate(token(), keys, settings).oid == "user-1"          # v2: no v1 document needed
    for _ in range(2):                                                 # v1: 503, the second without a fetch
        with pytest.raises(UpstreamError) as err:
            validate(v1, keys, settings)
        assert err.value.status == 503
    assert idp.v1_fetches == 1
    idp.v1_down = False
    now[0] += 30
    assert validate(v1, keys, settings).tid == TENANT and idp.v1_fetches == 2


@pytest.mark.parametrize("make,message", [
    (lambda: token(aud="api://someone-else"), "not issued for this API"),
    (lambda: token(exp=int(time.time()) - 400), "expired"),
    (lambda: token(nbf=int(time.time()) + 400), "not valid yet"),
    (lambda: token(iss="https://evil.example/v2.0"), "issuer"),
    (lambda: token(tid="00000000-0000-0000-0000-000000000000",
                   iss="https://login.example.test/00000000-0000-0000-0000-000000000000/v2.0"), "another tenant"),
    (lambda: token(OTHER_KEY), "signature"),
    (lambda: token(headers={"kid": "unknown"}), "not signed by a key"),
    (lambda: token(tid=None), "invalid"),
    (lambda: jwt.encode({"aud": CLIENT}, "s" * 32, algorithm="HS256", headers={"kid": kid(KEY)}), "algorithm"),
    (lambda: "a.b.c", "malformed"),
])
def test_invalid_tokens_are_401(keys: SigningKeys, make: Any, message: str) -> None:
    with pytest.raises(AuthenticationError) as err:
        validate(make(), keys, load_settings(env()).azure_ad)
    assert message in err.value.detail and err.value.status == 401


def test_expiry_within_clock_skew_is_accepted(keys: SigningKeys) -> None:
    assert validate(token(exp=int(time.time()) - 200), keys, load_settings(env()).azure_ad)


def test_unknown_kid_refetches_once_then_is_rate_limited(idp: FakeIdP, keys: SigningKeys) -> None:
    settings = load_settings(env()).azure_ad
    validate(token(), keys, settings)
    assert idp.jwks_fetches == 1
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.keys.append(new_key)
    rolled = jwt.encode(jwt.decode(token(), options={"verify_signature": False}), new_key, algorithm="RS256",
                        headers={"kid": kid(new_key)})
    assert validate(rolled, keys, settings).oid == "user-1"
    assert idp.jwks_fetches == 2
    with pytest.raises(AuthenticationError):
        validate(token(headers={"kid": "still-unknown"}), keys, settings)
    assert idp.jwks_fetches == 2  # rate-limited: no refetch storm from garbage kids


def test_cached_keys_survive_an_idp_outage(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + "openid-configuration", idp, refresh_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    settings = load_settings(env()).azure_ad
    validate(token(), keys, settings)
    idp.down = True
    now[0] = 100  # past the refresh interval
    assert validate(token(), keys, settings).oid == "user-1"


def test_cold_start_with_idp_down_is_503(idp: FakeIdP, keys: SigningKeys) -> None:
    from shared.errors import UpstreamError
    idp.down = True
    with pytest.raises(UpstreamError) as err:
        validate(token(), keys, load_settings(env()).azure_ad)
    assert err.value.status == 503


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
    assert "neither scopes nor app roles" in bare.value.detail


# --- app-only or delegated: idtyp when present, else no scp and oid == sub ------------------------------
V1 = {"iss": f"https://sts.windows.net/{TENANT}/", "ver": "1.0", "aud": "api://middletier", "azp": None,
      "appid": "client-1"}
APP = {"scp": None, "oid": "sp-1", "sub": "sp-1"}  # a service principal: oid == sub, no scp
USER = {"sub": "pairwise-sub-of-user-1"}            # a user's sub is pairwise, never its oid


@pytest.mark.parametrize("version", ["2.0", "1.0"])
@pytest.mark.parametrize("claims,is_app", [
    (USER, False),
    ({**USER, "idtyp": "user"}, False),                                   # include_user_token
    ({**USER, "roles": ["MiddleTier.Admin"]}, False),                     # a user with an app role
    ({**APP, "roles": ["MiddleTier.Admin"]}, True),                       # no idtyp requested
    (APP, True),                                                          # no idtyp, no roles (ACL mode)
    ({**APP, "roles": ["MiddleTier.Admin"], "idtyp": "app"}, True),       # idtyp requested
    ({**USER, "scp": None, "roles": ["MiddleTier.Admin"]}, False),        # no marker of an app: not app-only
    ({**APP, "idtyp": "device"}, False),
])
def test_app_only_classification_with_and_without_idtyp(keys: SigningKeys, version: str, claims: dict[str, Any],
                                                         is_app: bool) -> None:
    extra = V1 if version == "1.0" else {}
    caller = validate(token(**{**extra, **claims}), keys, load_settings(env()).azure_ad)
    assert caller.is_app is is_app


@pytest.mark.parametrize("version", ["2.0", "1.0"])
@pytest.mark.parametrize("claims,message", [
    ({**APP, "scp": "access_as_user", "idtyp": "app"}, "app-only (idtyp) yet carries delegated scopes"),
    ({**USER, "scp": None, "roles": ["MiddleTier.Admin"], "idtyp": "user"}, "user token (idtyp) yet carries no"),
    ({**APP, "scp": "access_as_user"}, "(oid = sub) yet it carries delegated scopes"),
    ({**APP, "idtyp": ["app"]}, "idtyp claim is malformed"),
])
def test_token_whose_idtyp_contradicts_its_scp_is_401(keys: SigningKeys, version: str, claims: dict[str, Any],
                                                      message: str) -> None:
    extra = V1 if version == "1.0" else {}
    with pytest.raises(AuthenticationError) as err:
        validate(token(**{**extra, **claims}), keys, load_settings(env()).azure_ad)
    assert message in err.value.detail and err.value.status == 401
    assert 'error="invalid_token"' in err.value.headers["WWW-Authenticate"]


def test_client_capabilities_default_to_cp1() -> None:
    assert load_settings(env()).azure_ad.client_capabilities == ("cp1",)
    assert load_settings(env(AzureAd__ClientCapabilities="none")).azure_ad.client_capabilities == ()
    assert load_settings(env(AzureAd__ClientCapabilities__0="cp1", AzureAd__ClientCapabilities__1="cp2")
                         ).azure_ad.client_capabilities == ("cp1", "cp2")


# --- errors ----------------------------------------------------------------------------------------
def test_problem_body_and_challenge_quoting() -> None:
    status, headers, body = problem(InsufficientScope(("a", "b")), trace_id="t1")
    assert status == 403 and body["type"] == "urn:middletier:problem:insufficient_scope"
    assert body["required"] == ["a", "b"] and body["trace_id"] == "t1"
    assert 'scope="a b"' in headers["WWW-Authenticate"]
    assert bearer_challenge(error_description='say "hi"') == 'Bearer realm="", error_description="say \\"hi\\""'


def test_memoized_validation_rechecks_time_and_key(idp: FakeIdP, keys: SigningKeys) -> None:
    from shared.validation import TokenValidator
    now = [time.time()]
    settings = load_settings(env()).azure_ad
    validator = TokenValidator(keys, settings, clock=lambda: now[0])
    good = token()
    first = validator.validate(good)
    assert first.token_hash and validator.validate(good) is first  # memo hit
    now[0] += 3600 + 301  # past exp + skew on the memo's clock: it must not serve the entry
    assert validator.validate(good) is not first  # re-validated in full (pyjwt uses the real clock)


def test_memoized_token_fails_once_its_key_is_withdrawn(idp: FakeIdP) -> None:
    from shared.validation import TokenValidator
    now = [0.0]
    keys = SigningKeys(INSTANCE + "openid-configuration", idp, refresh_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    validator = TokenValidator(keys, load_settings(env()).azure_ad)
    good = token()
    validator.validate(good)
    idp.keys = [OTHER_KEY]  # the tenant stops publishing the key
    now[0] = 100            # next refresh sees it
    with pytest.raises(AuthenticationError):
        validator.validate(good)


def test_invalid_tokens_are_never_memoized(keys: SigningKeys) -> None:
    from shared.validation import TokenValidator
    validator = TokenValidator(keys, load_settings(env()).azure_ad)
    bad = token(aud="api://other")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            validator.validate(bad)
    assert len(validator._memo) == 0


@pytest.mark.parametrize("value,expected", [("120", 120), ("0", 0), ("99999", 3600), ("²", None), ("", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", None), (None, None), ("-5", None)])
def test_retry_after_parsing_never_raises(value: str | None, expected: int | None) -> None:
    from shared.outbound import parse_retry_after
    assert parse_retry_after(value) == expected


def test_trace_ids_reach_child_loggers(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from shared import logctx
    child = logging.getLogger("middletier.tokens")
    logctx.install()
    with caplog.at_level(logging.INFO, "middletier"), logctx.tracing("abc-123"):
        child.info("reloading the credential")
    assert "[trace=abc-123] reloading the credential" in caplog.text


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
        assert "neither scopes nor app roles" not in err.value.detail
    check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), settings)  # declares nothing
    check(bare_app, Requirement(app_permissions=(), callers="app"), settings)
    unlisted = load_settings(env(AzureAd__AllowWebApiToBeAuthorizedByACL="true",
                                 AzureAd__AllowedClientApplications="client-2")).azure_ad
    with pytest.raises(InsufficientScope) as err:
        check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), unlisted)
    assert "neither scopes nor app roles" in err.value.detail
    with pytest.raises(InsufficientScope):  # outside ACL mode, the global rule holds for everyone
        check(bare_app, Requirement(scopes=(), app_permissions=(), callers="app"), load_settings(env()).azure_ad)
