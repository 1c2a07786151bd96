"""``python -m devstack up`` (``make run``): ``func start`` with everything it needs on one machine.

The emulators, Azurite (the storage ``AzureWebJobsStorage`` names and the blob L2 token cache uses, sealed with
a key made once for this machine, as deployed), the local Functions host and the SPA sample, wired together
through the generated, git-ignored ``local.settings.json`` and ``clients/spa/public/config.json``.

Every port is bound or checked before anything is printed: a taken one stops everything with one line naming
the port and the flag that moves it, and a non-zero exit. Ctrl-C, SIGINT and SIGTERM stop the host first,
then the servers, then Azurite, without a word; the children run in sessions of their own so that only this
process hears the terminal's Ctrl-C and stops them in that order.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Awaitable

from . import azurite as azurite_mod
from . import spa, stack
from .children import die_with_parent
from .ports import PortInUse, claim, is_free
from .settings_file import prepare_local_settings, read_existing
from .state import PROJECT_ROOT, state_dir, write_runtime

DEFAULT_HOST_PORT = 7071


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM before the event loop owns the signals: the same quiet clean-up as Ctrl-C


def _settings_port(path: Path) -> int:
    """``Host.LocalHttpPort`` of an existing local.settings.json, as ``func start`` reads it; 7071 otherwise."""
    try:
        return int(json.loads(path.read_text()).get("Host", {}).get("LocalHttpPort", DEFAULT_HOST_PORT))
    except (OSError, ValueError, TypeError, AttributeError):
        return DEFAULT_HOST_PORT


def _say(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


class Up:
    def __init__(self, args: argparse.Namespace, names: dict[str, list[str]]):
        self.args, self.names = args, names
        self.state = state_dir(args.state)
        everything_free = args.port == 0  # tests: every service on a free port unless a flag names one
        self.settings = Path(args.settings) if args.settings else PROJECT_ROOT / "local.settings.json"
        self.spa_config_path = Path(args.spa_config) if args.spa_config else spa.PUBLIC_CONFIG
        self.host_port = args.host_port if args.host_port is not None else \
            0 if everything_free else _settings_port(self.settings)
        self.spa_port = args.spa_port if args.spa_port is not None else 0 if everything_free else spa.DEFAULT_PORT
        self.azurite_port = args.azurite_port if args.azurite_port is not None else 0 if everything_free else None
        self.with_host = not args.no_host
        self.with_spa = self.with_host and not args.no_spa
        self.built: stack.Stack | None = None
        self.spa_socket: socket.socket | None = None
        self.spa_site: spa.SpaSite | None = None
        self.azurite: azurite_mod.Azurite | None = None

    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupted)
        try:
            try:
                self._claim_everything()
            except PortInUse as e:
                _say(f"{e}\n  (`make run ARGS=\"--flag value\"` passes flags to `python -m devstack up`)")
                return 1
            except (RuntimeError, ValueError, OSError) as e:  # Azurite, --name, --host, an unusable settings file
                _say(str(e))
                return 1
            assert self.built is not None
            extra = {"spa": (self.spa_site.app, self.spa_socket)} if self.spa_site and self.spa_socket else None
            return stack.run(self.built, self._ready, extra)
        except KeyboardInterrupt:
            return 130
        finally:
            self._release()
            signal.signal(signal.SIGTERM, previous)

    def _claim_everything(self) -> None:
        """Bind the emulators' and the SPA's sockets, check the host's port, then start Azurite: all before
        the banner, so a clash is reported alone."""
        args = self.args
        if self.with_host:
            read_existing(self.settings)  # ValueError naming the file, before anything starts
        self.built = stack.build(self.state, host=args.host, names=self.names, cloud=args.cloud,
                                 ports={} if args.port is None else {n: args.port for n in stack.DEFAULT_PORTS})
        if self.with_spa:
            if (spa.DIST / "index.html").exists():
                self.spa_socket = claim(args.host, self.spa_port, "the SPA",
                                        "move it with --spa-port PORT (0 = a free port)")
                self.spa_site = spa.SpaSite()
            else:
                _say("the SPA is not built (`make setup` builds clients/spa/dist): serving the API alone")
        if self.with_host and self.host_port and not is_free(args.host, self.host_port):
            raise PortInUse(self.host_port, "the Functions host", "move it with --host-port PORT "
                            f"(or Host.LocalHttpPort in {self.settings.name})")
        if self.with_host:
            ports = azurite_mod.plan_ports(args.host, self.azurite_port)
            self.azurite = azurite_mod.start(self.state / "azurite", self.state / "azurite.log", args.host, ports)

    def _release(self) -> None:
        if self.azurite is not None:
            self.azurite.stop()
        for sock in [*(self.built.sockets.values() if self.built else []), self.spa_socket]:
            if sock is not None:
                sock.close()

    def _spa_origin(self) -> str | None:
        if self.spa_socket is None:
            return None
        return f"http://localhost:{self.spa_socket.getsockname()[1]}"

    def _ready(self, info: dict[str, Any]) -> Awaitable[int] | None:
        args = self.args
        if not self.with_host:
            print(json.dumps({"ready": info}) if args.ready_json else stack.describe(info), flush=True)
            return None
        assert self.azurite is not None and self.built is not None
        origin = self._spa_origin()
        if origin:  # the registration knows :5173; a moved SPA is registered for this run
            port = origin.rsplit(":", 1)[1]
            uris = self.built.directory.default.app_by_name("spa-client").spa_redirect_uris
            uris.extend(u for u in (origin + "/", f"http://127.0.0.1:{port}/") if u not in uris)
        changed = prepare_local_settings(self.settings, info, storage=self.azurite.connection_string,
                                         port=self.host_port or DEFAULT_HOST_PORT, cors=origin)
        if not args.ready_json:
            print(stack.describe(info), flush=True)
            where = "its standard ports" if self.azurite.standard else \
                "free ports (10000-10002 are taken)" if self.azurite_port is None else "the ports asked for"
            print(f"  Azurite (storage)    {self.azurite.urls['blob']} (blob), {where}", flush=True)
            if changed:
                what = "wired to this devstack" if changed == ["created"] else "updated " + ", ".join(changed)
                print(f"  wrote {self.settings} ({what})", flush=True)
        return self._host(info)

    async def _host(self, info: dict[str, Any]) -> int:
        """The Functions host as a child: wait for its ready line, print how to call it, pass its output on;
        its end (it crashed, or its port was taken after all) stops the devstack with its exit code."""
        from .resolve import environment
        args = self.args
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack", "--state", str(self.state), "host", "--app", str(PROJECT_ROOT),
            "--settings", str(self.settings), "--host", args.host, "--port", str(self.host_port), "--ready-json",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, **environment(info)}, start_new_session=True,
            preexec_fn=die_with_parent)
        assert proc.stdout is not None
        try:
            line = await proc.stdout.readline()
            if not line.startswith(b'{"ready"'):
                code = await proc.wait()
                _say(f"the Functions host did not start (exit code {code}); everything is stopped")
                return code if code > 0 else 1  # killed by a signal (negative) or 0: still a failure
            ready = json.loads(line)["ready"]
            self._announce(info, ready)
            while chunk := await proc.stdout.readline():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            code = await proc.wait()
            _say(f"the Functions host stopped (exit code {code}); everything is stopped")
            return code if code > 0 else 1  # killed by a signal (negative) or 0: still a failure
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    def _announce(self, info: dict[str, Any], ready: dict[str, Any]) -> None:
        api = ready["url"].replace("://127.0.0.1:", "://localhost:")
        origin = self._spa_origin()
        local = {"host": api, "spa": origin and origin + "/", "settings": str(self.settings),
                 "azurite": {**self.azurite.urls, "connection": "AzureWebJobsStorage"} if self.azurite else None}
        config = spa.spa_config(info, api)  # served, and written for `npm run dev` (beside `up --no-spa` too)
        spa.write_public_config(self.spa_config_path, config)
        if self.spa_site is not None:
            self.spa_site.config = config
        write_runtime(self.state, {**info, "local": local})  # `info --json` names the host and the SPA too
        if self.args.ready_json:
            print(json.dumps({"ready": {**info, "local": local}}), flush=True)
            return
        lines = ["Functions:"] + [f"  {f['name']}: [{','.join(f['methods'])}] {api}{f['route']}"
                                  for f in ready["functions"]]
        lines += ["", "Call the API as alice (copy-paste):",
                  ('  curl -s -H "Authorization: Bearer $(.venv/bin/python -m devstack token --user alice)" '
                   f"{api}/api/me")]
        if origin:
            lines += ["", "Or open the SPA and sign in as alice (users and passwords: devstack/tenant.toml):",
                      f"  {origin}/",
                      (f"  (your browser must trust the devstack's CA {info['ca_cert']}, or accept "
                       f"{info['instance']} once)")]
        print("\n".join(lines) + "\n", flush=True)
