"""shared/logctx.py: the request's trace id on every log line of the app's loggers."""
from __future__ import annotations

import logging

import pytest

from shared import logctx


def test_trace_ids_reach_child_loggers(caplog: pytest.LogCaptureFixture) -> None:
    child = logging.getLogger("middletier.tokens")
    logctx.install()
    with caplog.at_level(logging.INFO, "middletier"), logctx.tracing("abc-123"):
        child.info("reloading the credential")
    assert "[trace=abc-123] reloading the credential" in caplog.text
