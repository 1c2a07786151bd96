"""Correlation ids on every log line of a request, without passing them through every call.

The id is the caller's ``x-ms-client-request-id`` (or ``client-request-id``) when it is a
plain token of at most 64 characters, else a new UUID; it is echoed in the response so a user
can quote it. A filter on the ``middletier`` loggers prefixes each record with it and escapes
control characters in what the record carries (``printable``): request text can't forge a line.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import unicodedata
from typing import Mapping

_trace: contextvars.ContextVar[tracing | None] = contextvars.ContextVar("trace_id", default=None)
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEADERS = ("x-ms-client-request-id", "client-request-id", "x-correlation-id")


def trace_id_from(headers: Mapping[str, str]) -> str:
    for name in HEADERS:
        # ``in`` first: azure.functions' headers are a Mapping whose ``get`` of a missing name raises and catches
        if name in headers and (value := headers[name]) and _SAFE.fullmatch(value):
            return value
    return new_trace_id()


def new_trace_id() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` writes it at a quarter of its instructions (its
    ``UUID`` object goes through an int and back; this is on every request without a client id)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class tracing:  # noqa: N801 - used as a function: ``with logctx.tracing(trace_id) as trace_id:``
    """Log lines written inside the block carry ``trace_id`` (a class: ``@contextmanager`` costs twice as much).
    The instance itself is the request's identity (``current_request``)."""
    __slots__ = ("trace_id", "_token")

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id

    def __enter__(self) -> str:
        self._token = _trace.set(self)
        return self.trace_id

    def __exit__(self, *exc: object) -> None:
        _trace.reset(self._token)


def current_request() -> object | None:
    """An object that is this request's alone (its ``tracing`` scope), None outside a request: it tells two requests
    apart where a thread doesn't (the worker's pool runs many requests, one after another, on each thread), and
    unlike a trace id, which a client may send twice."""
    return _trace.get()


def printable(text: str) -> str:
    """``text`` with every control, format, line/paragraph-separator or unassigned character written
    as an escape (``\\x0d``, ``\\u2028``): a value logged can never end a line, start a forged one,
    carry a terminal escape sequence or a NUL, or hide text with bidi overrides."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if (ch.isprintable() and ch not in "\u2028\u2029") or unicodedata.category(ch) == "Zs":
            out.append(ch)  # Zs: a non-breaking or wide space, harmless, shown as is
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _printable_arg(value: object) -> object:
    if value is None or isinstance(value, (int, float)):
        return value  # numbers (and %d/%f formats) stay as they are
    return printable(value if isinstance(value, str) else str(value))  # an exception's text included


class TraceFilter(logging.Filter):
    """Prefixes each record with the request's correlation id and escapes its message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_traced", False):
            return True
        if isinstance(record.msg, str):
            record.msg = printable(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_printable_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _printable_arg(v) for k, v in record.args.items()}
        if (scope := _trace.get()) is not None:
            record.msg = f"[trace={scope.trace_id}] {record.msg}"
        record._traced = True  # type: ignore[attr-defined]
        return True


def install() -> None:
    """Attach the filter to ``middletier`` and every ``middletier.*`` logger (a logger's filters do
    not run for records of its children, so each needs its own)."""
    for name in ["middletier"] + [n for n in logging.root.manager.loggerDict if n.startswith("middletier.")]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TraceFilter) for f in logger.filters):
            logger.addFilter(TraceFilter())
