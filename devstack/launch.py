"""Launchers: a devstack, a Functions host, redis-server and Azurite as child processes, for tests/conftest.py
and bench/. Each waits for the child's own ready line (no sleeps, no fixed ports), then drains its output
into a log file. Every secret a launcher learns (client secrets, function keys, minted tokens, settings) is
told to ``witness``: nobody by default; tests/conftest.py hands it the registry its log scan looks for.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import requests

from .resolve import environment
from .settings_file import local_settings
from .state import PROJECT_ROOT as ROOT

AZURITE_ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Witness:
    """Hears the secrets the launchers learn; this one forgets them."""

    def add_devstack(self, info: dict[str, Any]) -> None: ...
    def add_admin_call(self, path: str, body: Any, answer: Any) -> None: ...
    def add_function_keys(self, keys: Any) -> None: ...
    def add_settings(self, name: str, values: dict[str, str]) -> None: ...


witness: Witness = Witness()


def drain(stream: Any, log: Path) -> None:
    """Keep reading a child's pipe into a log file so the child never blocks on a full pipe."""
    def pump() -> None:
        with open(log, "a") as out:
            for line in stream:
                out.write(line)
                out.flush()
    threading.Thread(target=pump, daemon=True).start()


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_devstack(state: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `python -m devstack up` on free ports, without a host, and wait for its ready line.
    ``args``: more `up` options, e.g. ``--production-names``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--state", str(state), "up", "--port", "0", "--ready-json", "--no-host",
         *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('{"ready"'):
            drain(proc.stdout, state / "devstack.log")
            info = json.loads(line)["ready"]
            witness.add_devstack(info)  # client secrets, identity header, keys
            return proc, info
    proc.wait(timeout=10)
    raise RuntimeError("devstack exited before it was ready:\n" + "".join(lines))


class Admin:
    """A client of the devstack's admin interface: faults, stats, rotation and minting tokens."""

    def __init__(self, info: dict[str, Any]):
        self.base = info["endpoints"]["admin"]
        self.http = requests.Session()
        self.http.trust_env = False

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.http.post(self.base + path, json=body or {}, timeout=10)
        r.raise_for_status()
        witness.add_admin_call(path, body, r.json())  # minted tokens, rotated secrets, vault values
        return r.json()

    def stats(self) -> dict[str, Any]:
        return self.http.get(self.base + "/stats", timeout=10).json()

    def clear_faults(self) -> None:
        self.http.delete(self.base + "/faults", timeout=10).raise_for_status()

    def mint(self, **kwargs: Any) -> str:
        return self.post("/mint", kwargs)["access_token"]


def host_ready(proc: subprocess.Popen[str], state: Path) -> dict[str, Any]:
    """The ``--ready-json`` line of a host started with ``state`` as its folder; a host that prints
    anything else is stopped and its log raised."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith('{"ready"'):
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError("function host did not start:\n" + line + (state / "host.log").read_text())
    drain(proc.stdout, state / "host.stdout.log")
    return json.loads(line)["ready"]  # type: ignore[no-any-return]


def start_host(state: Path, settings_file: Path, devstack_state: str, env: dict[str, str] | None = None,
               app: Path = ROOT) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the local Functions host (`python -m devstack host`) for ``app`` on a free port; wait for
    ready. ``env``: more environment for the host process (``DEVSTACK_RESOLVE``: devstack/resolve.py)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--state", str(state), "host", "--app", str(app),
         "--settings", str(settings_file), "--port", "0", "--ready-json", "--devstack", devstack_state],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(state / "host.log", "w"), text=True,
        env={**os.environ, **(env or {})})
    ready = host_ready(proc, state)
    witness.add_function_keys(ready.get("keys"))
    values = json.loads(settings_file.read_text()).get("Values", {})
    witness.add_settings(str(settings_file), {**values, **(env or {})})  # client secrets, AES keys, passwords
    ready["log"] = str(state / "host.log")
    return proc, ready


class HostFactory:
    """Start function hosts wired to a devstack, with setting overrides per host; each in a new
    folder of ``folders`` (pytest's tmp_path_factory, say)."""

    def __init__(self, folders: Any, app: Path = ROOT):
        self._folders = folders
        self.app = app  # the function app's folder: the v1 app (the checkout) or samples/v2app
        self._procs: list[subprocess.Popen[str]] = []

    def __call__(self, info: dict[str, Any], credential: str = "keyvault-certificate", cors: str | None = None,
                 **overrides: str) -> dict[str, Any]:
        folder = self._folders.mktemp("host")
        settings = local_settings(info, port=0, credential=credential)
        if cors is not None:
            settings["Host"]["CORS"] = cors
        # Every host logs at DEBUG (MSAL, azure-core, urllib3 included): a log scan then proves that no
        # secret reaches a log at any level.
        settings["Values"]["AzureFunctionsJobHost__logging__logLevel__default"] = "Debug"
        settings["Values"].update(overrides)
        path = folder / "local.settings.json"
        path.write_text(json.dumps(settings))
        # A devstack under public names (production host names): the host resolves them to it.
        proc, ready = start_host(folder, path, info["state"], env=environment(info), app=self.app)
        self._procs.append(proc)
        ready["proc"] = proc
        return ready

    def close(self) -> None:
        for proc in self._procs:
            stop(proc)


class RedisServer:
    """A real redis-server (Debian package) on a free port; can be killed and restarted in place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # wait for its own ready line
            if b"Ready to accept connections" in line:
                break
        drain(self.proc.stdout, self.folder / "redis.log")
        self.client().ping()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def client(self) -> Any:
        import redis
        return redis.Redis.from_url(self.url)


# the checkout's node_modules: above ROOT too when a copy of the tree runs (make mutate)
AZURITE = next((b for b in (p / "node_modules" / ".bin" / "azurite-blob" for p in [ROOT, *ROOT.parents])
                if b.exists()), ROOT / "node_modules" / ".bin" / "azurite-blob")


def start_azurite(folder: Path, account: str = AZURITE_ACCOUNT, key: str = AZURITE_KEY,
                  tls: tuple[Path, Path] | None = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Real Azurite (npm) blob service on a free port, storing under ``folder``/azurite; with ``tls``
    (certificate, key) it answers HTTPS."""
    location = folder / "azurite"
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", str(location),
                             *(["--cert", str(tls[0]), "--key", str(tls[1])] if tls else []),
                             "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "AZURITE_ACCOUNTS": f"{account}:{key}"})
    assert proc.stdout is not None
    url = next((line.strip().rsplit(" ", 1)[-1].rstrip("/") for line in proc.stdout
                if "successfully listens on" in line), None)
    if url is None:
        proc.kill()
        proc.wait()
        raise RuntimeError("Azurite did not start")
    drain(proc.stdout, folder / "azurite.log")
    connection = (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                  f"BlobEndpoint={url}/{account};")
    return proc, {"url": url, "port": int(url.rsplit(":", 1)[1]), "connection_string": connection,
                  "location": location}
