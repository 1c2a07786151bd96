"""make soak: the app over time, under mixed traffic and a schedule of overlapping faults (issue 18).

Two local Functions host instances share a real redis-server L2 and one devstack. Traffic, paced at
``--rate`` requests/s (default: 80 % of the warm throughput ``make bench`` last measured), is mixed:
``me``, 120+ users on ``/api/me`` (each user's own token); ``orders``, an app caller on ``/api/orders``;
``cold``, a token minted during the run (a cold partition; after a signing-key rollover, new keys);
``hostile``, tokens the API must refuse (expired, another audience, a forged signature).
Meanwhile a schedule rolls the signing key over, rotates the Key Vault secret and certificate,
restarts Redis, and injects an Entra 429 burst, Entra and Graph 5xx bursts, a slow Entra and a CAE
session revocation, some overlapping. Every non-2xx answer must be explained by a fault active when
the request ran (its window plus a grace for what the app remembers, e.g. Retry-After), or be a
hostile token's 401: anything else counts as unexplained. Per minute: answers by status, p50/p99,
each instance's RSS, open file descriptors and threads (slope after warm-up). At the end: OBO calls
against the distinct (assertion, scope) pairs, and a scan of every log for tokens and secrets.

Run: make soak   (or .venv/bin/python bench/soak.py --minutes 10); a smoke run: --minutes 0.5 --rate 30.
Results: bench/results/soak.json (or --out) and bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import requests  # noqa: E402

import devstack.launch as launch  # noqa: E402
from bench.common import machine  # noqa: E402
from devstack.launch import Admin, RedisServer, start_devstack, start_host, stop  # noqa: E402
from devstack.settings_file import local_settings  # noqa: E402
from tests.secrets_registry import SecretsRegistry  # noqa: E402

USERS = 120
SHARES = {"me": 0.72, "orders": 0.10, "cold": 0.12, "hostile": 0.06}
CAE_USER = "soak001"
GRACE = 12.0  # seconds after a fault's end that its effects may still show (throttle/breaker memory)


@dataclass
class Record:
    start: float          # seconds since the run began
    kind: str
    user: str
    host: int
    status: int
    ms: float


@dataclass
class Window:
    """A fault, active from ``start`` to ``end`` (run seconds): the answers it may explain."""
    name: str
    start: float
    end: float
    statuses: frozenset[int]
    kinds: frozenset[str]
    user: str | None = None

    def explains(self, r: Record) -> bool:
        return (r.status in self.statuses and r.kind in self.kinds and self.user in (None, r.user)
                and r.start <= self.end + GRACE and r.start + r.ms / 1000 >= self.start)


@dataclass
class Run:
    admin: Admin
    hosts: list[dict[str, Any]]
    redis: RedisServer
    t0: float = field(default_factory=time.monotonic)
    records: list[Record] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0


# --- traffic -------------------------------------------------------------------------------------------
class Traffic:
    """The callers: one token per user, an app token, hostile tokens, and a stream of fresh tokens."""

    def __init__(self, admin: Admin, users: list[str], seed: int):
        self.admin, self.rng = admin, random.Random(seed)
        self.users = {u: admin.mint(user=u) for u in users}
        self.app = admin.mint(client="daemon-client", roles=["MiddleTier.Admin"])
        good = self.users[users[0]]
        head, body, sig = good.split(".")
        self.hostile = [admin.mint(user=users[1], lifetime=-600),                       # expired
                        admin.mint(user=users[1], scope="https://graph.microsoft.com/User.Read"),  # not ours
                        f"{head}.{body}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}",  # forged
                        f"{head}.{body}."]                                                # unsigned
        self._fresh: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.used: set[str] = set()

    def refill(self, count: int = 40) -> None:
        """Mint more fresh tokens (in the background: after a key rollover they carry the new kid)."""
        batch = [(u, self.admin.mint(user=u)) for u in self.rng.sample(sorted(self.users), min(count, 20))]
        with self._lock:
            self._fresh.extend(batch)

    def pick(self, rng: random.Random) -> tuple[str, str, str, str]:
        """(kind, user, path, token) for the next request."""
        kind = rng.choices(list(SHARES), weights=list(SHARES.values()))[0]
        if kind == "cold":
            with self._lock:
                fresh = self._fresh.pop() if self._fresh else None
            if fresh is None:
                kind = "me"
            else:
                return kind, fresh[0], "/api/me", fresh[1]
        if kind == "orders":
            return kind, "app", "/api/orders", self.app
        if kind == "hostile":
            return kind, "hostile", "/api/me", rng.choice(self.hostile)
        user = rng.choice(sorted(self.users))
        return "me", user, "/api/me", self.users[user]


def drive(run: Run, traffic: Traffic, rate: float, seconds: float, threads: int, seed: int) -> float:
    """Send requests paced at ``rate`` per second for ``seconds``; returns the rate achieved."""
    interval, next_slot, slot_lock = 1.0 / rate, [time.monotonic()], threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        rng, session = random.Random(seed * 1000 + index), requests.Session()
        session.trust_env = False
        while True:
            with slot_lock:
                slot = next_slot[0]
                next_slot[0] = max(slot + interval, time.monotonic() - 1.0)  # no burst to catch up
            if slot >= deadline:
                return
            if (wait := slot - time.monotonic()) > 0:
                time.sleep(wait)  # pacing the load, not synchronising with anything
            kind, user, path, token = traffic.pick(rng)
            host = rng.randrange(len(run.hosts))
            start = run.now()
            try:
                status = session.get(run.hosts[host]["url"] + path, headers={"Authorization": f"Bearer {token}"},
                                     timeout=60).status_code
            except requests.RequestException:
                status = 0  # no answer at all: never explained
            if kind == "cold":
                traffic.used.add(token)  # a new (assertion, Graph's scopes) pair: one OBO is its due
            with run.lock:
                run.records.append(Record(start, kind, user, host, status, (run.now() - start) * 1000))

    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return len(run.records) / max(1e-9, time.monotonic() - began)


def warm_up(hosts: list[dict[str, Any]], traffic: Traffic) -> None:
    """Each user's partition and the app's token in every instance's L1 (the first fills L2, the others
    load it), so ``me`` and ``orders`` traffic is warm when the run starts, as for a service in steady state."""
    session = requests.Session()
    session.trust_env = False
    calls = [("/api/me", t) for t in traffic.users.values()] + [("/api/orders", traffic.app)]
    for host in hosts:
        def one(call: tuple[str, str]) -> int:
            return session.get(host["url"] + call[0], headers={"Authorization": f"Bearer {call[1]}"},
                               timeout=60).status_code
        with ThreadPoolExecutor(8) as pool:
            statuses = set(pool.map(one, calls))
        if statuses != {200}:
            raise SystemExit(f"warm-up failed: {sorted(statuses)}")


# --- faults ----------------------------------------------------------------------------------------
ENTRA_KINDS = frozenset({"cold", "orders"})  # warm users never reach Entra


def schedule(run: Run, duration: float) -> list[tuple[float, Callable[[], None]]]:
    """(second, action) pairs spread over ``duration``, some overlapping."""
    admin = run.admin

    def window(name: str, start: float, length: float, statuses: set[int], kinds: frozenset[str] | set[str],
               fault: dict[str, Any] | None = None, user: str | None = None) -> list[tuple[float, Callable[[], None]]]:
        w = Window(name, start * duration, (start + length) * duration, frozenset(statuses), frozenset(kinds), user)
        run.windows.append(w)
        if fault is None:
            return []
        return [(w.start, lambda: admin.post("/faults", {**fault, "count": None})),
                (w.end, lambda: clear(fault))]

    def clear(fault: dict[str, Any]) -> None:  # DELETE clears all: put back the ones still on
        active = [f for f in admin.http.get(admin.base + "/faults", timeout=10).json()["faults"]
                  if not (f["service"] == fault["service"] and f["endpoint"] == fault["endpoint"]
                          and f.get("status") == fault.get("status") and f["latency_ms"] == fault.get("latency_ms", 0))]
        admin.clear_faults()
        for f in active:
            admin.post("/faults", {k: v for k, v in f.items() if k != "fired"})

    def event(name: str, at: float, action: Callable[[], Any]) -> tuple[float, Callable[[], None]]:
        def run_it() -> None:
            run.events.append((round(run.now(), 1), name))
            action()
        return (at * duration, run_it)

    def restart_redis() -> None:
        run.redis.kill()
        time.sleep(min(5.0, duration * 0.01))  # Redis down for a while: the breaker must open and close
        run.redis.start()

    entra_token = {"service": "entra", "endpoint": "token"}
    plan = [
        # One rollover: the emulator publishes two keys, as Entra retires a key only weeks after the next
        # one signs; a second rollover would retire the key of every token minted before the first.
        *window("slow Entra (800 ms)", 0.08, 0.10, {503, 504}, ENTRA_KINDS, {**entra_token, "latency_ms": 800}),
        event("signing-key rollover during the slow Entra", 0.12, lambda: admin.post("/rotate/signing-key")),
        event("Key Vault secret rotation", 0.20, lambda: admin.post("/rotate/secret", {
            "app": "middletier-api", "revoke_previous": True, "vault_secret": "middletier-secret"})),
        event("certificate rotation", 0.26, lambda: admin.post("/rotate/certificate", {
            "app": "middletier-api", "certificate": "middletier-cert", "revoke_previous": True})),
        event("Redis restart", 0.32, restart_redis),
        *window("Entra 429 burst (Retry-After 5)", 0.40, 0.06, {503}, ENTRA_KINDS,
                {**entra_token, "status": 429, "retry_after": 5}),
        *window("Entra 5xx burst", 0.52, 0.06, {502, 503}, ENTRA_KINDS, {**entra_token, "status": 500}),
        event("Redis restart during the Entra 5xx burst", 0.55, restart_redis),
        *window("Graph 5xx burst", 0.64, 0.06, {502, 503}, {"me", "cold"},
                {"service": "graph", "endpoint": "me", "status": 503}),
        *window("slow Entra (2 s) overlapping", 0.68, 0.08, {503, 504}, ENTRA_KINDS,
                {**entra_token, "latency_ms": 2000}),
        event(f"CAE: {CAE_USER}'s sessions revoked", 0.78,
              lambda: admin.post("/graph/revoke", {"user": CAE_USER, "scope": "sessions"})),
    ]
    window(f"CAE revocation of {CAE_USER}", 0.78, 1.0, {401}, {"me", "cold"}, user=CAE_USER)
    return sorted(plan, key=lambda p: p[0])


def run_schedule(run: Run, plan: list[tuple[float, Callable[[], None]]], stop_at: float) -> None:
    for at, action in plan:
        if (wait := at - run.now()) > 0:
            time.sleep(wait)  # the schedule's clock, not a synchronisation
        if run.now() < stop_at:
            action()


# --- measurement -----------------------------------------------------------------------------------
def sample_processes(run: Run, pids: list[int], samples: list[dict[str, Any]], stop_flag: threading.Event) -> None:
    procs = [psutil.Process(p) for p in pids]
    while not stop_flag.wait(5.0):
        for i, proc in enumerate(procs):
            try:
                family = [proc, *proc.children(recursive=True)]
                samples.append({"t": run.now(), "host": i,
                                "rss_mb": sum(p.memory_info().rss for p in family) / 2**20,
                                "fds": sum(p.num_fds() for p in family),
                                "threads": sum(p.num_threads() for p in family)})
            except psutil.Error:
                pass


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, value), per minute."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


def summarise(run: Run, samples: list[dict[str, Any]], bucket: float) -> dict[str, Any]:
    unexplained: list[dict[str, Any]] = []
    by_status: dict[str, int] = {}
    explained_by: dict[str, int] = {}
    for r in run.records:
        by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
        if 200 <= r.status < 300 and r.kind != "hostile":
            continue
        if r.kind == "hostile":
            if r.status == 401:
                explained_by["hostile token"] = explained_by.get("hostile token", 0) + 1
                continue
        elif (w := next((w for w in run.windows if w.explains(r)), None)) is not None:
            explained_by[w.name] = explained_by.get(w.name, 0) + 1
            continue
        unexplained.append(r.__dict__)
    minutes: list[dict[str, Any]] = []
    for m in range(int(max((r.start for r in run.records), default=0) // bucket) + 1):
        rs = [r for r in run.records if m * bucket <= r.start < (m + 1) * bucket]
        legit = sorted(r.ms for r in rs if r.kind != "hostile")
        row: dict[str, Any] = {"minute": m + 1, "requests": len(rs), "by_status": {}}
        for r in rs:
            row["by_status"][str(r.status)] = row["by_status"].get(str(r.status), 0) + 1
        if legit:
            row["p50_ms"] = round(legit[len(legit) // 2], 1)
            row["p99_ms"] = round(legit[min(len(legit) - 1, int(len(legit) * 0.99))], 1)
        for host in sorted({s["host"] for s in samples}):
            ss = [s for s in samples if s["host"] == host and m * bucket <= s["t"] < (m + 1) * bucket]
            if ss:
                row[f"host{host}"] = {k: round(statistics.fmean(s[k] for s in ss), 1)
                                      for k in ("rss_mb", "fds", "threads")}
        minutes.append(row)
    slopes: dict[str, Any] = {}
    # After warm-up = the run's second half: by then L1 is full (its entry cap, --l1-entries, is reached by
    # the cold-token inflow in the first minutes) and what still grows is what the soak is looking for.
    warm = [row for row in minutes if row["minute"] > len(minutes) // 2]
    for host in sorted({s["host"] for s in samples}):
        for k in ("rss_mb", "fds", "threads"):
            pts = [(row["minute"], row[f"host{host}"][k]) for row in warm if f"host{host}" in row]
            value = slope(pts)
            slopes[f"host{host}.{k}_per_minute"] = None if value is None else round(value, 3)
    kinds: dict[str, int] = {}
    for u in unexplained:
        kinds[f"{u['kind']} {u['status']}"] = kinds.get(f"{u['kind']} {u['status']}", 0) + 1
    return {"by_status": by_status, "explained_by": explained_by, "unexplained": len(unexplained),
            "unexplained_by_kind": kinds,
            "unexplained_examples": unexplained[:20], "per_minute": minutes, "slopes_after_warm_up": slopes}


# --- the run ---------------------------------------------------------------------------------------
def default_rate() -> float:
    try:
        bench = json.loads((ROOT / "bench" / "results" / "middletier.json").read_text())
        return round(0.8 * float(bench["results"]["ours_warm_n100"]["rps"]), 1)
    except (OSError, KeyError, ValueError):
        return 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: 80%% of make bench's)")
    parser.add_argument("--threads", type=int, default=48)
    parser.add_argument("--workers", type=int, default=1, help="FUNCTIONS_WORKER_PROCESS_COUNT per instance")
    parser.add_argument("--l1-entries", type=int, default=2000,
                        help="TokenCache__L1MaxEntries: small enough that the cold-token inflow fills L1 in the "
                             "first minutes and memory's steady state is measured (0: the app's default)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/soak.json")
    args = parser.parse_args(argv)
    rate, duration = args.rate or default_rate(), args.minutes * 60
    registry = SecretsRegistry()
    launch.witness = registry
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    procs: list[Any] = []
    redis = RedisServer(folder)
    try:
        proc, info = start_devstack(folder / "devstack")
        procs.append(proc)
        admin = Admin(info)
        redis.start()
        key = base64.b64encode(os.urandom(32)).decode()
        hosts = []
        for i, credential in enumerate(("keyvault-certificate", "keyvault-secret")):
            settings = local_settings(info, port=0, credential=credential)
            settings["Values"].update({
                "TokenCache__L2": "redis", "TokenCache__RedisConnectionString": redis.url,
                "TokenCache__EncryptionKey": key, "FUNCTIONS_WORKER_PROCESS_COUNT": str(args.workers),
                **({"TokenCache__L1MaxEntries": str(args.l1_entries)} if args.l1_entries else {}),
                "AzureFunctionsJobHost__logging__logLevel__default": "Information"})
            path = folder / f"host{i}" / "local.settings.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(settings))
            host_proc, ready = start_host(path.parent, path, info["state"])
            procs.append(host_proc)
            hosts.append({**ready, "pid": host_proc.pid})
        users = admin.post("/users", {"count": USERS, "prefix": "soak"})["users"]
        traffic = Traffic(admin, users, args.seed)
        warm_up(hosts, traffic)
        obo_before = admin.stats().get("entra.token", {}).get("by_grant", {}).get("on_behalf_of", 0)
        run = Run(admin, hosts, redis)
        plan = schedule(run, duration)
        samples: list[dict[str, Any]] = []
        stop_flag = threading.Event()
        helpers = [threading.Thread(target=sample_processes, args=(run, [h["pid"] for h in hosts], samples,
                                                                   stop_flag), daemon=True),
                   threading.Thread(target=run_schedule, args=(run, plan, duration), daemon=True)]

        def keep_minting() -> None:
            while not stop_flag.wait(1.0):
                traffic.refill()
        helpers.append(threading.Thread(target=keep_minting, daemon=True))
        traffic.refill()
        for t in helpers:
            t.start()
        achieved = drive(run, traffic, rate, duration, args.threads, args.seed)
        stop_flag.set()
        for t in helpers:
            t.join(30)
        obo_calls = admin.stats().get("entra.token", {}).get("by_grant", {}).get("on_behalf_of", 0) - obo_before
    finally:
        for p in reversed(procs):
            stop(p)
        redis.kill()
    summary = summarise(run, samples, bucket=60.0 if duration >= 120 else max(10.0, duration / 6))
    logs = sorted(folder.rglob("*.log"))
    for token in (*traffic.users.values(), traffic.app, *traffic.hostile):
        registry.add("soak token", token)
    found = registry.scan(logs)
    result = {
        "command": "make soak  (.venv/bin/python bench/soak.py " + " ".join(argv or sys.argv[1:]) + ")",
        "machine": machine(), "minutes": args.minutes, "rate_target": rate, "rate_achieved": round(achieved, 1),
        "instances": len(hosts), "worker_processes_per_instance": args.workers, "users": USERS,
        "l1_max_entries": args.l1_entries or "default",
        "warm_up": "the run's first half: L1 fills to its entry cap; slopes are over the second half",
        "requests": len(run.records), **summary,
        "obo_calls": obo_calls, "new_assertion_scope_pairs": len(traffic.used),
        "cold_requests_refused": sum(1 for r in run.records if r.kind == "cold" and r.status != 200),
        "events": run.events, "windows": [w.__dict__ | {"statuses": sorted(w.statuses), "kinds": sorted(w.kinds)}
                                          for w in run.windows],
        "logs_scanned": len(logs), "secrets_registered": len(registry), "secrets_found_in_logs": found,
    }
    out = args.out or ROOT / "bench" / "results" / "soak.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"soak: {len(run.records)} requests at {achieved:.1f}/s (target {rate}), by status {summary['by_status']}, "
          f"unexplained {summary['unexplained']}, OBO {obo_calls} for {len(traffic.used)} new pairs, "
          f"secrets in logs {len(found)} -> {out}")
    return 0 if summary["unexplained"] == 0 and not found else 1


if __name__ == "__main__":
    raise SystemExit(main())
