"""Golden recordings of real Azure traffic, and the comparison the conformance tests make.

A recording is one JSON file under tests/conformance/recordings/<source>/ holding one real
request/response pair, sanitised, taken from a public source (never invented):

    {"source": {"repo": "owner/name", "path": "path/in/repo", "commit": "<40 hex>",
                "note": "which test or document it comes from"},
     "request": {"method": "GET", "url": "https://.../path?query", "headers": {...}, "body": ...},
     "response": {"status": 200, "headers": {...}, "body": <JSON value or string>}}

The emulators' values differ from Azure's; their shapes must not. `shape()` reduces a JSON value to
its structure (member names, JSON types, and the format of strings that clients parse: GUIDs,
timestamps, URLs, JWTs, base64url, numbers written as strings), and the tests compare those."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent / "recordings"

_FORMATS: list[tuple[str, re.Pattern[str]]] = [
    ("guid", re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    ("timestamp", re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")),
    ("url", re.compile(r"^https?://")),
    # a JOSE header is a JSON object: its base64url starts "eyJ" ('{"'), unlike a host name's labels
    ("jwt", re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")),
    ("integer-string", re.compile(r"^\d+$")),
]


def string_format(value: str) -> str:
    """The format of a string clients parse, or "string"."""
    return next((name for name, pattern in _FORMATS if pattern.match(value)), "string")


def shape(value: Any) -> Any:
    """The structure of a JSON value: objects keep their member names, arrays the shape of their
    first element, scalars become their JSON type (strings: their format)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return string_format(value)


def load(source: str, name: str) -> dict[str, Any]:
    """One recording, by source folder and file stem; its provenance is required."""
    record = json.loads((ROOT / source / f"{name}.json").read_text())
    provenance = record["source"]
    assert provenance["repo"] and provenance["path"] and re.fullmatch(r"[0-9a-f]{40}", provenance["commit"]), name
    return record


def every() -> list[tuple[str, str]]:
    """(source, name) of every recording on disk."""
    return sorted((p.parent.name, p.stem) for p in ROOT.glob("*/*.json"))


def differences(recorded: Any, emulated: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    """Where two shapes part: {path: (recorded, emulated)}; a member only one side has is "(absent)"
    on the other. Arrays compare their first elements; an empty array matches only an empty one
    (an emulator that always answers [] never shows the shape of an item)."""
    out: dict[str, tuple[Any, Any]] = {}
    if isinstance(recorded, dict) and isinstance(emulated, dict):
        for key in sorted(recorded.keys() | emulated.keys()):
            where = f"{path}.{key}" if path else key
            if key not in emulated:
                out[where] = (recorded[key], "(absent)")
            elif key not in recorded:
                out[where] = ("(absent)", emulated[key])
            else:
                out.update(differences(recorded[key], emulated[key], where))
    elif isinstance(recorded, list) and isinstance(emulated, list) and recorded and emulated:
        out.update(differences(recorded[0], emulated[0], path + "[]"))
    elif recorded != emulated:
        out[path] = (recorded, emulated)
    return out


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type as clients compare it: the media type and its parameters, lower-cased."""
    kind, *params = [p.strip() for p in value.split(";")]
    pairs = dict(p.split("=", 1) for p in params if "=" in p)
    return kind.lower(), {k.strip().lower(): v.strip().lower() for k, v in pairs.items()}


def same_media_type(recorded: str, emulated: str) -> bool:
    """The same media type, and the recorded charset if there is one."""
    (kind, params), (got_kind, got_params) = media_type(recorded), media_type(emulated)
    return kind == got_kind and all(got_params.get(p) == v for p, v in params.items() if p == "charset")


def challenge_params(value: str) -> dict[str, str]:
    """The auth-params of one ``Bearer`` challenge (quoted values, commas inside quotes kept)."""
    scheme, _, rest = value.partition(" ")
    assert scheme.lower() == "bearer", value
    params, i = {}, 0
    while i < len(rest):
        eq = rest.index("=", i)
        name = rest[i:eq].strip(" ,")
        if rest[eq + 1] == '"':
            end = rest.index('"', eq + 2)
            params[name] = rest[eq + 2:end]
            i = end + 1
        else:
            end = rest.find(",", eq)
            end = len(rest) if end < 0 else end
            params[name] = rest[eq + 1:end].strip()
            i = end + 1
    return params

