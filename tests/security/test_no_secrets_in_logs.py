"""No token, secret, assertion or private key in any log line or response body, at DEBUG.

Every host in the suite logs at DEBUG and ``pytest_sessionfinish`` scans every log of the run;
this test additionally drives the representative paths through one host and scans the log and
every answer it gave, including the identity header value and the exact tokens sent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.client import sign_in
from devstack.launch import Admin

from ..conftest import scan_for_secrets
from ..integration.test_entra_msal import API_SCOPE
from ..integration.test_middletier_api import call


def test_representative_paths_leak_nothing(devstack: dict[str, Any], host_factory: Any, admin: Admin,
                                           tmp_path: Path) -> None:
    hosts = [host_factory(devstack, credential=kind) for kind in ("keyvault-certificate", "keyvault-secret",
                                                                    "federated")]
    sent: list[str] = []
    bodies: list[str] = []

    def go(host: dict[str, Any], token: str | None, **headers: str) -> None:
        if token:
            sent.append(token)
        r = call(host, token, **headers)
        bodies.append(f"{r.status_code} {dict(r.headers)} {r.text}")

    alice = sign_in(devstack, "alice", [API_SCOPE])["access_token"]
    carol = sign_in(devstack, "carol", [API_SCOPE])["access_token"]
    for host in hosts:
        go(host, alice)
        go(host, alice)                                          # cached
        go(host, carol)                                          # MFA claims challenge
        go(host, admin.mint(user="alice", lifetime=-600))        # expired
        go(host, alice[:-5])                                     # bad signature
        go(host, admin.mint(user="alice", scope="https://graph.microsoft.com/User.Read"))  # wrong audience
        go(host, None, Authorization="Basic " + "x" * 20)
    admin.post("/faults", {"service": "graph", "endpoint": "me", "status": 500, "count": 1})
    go(hosts[0], admin.mint(user="bob"))                          # downstream failure
    admin.post("/graph/revoke", {"user": "bob", "scope": "sessions"})
    go(hosts[0], admin.mint(user="bob", mfa=False))               # CAE challenge to the client
    admin.post("/graph/revoke", {"user": "bob", "scope": "clear"})
    admin.post("/rotate/secret", {"app": "daemon-client"})         # unrelated churn in the tenant

    answers = tmp_path / "answers.txt"
    answers.write_text("\n".join(bodies))
    logs = [Path(h["log"]) for h in hosts]
    assert all(p.stat().st_size > 0 for p in logs)
    extra = {f"sent token #{i}": t[:60] for i, t in enumerate(sent)}
    extra["identity header"] = devstack["identity_header"]
    hits = scan_for_secrets(logs + [answers], extra)
    assert hits == []
    debug_lines = sum(p.read_text().count(" DEBUG ") for p in logs)
    assert debug_lines > 50  # the scan really ran over DEBUG output


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path, admin: Admin) -> None:
    planted = tmp_path / "planted.txt"  # not *.log: the session scan must not see it
    planted.write_text(f"token={admin.mint(user='alice')}\nsecret=devstack-only~x\n-----BEGIN PRIVATE KEY-----\n"
                       f"rt=1.{'a' * 80}\n")
    names = {hit.split(": ")[1] for hit in scan_for_secrets([planted])}
    assert {"jwt", "devstack secret or password", "private key", "refresh token"} <= names
    assert "admin /mint access_token (raw)" in names  # the minted token is also known by value
