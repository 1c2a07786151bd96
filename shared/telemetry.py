"""OpenTelemetry spans and counters for the request path, free when telemetry is off.

On when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (exported to Application Insights with
``azure-monitor-opentelemetry``, configured once) or when ``MiddleTier__Telemetry=otel`` (use the
process's own OpenTelemetry SDK setup). Off otherwise: ``span()`` returns a shared null context
and OpenTelemetry is never imported. Attributes carry ids and outcomes, never a token.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, ContextManager

log = logging.getLogger("middletier.telemetry")
_NULL = contextlib.nullcontext()
_lock = threading.Lock()
_state: dict[str, Any] = {}


def _setup() -> bool:
    if "enabled" in _state:
        return bool(_state["enabled"])
    with _lock:
        if "enabled" in _state:
            return bool(_state["enabled"])
        connection = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
        mode = os.environ.get("MiddleTier__Telemetry", "").lower()
        enabled = bool(connection) or mode == "otel"
        if enabled:
            if connection:
                from azure.monitor.opentelemetry import configure_azure_monitor
                configure_azure_monitor(connection_string=connection, logger_name="middletier")
            from opentelemetry import metrics, trace
            _state["tracer"] = trace.get_tracer("middletier")
            meter = metrics.get_meter("middletier")
            _state["counters"] = {
                name: meter.create_counter(name, description=description) for name, description in (
                    ("middletier.cache.hits", "access tokens served from the token cache"),
                    ("middletier.cache.misses", "token cache misses (an Entra call follows)"),
                    ("middletier.obo.calls", "On-Behalf-Of requests sent to Entra"),
                )}
            log.info("telemetry on (%s)", "Application Insights" if connection else "OpenTelemetry SDK")
        _state["enabled"] = enabled
        return enabled


def span(name: str, **attributes: str | int | bool) -> ContextManager[Any]:
    """A span around one step of the request path; a no-op context when telemetry is off."""
    if not _setup():
        return _NULL
    return _state["tracer"].start_as_current_span(f"middletier.{name}", attributes=attributes)


def count(name: str, value: int = 1, **attributes: str) -> None:
    if _setup():
        _state["counters"][f"middletier.{name}"].add(value, attributes)


def reset() -> None:
    """Forget the setup (tests switch telemetry on and off in one process)."""
    with _lock:
        _state.clear()
