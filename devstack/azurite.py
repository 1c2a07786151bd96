"""Azurite (npm, the real storage emulator) for ``up``: blob, queue and table on the standard ports
10000-10002 when they are free, as ``func start`` users run it, so ``UseDevelopmentStorage=true`` reaches it;
on free ports otherwise, with a connection string that names them. The tests' blob-only launcher is
``launch.start_azurite``.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .children import die_with_parent
from .ports import PortInUse, is_free
from .state import PROJECT_ROOT

STANDARD_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key (public, in Microsoft's docs)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (\S+)")


def binary() -> Path:
    """The checkout's node_modules/.bin/azurite (above the project too, when a copy of the tree runs)."""
    return next((b for b in (p / "node_modules" / ".bin" / "azurite" for p in [PROJECT_ROOT, *PROJECT_ROOT.parents])
                 if b.exists()), PROJECT_ROOT / "node_modules" / ".bin" / "azurite")


@dataclass
class Azurite:
    proc: subprocess.Popen[str]
    urls: dict[str, str]  # service -> http://127.0.0.1:PORT
    location: Path

    @property
    def standard(self) -> bool:
        return all(self.urls[s].endswith(f":{p}") for s, p in STANDARD_PORTS.items())

    @property
    def connection_string(self) -> str:
        """What ``AzureWebJobsStorage`` says: the shorthand on the standard ports, the endpoints otherwise."""
        if self.standard:
            return DEVELOPMENT_STORAGE
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};" + "".join(
            f"{s.capitalize()}Endpoint={u}/{ACCOUNT};" for s, u in self.urls.items())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def plan_ports(host: str, port: int | None) -> dict[str, int]:
    """``port`` None: the standard ports if all three are free, free ports otherwise; 0: free ports;
    N: blob N, queue N+1, table N+2, each of which must be free (PortInUse)."""
    if port is None:
        free = all(is_free(host, p) for p in STANDARD_PORTS.values())
        return dict(STANDARD_PORTS) if free else {s: 0 for s in STANDARD_PORTS}
    ports = {s: (0 if port == 0 else port + i) for i, s in enumerate(STANDARD_PORTS)}
    for service, p in ports.items():
        if p and not is_free(host, p):
            raise PortInUse(p, f"Azurite's {service} service", "move Azurite with --azurite-port PORT "
                            "(blob PORT, queue PORT+1, table PORT+2; 0 = free ports)")
    return ports


def start(location: Path, log: Path, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> Azurite:
    """Start Azurite storing under ``location`` and wait for its three ready lines; its output goes to ``log``.
    Its own process group: Ctrl-C reaches the devstack alone, which stops Azurite last."""
    ports = ports or dict(STANDARD_PORTS)
    exe = binary()
    if not exe.exists():
        raise RuntimeError(f"Azurite is not installed ({exe}): `make setup` installs it (npm install)")
    location.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(exe), "--blobHost", host, "--blobPort", str(ports["blob"]), "--queueHost", host,
         "--queuePort", str(ports["queue"]), "--tableHost", host, "--tablePort", str(ports["table"]),
         "--location", str(location), "--skipApiVersionCheck", "--disableTelemetry"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=die_with_parent, env={k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"})
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if match := _LISTENING.search(line):
                urls[match.group(1).lower()] = match.group(2).rstrip("/")
                if len(urls) == len(STANDARD_PORTS):
                    break
    except BaseException:  # Ctrl-C while it starts: it is in a session of its own and would run on
        proc.kill()
        proc.wait()
        raise
    if len(urls) < len(STANDARD_PORTS):
        proc.kill()
        proc.wait()
        raise RuntimeError("Azurite did not start:\n" + "".join(seen[-10:]))
    from .launch import drain
    drain(proc.stdout, log)
    return Azurite(proc, urls, location)
