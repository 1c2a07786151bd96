"""The local host does for OpenTelemetry what the Python worker does (devstack/host/worker_telemetry.py):
each invocation runs inside the host request's trace context, so the app's spans are its children."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from devstack.host.worker_telemetry import WorkerTelemetry, invocation_trace_context

from .test_funchost_routes import call, http

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
HANDLER = ("import json\nimport azure.functions as func\nfrom opentelemetry import trace\n"
           "def main(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:\n"
           "    span = trace.get_current_span().get_span_context()\n"
           "    return func.HttpResponse(json.dumps({'trace': format(span.trace_id, '032x'),\n"
           "        'parent': format(span.span_id, '016x'), 'given': context.trace_context.trace_parent}))\n")


@pytest.fixture
def traced_app(tmp_path: Path) -> Iterator[Path]:
    path, modules = list(sys.path), set(sys.modules)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    (tmp_path / "Traced").mkdir()
    (tmp_path / "Traced" / "function.json").write_text(json.dumps(http("traced")))
    (tmp_path / "Traced" / "__init__.py").write_text(HANDLER)
    yield tmp_path
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_the_host_activity_is_a_child_of_the_callers_traceparent() -> None:
    context = invocation_trace_context({"traceparent": CALLER, "tracestate": "k=v"})
    version, trace_id, span_id, flags = context.trace_parent.split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01") and span_id != "00f067aa0ba902b7"
    assert context.trace_state == "k=v"


@pytest.mark.parametrize("header", ["", "garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01", CALLER.upper()])
def test_without_a_valid_traceparent_a_new_trace_starts(header: str) -> None:
    context = invocation_trace_context({"traceparent": header, "tracestate": "k=v"})
    assert CALLER_TRACE not in context.trace_parent and context.trace_state == ""


@pytest.fixture
def distro(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """configure_azure_monitor recorded (it would export to Application Insights); like the real
    one, it refuses to run without a connection string."""
    import azure.monitor.opentelemetry as package
    calls: list[dict[str, Any]] = []

    def configure(**kw: Any) -> None:
        if not kw.get("connection_string"):
            raise ValueError("Instrumentation key cannot be none or empty.")
        calls.append(kw)
    monkeypatch.setattr(package, "configure_azure_monitor", configure)
    for name in ("PYTHON_ENABLE_OPENTELEMETRY", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
                 "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_the_invocation_runs_in_the_hosts_trace_context(traced_app: Path, monkeypatch: pytest.MonkeyPatch,
                                                        distro: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("PYTHON_ENABLE_OPENTELEMETRY", "true")
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=x")
    status, body = call(traced_app, "GET", "/api/traced", {"traceparent": CALLER})
    seen = json.loads(body)
    assert status == 200 and seen["trace"] == CALLER_TRACE
    assert seen["given"] == f"00-{CALLER_TRACE}-{seen['parent']}-01"  # the app's parent is the host's activity
    assert distro == [{"connection_string": "InstrumentationKey=x", "logger_name": ""}]


@pytest.mark.parametrize("env", [
    {},                                                                        # telemetry off
    {"PYTHON_ENABLE_OPENTELEMETRY": "true"},                                   # no connection string: distro fails
    {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",                    # the 4.x worker ignores this one
     "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"},
])
def test_without_azure_monitor_the_worker_attaches_nothing(traced_app: Path, monkeypatch: pytest.MonkeyPatch,
                                                           distro: list[dict[str, Any]], env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, body = call(traced_app, "GET", "/api/traced", {"traceparent": CALLER})
    seen = json.loads(body)
    assert status == 200 and seen["trace"] == "0" * 32 and distro == []
    assert seen["given"].startswith(f"00-{CALLER_TRACE}-")  # the context is there for the function to read


def test_azure_monitor_is_configured_once_per_host(distro: list[dict[str, Any]]) -> None:
    telemetry = WorkerTelemetry({"PYTHON_ENABLE_OPENTELEMETRY": "true",
                                 "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
                                 "PYTHON_AZURE_MONITOR_LOGGER_NAME": "middletier"})
    assert telemetry.enabled and distro == [{"connection_string": "InstrumentationKey=x", "logger_name": "middletier"}]
