"""``make run`` (``python -m devstack up``) as a user meets it: Azurite with the encrypted blob L2 on it, a
clear line and a non-zero exit when a port is taken (before any banner, nothing left running), a quiet stop on
SIGINT or SIGTERM, and no traceback when a pipe reader goes away (``info --json | head``)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from devstack import stack
from devstack.launch import ROOT, stop
from devstack.launch_up import start_local_stack
from devstack.ports import PortInUse
from devstack.state import write_runtime

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def up(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", "--state", str(folder / "state"), "up", "--port", "0",
         "--settings", str(folder / "local.settings.json"), "--spa-config", str(folder / "config.json"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flag, what", [("--host-port", "the Functions host"), ("--spa-port", "the SPA"),
                                        ("--azurite-port", "Azurite's blob service")])
def test_a_taken_port_is_named_with_the_flag_that_moves_it(tmp_path: Path, taken: int, flag: str,
                                                           what: str) -> None:
    result = up(tmp_path, flag, str(taken))
    assert result.returncode == 1
    assert f"port {taken} ({what}) is already in use" in result.stderr
    assert f"{flag} PORT" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""  # no banner, no curl line: nothing is up
    assert not (tmp_path / "state" / "azurite").exists()  # the check came before Azurite
    assert not (tmp_path / "local.settings.json").exists()


def test_a_taken_emulator_port_releases_the_others(tmp_path: Path, taken: int) -> None:
    with pytest.raises(PortInUse) as caught:
        stack.build(tmp_path, ports={**{n: 0 for n in stack.DEFAULT_PORTS}, "keyvault": taken})
    assert caught.value.port == taken and "--port 0" in str(caught.value) and "keyvault" in str(caught.value)


def test_the_host_names_a_taken_port(tmp_path: Path, taken: int) -> None:
    result = subprocess.run([sys.executable, "-m", "devstack", "--state", str(tmp_path), "host", "--port", str(taken),
                             "--ready-json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"Port {taken} is unavailable" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_closed_pipe_ends_info_quietly(tmp_path: Path) -> None:
    write_runtime(tmp_path, {"padding": ["x" * 100] * 2000})  # more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "--state", str(tmp_path), "info", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first write
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141
    assert err == b""


def _sealed_entries(connection: str) -> list[bytes]:
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(connection).get_container_client("msal-token-cache")
    return [container.download_blob(b.name).readall() for b in container.list_blobs()
            if b.name.startswith("msal-tc:")]


@pytest.mark.parametrize("how, flags", [(signal.SIGINT, ()), (signal.SIGTERM, ("--no-spa",))],
                         ids=["SIGINT", "SIGTERM-no-spa"])
def test_make_run_serves_alice_from_azurite_and_stops_quietly(tmp_path: Path, how: signal.Signals,
                                                              flags: tuple[str, ...]) -> None:
    proc, info = start_local_stack(tmp_path, *flags)
    local: dict[str, Any] = info["local"]
    try:
        settings = json.loads((tmp_path / "local.settings.json").read_text())["Values"]
        assert settings["TokenCache__L2"] == "blob" and len(settings["TokenCache__EncryptionKey"]) == 44
        token = subprocess.run([sys.executable, "-m", "devstack", "--state", info["state"], "token"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        me = requests.get(local["host"] + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert me.status_code == 200 and me.json()["userPrincipalName"] == info["users"]["alice"]["upn"]
        entries = _sealed_entries(settings["AzureWebJobsStorage"])  # the deployed default: the Functions storage
        assert entries, "no token cache entry in Azurite"
        for entry in entries:
            assert not JWT.search(entry) and info["users"]["alice"]["upn"].encode() not in entry
        assert json.loads((tmp_path / "config.json").read_text())["apiUrl"] == local["host"] + "/api/me"
        listing = subprocess.run([sys.executable, "-m", "devstack", "--state", info["state"], "info"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        assert (f"SPA                    {local['spa']}" in listing.splitlines()) == (not flags)
        assert (local["spa"] is None) == bool(flags)  # --no-spa: config.json (asserted above) for `npm run dev`
        browser_like = requests.Session()  # an idle TLS keep-alive to Entra, as a browser keeps after sign-in
        browser_like.get(info["endpoints"]["openid_configuration"], verify=info["ca_cert"], timeout=10)
    finally:
        proc.send_signal(how)
        code = proc.wait(timeout=30)
    err = (tmp_path / "up.err.log").read_text()
    assert code == 0
    assert "Traceback" not in err and " ERROR " not in err and "Cancel" not in err
    for url in filter(None, (local["host"], local["spa"], local["azurite"]["blob"])):  # all of them are gone
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, url
    if proc.poll() is None:
        stop(proc)


def test_children_do_not_outlive_a_killed_make_run(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives ``up`` no chance to stop Azurite and the host, which run in sessions
    of their own: the kernel ends them (PR_SET_PDEATHSIG)."""
    import select
    proc, _ = start_local_stack(tmp_path)
    children = [int(pid) for f in Path(f"/proc/{proc.pid}/task").glob("*/children") for pid in f.read_text().split()]
    names = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1].rsplit(b"/", 1)[-1] for pid in children)
    assert names == [b"-m", b"azurite"]  # the host (python -m devstack host) and Azurite (node .../azurite)
    exits = [os.pidfd_open(pid) for pid in children]
    proc.kill()
    proc.wait(timeout=10)
    try:
        for fd in exits:
            ended, _, _ = select.select([fd], [], [], 20)  # readable when that process has ended
            assert ended, "a child of the killed devstack is still running"
    finally:
        for fd in exits:
            os.close(fd)


def test_a_host_that_dies_stops_make_run(tmp_path: Path) -> None:
    """Nothing left serving without an app behind it: the host's end stops the emulators and Azurite too."""
    proc, info = start_local_stack(tmp_path, "--no-spa")
    children = [int(pid) for f in Path(f"/proc/{proc.pid}/task").glob("*/children") for pid in f.read_text().split()]
    host = next(pid for pid in children if b"host" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    os.kill(host, signal.SIGKILL)
    assert proc.wait(timeout=30) == 1
    err = (tmp_path / "up.err.log").read_text()
    assert "the Functions host stopped (exit code -9); everything is stopped" in err and "Traceback" not in err
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(info["local"]["azurite"]["blob"].rsplit(":", 1)[1]))) != 0


def test_an_unusable_settings_file_is_named_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true",}')
    result = up(tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "local.settings.json is not valid JSON (line 1): fix it, or delete it" in result.stderr
    assert "Traceback" not in result.stderr
