"""Input handling: claims of the wrong type or form, request text in logs, and who may spend the
unknown-``kid`` refetch. Unit-level with the in-memory identity provider where that is enough,
end to end (real host, real devstack) where the answer on the wire is the point."""
from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import load_settings
from shared.errors import AuthenticationError, MalformedToken
from shared.signing_keys import SigningKeys
from shared.validation import TokenValidator, validate
from tests.fakes import INSTANCE, KEY, TENANT, FakeIdP, env, kid, token
from tests.fakes import idp, keys  # noqa: F401  (the shared fixtures)

http_ = requests.Session()
http_.trust_env = False
SETTINGS = load_settings(env()).azure_ad


def signed(claims: dict[str, Any]) -> str:
    """Correctly signed by the tenant's key, whatever the claims' JSON types."""
    body = {**jwt.decode(token(), options={"verify_signature": False}), **claims}
    return jwt.api_jws.PyJWS().encode(json.dumps(body).encode(), KEY, algorithm="RS256", headers={"kid": kid(KEY)})


def refused_as_invalid_token(call: Any) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as err:
        call()
    assert err.value.status == 401 and 'error="invalid_token"' in err.value.headers["WWW-Authenticate"]
    return err.value


# --- claims of the wrong type ---------------------------------------------------------------------
NOW = int(time.time())


@pytest.mark.parametrize("claim,value", [
    ("exp", str(NOW + 600)), ("iat", str(NOW)), ("nbf", str(NOW)),          # numeric strings: int() would take them
    ("exp", True), ("nbf", False), ("iat", True),                             # bool is an int to Python, not to JSON
    ("exp", 10 ** 400), ("iat", -(10 ** 400)),                                # overflow float arithmetic
    ("exp", [NOW + 600]), ("nbf", {"t": NOW}), ("iat", None),
], ids=["exp-numeric-string", "iat-numeric-string", "nbf-numeric-string", "exp-true", "nbf-false", "iat-true",
        "exp-huge", "iat-huge-negative", "exp-list", "nbf-object", "iat-null"])
def test_numeric_date_claims_of_another_type_are_refused_as_invalid_token(keys: SigningKeys, claim: str,
                                                                          value: Any) -> None:
    err = refused_as_invalid_token(lambda: validate(signed({claim: value}), keys, SETTINGS))
    assert type(err) is MalformedToken and err.claim == claim


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_non_standard_json_number_constants_are_refused(keys: SigningKeys, constant: str) -> None:
    body = json.dumps(jwt.decode(token(), options={"verify_signature": False}))[:-1] + f', "nbf": {constant}}}'
    odd = jwt.api_jws.PyJWS().encode(body.encode(), KEY, algorithm="RS256", headers={"kid": kid(KEY)})
    refused_as_invalid_token(lambda: validate(odd, keys, SETTINGS))


def test_integer_and_fractional_numeric_dates_are_still_accepted(keys: SigningKeys) -> None:
    assert validate(signed({"exp": NOW + 600.5, "nbf": NOW - 0.25, "iat": NOW}), keys, SETTINGS).oid == "user-1"


# --- one token, one spelling ----------------------------------------------------------------------
def _respell(good: str) -> list[str]:
    header, payload, signature = good.split(".")
    raw_sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    last = signature[-1]
    # the same bytes with non-zero unused trailing bits (342 chars: the last char carries 2 unused bits)
    sloppy = signature[:-1] + ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                               [("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last)) | 1])
    assert base64.urlsafe_b64decode(sloppy + "=" * (-len(sloppy) % 4)) == raw_sig and sloppy != signature
    std = base64.b64encode(raw_sig).decode()
    return [
        good + "==",                                          # padding on the signature
        f"{header}.{payload}.{signature}=",
        f"{header}==.{payload}.{signature}" if len(header) % 4 == 2 else f"{header}=.{payload}.{signature}",
        f"{header}.{payload}.{sloppy}",                       # non-canonical trailing bits
        f"{header}.{payload}.{std.rstrip('=')}" if std.rstrip("=") != signature else good + "+",  # +/ alphabet
    ]


def test_a_token_has_one_spelling_padding_and_non_canonical_base64url_are_refused(keys: SigningKeys) -> None:
    good = token()
    assert validate(good, keys, SETTINGS).oid == "user-1"
    validator = TokenValidator(keys, SETTINGS)
    validator.validate(good)
    for variant in _respell(good):
        assert variant != good
        refused_as_invalid_token(lambda: validate(variant, keys, SETTINGS))
        refused_as_invalid_token(lambda: validator.validate(variant))
    assert len(validator._memo) == 1  # no second entry (nor cache partition) for the same signature


# --- scp is split on ASCII spaces only ------------------------------------------------------------
@pytest.mark.parametrize("separator", ["\u00a0", "\u2003", "\u3000", "\t", "\n", "\x1c", "\x85", "\u2028"])
def test_scp_is_split_on_spaces_only_other_whitespace_is_refused(keys: SigningKeys, separator: str) -> None:
    refused_as_invalid_token(lambda: validate(token(scp=f"other{separator}access_as_user"), keys, SETTINGS))


def test_scp_with_several_ascii_spaces_still_splits(keys: SigningKeys) -> None:
    assert validate(token(scp="  User.Read  access_as_user "), keys, SETTINGS).scopes == {"User.Read",
                                                                                          "access_as_user"}


# --- end to end: the real host answers 401 invalid_token, never 500 -------------------------------
def _get_me(host: dict[str, Any], token_: str) -> requests.Response:
    return http_.get(host["url"] + "/api/me", headers={"Authorization": f"Bearer {token_}"}, timeout=30)


def test_signed_token_with_numeric_string_exp_is_401_not_500(devstack: dict[str, Any], admin: Any,
                                                             function_host: dict[str, Any]) -> None:
    for claim, value in (("exp", str(int(time.time()) + 600)), ("iat", str(int(time.time()))),
                         ("nbf", str(int(time.time()))), ("exp", True)):
        r = _get_me(function_host, admin.mint(user="alice", claims={claim: value}))
        assert r.status_code == 401, (claim, value, r.status_code, r.text[:200])
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_padded_token_is_not_a_second_token(devstack: dict[str, Any], admin: Any,
                                            function_host: dict[str, Any]) -> None:
    good = admin.mint(user="alice")
    assert _get_me(function_host, good).status_code == 200
    before = admin.stats()
    r = _get_me(function_host, good + "==")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    after = admin.stats()
    obo = lambda s: sum(v.get("total", 0) for k, v in s.items() if k.startswith("entra.token"))  # noqa: E731
    assert obo(after) == obo(before)  # no second OBO for the same signature


# --- request text never forges a log line -----------------------------------------------------------
FORGED = "[2099-01-01 00:00:00] middletier INFO admin signed in as root"
# No %00: Kestrel answers 400 to an encoded NUL in the path before any function runs (checked below).
HOSTILE_PATH = ("/api/directory/users/x%0d%0a" + FORGED.replace(" ", "%20")
                + "%1b[31m%01%e2%80%a8%e2%80%ae")


def _lines_of(log_text: str, trace: str) -> list[str]:
    return [line for line in log_text.splitlines() if trace in line]


def test_request_path_and_host_cannot_forge_a_log_line(function_host: dict[str, Any]) -> None:
    """The path arrives percent-decoded (CR LF, ESC, SOH, U+2028, a bidi override) and the Host header
    as sent: the host logs one line for the request, naming the function and its route template.
    An encoded NUL never reaches a function (Kestrel's 400) and is not logged either."""
    import http.client
    from urllib.parse import urlsplit
    url = urlsplit(function_host["url"])
    trace = "log-forging-" + str(time.time_ns())
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("GET", HOSTILE_PATH, skip_host=True)
    conn.putheader("Host", "evil.example\x1b[2J")
    conn.putheader("x-ms-client-request-id", trace)
    conn.endheaders()
    r = conn.getresponse()
    r.read()
    if r.status == 400:  # the HTTP layer refused the Host header: send the path alone
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("GET", HOSTILE_PATH, headers={"x-ms-client-request-id": trace})
        r = conn.getresponse()
        r.read()
    assert r.status == 401
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", HOSTILE_PATH.replace("%01", "%00"), headers={"x-ms-client-request-id": trace + "-nul"})
    nul = conn.getresponse()
    nul.read()
    assert nul.status == 400
    text = open(function_host["log"], encoding="utf-8", errors="replace").read()
    mine = _lines_of(text, trace)
    assert len(mine) == 1, mine
    assert "AdminApi /directory/users/{id} -> 401" in mine[0]
    assert not any(line.startswith("[2099-01-01") or line.lstrip().startswith(FORGED) for line in text.splitlines())
    for raw in ("\x1b", "\x00", "\x01", "\u2028", "\u202e", "evil.example"):
        assert raw not in text


def test_log_records_escape_control_characters_in_what_they_carry(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from shared import logctx
    logctx.install()
    hostile = "x\r\n" + FORGED + "\x1b[31m\x00\u2028\u202e"
    with caplog.at_level(logging.INFO, "middletier"), logctx.tracing("t-1"):
        logging.getLogger("middletier").info("id %s: %s", hostile, ValueError(hostile))
        logging.getLogger("middletier.keys").warning("count %d", 3)
    first = caplog.records[0].getMessage()
    assert "\n" not in first and "\r" not in first and "\x1b" not in first and "\x00" not in first
    assert "\u2028" not in first and "\u202e" not in first
    assert "x\\x0d\\x0a[2099-01-01" in first and first.startswith("[trace=t-1] id ")
    assert caplog.records[1].getMessage() == "[trace=t-1] count 3"


def test_failures_are_logged_with_the_function_and_route_never_the_url(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import azure.functions as func

    from shared import functions
    from types import SimpleNamespace
    context = SimpleNamespace(settings=SimpleNamespace(request_budget_seconds=25.0))  # what run() reads itself
    monkeypatch.setattr(functions, "app_context", lambda: context)

    def refuse(ctx: Any, req: Any, trace_id: str) -> Any:
        raise AuthenticationError("No bearer token was presented.", error=None)

    def crash(ctx: Any, req: Any, trace_id: str) -> Any:
        raise RuntimeError("boom\r\n" + FORGED)

    req = func.HttpRequest("GET", "http://evil.example\x1b[2J/api/directory/users/x\r\n" + FORGED + "\x00",
                           headers={}, body=b"")
    with caplog.at_level(logging.INFO, "middletier"):
        assert functions.run(req, refuse, "AdminApi /directory/users/{id}").status_code == 401
        assert functions.run(req, crash, "AdminApi /directory/users/{id}").status_code == 500
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    for message in messages:
        assert "AdminApi /directory/users/{id} -> " in message
        assert "evil.example" not in message and "2099" not in message and "\n" not in message


# --- the unknown-kid refetch can't be spent by a request that cannot be valid ----------------------
FOREIGN = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _claims(**changes: Any) -> dict[str, Any]:
    body = jwt.decode(token(), options={"verify_signature": False})
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _forged(kid_: str = "attackerKid0", **changes: Any) -> str:
    return jwt.encode(_claims(**changes), FOREIGN, algorithm="RS256", headers={"kid": kid_})


CANNOT_BE_VALID = {
    "garbage-claims": lambda: jwt.encode({"x": 1}, FOREIGN, algorithm="RS256", headers={"kid": "garbage"}),
    "kid-not-base64url": lambda: _forged("../../etc/passwd"),
    "kid-oversized": lambda: _forged("k" * 200),
    "expired": lambda: _forged(exp=int(time.time()) - 3600),
    "not-yet-valid": lambda: _forged(nbf=int(time.time()) + 3600),
    "lifetime-implausible": lambda: _forged(exp=int(time.time()) + 365 * 86400),
    "other-tenant": lambda: _forged(tid="00000000-0000-0000-0000-000000000000"),
    "issuer-of-another-tenant": lambda: _forged(iss="https://login.example.test/00000000-0000-0000-0000-000000000000/v2.0"),
    "other-audience": lambda: _forged(aud="api://someone-else"),
    "no-tenant": lambda: _forged(tid=None),
}


def _roll(idp: FakeIdP) -> str:
    """The tenant publishes a new key (an emergency rollover) and signs a valid token with it."""
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.keys.append(new_key)
    return jwt.encode(_claims(), new_key, algorithm="RS256", headers={"kid": kid(new_key)})


def test_requests_that_cannot_be_valid_never_spend_the_unknown_kid_refetch(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       clock=lambda: now[0])
    assert validate(token(), keys, SETTINGS).oid == "user-1" and idp.jwks_fetches == 1
    now[0] = 3600.0  # long after the start-up fetch: the refetch slot is free
    for name, make in CANNOT_BE_VALID.items():
        refused_as_invalid_token(lambda: validate(make(), keys, SETTINGS))
        assert idp.jwks_fetches == 1, name  # refused without a JWKS request
    rolled = _roll(idp)
    assert validate(rolled, keys, SETTINGS).oid == "user-1"  # the real new key, recognised at once
    assert idp.jwks_fetches == 2


def test_a_forgery_that_looks_valid_delays_a_rolled_key_by_the_short_interval_only(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       clock=lambda: now[0])
    validate(token(), keys, SETTINGS)
    now[0] = 3600.0
    for i in range(50):  # a storm of plausible forgeries with fresh kids: one JWKS request
        refused_as_invalid_token(lambda: validate(_forged(f"attackerKid{i}"), keys, SETTINGS))
    assert idp.jwks_fetches == 2
    rolled = _roll(idp)
    refused_as_invalid_token(lambda: validate(rolled, keys, SETTINGS))  # inside the interval: not yet
    now[0] += 10  # the interval (10 s), not Microsoft.Identity.Web's 5 minutes
    assert validate(rolled, keys, SETTINGS).oid == "user-1" and idp.jwks_fetches == 3
    for i in range(50):  # the attacker keeps going: at most one JWKS request per interval
        now[0] += 0.5
        refused_as_invalid_token(lambda: validate(_forged(f"again{i}"), keys, SETTINGS))
    assert idp.jwks_fetches <= 3 + 25 // 10 + 1


def test_keys_are_still_refreshed_daily_and_kept_when_the_refresh_fails(idp: FakeIdP) -> None:
    now = [0.0]
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", idp,  # type: ignore[arg-type]
                       clock=lambda: now[0])
    validate(token(), keys, SETTINGS)
    now[0] = 24 * 3600.0
    validate(token(), keys, SETTINGS)
    assert idp.jwks_fetches == 2  # the 24-hour refresh
    idp.down = True
    attempts = []
    real_get = idp.get
    idp.get = lambda url, timeout=None: attempts.append(url) or real_get(url, timeout)  # type: ignore[method-assign]
    now[0] = 48 * 3600.0
    for _ in range(20):  # a failed refresh keeps the held keys and is retried per interval, not per request
        assert validate(token(), keys, SETTINGS).oid == "user-1"
    assert len(attempts) == 1
    idp.down = False
    now[0] += 10
    validate(token(), keys, SETTINGS)
    assert idp.jwks_fetches == 3


def test_garbage_kid_request_does_not_delay_a_real_key_rollover_end_to_end(
        private_devstack: tuple[dict[str, Any], Any], host_factory: Any) -> None:
    info, admin = private_devstack
    host = host_factory(info)
    assert _get_me(host, admin.mint(user="alice")).status_code == 200  # the host holds the keys
    jwks = lambda: admin.stats()["entra.jwks"]["total"]  # noqa: E731
    before = jwks()
    garbage = jwt.encode({"sub": "nobody"}, FOREIGN, algorithm="RS256", headers={"kid": "garbage-kid"})
    r = _get_me(host, garbage)  # one unauthenticated request with a garbage kid
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert jwks() == before  # it cost no JWKS request, so it spent nothing
    admin.post("/rotate/signing-key")  # an emergency rollover: new tokens are signed with a new key
    rolled = admin.mint(user="alice")
    r = _get_me(host, rolled)
    assert r.status_code == 200, r.text[:200]  # recognised at once, not after 5 minutes
    assert jwks() == before + 1
