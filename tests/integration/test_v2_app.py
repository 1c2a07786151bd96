"""The v2 sample (samples/v2app) in the local host beyond the suites that run against both models
(tests/conftest.py BOTH_MODELS): worker processes that index the app themselves, and an app the worker
refuses to index stopping the host's start with the worker's message, no traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.launch import Admin

from .test_funchost_conformance import launch
from .test_middletier_api import call, obo_count
from .test_worker_processes import worker_pids

http = requests.Session()
http.trust_env = False


@pytest.mark.parametrize("app_model", ["v2"], indirect=True)
def test_each_worker_process_indexes_the_v2_app_and_keeps_its_own_cache(devstack: dict[str, Any], host_factory: Any,
                                                                         admin: Admin) -> None:
    host = host_factory(devstack, FUNCTIONS_WORKER_PROCESS_COUNT="2")
    assert len(worker_pids(host["proc"].pid)) == 2
    assert [f["name"] for f in host["functions"]] == ["MiddleTierApi", "OrdersApi", "AdminApi"]
    token = admin.mint(user="alice")
    before = obo_count(admin)
    assert [call(host, token).status_code for _ in range(4)] == [200] * 4
    assert obo_count(admin) == before + 2  # two processes, each its own import of the app and its own L1
    for path in ("/api/orders", "/api/directory/users/alice@contoso.dev"):
        refused = http.get(host["url"] + path, timeout=10)
        assert refused.status_code == 401 and refused.headers["Content-Type"].startswith("application/problem+json")
    log = Path(host["log"]).read_text()
    assert log.count("Indexed function app and found 3 functions") == 1  # the host's; the workers index silently


def test_an_app_the_worker_cannot_index_stops_the_start_with_its_message(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "host.json").write_text(json.dumps({"version": "2.0"}))
    (app / "local.settings.json").write_text(json.dumps({"Values": {}}))
    (app / "function_app.py").write_text("import azure.functions as func\n"
                                         "app = func.FunctionApp()\nsecond = func.FunctionApp()\n")
    proc = launch(app, tmp_path / "state")
    out, _ = proc.communicate(timeout=60)
    log = (tmp_path / "state" / "host.log").read_text()
    assert proc.returncode == 1 and out == ""
    assert "Worker failed to index functions\nValueError: More than one FunctionApp or other top level function " \
           "app instances are defined." in log
    assert "Traceback" not in log
