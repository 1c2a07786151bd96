"""Warm-path cost per request, in-process and noise-free: CPU microseconds and instructions (issue 19, item 4).

Run: .venv/bin/python bench/inprocess.py   (part of `make bench`; about 5 minutes, most of it under valgrind)

The function's entry point is called directly, as the Python worker calls it: a real ``azure.functions.HttpRequest``
(built by ``devstack.host.funchost.worker_request`` from the fields the host's ``ToRpcHttp`` hands the worker) is
passed to the v1 function's ``main``, in a child process whose ``os.environ`` holds the app's settings
(``devstack.settings_file.local_settings``, as bench/middletier.py writes them) before the app is imported. The
devstack's emulators (Entra, Graph, Key Vault, managed identity) run in another process, so neither the emulators'
work nor the time waiting on them is in our figures; our process's own work for each call (TLS, HTTP, JSON,
MSAL) is.

Cases, each a batch of requests prepared beforehand (building the requests is not measured):

``floor``
    bench/functions/BenchFloor: a fixed downstream token, no validation, one pooled HTTPS call to Graph.
``ours_warm``
    MiddleTierApi ``/api/me`` with a token already validated (in the validator's memo) and its OBO token in
    its cache partition: memo hit, authorization, partition hit, the same pooled HTTPS call to Graph.
``ours_first_sight``
    ``ours_warm`` with the token's entry dropped from the validator's memo before each request, so the request
    runs the full validation of a token never seen (JWS parse, RSA-2048 signature with the cached JWKS key,
    issuer, audience, lifetime, tenant, version; then memoized) while everything after it is warm. In real
    traffic a never-seen token also has a cold partition (the partition key is the token's SHA-256): this case
    isolates what validation adds; ``ours_cold`` is the whole first request. The memo drop itself (one
    ``TLRUCache.pop``) is inside the figure; ``harness_evict`` (drop and put back) bounds it from above.
``ours_cold``
    a fresh token per request (minted beforehand, one per request): full validation, a partition miss, OBO to
    the Entra emulator through MSAL (client assertion signed with the Key Vault certificate), the partition
    committed, then the Graph call. Instructions count only our process: the emulator's work and the wait for
    it are elsewhere. CPU time is this thread's (``time.thread_time``), so waiting is not in it either.
``noop``
    the harness alone (the marker call and a loop over no-op requests): shows the method adds nothing.

Method, instructions: ``valgrind --tool=callgrind --cache-sim=no --collect-atstart=no
--toggle-collect=functools_reduce --dump-after=functools_reduce``. Nothing is counted until a batch is
entered through that C function (``functools.reduce`` over two items, which calls its function once; nothing else
in the child calls ``functools.reduce`` from start to exit, which the run checks: exactly one dump per batch, or
it fails), and each batch is dumped to its own file as it leaves. So interpreter start-up,
imports, the app's first request (context, Key Vault, JWKS), the warm-up and the building of requests are never
counted: per request = the batch's Ir / its size. (The other way, two runs with N1 and N2 requests and
(Ir(N2) - Ir(N1)) / (N2 - N1), needs a pair of runs per case; this needs one run for all cases.) The whole
measurement runs twice, each in a fresh process with fresh cold tokens and ``PYTHONHASHSEED=0``: the report
gives both runs and their spread. ``perf stat -e instructions`` is tried too; where the kernel does not expose
the counter (containers, most VMs) the report says so.

Method, CPU time: the same batches, natively, interleaved across cases (so drift hits all alike); per request
= ``time.thread_time`` (and ``time.process_time``) over the batch / its size, the median of ``BATCHES`` batches.

Target: ours_warm <= 1.05 x floor in instructions per request. first-sight/floor and cold/floor are reported
against the same bar, as information. Results: bench/results/inprocess.json.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ("floor", "ours_warm", "ours_first_sight", "ours_cold")
MARKER = "functools_reduce"  # the C function (functools.reduce) a measured batch is entered through
BATCH = 50           # requests per CPU-time batch
BATCHES = 7          # CPU-time batches per case (median)
GRIND_REQUESTS = 100  # requests per case under callgrind
WARM_UP = {"floor": 20, "ours_warm": 20, "ours_first_sight": 10, "ours_cold": 10}
PRIMER = 3  # requests of a case right before each measured batch: its pooled connection is fresh, never idle-closed
TARGET = 1.05
GRAPH_SCOPE = "https://graph.microsoft.com/User.Read"


# --- the child: the function app in this process -------------------------------------------------------
class Workload:
    """The function app loaded as the worker loads it, and batches of requests to its entry points."""

    def __init__(self, spec: dict[str, Any]):
        os.environ.update(spec["env"])  # the settings, before the app is imported (as the host does)
        for path in (str(ROOT), str(ROOT / "bench" / "functions")):
            if path not in sys.path:
                sys.path.insert(0, path)
        import BenchFloor  # type: ignore[import-not-found]

        import MiddleTierApi
        from devstack.host.funchost import worker_request
        self._worker_request = worker_request
        self.entries: dict[str, Callable[[Any], Any]] = {"floor": BenchFloor.main, "ours": MiddleTierApi.main}
        self.warm_token: str = spec["warm_token"]
        self.warm_key = self.warm_token  # the memo is keyed by the token itself
        self._fresh: list[str] = list(spec["fresh_tokens"])

    def request(self, route: str, token: str) -> Any:
        """The request as the host hands it to the worker: lower-case headers, the URL with the Host header."""
        return self._worker_request({"method": "GET", "url": f"http://127.0.0.1{route}",
                                     "headers": {"host": "127.0.0.1", "authorization": f"Bearer {token}"},
                                     "params": {}, "route_params": {}, "body": b""})

    def fresh_tokens(self, n: int) -> list[str]:
        if len(self._fresh) < n:
            raise SystemExit(f"not enough fresh tokens: {n} wanted, {len(self._fresh)} left")
        taken, self._fresh = self._fresh[:n], self._fresh[n:]
        return taken

    def connections_opened(self) -> int:
        """Connections the floor's and the app's pools have opened so far: a batch must open none (a reconnect is
        a TLS handshake and a CA bundle load, which would swamp the per-request figures)."""
        import BenchFloor  # type: ignore[import-not-found]

        from shared.context import app_context
        total = 0
        for session in (BenchFloor._session, app_context().session):
            for adapter in session.adapters.values():
                pools = adapter.poolmanager.pools
                total += sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 (no __iter__)
        return total

    def _memo(self) -> Any:
        from shared.context import app_context
        return app_context().validator._memo  # the validator's memo of proven tokens (shared/validation.py)

    def batch(self, case: str, n: int) -> Callable[[], list[int]]:
        """``n`` requests of ``case``, built now; the returned call runs them and returns their statuses."""
        if case == "noop":
            def noop(req: Any) -> Any:
                return req
            reqs = [200] * n
            return lambda: [noop(r) for r in reqs]
        if case == "harness_evict":  # what ours_first_sight adds to each request: drop the memo entry (and put
            memo, key = self._memo(), self.warm_key  # it back, which ours_first_sight's request does itself)

            def evict() -> list[int]:
                out = []
                for _ in range(n):
                    entry = memo.pop(key)
                    memo[key] = entry
                    out.append(200)
                return out
            return evict
        if case == "floor":
            main, reqs = self.entries["floor"], [self.request("/api/bench/floor", self.warm_token) for _ in range(n)]
        elif case == "ours_cold":
            main, reqs = self.entries["ours"], [self.request("/api/me", t) for t in self.fresh_tokens(n)]
        else:
            main, reqs = self.entries["ours"], [self.request("/api/me", self.warm_token) for _ in range(n)]
        if case == "ours_first_sight":
            memo, key = self._memo(), self.warm_key

            def first_sight() -> list[int]:
                out = []
                for req in reqs:
                    memo.pop(key, None)
                    out.append(main(req).status_code)
                return out
            return first_sight
        return lambda: [main(req).status_code for req in reqs]

    def warm_up(self) -> None:
        for case, n in WARM_UP.items():
            check(case, self.batch(case, n)())
        if self.warm_key not in self._memo():
            raise SystemExit("the warm token is not in the validator's memo after its warm-up")


def check(case: str, statuses: list[int]) -> None:
    bad = [s for s in statuses if s != 200]
    if bad:
        raise SystemExit(f"{case}: {len(bad)} of {len(statuses)} answers were not 200, e.g. {bad[0]}")


def _marker() -> Callable[[Callable[[], Any]], Any]:
    """``enter(fn)`` runs ``fn()`` inside the C function ``functools_reduce`` (reduce over two items calls its
    function once), which callgrind sees as a function of its own: a tail-calling entry such as
    ``PyEval_CallObjectWithKeywords`` called through ctypes never shows up as a frame."""
    return lambda fn: functools.reduce(lambda _a, _b: fn(), (None, None))


def primed(w: Workload, case: str, n: int) -> Callable[[], list[int]]:
    """A batch of ``n``, built after ``PRIMER`` requests of the same case have just run."""
    if case in CASES:
        check(case, w.batch(case, PRIMER)())
    return w.batch(case, n)


def measure_cpu(w: Workload, n: int, batches: int) -> dict[str, Any]:
    """Per request CPU microseconds: batches interleaved across cases, the median batch."""
    samples: dict[str, dict[str, list[float]]] = {c: {"thread": [], "process": []} for c in CASES}
    opened = dict.fromkeys(CASES, 0)
    for _ in range(batches):
        for case in CASES:
            run = primed(w, case, n)
            before = w.connections_opened()
            t0, p0 = time.thread_time(), time.process_time()
            statuses = run()
            t1, p1 = time.thread_time(), time.process_time()
            opened[case] += w.connections_opened() - before
            check(case, statuses)
            samples[case]["thread"].append((t1 - t0) / n * 1e6)
            samples[case]["process"].append((p1 - p0) / n * 1e6)
    return {c: {"thread_us_per_request": round(statistics.median(s["thread"]), 1),
                "process_us_per_request": round(statistics.median(s["process"]), 1),
                "thread_us_batches": [round(x, 1) for x in s["thread"]], "requests_per_batch": n,
                "connections_opened": opened[c]}
            for c, s in samples.items()}


GRIND_ORDER = ("noop", *CASES, "harness_evict")


def measure_marked(w: Workload, n: int) -> dict[str, Any]:
    """Each batch entered through the marker (under callgrind: one dump per batch, counted only inside)."""
    enter = _marker()
    out = {}
    for case in GRIND_ORDER:
        run = primed(w, case, n)
        before = w.connections_opened()
        statuses = enter(run)
        check(case, statuses)
        opened = w.connections_opened() - before
        out[case] = {"requests": n, "statuses_200": len(statuses), "connections_opened": opened}
    return out


def child(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    w = Workload(spec)
    w.warm_up()
    result = measure_cpu(w, args.requests, args.batches) if args.mode == "cpu" else measure_marked(w, args.requests)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


# --- the parent: devstack, tokens, the child runs ------------------------------------------------------
def spec_for(info: dict[str, Any], admin: Any, fresh: int) -> dict[str, Any]:
    """The child's settings (the app's local.settings.json Values plus the managed identity's environment, as
    the host sets them) and tokens: one warm token and ``fresh`` never-used ones, all for alice."""
    from devstack.host.funchost import managed_identity_environment
    from devstack.settings_file import local_settings
    env = dict(local_settings(info, port=0)["Values"])
    env.update(managed_identity_environment(Path(info["state"])))
    env.update({
        "TokenCache__L1MaxEntries": "50000",  # as bench/middletier.py: above the working set
        # valgrind makes this process ~50x slower; the budget is time, not work: it must not end a slow request
        "MiddleTier__RequestBudgetSeconds": "200",
        "BENCH_DOWNSTREAM_URL": info["endpoints"]["graph_me"],
        "BENCH_FIXED_TOKEN": admin.mint(user="alice", scope=GRAPH_SCOPE, lifetime=86400),
    })
    tokens = admin.post("/mint", {"user": "alice", "count": fresh + 1})["access_tokens"]
    return {"env": env, "warm_token": tokens[0], "fresh_tokens": tokens[1:]}


def write_spec(folder: Path, name: str, spec: dict[str, Any]) -> Path:
    path = folder / f"{name}.spec.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(spec))
    return path


def run_child(spec: Path, mode: str, requests: int, batches: int, out: Path, prefix: list[str] | None = None,
              timeout: float = 900) -> dict[str, Any]:
    cmd = [*(prefix or []), sys.executable, str(Path(__file__).resolve()), "--child", "--spec", str(spec),
           "--mode", mode, "--requests", str(requests), "--batches", str(batches), "--out", str(out)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
                         check=False)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def callgrind_dumps(folder: Path) -> list[int]:
    """Ir of each dump, in dump order (``cg.out.<pid>.<n>``); the final dump (no number) is the rest."""
    dumps = []
    for path in folder.glob("cg.out.*.*"):
        m = re.fullmatch(r"cg\.out\.\d+\.(\d+)", path.name)
        if m:
            text = path.read_text()
            total = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
            dumps.append((int(m.group(1)), int(total.group(1)) if total else 0))
    return [ir for _, ir in sorted(dumps)]


def measure_instructions(spec: Path, n: int, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    prefix = ["valgrind", "--tool=callgrind", "--cache-sim=no", "--collect-atstart=no",
              f"--toggle-collect={MARKER}", f"--dump-after={MARKER}", f"--callgrind-out-file={folder}/cg.out.%p"]
    started = time.monotonic()
    batches = run_child(spec, "callgrind", n, 1, folder / "child.json", prefix=prefix)
    dumps = callgrind_dumps(folder)
    if len(dumps) != len(GRIND_ORDER):  # anything else entering the marker would show as an extra dump
        raise RuntimeError(f"{len(dumps)} callgrind dumps for {len(GRIND_ORDER)} batches: the marker is not ours alone")
    ir = {case: round(d / n) for case, d in zip(GRIND_ORDER, dumps)}
    return {"ir_per_request": ir, "seconds": round(time.monotonic() - started, 1), "dir": str(folder),
            "connections_opened": {case: b["connections_opened"] for case, b in batches.items()}}


def perf_instructions() -> str:
    """Whether ``perf stat -e instructions`` counts here (it needs the PMU, which containers rarely expose)."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    run = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True,
                         check=False)
    line = (run.stderr.strip().splitlines() or [""])[-1]
    if run.returncode != 0 or "not supported" in line or "not counted" in line or not line[:1].isdigit():
        return f"not available here: `perf stat -e instructions` says {line.split(',')[0] or run.returncode!r}"
    return "available"


def main() -> int:
    from bench.common import machine, record
    from devstack.launch import Admin, start_devstack, stop
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: `sudo apt-get install valgrind` (Debian package valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    proc, info = start_devstack(folder / "devstack")
    admin = Admin(info)
    try:
        cpu_spec = write_spec(folder, "cpu", spec_for(info, admin, WARM_UP["ours_cold"] + (PRIMER + BATCH) * BATCHES))
        print(f"CPU time: {BATCHES} batches of {BATCH} per case, natively ...", flush=True)
        cpu = run_child(cpu_spec, "cpu", BATCH, BATCHES, folder / "cpu.json")
        grind = []
        for i in range(2):
            fresh = WARM_UP["ours_cold"] + PRIMER + GRIND_REQUESTS
            spec = write_spec(folder, f"grind{i}", spec_for(info, admin, fresh))
            print(f"instructions, run {i + 1}/2: callgrind, {GRIND_REQUESTS} requests per case ...", flush=True)
            grind.append(measure_instructions(spec, GRIND_REQUESTS, folder / f"grind{i}"))
            print(f"   {grind[-1]['ir_per_request']}  ({grind[-1]['seconds']} s)", flush=True)
    finally:
        stop(proc)
    return report(cpu, grind, perf_instructions(), machine, record)


def report(cpu: dict[str, Any], grind: list[dict[str, Any]], perf: str, machine: Callable[[], Any],
           record: Callable[[str, dict[str, Any]], Path]) -> int:
    cases = (*CASES, "noop", "harness_evict")
    ir = {c: round(statistics.mean(g["ir_per_request"][c] for g in grind)) for c in cases}
    spread = {c: round(abs(grind[0]["ir_per_request"][c] - grind[1]["ir_per_request"][c]) / max(ir[c], 1) * 100, 3)
              for c in cases}
    ratios = {c: round(ir[c] / ir["floor"], 3) for c in CASES[1:]}
    cpu_ratios = {c: round(cpu[c]["thread_us_per_request"] / cpu["floor"]["thread_us_per_request"], 3)
                  for c in CASES[1:]}
    targets = {f"{c.removeprefix('ours_')}_instructions_vs_floor": {"value": ratios[c], "target": f"<= {TARGET}",
                                                                  "met": ratios[c] <= TARGET}
               for c in CASES[1:]}
    out = {"command": "make bench  (.venv/bin/python bench/inprocess.py)", "machine": machine(),
           "method": {"instructions": f"valgrind --tool=callgrind --cache-sim=no --collect-atstart=no "
                                      f"--toggle-collect={MARKER} --dump-after={MARKER}; per request = batch Ir / "
                                      f"{GRIND_REQUESTS}; two runs", "cpu": f"time.thread_time, median of "
                                      f"{BATCHES} interleaved batches of {BATCH}", "perf_stat_instructions": perf},
           "instructions_per_request": ir, "instructions_runs": [g["ir_per_request"] for g in grind],
           "instructions_spread_percent": spread, "instructions_vs_floor": ratios,
           "cpu_us_per_request": {c: cpu[c]["thread_us_per_request"] for c in CASES},
           "cpu_process_us_per_request": {c: cpu[c]["process_us_per_request"] for c in CASES},
           "cpu_vs_floor": cpu_ratios, "cpu_batches_us": {c: cpu[c]["thread_us_batches"] for c in CASES},
           "callgrind_seconds": [g["seconds"] for g in grind], "targets": targets,
           "connections_opened_in_batches": {"cpu": {c: cpu[c]["connections_opened"] for c in CASES},
                                             "callgrind": [g["connections_opened"] for g in grind]}}
    path = record("inprocess", out)
    print(f"\n{'case':18} {'Ir/request':>12} {'vs floor':>9} {'spread %':>9} {'CPU us':>8} {'vs floor':>9}")
    for c in CASES:
        us = cpu[c]["thread_us_per_request"]
        print(f"{c:18} {ir[c]:12,} {ir[c] / ir['floor']:9.3f} {spread[c]:9.3f} {us:8.1f} "
              f"{us / cpu['floor']['thread_us_per_request']:9.3f}")
    print(f"{'noop':18} {ir['noop']:12,}\n{'harness_evict':18} {ir['harness_evict']:12,}")
    print(f"perf stat -e instructions: {perf}")
    reconnects = sum(cpu[c]["connections_opened"] for c in CASES) + \
        sum(n for g in grind for n in g["connections_opened"].values())
    print(f"connections opened during measured batches: {reconnects}" + (" (figures include TLS handshakes!)"
                                                                          if reconnects else ""))
    for name, t in targets.items():
        print(f"{name}: {t['value']} (target {t['target']}) {'met' if t['met'] else 'NOT met'}")
    print(f"-> {path}")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help="internal: run the function app in this process")
    p.add_argument("--spec", help="internal: the child's settings and tokens (JSON)")
    p.add_argument("--mode", choices=("cpu", "callgrind"), default="cpu")
    p.add_argument("--requests", type=int, default=BATCH)
    p.add_argument("--batches", type=int, default=BATCHES)
    p.add_argument("--out", help="internal: where the child writes its figures")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli = parse()
    raise SystemExit(child(cli) if cli.child else main())
