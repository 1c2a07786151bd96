"""Shared fixtures: a real devstack process on free ports, with its own state folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from hypothesis import settings as hypothesis_settings

from .secrets_registry import REGISTRY, SECRET_PATTERNS, capture_process_log, hook_msal, hook_sealer

# Property tests explore a fixed sequence of examples: the suite stays deterministic in CI.
hypothesis_settings.register_profile("deterministic", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("deterministic")

ROOT = Path(__file__).resolve().parent.parent


def drain(stream: Any, log: Path) -> None:
    """Keep reading a child's pipe into a log file so the child never blocks on a full pipe."""
    def pump() -> None:
        with open(log, "a") as out:
            for line in stream:
                out.write(line)
                out.flush()
    threading.Thread(target=pump, daemon=True).start()


def start_devstack(state: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `python -m devstack up` and wait for its ready line (no sleeps, no fixed ports).
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
            REGISTRY.add_devstack(info)  # client secrets, identity header, keys: the log scan knows them
            return proc, info
    proc.wait(timeout=10)
    raise RuntimeError("devstack exited before it was ready:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc, info = start_devstack(tmp_path_factory.mktemp("devstack"))
    yield info
    stop(proc)


class Admin:
    """The devstack's admin interface, for faults, stats, rotation and minting tokens."""

    def __init__(self, info: dict[str, Any]):
        self.base = info["endpoints"]["admin"]
        self.http = requests.Session()
        self.http.trust_env = False

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.http.post(self.base + path, json=body or {}, timeout=10)
        r.raise_for_status()
        REGISTRY.add_admin_call(path, body, r.json())  # minted tokens, rotated secrets, vault values
        return r.json()

    def stats(self) -> dict[str, Any]:
        return self.http.get(self.base + "/stats", timeout=10).json()

    def clear_faults(self) -> None:
        self.http.delete(self.base + "/faults", timeout=10).raise_for_status()

    def mint(self, **kwargs: Any) -> str:
        return self.post("/mint", kwargs)["access_token"]


@pytest.fixture
def admin(devstack: dict[str, Any]) -> Iterator[Admin]:
    a = Admin(devstack)
    yield a
    a.clear_faults()


def start_host(state: Path, settings_file: Path, devstack_state: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the local Functions host (`python -m devstack host`) on a free port; wait for ready.
    ``env``: more environment for the host process (``DEVSTACK_RESOLVE``: devstack/resolve.py)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--state", str(state), "host", "--app", str(ROOT),
         "--settings", str(settings_file), "--port", "0", "--ready-json", "--devstack", devstack_state],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(state / "host.log", "w"), text=True,
        env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith('{"ready"'):
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError("function host did not start:\n" + line + (state / "host.log").read_text())
    drain(proc.stdout, state / "host.stdout.log")
    ready = json.loads(line)["ready"]
    REGISTRY.add_function_keys(ready.get("keys"))
    values = json.loads(settings_file.read_text()).get("Values", {})
    REGISTRY.add_settings(str(settings_file), {**values, **(env or {})})  # client secrets, AES keys, passwords
    ready["log"] = str(state / "host.log")
    return proc, ready


class HostFactory:
    """Start function hosts wired to a devstack, with setting overrides per test."""

    def __init__(self, tmp: pytest.TempPathFactory):
        self._tmp = tmp
        self._procs: list[subprocess.Popen[str]] = []

    def __call__(self, info: dict[str, Any], credential: str = "keyvault-certificate", cors: str | None = None,
                 **overrides: str) -> dict[str, Any]:
        from devstack.resolve import environment
        from devstack.settings_file import local_settings
        folder = self._tmp.mktemp("host")
        settings = local_settings(info, port=0, credential=credential)
        if cors is not None:
            settings["Host"]["CORS"] = cors
        # Every host in the suite logs at DEBUG (MSAL, azure-core, urllib3 included): the session's
        # log scan (pytest_sessionfinish below) then proves no secret reaches a log at any level.
        settings["Values"]["AzureFunctionsJobHost__logging__logLevel__default"] = "Debug"
        settings["Values"].update(overrides)
        path = folder / "local.settings.json"
        path.write_text(json.dumps(settings))
        # A devstack under public names (production host names): the host resolves them to it.
        proc, ready = start_host(folder, path, info["state"], env=environment(info))
        self._procs.append(proc)
        ready["proc"] = proc
        return ready

    def close(self) -> None:
        for proc in self._procs:
            stop(proc)


@pytest.fixture
def private_devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], "Admin"]]:
    """A devstack of the test's own, for tests that change the tenant (rotations, access) in ways
    that must not leak into tests sharing the session devstack."""
    proc, info = start_devstack(tmp_path_factory.mktemp("private-devstack"))
    yield info, Admin(info)
    stop(proc)


@pytest.fixture(scope="session")
def host_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFactory]:
    factory = HostFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def function_host(devstack: dict[str, Any], host_factory: HostFactory) -> dict[str, Any]:
    return host_factory(devstack)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server (Debian package) on a free port; can be killed and restarted in place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # wait for its own ready line
            if b"Ready to accept connections" in line:
                break
        drain(self.proc.stdout, self.folder / "redis.log")
        redis.Redis.from_url(self.url).ping()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def client(self) -> Any:
        import redis
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: `make test` installs it (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REGISTRY.add("Azurite account key", AZURITE_KEY)


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Real Azurite (npm) blob service on a free port, storing under tmp_path."""
    binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail("Azurite is not installed: `make test` installs it (npm install)")
    location = tmp_path / "azurite"
    proc = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", str(location),
                             "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    url = None
    for line in proc.stdout:
        if "successfully listens on" in line:
            url = line.strip().rsplit(" ", 1)[-1]
            break
    if url is None:
        proc.kill()
        pytest.fail("Azurite did not start")
    drain(proc.stdout, tmp_path / "azurite.log")
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint={url}/{AZURITE_ACCOUNT};")
    yield {"url": url, "connection_string": connection, "location": location}
    stop(proc)  # type: ignore[arg-type]


# --- no secret in any log: enforced for the whole session ----------------------------------------
# SECRET_PATTERNS (imported above) and the run's registered secrets: tests/secrets_registry.py.
def scan_for_secrets(paths: list[Path], extra: dict[str, str] | None = None) -> list[str]:
    """Hits in ``paths``: secret shapes by pattern, every registered secret of the run in each of its
    forms (raw, base64/base64url, hex, percent-encoded), and ``extra`` (exact strings)."""
    return REGISTRY.scan(paths, extra)


PROCESS_LOG = pytest.StashKey[Any]()


def pytest_sessionstart(session: pytest.Session) -> None:
    hook_msal()    # every token MSAL obtains in this process
    hook_sealer()  # every AES key a cache Sealer is built with
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is not None:  # this process's own log records, at DEBUG, are scanned at the end too
        session.config.stash[PROCESS_LOG] = capture_process_log(base.getbasetemp() / "pytest-process.log")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is None:
        return
    try:
        root = base.getbasetemp()
    except (OSError, ValueError):
        return
    handler = session.config.stash.get(PROCESS_LOG, None)
    if handler is not None:
        import logging
        logging.getLogger().removeHandler(handler)
        handler.close()
    for state in root.glob("host*"):  # function keys written by hosts the fixtures did not start
        REGISTRY.add_function_keys(state / "functions-keys.json")
    import time
    started = time.perf_counter()
    logs = [p for p in root.rglob("*.log") if p.is_file()]
    hits = scan_for_secrets(logs)
    took = time.perf_counter() - started
    if hits:
        print("\nSECRETS FOUND IN LOGS:\n" + "\n".join(hits[:50]))
        session.exitstatus = 1
    else:
        print(f"\nlog scan: {len(logs)} log files, {len(REGISTRY)} registered secrets, 0 found ({took:.2f} s)")
