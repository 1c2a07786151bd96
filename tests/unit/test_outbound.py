"""shared/outbound.py: what the app makes of an upstream's Retry-After."""
from __future__ import annotations

import pytest

from shared.outbound import parse_retry_after


@pytest.mark.parametrize("value,expected", [("120", 120), ("0", 0), ("99999", 3600), ("²", None), ("", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", None), (None, None), ("-5", None)])
def test_retry_after_parsing_never_raises(value: str | None, expected: int | None) -> None:
    assert parse_retry_after(value) == expected
