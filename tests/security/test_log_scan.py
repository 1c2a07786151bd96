"""The session-end log scan finds each of the run's secrets in every form a log could hold it.

Each secret kind the run registers is planted, in each encoding, into a temporary log (inside a
longer line, as a log would carry it); the scanner must name it. Clean logs, identifiers (GUIDs)
and short values must pass. The planted files are written under tmp_path with a suffix other
than ``.log``, so the session's own scan never sees them.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Callable

import pytest

from ..secrets_registry import REGISTRY, SecretsRegistry, capture_process_log, forms

# The kinds of secret a run creates, with realistic values.
_JWT = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6ImRldnN0YWNrIn0."
        + base64.urlsafe_b64encode(json.dumps({"aud": "api://middletier", "oid": "x" * 36}).encode()).decode()
        .rstrip("=") + "." + base64.urlsafe_b64encode(os.urandom(256)).decode().rstrip("="))
SECRETS: dict[str, str | bytes] = {
    "access token": _JWT,
    "refresh token": "1.AXEA" + secrets.token_urlsafe(200),
    "client secret": "devstack-only~middletier~" + secrets.token_hex(16),
    "entra-shaped client secret": "abc8Q~" + secrets.token_urlsafe(26)[:34],
    "identity header": secrets.token_hex(16),
    "function key": secrets.token_urlsafe(32),
    "AES cache key (base64 setting)": base64.b64encode(os.urandom(32)).decode(),
    "AES cache key (bytes)": os.urandom(32),
    "Key Vault value": "kv/" + secrets.token_urlsafe(24) + "+=&?",
    "redis password": "p@ss:" + secrets.token_urlsafe(18),
}

# How a log could carry a value: form name -> encoder.
ENCODERS: dict[str, Callable[[bytes], str]] = {
    "raw": lambda b: b.decode(),
    "base64 (padded)": lambda b: base64.b64encode(b).decode(),
    "base64 (unpadded)": lambda b: base64.b64encode(b).decode().rstrip("="),
    "base64url (padded)": lambda b: base64.urlsafe_b64encode(b).decode(),
    "base64url (unpadded)": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    "base64 inside a longer blob": lambda b: base64.b64encode(b'{"secret": "' + b + b'"}').decode(),
    "base64url inside a longer blob": lambda b: base64.urlsafe_b64encode(b"x=" + b + b"&y").decode(),
    "hex": lambda b: b.hex(),
    "HEX": lambda b: b.hex().upper(),
    "percent-encoded": lambda b: urllib.parse.quote(b, safe=""),
    "percent-encoded (lower hex)": lambda b: "".join(
        c if c.isalnum() or c in "-._~" else f"%{ord(c):02x}" for c in b.decode()),
    "form-encoded (quote_plus)": lambda b: urllib.parse.quote_plus(b, safe=""),
}
CASES = [(kind, form) for kind, value in SECRETS.items() for form in ENCODERS
         if isinstance(value, str) or not (form == "raw" or form.startswith(("percent", "form")))]

LINE = "2026-11-25 20:00:00,000 DEBUG middletier.acquire request {} (cache miss)\n"
CLEAN = [
    "2026-11-25 20:00:00,000 INFO middletier.validate token accepted oid=e1d2c3b4-a5f6-4789-8a0b-c1d2e3f4a5b6 "
    "tid=6f4e2a1c-8b3d-4c5e-9f7a-1d2b3c4d5e6f client_id=9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b\n",
    "2026-11-25 20:00:00,001 DEBUG urllib3.connectionpool https://127.0.0.1:41969 \"POST /6f4e2a1c-8b3d-4c5e-9f7a-"
    "1d2b3c4d5e6f/oauth2/v2.0/token HTTP/1.1\" 200 4321\n",
    "2026-11-25 20:00:00,002 INFO azure.core Request URL: 'https://127.0.0.1:41033/secrets/middletier-secret/"
    "?api-version=7.4' Request headers: 'Authorization': 'REDACTED' 'x-ms-client-request-id': "
    "'0c5b6e2a-1f3d-4e5a-9b8c-7d6e5f4a3b2c'\n",
    "2026-11-25 20:00:00,003 INFO middletier refused: invalid_token (signature) version=0.3.17 "
    "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
    "2026-11-25 20:00:00,004 INFO host Executed 'Functions.Me' (Succeeded, Id=3f1d0c4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f, "
    "Duration=12ms)\n",
]


@pytest.fixture(scope="module")
def registry() -> SecretsRegistry:
    r = SecretsRegistry()
    for kind, value in SECRETS.items():
        r.add(kind, value)
    return r


@pytest.mark.parametrize("kind,form", CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_each_planted_secret_form_is_found(registry: SecretsRegistry, tmp_path: Path, kind: str, form: str) -> None:
    value = SECRETS[kind]
    planted = tmp_path / "planted.txt"
    planted.write_text("".join(CLEAN) + LINE.format(ENCODERS[form](
        value if isinstance(value, bytes) else value.encode())) + "".join(CLEAN))
    hits = registry.scan([planted])
    assert any(f": {kind} (" in hit for hit in hits), (kind, form, hits)


def test_a_clean_log_passes(registry: SecretsRegistry, tmp_path: Path) -> None:
    clean = tmp_path / "clean.txt"
    clean.write_text("".join(CLEAN) * 200)
    assert registry.scan([clean]) == []


def test_identifiers_and_short_values_are_not_secrets(tmp_path: Path) -> None:
    r = SecretsRegistry()
    r.add("client id", "9b1c7e42-3d5a-4f86-a0b2-6c8d9e0f1a2b")  # a GUID: an identifier
    r.add("short", "abc123")                                   # too short to tell from noise
    assert len(r) == 0
    log = tmp_path / "ids.txt"
    log.write_text("".join(CLEAN))
    assert r.scan([log]) == []


@pytest.mark.parametrize("name,text", [
    ("jwt", "Authorization: Bearer " + _JWT),
    ("jwt (base64)", "blob=" + base64.b64encode(_JWT.encode()).decode()),
    ("jwt (hex)", "blob=" + _JWT.encode().hex()),
    ("refresh token", "rt=0.AXEA" + "b" * 80),
    ("refresh token", "rt=1.AXEA" + "c" * 80),
    ("entra client secret", "secret=Xyz8Q~" + "a1B2c3D4e5" * 3 + "f6G7"),
    ("private key", "-----BEGIN PRIVATE KEY-----"),
])
def test_unregistered_secret_shapes_are_found_by_pattern(tmp_path: Path, name: str, text: str) -> None:
    planted = tmp_path / "shapes.txt"
    planted.write_text(CLEAN[0] + text + "\n" + CLEAN[1])
    assert name in {hit.split(": ")[1] for hit in SecretsRegistry().scan([planted])}


def test_every_form_of_a_value_is_long_enough_to_be_specific() -> None:
    for value in SECRETS.values():
        assert all(len(text) >= 16 for text in forms(value).values())


def test_the_process_log_captures_debug_records(tmp_path: Path) -> None:
    """The handler the session adds: DEBUG records of any logger reach the scanned file."""
    import logging
    path = tmp_path / "process.txt"
    root = logging.getLogger()
    level = root.level
    handler = capture_process_log(path)
    try:
        logging.getLogger("some.library").debug("token %s", SECRETS["function key"])
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
    r = SecretsRegistry()
    r.add("function key", SECRETS["function key"])
    assert r.scan([path]) == [f"{path}: function key (raw)"]


def test_the_session_registry_is_filled_by_the_fixtures(devstack: dict, admin: object) -> None:
    """The devstack's secrets and identity header, and tokens minted through Admin, are registered."""
    token = admin.mint(user="alice")  # type: ignore[attr-defined]
    values = REGISTRY.values()
    assert token in values
    assert devstack["identity_header"] in values
    assert all(s in values for s in devstack["apps"]["middletier-api"]["secrets"])
    assert any(name.startswith("certificate middletier-cert (Key Vault PFX) (base64)") for name in values.values())
