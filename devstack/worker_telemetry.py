"""What the Azure Functions Python worker does for OpenTelemetry, for the local host.

From azure-functions-python-worker (`azure_functions_worker/dispatcher.py`, 4.34.0:
`initialize_azure_monitor`, `configure_opentelemetry`, `_run_sync_func`; and the library worker's
`dispatcher.py`/`otel.py`):
- at start-up, with ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` (library worker) or
  ``PYTHON_ENABLE_OPENTELEMETRY=true`` (4.x worker), it calls ``configure_azure_monitor(
  connection_string=APPLICATIONINSIGHTS_CONNECTION_STRING, logger_name=PYTHON_AZURE_MONITOR_LOGGER_NAME
  or "")`` once, logging and carrying on when that fails;
- for every invocation, when OpenTelemetry is on, it extracts ``traceparent``/``tracestate`` from
  the invocation's ``context.trace_context`` (the host's request activity) and attaches that
  context in the thread that runs the function, so the app's spans are children of the host's
  request.

The local host has no request activity of its own to export; it makes one as the host would: a new
span id under the caller's ``traceparent`` (or a new trace), handed to the function as
``context.trace_context``.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

log = logging.getLogger("funchost")
SETTINGS = ("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "PYTHON_ENABLE_OPENTELEMETRY")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True)
class TraceContext:
    """``azure.functions.TraceContext`` as the worker builds it from the invocation request."""

    trace_parent: str
    trace_state: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


def invocation_trace_context(headers: Mapping[str, str]) -> TraceContext:
    """The host's request activity: a child of the caller's W3C ``traceparent`` when it sent a valid one."""
    match = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())
    if match and (set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}):
        match = None  # all-zero ids are invalid (W3C Trace Context)
    trace_id = match.group(1) if match else secrets.token_hex(16)
    state = headers.get("tracestate", "") if match else ""
    return TraceContext(f"00-{trace_id}-{secrets.token_hex(8)}-01", state)


class WorkerTelemetry:
    """Set up once per host process; ``run`` wraps each invocation."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        self.enabled = False
        self._propagator: Any = None
        self._context_api: Any = None
        if not any(str(env.get(name, "")).lower() == "true" for name in SETTINGS):
            return
        try:
            from opentelemetry import context as context_api
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            log.exception("Cannot import OpenTelemetry libraries.")
            return
        self._context_api, self._propagator = context_api, TraceContextTextMapPropagator()
        self.enabled = True
        if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            try:
                from azure.monitor.opentelemetry import configure_azure_monitor
                configure_azure_monitor(connection_string=env["APPLICATIONINSIGHTS_CONNECTION_STRING"],
                                        logger_name=env.get("PYTHON_AZURE_MONITOR_LOGGER_NAME", ""))
                log.info("Successfully configured Azure monitor distro.")
            except Exception:
                log.exception("Error initializing Azure monitor distro.")

    async def run_async(self, trace_context: TraceContext, function: Callable[[], Awaitable[Any]]) -> Any:
        """Await an async function in the invocation's trace context (the event loop's task)."""
        if not self.enabled:
            return await function()
        carrier = {"traceparent": trace_context.trace_parent, "tracestate": trace_context.trace_state}
        token = self._context_api.attach(self._propagator.extract(carrier))
        try:
            return await function()
        finally:
            self._context_api.detach(token)

    def run(self, trace_context: TraceContext, function: Callable[[], Any]) -> Any:
        """Run ``function`` in the invocation's trace context (in the calling thread)."""
        if not self.enabled:
            return function()
        carrier = {"traceparent": trace_context.trace_parent, "tracestate": trace_context.trace_state}
        token = self._context_api.attach(self._propagator.extract(carrier))
        try:
            return function()
        finally:
            self._context_api.detach(token)
