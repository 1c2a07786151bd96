"""What `func azure functionapp publish` would upload: the repository minus .funcignore."""
from __future__ import annotations

import subprocess

import pathspec

from devstack.launch import ROOT


def package_files() -> set[str]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    spec = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".funcignore").read_text().splitlines())
    return {f for f in tracked if not spec.match_file(f) and (ROOT / f).exists()}


def test_package_holds_only_the_app() -> None:
    files = package_files()
    top = {f.split("/")[0] for f in files}
    assert top == {"host.json", "requirements.txt", "MiddleTierApi", "AdminApi", "OrdersApi", "shared"}
    assert {"host.json", "requirements.txt", "MiddleTierApi/function.json", "MiddleTierApi/__init__.py",
            "shared/__init__.py", "shared/pipeline.py"} <= files
    assert not any(f.startswith(("devstack/", "tests/", "bench/", "clients/", "infra/")) for f in files)
    assert "local.settings.json" not in files and "local.settings.example.json" not in files


def test_app_requirements_do_not_pull_dev_tools() -> None:
    app = (ROOT / "requirements.txt").read_text().lower()
    for dev in ("pytest", "starlette", "uvicorn", "hypothesis", "atheris"):
        assert dev not in app
