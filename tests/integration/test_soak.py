"""The smoke soak (bench/soak.py, 30 s): two instances, mixed traffic, every scheduled fault; nothing unexplained."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devstack.launch import ROOT


def test_the_smoke_soak_explains_every_refusal_and_logs_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "bench/soak.py", "--minutes", "0.5", "--rate", "30", "--threads", "16",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:], result.get("unexplained_examples"))
    assert result["unexplained"] == 0 and result["secrets_found_in_logs"] == []
    assert result["logs_scanned"] >= 3 and result["secrets_registered"] > 100
    assert result["requests"] >= 0.8 * 30 * 30  # the pace was held
    # The faults were live: each fault window explained answers, and hostile tokens were refused.
    assert {"hostile token", "Graph 5xx burst", "Entra 429 burst (Retry-After 5)"} <= set(result["explained_by"])
    assert [name for _, name in result["events"]] == [
        "signing-key rollover during the slow Entra", "Key Vault secret rotation", "certificate rotation",
        "Redis restart", "Redis restart during the Entra 5xx burst", "CAE: soak001's sessions revoked"]
    assert result["by_status"].get("200", 0) > 0.75 * result["requests"]
