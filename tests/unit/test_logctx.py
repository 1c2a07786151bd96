"""shared/logctx.py: the request's trace id on every log line of the app's loggers."""
from __future__ import annotations

import logging
import uuid

import pytest

from shared import logctx


def test_trace_ids_reach_child_loggers(caplog: pytest.LogCaptureFixture) -> None:
    child = logging.getLogger("middletier.tokens")
    logctx.install()
    with caplog.at_level(logging.INFO, "middletier"), logctx.tracing("abc-123"):
        child.info("reloading the credential")
    assert "[trace=abc-123] reloading the credential" in caplog.text


def test_a_new_trace_id_is_a_random_version_4_uuid_in_its_canonical_text() -> None:
    ids = {logctx.new_trace_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert logctx.trace_id_from({}) not in ids and uuid.UUID(logctx.trace_id_from({})).version == 4
    # every bit outside version and variant varies
    bits = [int(uuid.UUID(t)) for t in ids]
    varying = 0
    for b in bits:
        varying |= b ^ bits[0]
    assert bin(varying).count("1") == 128 - 6
