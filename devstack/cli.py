"""``python -m devstack up | info | token | stats`` — the contract in docs/ARCHITECTURE.md."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .state import PROJECT_ROOT, read_runtime, state_dir

DEFAULT_SCOPE = "api://middletier/access_as_user"


def _running(args: argparse.Namespace) -> dict[str, Any]:
    info = read_runtime(state_dir(args.state))
    if info is None:
        raise SystemExit("devstack is not running (start it with `make run` or `python -m devstack up`)")
    return info


def cmd_up(args: argparse.Namespace) -> int:
    from .up import Up
    return Up(args, _public_names(args)).run()


def _public_names(args: argparse.Namespace) -> dict[str, list[str]]:
    from .clouds import CLOUDS
    production = CLOUDS[args.cloud].production_names() if args.production_names else {}
    names: dict[str, list[str]] = {service: list(hosts) for service, hosts in production.items()}
    for item in args.name or []:
        service, sep, host = item.partition("=")
        if not sep or not host.strip():
            raise SystemExit(f"--name expects SERVICE=HOST, got {item!r}")
        hosts = names.setdefault(service.strip(), [])
        if host.strip().lower() not in hosts:
            hosts.append(host.strip().lower())
    return names


def cmd_host(args: argparse.Namespace) -> int:
    from .host.funchost import serve_app
    return serve_app(Path(args.app).resolve(), Path(args.settings) if args.settings else None,
                     state_dir(args.state), host=args.host, port=args.port, ready_json=args.ready_json,
                     devstack_state=Path(args.devstack) if args.devstack else state_dir(args.state))


def cmd_info(args: argparse.Namespace) -> int:
    info = _running(args)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"authority {info['authority']}\nCA bundle {info['ca_bundle']}")
        for name, url in info["endpoints"].items():
            print(f"{name:22} {url}")
        local = info.get("local") or {}  # up's Functions host and SPA, once the host is ready
        for name in ("host", "spa"):
            if local.get(name):
                print(f"{'functions host' if name == 'host' else 'SPA':22} {local[name]}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .client import sign_in
    from .resolve import install
    info = _running(args)
    if info.get("resolve"):  # a devstack under public names: reach them the way the app does
        install(info["resolve"])
    if args.user not in info["users"]:
        print(f"unknown user {args.user!r}; known: {', '.join(info['users'])}", file=sys.stderr)
        return 2
    result = sign_in(info, args.user, args.scope.split())
    if "access_token" not in result:
        print(f"{result.get('error')}: {str(result.get('error_description', '')).splitlines()[0]}", file=sys.stderr)
        return 1
    print(result["access_token"])
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .client import session
    info = _running(args)
    stats = session(info["ca_bundle"]).get(info["endpoints"]["admin"] + "/stats", timeout=10).json()
    print(json.dumps(stats, indent=2) if args.json else "\n".join(f"{k}: {v['total']}" for k, v in stats.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--state", help="state folder (default: .devstack in the project, or $DEVSTACK_STATE)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack in the foreground")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, help="0 = free ports for every service (tests), unless a flag below names one")
    up.add_argument("--host-port", type=int, help="the Functions host's port (default: Host.LocalHttpPort in "
                                                  "local.settings.json, or 7071); 0 = a free port")
    up.add_argument("--spa-port", type=int, help="the SPA's port (default 5173); 0 = a free port")
    up.add_argument("--azurite-port", type=int, help="Azurite's blob port, queue and table on the next two "
                                                     "(default: 10000-10002 if free, else free ports); 0 = free ports")
    up.add_argument("--settings", help="the local.settings.json to write and serve (default: the project's)")
    up.add_argument("--spa-config", help="where to write the SPA's config.json for `npm run dev` "
                                         "(default: clients/spa/public/config.json)")
    up.add_argument("--no-spa", action="store_true", help="do not serve the SPA")
    up.add_argument("--ready-json", action="store_true", help="print one JSON line when ready")
    up.add_argument("--no-host", action="store_true", help="emulators only: no Functions host, Azurite or SPA")
    up.add_argument("--name", action="append", metavar="SERVICE=HOST",
                    help="serve SERVICE (entra, graph, keyvault, orders) under a public host name on port 443; "
                         "repeat for aliases; a process reaches it with DEVSTACK_RESOLVE from `info --json`")
    up.add_argument("--cloud", default="AzureCloud", choices=["AzureCloud", "AzureUSGovernment", "AzureChinaCloud"],
                    help="the national cloud to emulate: v1 issuer, Graph, Key Vault domain, token-exchange audience")
    up.add_argument("--production-names", action="store_true",
                    help="the cloud's own host names: entra=login.microsoftonline.com, graph=graph.microsoft.com, "
                         "keyvault=<vault>.vault.azure.net in AzureCloud (and any --name)")
    up.set_defaults(func=cmd_up)
    host = sub.add_parser("host", help="serve a function app the way `func start` does")
    host.add_argument("--app", default=str(PROJECT_ROOT), help="the function app folder (host.json)")
    host.add_argument("--settings", help="local.settings.json (default: the app folder's)")
    host.add_argument("--host", default="127.0.0.1")
    host.add_argument("--port", type=int, help="default: Host.LocalHttpPort or 7071; 0 = a free port")
    host.add_argument("--ready-json", action="store_true")
    host.add_argument("--devstack", help="state folder of the devstack whose managed-identity endpoint the app "
                                         "gets as IDENTITY_ENDPOINT/IDENTITY_HEADER (default: --state)")
    host.set_defaults(func=cmd_host)
    info = sub.add_parser("info", help="endpoints, ids, secrets and CA of the running stack")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
    token = sub.add_parser("token", help="sign in by device code and print an access token")
    token.add_argument("--user", default="alice")
    token.add_argument("--scope", default=DEFAULT_SCOPE)
    token.set_defaults(func=cmd_token)
    stats = sub.add_parser("stats", help="request counters per emulator endpoint")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)
    args = parser.parse_args(argv)
    return int(args.func(args))
