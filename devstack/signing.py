"""Token-signing keys (with rollover) and app certificates, kept in the state folder.

Entra publishes more than one key and signs with the newest; validators that pin a key or
skip the refetch on an unknown ``kid`` break at rollover. The emulator does the same so
that behaviour is testable: two keys published, the last one signs, ``rotate()`` adds one.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

PUBLISHED_KEYS = 2


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_keypair(common_name: str, days: int = 730) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A key and its self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return key, (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
                 .sign(key, hashes.SHA256()))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def jwk(self, issuer: str) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "x5c": [base64.b64encode(self.der).decode()],
            "cloud_instance_name": "microsoftonline.com",
            "issuer": issuer,
        }


def _load_key(pem: bytes) -> SigningKey:
    key = serialization.load_pem_private_key(pem, password=None)
    cert = x509.load_pem_x509_certificate(pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    return SigningKey(b64url(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()),
                      key, cert)


def _pem(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


class KeySet:
    """The signing keys, newest last. Thread-safe rotation; reads take a snapshot."""

    def __init__(self, folder: Path):
        self._folder = folder
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        files = sorted(folder.glob("signing-*.pem"))
        while len(files) < PUBLISHED_KEYS:
            files.append(self._create(len(files)))
        self._keys = [_load_key(f.read_bytes()) for f in files]

    def _create(self, index: int) -> Path:
        key, cert = _new_keypair("accounts.accesscontrol.windows.net")
        path = self._folder / f"signing-{index:06d}.pem"
        path.write_bytes(_pem(key, cert))
        path.chmod(0o600)
        return path

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    @property
    def published(self) -> list[SigningKey]:
        return list(self._keys[-PUBLISHED_KEYS:])

    def by_kid(self, kid: str) -> SigningKey | None:
        return next((k for k in self.published if k.kid == kid), None)

    def rotate(self) -> SigningKey:
        """Publish a new key and sign with it; the previous current key stays published."""
        with self._lock:
            index = int(sorted(self._folder.glob("signing-*.pem"))[-1].stem.split("-")[1]) + 1
            self._keys.append(_load_key(self._create(index).read_bytes()))
            return self._keys[-1]

    def sign(self, claims: dict[str, Any], *, x5t: bool = True, headers: dict[str, Any] | None = None) -> str:
        key = self.current
        base: dict[str, Any] = {"kid": key.kid, "x5t": key.kid} if x5t else {"kid": key.kid}
        merged = {k: v for k, v in {**base, **(headers or {})}.items() if v is not None}  # None removes
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=merged)


@dataclass(frozen=True)
class AppCertificate:
    """A client certificate registered on an app: files for clients, thumbprints for us."""

    name: str
    pem_path: Path          # private key + certificate, PEM
    pfx_path: Path          # PKCS#12 without password, as Key Vault stores certificates
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def sha1_hex(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def x5t(self) -> str:
        return b64url(hashlib.sha1(self.der).digest())

    @property
    def x5t_s256(self) -> str:
        return b64url(hashlib.sha256(self.der).digest())


def ensure_app_certificate(folder: Path, name: str) -> AppCertificate:
    folder.mkdir(parents=True, exist_ok=True)
    pem_path, pfx_path = folder / f"{name}.pem", folder / f"{name}.pfx"
    if not pem_path.is_file():
        key, cert = _new_keypair(name, days=365)
        pem_path.write_bytes(_pem(key, cert))
        pem_path.chmod(0o600)
        pfx_path.write_bytes(pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, None, serialization.NoEncryption()))
        pfx_path.chmod(0o600)
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return AppCertificate(name, pem_path, pfx_path, cert)


def json_b64url(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class KeyRing:
    """Entra's signing keys: the common set every tenant uses, plus tenant-specific sets.

    A tenant with its own key (as with app-specific signing keys in Entra) signs its tokens with it
    and publishes it with a concrete ``issuer``; common keys carry the ``{tenantid}`` template.
    Validators must check that a key's issuer matches the token's tenant (multi-tenant key confusion).
    """

    def __init__(self, folder: Path, own_key_tenants: list[str]):
        self.common = KeySet(folder)
        self.tenants = {tid: KeySet(folder / tid) for tid in own_key_tenants}

    @property
    def published(self) -> list[SigningKey]:
        return self.common.published

    def rotate(self) -> SigningKey:
        return self.common.rotate()

    def by_kid(self, kid: str) -> SigningKey | None:
        return next((k for ks in (self.common, *self.tenants.values()) if (k := ks.by_kid(kid)) is not None), None)

    def sign(self, claims: dict[str, Any], *, x5t: bool = True, headers: dict[str, Any] | None = None,
             tenant: str | None = None) -> str:
        """Sign with the key of the token's tenant (``tid``), or of ``tenant`` when given."""
        keyset = self.tenants.get(tenant or str(claims.get("tid")), self.common)
        return keyset.sign(claims, x5t=x5t, headers=headers)

    def jwks(self, instance: str, tenant_id: str | None) -> dict[str, Any]:
        """Common keys with the issuer template; a tenant's own keys (all of them for common endpoints)."""
        keys = [k.jwk(f"{instance}/{{tenantid}}/v2.0") for k in self.common.published]
        for tid, keyset in self.tenants.items():
            if tenant_id is None or tenant_id == tid:
                keys += [k.jwk(f"{instance}/{tid}/v2.0") for k in keyset.published]
        return {"keys": keys}
