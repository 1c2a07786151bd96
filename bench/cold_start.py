"""Cold start against its critical path: process start -> first 200 from /api/me, with and without +50 ms per call.

Run: .venv/bin/python bench/cold_start.py [--runs 3] [--latency-ms 50] [--code DIR] [--json FILE]
     .venv/bin/python bench/cold_start.py --imports 9 [--code DIR]   (import time only, issue 19 item 2)

One devstack; per run, a new function host process (``devstack host``) for an app folder whose ``MiddleTierApi``
and ``shared`` are ``--code``'s (default: this checkout; a ``git worktree`` of an older commit measures that).
The clock starts before the host process is spawned and stops at the first 200 from ``/api/me`` (the caller's
token is minted beforehand). Each run is measured twice, interleaved: with no added latency, and with
``--latency-ms`` added by the devstack's fault controls to every call to Entra (discovery, JWKS, token), the
managed-identity endpoint, Key Vault and Graph (one ``latency_ms`` fault per service, ``endpoint`` ``*``,
``trace`` on). The traced faults give each upstream call's arrival and release; the admin stats count the calls,
and every counted call must have passed a fault (else the latency did not reach it and the figure is void).

The critical path, in round trips (RT): the calls a first /api/me cannot do without, in the longest chain of
calls each of which needs the previous one's answer:

- the caller's token needs the signing keys: OpenID metadata -> JWKS (2 RT);
- the OBO call needs the app's credential: with a Key Vault certificate, the SDK's unauthenticated request that
  draws the vault's challenge (401 + ``WWW-Authenticate``, which names the token's resource) -> the managed
  identity's token for that resource -> the authenticated read (3 RT); independent of the signing keys;
- the MSAL authority's metadata (tenant discovery) is the same document as the signing keys' metadata: shared
  with it, or fetched beside the credential, it adds no RT;
- then OBO (1 RT: needs the validated token and the credential), then Graph (1 RT: needs the OBO token).

So ``critical_rt = max(2, 3) + 1 + 1 = 5``; sequentially the 8 calls are 8 RT. The target:
``first_200(+latency) <= 1.15 * (critical_rt * latency + first_200(no latency))``. ``serial_depth`` is
measured from the trace: the longest chain of traced calls each arriving after the previous one's answer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from devstack.launch import Admin, start_devstack, start_host, stop
from devstack.settings_file import local_settings

SERVICES = ("entra", "identity", "keyvault", "graph")
CRITICAL_RT = 5
SEQUENTIAL_RT = 8
TARGET_FACTOR = 1.15
http = requests.Session()
http.trust_env = False


def build_app(code: Path, folder: Path) -> Path:
    app = folder / "app"
    app.mkdir(parents=True)
    (app / "host.json").write_text((code / "host.json").read_text())
    for name in ("MiddleTierApi", "shared"):
        (app / name).symlink_to(code / name)
    return app


def write_settings(info: dict[str, Any], folder: Path) -> Path:
    settings = local_settings(info, port=0)
    settings["Values"]["AzureFunctionsJobHost__logging__logLevel__default"] = "Warning"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "local.settings.json"
    path.write_text(json.dumps(settings))
    return path


def upstream_calls(stats: dict[str, Any]) -> dict[str, int]:
    """Calls per upstream endpoint, from the devstack's counters (services of SERVICES only)."""
    return {name: entry["total"] for name, entry in stats.items() if name.split(".")[0] in SERVICES}


def serial_depth(calls: list[tuple[str, float, float]]) -> int:
    """The longest chain of calls in which each arrived after the previous one was answered (released)."""
    calls = sorted(calls, key=lambda c: c[1])
    depth: list[int] = []
    for i, (_, arrived, _) in enumerate(calls):
        before = [depth[j] for j in range(i) if calls[j][2] <= arrived]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)


def one_run(app: Path, settings: Path, info: dict[str, Any], admin: Admin, folder: Path,
            latency_ms: int) -> dict[str, Any]:
    token = admin.mint(user="alice")
    admin.clear_faults()
    for service in SERVICES:
        admin.post("/faults", {"service": service, "endpoint": "*", "latency_ms": latency_ms, "count": None,
                               "trace": True})
    admin.post("/stats/reset")
    folder.mkdir(parents=True)
    started, t0 = time.monotonic(), time.time()
    proc, host = start_host(folder, settings, info["state"], app=app)
    try:
        ready = time.monotonic() - started
        asked = time.time()
        r = http.get(host["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        first = time.monotonic() - started
        if r.status_code != 200:
            raise SystemExit(f"first /api/me answered {r.status_code}: {r.text[:300]}")
    finally:
        stop(proc)
    faults = admin.http.get(admin.base + "/faults", timeout=10).json()["faults"]
    admin.clear_faults()
    calls = [(f"{f['service']}.{c[0]}", c[1], c[2]) for f in faults for c in f["calls"]]
    counted = upstream_calls(admin.stats())
    if len(calls) != sum(counted.values()):
        raise SystemExit(f"the fault controls saw {len(calls)} calls, the counters {counted}: latency missed some")
    timeline = [{"call": name, "arrived_ms": round((a - asked) * 1000, 1), "answered_ms": round((b - asked) * 1000, 1)}
                for name, a, b in sorted(calls, key=lambda c: c[1])]
    return {"ready_s": ready, "first_200_s": first, "request_s": first - ready, "calls": counted,
            "call_count": len(calls), "serial_depth": serial_depth(calls), "timeline": timeline,
            "spawned_at": t0}


def import_ratio(code: Path, runs: int) -> dict[str, Any]:
    """``import MiddleTierApi`` (from ``code``) against ``import msal, jwt, azure.functions``: medians of ``runs``
    fresh interpreters each, interleaved; the app's bytecode compiled first, as pip compiled the libraries'."""
    import compileall
    import subprocess
    for package in ("shared", "MiddleTierApi"):
        compileall.compile_dir(str(code / package), quiet=1)
    cases = {"app": "import MiddleTierApi", "floor": "import msal, jwt, azure.functions"}
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, statement in cases.items():
            timed = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            out = subprocess.run([sys.executable, "-c", timed], cwd=code, capture_output=True, text=True, check=True)
            samples[name].append(float(out.stdout))
    app, floor = (statistics.median(samples[k]) for k in cases)
    return {"import_MiddleTierApi_s": round(app, 3), "import_msal_jwt_azure_functions_s": round(floor, 3),
            "ratio": round(app / floor, 3), "target": "<= 1.3", "met": app / floor <= 1.3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--imports", type=int, default=0, metavar="N",
                        help="only measure the import-time ratio, over N interpreters each")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose MiddleTierApi/shared to run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.imports:
        print(json.dumps(import_ratio(args.code.resolve(), args.imports), indent=1))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    ds_proc, info = start_devstack(folder / "devstack")
    try:
        admin = Admin(info)
        app = build_app(args.code.resolve(), folder)
        settings = write_settings(info, folder / "settings")
        runs: dict[int, list[dict[str, Any]]] = {0: [], args.latency_ms: []}
        for i in range(args.runs):  # interleaved: machine drift hits both alike
            for latency, done in runs.items():
                run = one_run(app, settings, info, admin, folder / f"run{i}-{latency}ms", latency)
                done.append(run)
                print(f"run {i} +{latency:3d} ms: ready {run['ready_s']:.3f} s, first 200 {run['first_200_s']:.3f} s "
                      f"(request {run['request_s'] * 1000:.0f} ms), {run['call_count']} calls, "
                      f"serial depth {run['serial_depth']}", flush=True)
    finally:
        stop(ds_proc)
    results = summarize(runs, args.latency_ms)
    results["code"] = str(args.code.resolve())
    results["import"] = import_ratio(args.code.resolve(), 9)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    elif args.code.resolve() == ROOT:  # this checkout's figures: bench/results/cold_start.json
        from bench.common import machine, record
        command = f"make bench  (.venv/bin/python bench/cold_start.py --runs {args.runs})"
        print(f"-> {record('cold_start', {'command': command, 'machine': machine(), **results})}")
    return 0


def summarize(runs: dict[int, list[dict[str, Any]]], latency_ms: int) -> dict[str, Any]:
    def med(latency: int, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[latency]), 3)
    cold, slow = med(0, "first_200_s"), med(latency_ms, "first_200_s")
    bound = TARGET_FACTOR * (CRITICAL_RT * latency_ms / 1000 + cold)
    return {
        "first_200_s": {"no_latency": cold, f"latency_{latency_ms}ms": slow},
        "first_request_ms": {"no_latency": round(med(0, "request_s") * 1000, 1),
                             f"latency_{latency_ms}ms": round(med(latency_ms, "request_s") * 1000, 1)},
        "ready_s": {"no_latency": med(0, "ready_s"), f"latency_{latency_ms}ms": med(latency_ms, "ready_s")},
        "added_by_latency_ms": round((slow - cold) * 1000, 1),
        "added_round_trips": round((slow - cold) * 1000 / latency_ms, 2),
        "critical_path_rt": CRITICAL_RT, "sequential_rt": SEQUENTIAL_RT,
        "target_s": round(bound, 3), "met": slow <= bound,
        "upstream_calls": runs[latency_ms][-1]["calls"],
        "serial_depth": [r["serial_depth"] for r in runs[latency_ms]],
        "timeline_latency": runs[latency_ms][-1]["timeline"],
        "runs": runs,
    }


if __name__ == "__main__":
    raise SystemExit(main())
