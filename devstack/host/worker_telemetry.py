"""What the Azure Functions Python worker does for OpenTelemetry, for the local host.

The worker for Python 3.11 (infra/main.bicep's runtime) is azure-functions-python-worker 4.x
(`azure_functions_worker/dispatcher.py`, 4.34.0: `_handle__worker_init_request`, `initialize_azure_monitor`,
`configure_opentelemetry`, `_run_sync_func`). With ``PYTHON_ENABLE_OPENTELEMETRY=true``:
- at its init request, before it loads functions, it calls ``configure_azure_monitor(connection_string=
  APPLICATIONINSIGHTS_CONNECTION_STRING, logger_name=PYTHON_AZURE_MONITOR_LOGGER_NAME or "")`` once; when
  that raises (no connection string, no distro) it logs and carries on without Azure Monitor;
- only with Azure Monitor, it attaches each invocation's ``context.trace_context`` (the host's request
  activity) where the function runs, so the app's spans are children of the host's request.
The newer library worker (later Pythons) reads ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`` instead; 4.x
ignores it; the template sets both. The local host makes the request activity as the host would: a new
span id under the caller's ``traceparent`` (or a new trace).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

log = logging.getLogger("funchost")
SETTING = "PYTHON_ENABLE_OPENTELEMETRY"  # what the 4.x worker reads
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
    """Set up once per host process; ``attached`` wraps each invocation."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        self.enabled = False
        self._propagator: Any = None
        self._context_api: Any = None
        if str(env.get(SETTING, "")).lower() != "true":
            return
        try:
            from opentelemetry import context as context_api
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            log.exception("Cannot import OpenTelemetry libraries.")
            return
        self._context_api, self._propagator = context_api, TraceContextTextMapPropagator()
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor
            configure_azure_monitor(connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"),
                                    logger_name=env.get("PYTHON_AZURE_MONITOR_LOGGER_NAME", ""))
        except ImportError:
            log.exception("Cannot import Azure Monitor distro.")
            return
        except Exception:
            log.exception("Error initializing Azure monitor distro.")
            return
        log.info("Successfully configured Azure monitor distro.")
        self.enabled = True  # the worker's _azure_monitor_available

    @contextlib.contextmanager
    def attached(self, trace_context: TraceContext) -> Iterator[None]:
        """The invocation's trace context, attached in the thread or task that runs the function."""
        if not self.enabled:
            yield
            return
        carrier = {"traceparent": trace_context.trace_parent, "tracestate": trace_context.trace_state}
        token = self._context_api.attach(self._propagator.extract(carrier))
        try:
            yield
        finally:
            self._context_api.detach(token)
