"""Telemetry: spans for each step and counters, carrying no token; nothing at all when off."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from devstack.launch import ROOT, Admin


def test_off_by_default_and_never_imports_opentelemetry() -> None:
    code = ("import sys; import shared.telemetry as t; "
            "assert t.span('x').__enter__() is None; t.count('obo.calls'); "
            "print(json.dumps(any(m.startswith('opentelemetry') for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout) is False


def test_spans_and_counters_without_tokens(devstack: dict[str, Any], admin: Admin, monkeypatch: Any) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from devstack.settings_file import local_settings
    from shared import telemetry
    from shared.authorization import Requirement
    from shared.context import build_context
    from shared.pipeline import admit

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    for key, value in {**local_settings(devstack, credential="secret")["Values"], "MiddleTier__Telemetry": "otel"}.items():
        monkeypatch.setenv(key, value)
    telemetry.reset()
    try:
        ctx = build_context()
        token = admin.mint(user="alice")
        for _ in range(3):
            call = admit(ctx, f"Bearer {token}", Requirement(callers="user"), ("Graph",), "trace")
            assert call.downstream("Graph").status == 200
    finally:
        telemetry.reset()
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("middletier.obo") == 1 and names.count("middletier.downstream") == 3
    assert names.count("middletier.validate") == 3 and names.count("middletier.acquire_token") == 3
    dump = json.dumps([{"name": s.name, "attributes": dict(s.attributes or {})} for s in spans])
    assert token[:40] not in dump and "eyJ" not in dump
    points = {m.name: sum(p.value for p in m.data.data_points)
              for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert points["middletier.obo.calls"] == 1 and points["middletier.cache.misses"] == 1
    assert points["middletier.cache.hits"] == 2


def test_a_connection_string_alone_starts_no_second_exporter() -> None:
    """On Azure the worker configures Azure Monitor (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY);
    the app must not start its own exporter beside it, which would send logs twice, uncorrelated."""
    code = ("import json, logging, sys; logging.basicConfig(level=logging.WARNING); import shared.telemetry as t; "
            "assert t.span('x').__enter__() is None; "
            "print(json.dumps(sorted({m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules "
            "if m.startswith(('azure.monitor', 'opentelemetry.'))})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "APPLICATIONINSIGHTS_CONNECTION_STRING":
                              "InstrumentationKey=00000000-0000-0000-0000-000000000000"})
    assert json.loads(out.stdout) == []
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true" in out.stderr


def test_host_json_sends_host_telemetry_through_opentelemetry() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    # Host.Results carries the request telemetry: never filtered away.
    assert "Host.Results" not in (host.get("logging") or {}).get("logLevel", {})
