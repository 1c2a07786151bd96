"""How many OBO token requests per second the Entra emulator serves (target: >= 300/s).

Run: make bench   (or .venv/bin/python bench/emulator_obo.py)
wrk POSTs the same OBO form MSAL sends (client secret, a real user assertion from a device-code
sign-in) over HTTPS with keep-alive; every response is a freshly signed access + id token.
"""
from __future__ import annotations

import tempfile
import urllib.parse
from pathlib import Path

from common import machine, record, wrk

from devstack.client import sign_in
from devstack.launch import start_devstack, stop  # the same launchers the tests use

TARGET_RPS = 300


def main() -> int:
    proc, info = start_devstack(Path(tempfile.mkdtemp(prefix="bench-devstack-")))
    try:
        user = sign_in(info, "alice", ["api://middletier/access_as_user"])
        app = info["apps"]["middletier-api"]
        form = urllib.parse.urlencode({
            "client_id": app["client_id"], "client_secret": app["secrets"][0], "client_info": "1",
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "requested_token_use": "on_behalf_of",
            "assertion": user["access_token"],
            "scope": "https://graph.microsoft.com/User.Read offline_access openid profile"})
        script = ('wrk.method = "POST"\n'
                  'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                  f'wrk.body = "{form}"\n')
        wrk(info["endpoints"]["token"], script=script, duration="3s")  # warm-up
        result = wrk(info["endpoints"]["token"], script=script, connections=16, duration="15s")
    finally:
        stop(proc)
    result["target_rps"] = TARGET_RPS
    result["met"] = result["rps"] >= TARGET_RPS and result["non_2xx"] == 0
    result["machine"] = machine()
    path = record("emulator_obo", result)
    print(f"emulator OBO: {result['rps']:.0f} req/s (target {TARGET_RPS}), p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, non-2xx {result['non_2xx']} -> {path}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
