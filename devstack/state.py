"""Where the devstack keeps what it generates: CA, keys, certificates, runtime endpoints.

The folder is git-ignored and created on first run; ``DEVSTACK_STATE`` moves it (tests give
every stack its own).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("DEVSTACK_STATE") or PROJECT_ROOT / ".devstack").resolve()


def runtime_file(state: Path) -> Path:
    return state / "runtime.json"


def write_runtime(state: Path, info: dict[str, Any]) -> None:
    path = runtime_file(state)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def read_runtime(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads(runtime_file(state).read_text())
    except (OSError, ValueError):
        return None
