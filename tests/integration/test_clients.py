"""The desktop sample end to end (device code, cached runs, claims challenge, auth code + PKCE),
and the emulator's browser sign-in as MSAL Python's interactive flow uses it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.client import session

from devstack.launch import ROOT, Admin

API_SCOPE = "api://middletier/access_as_user"


def run_cli(devstack: dict[str, Any], host: dict[str, Any], cache: Path, approvals: list[str],
            *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """Run the desktop CLI; whenever it prints a device code, sign in as the next user in ``approvals``."""
    cmd = [sys.executable, "-m", "clients.desktop", "--devstack", "--devstack-state", devstack["state"],
           "--api", host["url"] + "/api/me", "--cache", str(cache), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stderr is not None and proc.stdout is not None
    notes = []
    for line in proc.stderr:
        notes.append(line)
        code = re.search(r"enter the code (\w+)", line)
        if code:
            user = devstack["users"][approvals.pop(0)]
            form = {"code": code.group(1), "username": user["upn"], "password": user["password"]}
            if user.get("mfa_code"):
                form["otp"] = user["mfa_code"]
            page = session(devstack["ca_bundle"]).post(devstack["endpoints"]["devicelogin"], data=form, timeout=30)
            assert page.status_code == 200, page.text
    out = proc.stdout.read()
    proc.wait(timeout=60)
    try:
        body = json.loads(out)
    except ValueError:
        body = None
    return proc.returncode, body, "".join(notes)


def test_desktop_cli_device_code_then_cache(devstack: dict[str, Any], function_host: dict[str, Any],
                                            tmp_path: Path) -> None:
    cache = tmp_path / "cache.bin"
    code, body, notes = run_cli(devstack, function_host, cache, ["alice"])
    assert code == 0 and body["id"] == devstack["users"]["alice"]["oid"], notes
    assert "enter the code" in notes
    code, body, notes = run_cli(devstack, function_host, cache, [])  # second run: silent from the cache
    assert code == 0 and body["id"] == devstack["users"]["alice"]["oid"]
    assert "enter the code" not in notes
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert "refresh_token" not in notes


def test_desktop_cli_handles_the_claims_challenge(devstack: dict[str, Any], function_host: dict[str, Any],
                                                  tmp_path: Path) -> None:
    code, body, notes = run_cli(devstack, function_host, tmp_path / "c.bin", ["carol", "carol"])
    assert "claims challenge" in notes and notes.count("enter the code") == 2
    assert code == 0 and body["id"] == devstack["users"]["carol"]["oid"], notes


def test_desktop_cli_interactive_auth_code_pkce(devstack: dict[str, Any], function_host: dict[str, Any],
                                                tmp_path: Path) -> None:
    user = devstack["users"]["bob"]
    browser = f"{sys.executable} {ROOT / 'tests' / 'fake_browser.py'} %s"
    code, body, notes = run_cli(devstack, function_host, tmp_path / "i.bin", [], "--interactive", env={
        "BROWSER": browser, "FAKE_BROWSER_CA": devstack["ca_bundle"], "FAKE_BROWSER_USER": user["upn"],
        "FAKE_BROWSER_PASSWORD": user["password"]})
    assert code == 0 and body and body["id"] == user["oid"], notes


# --- the authorize endpoint itself ---------------------------------------------------------------
def _authorize(devstack: dict[str, Any], **params: str) -> requests.Response:
    base = {"client_id": devstack["apps"]["desktop-client"]["client_id"], "response_type": "code",
            "redirect_uri": "http://localhost:1234", "scope": API_SCOPE + " openid", "state": "s1",
            "code_challenge": "x" * 43, "code_challenge_method": "S256"}
    base.update(params)
    return session(devstack["ca_bundle"]).get(devstack["authority"] + "/oauth2/v2.0/authorize",
                                              params={k: v for k, v in base.items() if v is not None},
                                              allow_redirects=False, timeout=10)


def test_authorize_checks_redirect_uri_and_pkce(devstack: dict[str, Any]) -> None:
    assert _authorize(devstack).status_code == 200  # the login page
    unknown = _authorize(devstack, redirect_uri="https://evil.example/cb")
    assert unknown.status_code == 400 and "AADSTS50011" in unknown.text
    plain = _authorize(devstack, code_challenge_method="plain")
    assert plain.status_code == 302 and "error=invalid_request" in plain.headers["Location"]
    assert "state=s1" in plain.headers["Location"]
    silent = _authorize(devstack, prompt="none")
    assert silent.status_code == 302 and "error=login_required" in silent.headers["Location"]


def test_pkce_verifier_must_match(devstack: dict[str, Any]) -> None:
    import base64
    import hashlib
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    user = devstack["users"]["alice"]
    http = session(devstack["ca_bundle"])
    form = {"client_id": devstack["apps"]["desktop-client"]["client_id"], "response_type": "code",
            "redirect_uri": "http://localhost:1234", "scope": API_SCOPE, "code_challenge": challenge,
            "code_challenge_method": "S256", "username": user["upn"], "password": user["password"]}
    r = http.post(devstack["authority"] + "/oauth2/v2.0/authorize", data=form, allow_redirects=False, timeout=10)
    code = re.search(r"code=([^&]+)", r.headers["Location"]).group(1)
    token = {"client_id": form["client_id"], "grant_type": "authorization_code", "code": requests.utils.unquote(code),
             "redirect_uri": form["redirect_uri"], "scope": API_SCOPE}
    wrong = http.post(devstack["endpoints"]["token"], data={**token, "code_verifier": "w" * 50}, timeout=10)
    assert wrong.json()["error_codes"] == [501481]
    r = http.post(devstack["authority"] + "/oauth2/v2.0/authorize", data=form, allow_redirects=False, timeout=10)
    code = requests.utils.unquote(re.search(r"code=([^&]+)", r.headers["Location"]).group(1))
    ok = http.post(devstack["endpoints"]["token"], data={**token, "code": code, "code_verifier": verifier}, timeout=10)
    assert "access_token" in ok.json()
    again = http.post(devstack["endpoints"]["token"], data={**token, "code": code, "code_verifier": verifier},
                      timeout=10)
    assert again.json()["error_codes"] == [54005]  # codes are single-use


def test_spa_codes_need_a_cross_origin_request(devstack: dict[str, Any], admin: Admin) -> None:
    import base64
    import hashlib
    origin = "http://localhost:5173"
    verifier = "s" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    user = devstack["users"]["alice"]
    http = session(devstack["ca_bundle"])
    spa = devstack["apps"]["spa-client"]["client_id"]
    form = {"client_id": spa, "response_type": "code", "redirect_uri": origin + "/", "scope": API_SCOPE,
            "code_challenge": challenge, "code_challenge_method": "S256", "response_mode": "fragment",
            "username": user["upn"], "password": user["password"]}
    token = {"client_id": spa, "grant_type": "authorization_code", "redirect_uri": origin + "/", "scope": API_SCOPE,
             "code_verifier": verifier}

    def code() -> str:
        r = http.post(devstack["authority"] + "/oauth2/v2.0/authorize", data=form, allow_redirects=False, timeout=10)
        assert "#code=" in r.headers["Location"]
        return requests.utils.unquote(re.search(r"code=([^&]+)", r.headers["Location"]).group(1))
    no_origin = http.post(devstack["endpoints"]["token"], data={**token, "code": code()}, timeout=10)
    assert no_origin.json()["error_codes"] == [9002327]
    preflight = http.options(devstack["endpoints"]["token"], headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10)
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == origin
    ok = http.post(devstack["endpoints"]["token"], data={**token, "code": code()}, headers={"Origin": origin},
                   timeout=10)
    assert "access_token" in ok.json() and ok.headers["Access-Control-Allow-Origin"] == origin
    evil = http.options(devstack["endpoints"]["token"], headers={"Origin": "https://evil.example",
                                                                 "Access-Control-Request-Method": "POST"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in evil.headers


@pytest.mark.parametrize("user", ["carol"])
def test_msal_interactive_with_step_up_claims(devstack: dict[str, Any], user: str) -> None:
    """Unmodified MSAL Python acquire_token_interactive, claims asking for MFA: the page asks for the code."""
    import msal  # noqa: F401
    from devstack.client import public_client
    account = devstack["users"][user]
    env = {"BROWSER": f"{sys.executable} {ROOT / 'tests' / 'fake_browser.py'} %s",
           "FAKE_BROWSER_CA": devstack["ca_bundle"], "FAKE_BROWSER_USER": account["upn"],
           "FAKE_BROWSER_PASSWORD": account["password"], "FAKE_BROWSER_OTP": account["mfa_code"]}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pca = public_client(devstack)
        claims = json.dumps({"access_token": {"capolids": {"essential": True, "values": ["x"]}}})
        result = pca.acquire_token_interactive([API_SCOPE], claims_challenge=claims, timeout=60)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert "access_token" in result, result
    import jwt
    aio = jwt.decode(result["access_token"], options={"verify_signature": False})["aio"]
    from devstack.issuer import AuthContext
    assert AuthContext.from_aio(aio).mfa is True
