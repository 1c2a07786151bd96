"""The launcher for ``make run``'s whole stack (``python -m devstack up``), beside devstack/launch.py's
launchers of its parts: tests/integration/test_make_run.py and the SPA's browser test start it. What it learns
(client secrets, the cache's encryption key, function keys) is told to ``launch.witness``, which tests/conftest.py
replaces with the log scan's registry.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import launch
from .state import PROJECT_ROOT as ROOT


def start_local_stack(folder: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``python -m devstack up`` as ``make run`` starts it (emulators, Azurite, the Functions host, the SPA), on
    free ports, with its local.settings.json and the SPA's config.json under ``folder``; waits for its ready
    line, whose ``local`` names the host, the SPA and Azurite. Its stderr goes to ``folder``/up.err.log."""
    settings = folder / "local.settings.json"
    with open(folder / "up.err.log", "w") as err:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack", "--state", str(folder / "state"), "up", "--port", "0", "--ready-json",
             "--settings", str(settings), "--spa-config", str(folder / "config.json"), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith('{"ready"'):
        proc.wait(timeout=30)
        raise RuntimeError("devstack up did not start:\n" + line + (folder / "up.err.log").read_text())
    launch.drain(proc.stdout, folder / "up.log")
    info = json.loads(line)["ready"]
    launch.witness.add_devstack(info)
    launch.witness.add_settings(str(settings), json.loads(settings.read_text()).get("Values", {}))  # the cache key
    launch.witness.add_function_keys(json.loads((folder / "state" / "functions-keys.json").read_text()))
    return proc, info
