"""Correlation ids on every log line of a request, without passing them through every call.

The id is the caller's ``x-ms-client-request-id`` (or ``client-request-id``) when it is a
plain token of at most 64 characters, else a new UUID; it is echoed in the response so a user
can quote it. A filter on the ``middletier`` logger prefixes each record with it.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import uuid
from typing import Iterator, Mapping

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEADERS = ("x-ms-client-request-id", "client-request-id", "x-correlation-id")


def trace_id_from(headers: Mapping[str, str]) -> str:
    for name in HEADERS:
        value = headers.get(name)
        if value and _SAFE.fullmatch(value):
            return value
    return str(uuid.uuid4())


@contextlib.contextmanager
def tracing(trace_id: str) -> Iterator[str]:
    token = _trace.set(trace_id)
    try:
        yield trace_id
    finally:
        _trace.reset(token)


class TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        trace = _trace.get()
        if trace and not getattr(record, "_traced", False):
            record.msg = f"[trace={trace}] {record.msg}"
            record._traced = True  # type: ignore[attr-defined]
        return True


def install() -> None:
    """Attach the filter to ``middletier`` and every ``middletier.*`` logger (a logger's filters do
    not run for records of its children, so each needs its own)."""
    names = ["middletier"] + [n for n in logging.root.manager.loggerDict if n.startswith("middletier.")]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TraceFilter) for f in logger.filters):
            logger.addFilter(TraceFilter())
