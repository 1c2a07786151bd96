"""The run's own secrets, and a log scan that looks for each of them in every encoding.

Fixtures and helpers add what the run creates (tokens minted or obtained through MSAL, the
devstack's client secrets and identity header, function keys, Key Vault values and certificate
PFXs, signing/TLS private keys, AES keys, passwords in connection strings) to ``REGISTRY``; the
session-end scan in tests/conftest.py looks for each value raw, base64 (standard and URL-safe,
padded or not, at any byte alignment so a secret inside a longer encoded blob is found too), hex
(lower and upper case) and percent-encoded, and for secret shapes by pattern (JWTs, Entra refresh
tokens and client secrets, PEM private keys) whether or not the run registered them.

The search is linear in the size of the logs: every form of every value is indexed by its first
``W`` windows of ``W`` characters, and the text is probed only at offsets that are multiples of
``W`` (any occurrence of a form at least ``2W - 1`` long covers one such offset); each probe hit
is confirmed by a full comparison. Shorter forms are few and searched with ``in``.
"""
from __future__ import annotations

import base64
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping

MIN_LENGTH = 16          # shorter values are not treated as secrets (false positives)
W = 16                   # probe window
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Secret shapes found by pattern, registered or not.
SECRET_PATTERNS = {
    "jwt": r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    "jwt (base64)": r"ZXlK[A-Za-z0-9+/_-]{40,}",                        # base64("eyJ...")
    "jwt (hex)": r"(?i)65794a[0-9a-f]{40,}",                             # hex("eyJ...")
    "devstack secret or password": r"devstack-only~",
    "private key": r"PRIVATE KEY",
    "refresh token": r"(?<![A-Za-z0-9_.-])[01]\.[A-Za-z0-9_-]{60,}",     # Entra: 0.AXEA... / 1.AXEA...
    "entra client secret": r"(?<![A-Za-z0-9_.~-])[A-Za-z0-9_.-]{3}[0-9][A-Za-z]~[A-Za-z0-9_.~-]{34}(?![A-Za-z0-9_.~-])",
}
_PATTERNS = {name: re.compile(p) for name, p in SECRET_PATTERNS.items()}

# Setting names whose values are secrets (local.settings.json Values, host overrides).
SECRET_SETTING = re.compile(r"(?i)(secret|password|encryptionkey|accountkey|identity_header|(^|__)key|sas|sastoken)$")
CONNECTION_SECRET = re.compile(r"(?i)(?:accountkey|password|sharedaccesssignature|sig)=([^;&,\s]+)")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@/\s]+)@")


def _base64_forms(raw: bytes) -> set[str]:
    """Standard and URL-safe base64 of ``raw`` at each of the three byte alignments it can have
    inside a longer encoded blob, cut to whole groups (every padded, unpadded or embedded
    encoding of ``raw`` contains one of them)."""
    forms = set()
    for shift in range(3):
        u = raw[shift:]
        u = u[: len(u) // 3 * 3]
        if not u:
            continue
        std = base64.b64encode(u).decode()
        forms.add(std)
        forms.add(std.replace("+", "-").replace("/", "_"))
    # Whole values too, padded and unpadded (when the value is not a multiple of 3 bytes).
    std = base64.b64encode(raw).decode()
    forms.update({std, std.rstrip("="), std.replace("+", "-").replace("/", "_").rstrip("=")})
    return forms


def forms(value: str | bytes) -> dict[str, str]:
    """Every form of ``value`` the scan looks for: form name -> text."""
    raw = value if isinstance(value, bytes) else value.encode()
    out: dict[str, str] = {}
    if isinstance(value, str):
        out["raw"] = value
        quoted = urllib.parse.quote(value, safe="")
        if quoted != value:
            out["percent"] = quoted
            out["percent (lower hex)"] = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)
            plus = urllib.parse.quote_plus(value, safe="")
            if plus != quoted:
                out["percent (form)"] = plus
    for i, b64 in enumerate(sorted(_base64_forms(raw))):
        out[f"base64 #{i}"] = b64
    out["hex"] = raw.hex()
    out["HEX"] = raw.hex().upper()
    return {name: text for name, text in out.items() if len(text) >= MIN_LENGTH}


def _form_kind(name: str) -> str:
    return name.split(" #")[0].split(" (")[0].lower()


class SecretsRegistry:
    """Thread-safe set of the run's secret values, each with a name saying where it came from."""

    def __init__(self) -> None:
        self._values: dict[str | bytes, str] = {}
        self._lock = threading.Lock()
        self._index: tuple[int, dict[str, list[tuple[int, str, str]]], list[tuple[str, str]]] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> dict[str | bytes, str]:
        with self._lock:
            return dict(self._values)

    def add(self, name: str, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.add(f"{name}[{i}]", v)
            return
        if not isinstance(value, (str, bytes)) or len(value) < MIN_LENGTH:
            return
        if isinstance(value, str) and GUID.match(value.strip()):
            return  # client ids, tenant ids, secret ids: identifiers, not secrets
        with self._lock:
            self._values.setdefault(value, name)

    # --- where the run's secrets come from --------------------------------------------------------
    def add_token_response(self, source: str, response: Mapping[str, Any] | None) -> None:
        """An OAuth/admin answer: access, refresh and ID tokens (``access_tokens`` from bulk mints)."""
        if not isinstance(response, Mapping):
            return
        for field in ("access_token", "refresh_token", "id_token", "access_tokens", "client_assertion"):
            if field in response:
                self.add(f"{source} {field}", response[field])

    def add_devstack(self, info: Mapping[str, Any]) -> None:
        """A devstack's ready info: app client secrets, the managed-identity header, and the state
        folder's keys (certificate PFXs, which Key Vault serves base64, and private keys)."""
        for app, desc in (info.get("apps") or {}).items():
            self.add(f"client secret of {app}", desc.get("secrets") or [])
            for cert in desc.get("certificates") or []:
                self.add_file(f"certificate {cert.get('name')} (Key Vault PFX)", cert.get("pfx"), pfx=True)
        self.add("identity header", info.get("identity_header"))
        if info.get("state"):
            self.add_state_folder(Path(info["state"]))

    def add_state_folder(self, state: Path) -> None:
        for pem in list(state.glob("**/*.pem")):
            self.add_pem(f"private key {pem.name}", pem)
        for pfx in state.glob("**/*.pfx"):
            self.add_file(f"PFX {pfx.name}", pfx, pfx=True)
        key = state / "refresh-token.key"
        if key.is_file():
            self.add("refresh-token sealing key", key.read_bytes())
        self.add_function_keys(state / "functions-keys.json")

    def add_pem(self, name: str, path: Path) -> None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return
        for block in re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)-----END", text, re.S):
            lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
            self.add(name, "".join(lines))
            self.add(name + " (first line)", lines[0][16:] if lines else "")  # past the common ASN.1 prefix
            try:
                self.add(name + " (DER)", base64.b64decode("".join(lines)))
            except ValueError:
                pass

    def add_file(self, name: str, path: Any, *, pfx: bool = False) -> None:
        try:
            data = Path(path).read_bytes()
        except (OSError, TypeError):
            return
        self.add(name, data)
        if pfx:
            self.add(name + " (base64)", base64.b64encode(data).decode())

    def add_function_keys(self, keys: Any) -> None:
        """A host's function keys: the ready line's ``keys`` or its functions-keys.json."""
        if isinstance(keys, (str, Path)):
            import json
            try:
                keys = json.loads(Path(keys).read_text())
            except (OSError, ValueError):
                return
        for name, value in (keys or {}).items():
            self.add(f"function key {name}", value)

    def add_settings(self, source: str, values: Mapping[str, Any]) -> None:
        """App settings: secret-named values, and passwords/keys inside connection strings."""
        for name, value in values.items():
            if not isinstance(value, str):
                continue
            if SECRET_SETTING.search(name) and not value.startswith("@Microsoft.KeyVault("):
                self.add(f"{source} {name}", value)
            for m in CONNECTION_SECRET.finditer(value):
                self.add(f"{source} {name} (connection secret)", urllib.parse.unquote(m.group(1)))
            for m in URL_PASSWORD.finditer(value):
                self.add(f"{source} {name} (URL password)", urllib.parse.unquote(m.group(1)))

    def add_admin_call(self, path: str, body: Mapping[str, Any] | None, answer: Any) -> None:
        """A devstack admin call: minted tokens, rotated secrets, Key Vault values set by tests."""
        if isinstance(answer, Mapping):
            self.add_token_response(f"admin {path}", answer)
            if path.startswith("/rotate/secret"):
                self.add("rotated client secret", answer.get("value"))
        if body and path.startswith("/keyvault/secret"):
            self.add(f"Key Vault secret {body.get('name')}", body.get("value"))

    # --- the scan ----------------------------------------------------------------------------------
    def _built_index(self) -> tuple[dict[str, list[tuple[int, str, str]]], list[tuple[str, str]]]:
        values = self.values()
        if self._index is not None and self._index[0] == len(values):
            return self._index[1], self._index[2]
        windows: dict[str, list[tuple[int, str, str]]] = {}
        short: list[tuple[str, str]] = []
        for value, name in values.items():
            for kind, text in forms(value).items():
                label = f"{name} ({kind})"
                if len(text) >= 2 * W - 1:
                    for offset in range(W):
                        windows.setdefault(text[offset:offset + W], []).append((offset, text, label))
                else:
                    short.append((text, label))
        self._index = (len(values), windows, short)
        return windows, short

    def find(self, text: str) -> list[str]:
        """Names (with form) of registered values found in ``text``."""
        windows, short = self._built_index()
        found: dict[str, None] = {}
        if windows:
            get = windows.get
            for q in range(0, max(len(text) - W + 1, 0), W):
                hits = get(text[q:q + W])
                if hits:
                    for offset, needle, label in hits:
                        start = q - offset
                        if start >= 0 and text.startswith(needle, start):
                            found[label] = None
        for needle, label in short:
            if needle in text:
                found[label] = None
        return list(found)

    def scan(self, paths: Iterable[Path], extra: Mapping[str, str] | None = None) -> list[str]:
        """Every secret found in ``paths``: by pattern, registered values in every form, ``extra``
        (exact strings). One line per hit: ``path: what``."""
        hits = []
        for path in paths:
            try:
                text = Path(path).read_text(errors="replace")
            except OSError:
                continue
            for name, pattern in _PATTERNS.items():
                for match in pattern.finditer(text):
                    hits.append(f"{path}: {name}: {match.group(0)[:24]}...")
            for label in self.find(text):
                hits.append(f"{path}: {label}")
            for name, value in (extra or {}).items():
                if value and value in text:
                    hits.append(f"{path}: {name}")
        return hits


REGISTRY = SecretsRegistry()


def hook_msal(registry: SecretsRegistry = REGISTRY) -> None:
    """Register every token MSAL receives in this process (each goes through TokenCache.add)."""
    import msal
    if getattr(msal.TokenCache.add, "_registers_secrets", False):
        return
    original = msal.TokenCache.add

    def add(self: Any, event: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        registry.add_token_response("MSAL", event.get("response"))
        return original(self, event, *args, **kwargs)

    add._registers_secrets = True  # type: ignore[attr-defined]
    msal.TokenCache.add = add  # type: ignore[method-assign]


def hook_sealer(registry: SecretsRegistry = REGISTRY) -> None:
    """Register every AES key a Sealer is built with in this process (TokenCache__EncryptionKey)."""
    from shared.token_cache import sealing
    if getattr(sealing.Sealer.__init__, "_registers_secrets", False):
        return
    original = sealing.Sealer.__init__

    def init(self: Any, key: bytes) -> None:
        registry.add("AES cache key (Sealer)", key)
        original(self, key)

    init._registers_secrets = True  # type: ignore[attr-defined]
    sealing.Sealer.__init__ = init  # type: ignore[method-assign]


def capture_process_log(path: Path) -> Any:
    """Every log record of this (pytest) process, DEBUG and up, into ``path`` (scanned at the end)."""
    import logging
    handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Tests drive unmodified MSAL client flows (auth code + PKCE) in this process, and MSAL writes the
    # authorization response and each token request's body (code, code_verifier) at DEBUG: a client
    # library's own choice, which no part of this project turns on. MSAL stays at INFO here, as in
    # the desktop sample (clients/desktop/cli.py); the hosts' logs keep MSAL at DEBUG and are scanned.
    logging.getLogger("msal").setLevel(logging.INFO)
    return handler
