"""Desktop sample: sign in with MSAL Python, call the middle tier, handle its claims challenge.

    python -m clients.desktop --devstack                 # settings from the running devstack
    python -m clients.desktop --authority https://login.microsoftonline.com/<tenant> \\
        --client-id <desktop app id> --scope api://<api>/access_as_user --api https://<app>.azurewebsites.net/api/me

Device code by default (works over SSH and in containers); ``--interactive`` uses authorization
code + PKCE in the system browser. Tokens persist in an msal-extensions cache (encrypted with the
OS keyring where one exists; otherwise a 0600 file, and the CLI says so). A 401 carrying a claims
challenge from the API makes the CLI sign the user in again with those claims, then retry once.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import sys
from pathlib import Path

import msal
import requests

# MSAL logs the authorization response (the code) and each token request's body (code, code_verifier)
# at DEBUG. A process that turns DEBUG on for everything must still not write them: MSAL stays at INFO.
logging.getLogger("msal").setLevel(logging.INFO)

DEFAULT_CACHE = Path.home() / ".middletier-desktop" / "token_cache.bin"


def token_cache(path: Path) -> msal.TokenCache:
    from msal_extensions import FilePersistence, PersistedTokenCache, build_encrypted_persistence
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        persistence = build_encrypted_persistence(str(path))
    except Exception:  # noqa: BLE001 - no keyring (headless Linux): say so, keep a private file
        print(f"note: no OS keyring; tokens are cached unencrypted in {path} (mode 0600)", file=sys.stderr)
        persistence = FilePersistence(str(path))
        path.touch(mode=0o600, exist_ok=True)
    return PersistedTokenCache(persistence)


def claims_challenge(response: requests.Response) -> str | None:
    """The decoded ``claims`` of the API's ``WWW-Authenticate: Bearer ... claims="..."``."""
    match = re.search(r'claims="([^"]+)"', response.headers.get("WWW-Authenticate", ""))
    if response.status_code != 401 or not match:
        return None
    raw = match.group(1)
    return base64.b64decode(raw + "=" * (-len(raw) % 4)).decode()


class Client:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        http = requests.Session()
        if args.ca_bundle:
            http.verify = args.ca_bundle
            http.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
        self.http = http
        self.app = msal.PublicClientApplication(
            args.client_id, authority=args.authority, token_cache=token_cache(Path(args.cache)), http_client=http,
            instance_discovery=not args.no_instance_discovery)

    def token(self, claims: str | None = None) -> str:
        scopes = [self.args.scope]
        if claims is None:
            for account in self.app.get_accounts():
                result = self.app.acquire_token_silent(scopes, account)
                if result and "access_token" in result:
                    return str(result["access_token"])
        if self.args.interactive:
            result = self.app.acquire_token_interactive(scopes, claims_challenge=claims, timeout=300)
        else:
            flow = self.app.initiate_device_flow(scopes=scopes, claims_challenge=claims)
            if "user_code" not in flow:
                raise SystemExit(f"sign-in could not start: {flow.get('error_description', flow.get('error'))}")
            print(flow["message"], file=sys.stderr, flush=True)
            result = self.app.acquire_token_by_device_flow(flow)
        if "access_token" not in result:
            raise SystemExit(f"sign-in failed: {result.get('error')}: "
                             f"{str(result.get('error_description', '')).splitlines()[0]}")
        return str(result["access_token"])

    def call(self) -> requests.Response:
        api = requests.Session()
        api.trust_env = False
        response = api.get(self.args.api, headers={"Authorization": f"Bearer {self.token()}"}, timeout=60)
        claims = claims_challenge(response)
        if claims:
            print("the API asks for a new sign-in (claims challenge); signing in again", file=sys.stderr, flush=True)
            response = api.get(self.args.api, headers={"Authorization": f"Bearer {self.token(claims)}"}, timeout=60)
        return response


def _devstack_defaults(args: argparse.Namespace) -> None:
    from devstack.state import read_runtime, state_dir
    info = read_runtime(state_dir(args.devstack_state))
    if info is None:
        raise SystemExit("devstack is not running (make run)")
    args.authority = args.authority or info["authority"]
    args.client_id = args.client_id or info["apps"]["desktop-client"]["client_id"]
    args.ca_bundle = args.ca_bundle or info["ca_bundle"]
    args.no_instance_discovery = True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clients.desktop", description=__doc__.split("\n\n")[0])
    p.add_argument("--authority")
    p.add_argument("--client-id")
    p.add_argument("--scope", default="api://middletier/access_as_user")
    p.add_argument("--api", default="http://localhost:7071/api/me")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--ca-bundle", help="CA bundle for the identity provider (local stacks)")
    p.add_argument("--interactive", action="store_true", help="authorization code + PKCE in the system browser")
    p.add_argument("--no-instance-discovery", action="store_true", help="for custom or sovereign authorities")
    p.add_argument("--devstack", action="store_true", help="take authority, client id and CA from the devstack")
    p.add_argument("--devstack-state", help="the devstack's state folder (default .devstack)")
    args = p.parse_args(argv)
    if args.devstack:
        _devstack_defaults(args)
    if not args.authority or not args.client_id:
        p.error("--authority and --client-id are required (or --devstack)")
    response = Client(args).call()
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.ok else 1
