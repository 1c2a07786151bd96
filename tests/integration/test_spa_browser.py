"""The SPA sample in real headless Chromium (Debian) driven by Playwright, against the full stack.

alice signs in on the emulator's page, the SPA calls the middle tier and shows her profile (a
screenshot is kept in test-artifacts/); carol's call gets the middle tier's claims challenge and
the SPA re-acquires with the claims, which makes the sign-in page ask for her one-time code.
The first test starts the stack the way ``make run`` does (``python -m devstack up``) and opens the SPA URL
it prints, editing no file. ``README_IMAGES=1`` also writes the README's screenshots to docs/img/.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from devstack.launch import ROOT, Admin, stop
from devstack.launch_up import start_local_stack

DIST = ROOT / "clients" / "spa" / "dist"
ARTIFACTS = ROOT / "test-artifacts"
README_IMAGES = ROOT / "docs" / "img"
VIEWPORT = {"width": 720, "height": 420}  # README pictures: small PNGs (< 60 KB)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def spa_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not (DIST / "index.html").exists():
        pytest.fail("the SPA is not built: `make test` builds it (npm install + vite build in clients/spa)")
    site = tmp_path / "site"
    shutil.copytree(DIST, site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", site
    server.shutdown()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (Debian package chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def screenshot(page: Any, name: str) -> Path:
    """A small PNG in test-artifacts/ (and docs/img/ with README_IMAGES=1, to refresh the README's pictures)."""
    import os
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    assert 1000 < path.stat().st_size < 60_000, path.stat().st_size
    if os.environ.get("README_IMAGES") == "1":
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_IMAGES / name)
    return path


def test_make_run_spa_signs_alice_in_without_editing_a_file(tmp_path: Path, browser: Any) -> None:
    """From the stack `make run` starts to alice's profile: the printed SPA URL is all the user needs."""
    if not (DIST / "index.html").exists():
        pytest.fail("the SPA is not built: `make test` builds it (npm install + vite build in clients/spa)")
    proc, info = start_local_stack(tmp_path)
    try:
        context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)  # the devstack's local CA
        page = _alice_signed_in(context, info["local"]["spa"], info["users"]["alice"])
        screenshot(page, "spa-alice-profile.png")
        context.close()
    finally:
        stop(proc)
    assert "Traceback" not in (tmp_path / "up.err.log").read_text()


def _setup(devstack: dict[str, Any], admin: Admin, host_factory: Any, origin: str, site: Path) -> dict[str, Any]:
    admin.post("/apps/redirect-uri", {"app": "spa-client", "uri": origin + "/", "spa": True})
    host = host_factory(devstack, cors=origin)
    (site / "config.json").write_text(json.dumps({
        "clientId": devstack["apps"]["spa-client"]["client_id"], "authority": devstack["authority"],
        "knownAuthorities": [devstack["instance"].split("//")[1]], "scope": "api://middletier/access_as_user",
        "apiUrl": host["url"] + "/api/me"}))
    return host


def _alice_signed_in(context: Any, url: str, alice: dict[str, Any]) -> Any:
    """The SPA at ``url``, after alice signed in through it: her profile is shown (asserted)."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#signin:not([hidden])", timeout=30_000)
    page.click("#signin")
    _sign_in(page, alice)
    page.wait_for_selector("#displayName", timeout=30_000)
    assert page.text_content("#displayName") == "Alice Example"
    assert page.text_content("#id") == alice["oid"]
    return page


def _sign_in(page: Any, user: dict[str, Any], otp: bool = False) -> None:
    page.wait_for_selector("#username", timeout=30_000)
    page.fill("#username", user["upn"])
    page.fill("#password", user["password"])
    page.click("#submit")
    if otp:
        page.wait_for_selector("#otp", timeout=30_000)
        page.fill("#password", user["password"])
        page.fill("#otp", user["mfa_code"])
        page.click("#submit")


def test_spa_signs_in_and_shows_the_profile(devstack: dict[str, Any], admin: Admin, host_factory: Any,
                                            spa_server: tuple[str, Path], browser: Any) -> None:
    origin, site = spa_server
    _setup(devstack, admin, host_factory, origin, site)
    context = browser.new_context(ignore_https_errors=True)  # the devstack's local CA
    page = _alice_signed_in(context, origin + "/", devstack["users"]["alice"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "spa-alice-profile-fixtures.png"))
    assert (ARTIFACTS / "spa-alice-profile-fixtures.png").stat().st_size > 1000
    context.close()


def test_spa_answers_the_claims_challenge(devstack: dict[str, Any], admin: Admin, host_factory: Any,
                                          spa_server: tuple[str, Path], browser: Any) -> None:
    origin, site = spa_server
    _setup(devstack, admin, host_factory, origin, site)
    context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
    page = context.new_page()
    page.goto(origin + "/")
    page.wait_for_selector("#signin:not([hidden])", timeout=30_000)
    page.click("#signin")
    carol = devstack["users"]["carol"]
    _sign_in(page, carol)                 # first sign-in: password only
    _sign_in(page, carol)                 # the middle tier's challenge: a new sign-in with its claims...
    page.wait_for_selector("#otp", timeout=30_000)  # ...and the page asks for the code as well
    screenshot(page, "claims-challenge-sign-in.png")  # before anything is typed
    page.fill("#password", carol["password"])
    page.fill("#otp", carol["mfa_code"])
    page.click("#submit")
    page.wait_for_selector("#displayName", timeout=30_000)
    assert page.text_content("#displayName") == "Carol Example"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "spa-carol-after-mfa.png"))
    context.close()
