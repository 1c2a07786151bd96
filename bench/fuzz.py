"""Run the atheris fuzz target for N iterations and record what happened.

Run: .venv/bin/python bench/fuzz.py [runs]   (default 200,000; part of `make fuzz`)
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, record  # noqa: E402


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cmd = [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_validate.py"), f"-runs={runs}", "-max_len=4096",
           "-print_final_stats=1"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    done = re.search(r"Done (\d+) runs", output)
    crashed = proc.returncode != 0
    result = {"command": f".venv/bin/python bench/fuzz.py {runs}", "runs_requested": runs,
              "runs_done": int(done.group(1)) if done else None, "seconds": round(elapsed, 1),
              "unhandled_exceptions": 1 if crashed else 0, "exit_code": proc.returncode,
              "coverage": (re.findall(r"cov: (\d+)", output) or [None])[-1], "machine": machine()}
    if crashed:
        result["tail"] = output[-3000:]
    record("fuzz", result)
    print({k: v for k, v in result.items() if k not in ("machine", "tail")})
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
