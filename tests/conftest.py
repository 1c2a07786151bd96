"""Shared fixtures: a real devstack process on free ports, with its own state folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def start_devstack(state: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `python -m devstack up` and wait for its ready line (no sleeps, no fixed ports)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--state", str(state), "up", "--port", "0", "--ready-json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('{"ready"'):
            return proc, json.loads(line)["ready"]
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
