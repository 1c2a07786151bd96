"""Every recording names where it came from (repository, path, 40-hex commit)."""
from __future__ import annotations

import pytest

from tests.conformance import recordings


@pytest.mark.parametrize("source,name", recordings.every())
def test_each_recording_has_provenance_and_a_response(source: str, name: str) -> None:
    record = recordings.load(source, name)
    assert isinstance(record["response"]["status"], int)


def test_shape_keeps_names_types_and_parsed_formats() -> None:
    assert recordings.shape({"expires_on": "1700000000", "expires_in": 3599, "id": "https://v/x",
                             "ids": [], "t": "2024-01-02T03:04:05Z", "ok": True}) == {
        "expires_on": "integer-string", "expires_in": "number", "id": "url", "ids": [],
        "t": "timestamp", "ok": "boolean"}
    assert recordings.shape(["login.microsoftonline.com", "eyJ0eXAiOiJKV1QifQ.eyJhIjoxfQ.c2ln"]) == ["string"]
    assert recordings.string_format("login.microsoftonline.com") == "string"
    assert recordings.string_format("eyJ0eXAiOiJKV1QifQ.eyJhIjoxfQ.c2ln") == "jwt"
