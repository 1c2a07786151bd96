"""OpenTelemetry spans and counters for the request path, free when telemetry is off.

One pipeline, the one Azure Functions sets up (its OpenTelemetry guidance): ``host.json``'s
``"telemetryMode": "OpenTelemetry"`` makes the host export its requests with OpenTelemetry, and
``PYTHON_ENABLE_OPENTELEMETRY=true`` (Python 3.11's worker; ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``
for the newer library worker) makes the worker call ``configure_azure_monitor()`` once and run each
invocation in the host's trace context. This module never configures an exporter: it takes the worker's
tracer and meter, so the app's spans are children of the host's request and logs are sent once.

On when the worker's OpenTelemetry is on or ``MiddleTier__Telemetry=otel`` (an SDK set up by the process;
``shared.config.TelemetrySettings``); off, ``span()`` returns a shared null context and OpenTelemetry is
never imported. A connection string with the worker's telemetry off gets one warning (its spans would
go uncorrelated), not a second exporter. Attributes carry ids and outcomes, never a token.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, ContextManager

from .config import TelemetrySettings, load

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
        settings = load(TelemetrySettings)
        source = settings.enabled_by
        if source is not None:
            from opentelemetry import metrics, trace
            _state["tracer"] = trace.get_tracer("middletier")
            meter = metrics.get_meter("middletier")
            _state["counters"] = {
                name: meter.create_counter(name, description=description) for name, description in (
                    ("middletier.cache.hits", "access tokens served from the token cache"),
                    ("middletier.cache.misses", "token cache misses (an Entra call follows)"),
                    ("middletier.obo.calls", "On-Behalf-Of requests sent to Entra"),
                )}
            log.info("telemetry on (%s)", source)
        elif settings.connection_string:
            log.warning("APPLICATIONINSIGHTS_CONNECTION_STRING is set but the worker's OpenTelemetry is off: set "
                        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true (and telemetryMode OpenTelemetry in "
                        "host.json) to get the app's spans correlated with the host's requests")
        _state["enabled"] = source is not None
        return bool(_state["enabled"])


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
