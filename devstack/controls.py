"""Test and benchmark controls: counters per endpoint and injected faults.

They live on the devstack's admin interface only; the function app never sees them. All
emulators run on one event loop, so plain dicts are safe without locks.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class Stats:
    """Nested counters: stats.count('entra.token', grant='obo', client='x') and friends."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.by: defaultdict[str, defaultdict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))

    def count(self, endpoint: str, **labels: str | None) -> None:
        self.totals[endpoint] += 1
        for label, value in labels.items():
            if value is not None:
                self.by[endpoint][label][value] += 1

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for endpoint, total in sorted(self.totals.items()):
            entry: dict[str, Any] = {"total": total}
            for label, counter in sorted(self.by.get(endpoint, {}).items()):
                entry[f"by_{label}"] = dict(sorted(counter.items()))
            out[endpoint] = entry
        return out

    def reset(self) -> None:
        self.totals.clear()
        self.by.clear()


TRACE_MAX = 1000


@dataclass
class Fault:
    """What to do to the next ``count`` matching requests (``None``: until cleared)."""

    service: str                 # entra | graph | keyvault | identity
    endpoint: str = "*"          # token | devicecode | discovery | jwks | me | users | secrets | ...
    count: int | None = 1
    latency_ms: int = 0          # added before answering (or before failing)
    status: int | None = None    # answer with this HTTP status (5xx, 429)
    retry_after: int | None = None
    aadsts: int | None = None    # Entra only: answer with this AADSTS error
    suberror: str | None = None  # with aadsts: Entra's ``suberror`` (default: the code's own, e.g. consent_required)
    claims: bool | None = None   # with aadsts: a claims challenge or none (default: the code's own)
    grant: str | None = None     # Entra token endpoint only: match one grant type
    drip_ms: int = 0             # Graph only: the answer's headers at once, then its body a byte per drip_ms
    trace: bool = False          # record each matched call: [endpoint, arrived, released] (wall-clock seconds)
    fired: int = 0
    calls: list[list[Any]] = field(default_factory=list)  # with trace: the last TRACE_MAX matched calls

    def retry_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def matches(self, service: str, endpoint: str, grant: str | None) -> bool:
        return (self.service == service and self.endpoint in ("*", endpoint)
                and self.grant in (None, grant))


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, service: str, endpoint: str, *, grant: str | None = None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(service, endpoint, grant):
                fault.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    async def gate(self, service: str, endpoint: str, *, grant: str | None = None) -> Fault | None:
        """Every emulator's faults come through here: the next matching fault, after its latency.
        The emulator answers a fault's ``status`` (or ``aadsts``) in its own words."""
        arrived = time.time()
        fault = self.take(service, endpoint, grant=grant)
        if fault is not None and fault.latency_ms > 0:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault is not None and fault.trace:  # who waited when: a benchmark reads calls' order and overlap
            fault.calls.append([endpoint, arrived, time.time()])
            del fault.calls[:-TRACE_MAX]
        return fault

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.faults]


def fault_from_json(data: dict[str, Any]) -> Fault:
    allowed = {f.name: data[f.name] for f in fields(Fault) if f.name not in ("fired", "calls") and f.name in data}
    if "service" not in allowed:
        raise ValueError("'service' is required")
    return Fault(**allowed)
