"""Local certificate authority and server certificate for the devstack's HTTPS endpoints.

Microsoft SDKs refuse plain-http authorities and bearer tokens over http, so the emulators serve TLS
from a CA generated once per checkout. Clients get ``ca.pem``, or ``bundle.pem`` (the machine's roots
plus ours): ``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify``, so pointing that
variable at the bundle is the one setting that works for MSAL, azure-core and ``requests`` at once.

The server certificate names ``localhost``, the loopback addresses and the public names the devstack
is started with (``up --name``; see resolve.py); it is reissued (same CA) whenever those names change.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    bundle: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "middletier devstack"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, now: dt.datetime,
             days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days)))


def _issue_ca(now: dt.datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("middletier devstack local CA")
    cert = (
        _builder(name, name, key, now, 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_names(extra: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """DNS names of the server certificate: ``localhost`` and ``extra`` (lower case, no duplicates)."""
    return tuple(dict.fromkeys([*SERVER_NAMES, *(n.strip().lower().rstrip(".") for n in extra if n.strip())]))


def _issue_server(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate,
                  now: dt.datetime, names: tuple[str, ...]) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        # Browsers cap leaf lifetimes; 397 days keeps Chromium (SPA tests) happy.
        _builder(_name("localhost"), ca_cert.subject, key, now, 397)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def system_roots() -> bytes:
    """The roots this machine already trusts, so the bundle does not break real hosts."""
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        path = os.environ.get(var)
        if path and Path(path).is_file():
            return Path(path).read_bytes()
    try:
        import certifi
        return Path(certifi.where()).read_bytes()
    except ImportError:  # pragma: no cover - requests always brings certifi
        return b""


def _leaf_is_current(path: Path, now: dt.datetime, names: tuple[str, ...]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return set(san.get_values_for_type(x509.DNSName)) == set(names) \
        and cert.not_valid_after_utc - now > dt.timedelta(days=7)


def ensure_tls(folder: Path, names: tuple[str, ...] | list[str] = ()) -> TlsFiles:
    """Create the CA and server certificate once; reuse them on later runs.

    Reuse matters: users may have imported ``ca.pem`` into a browser or OS store. ``names``: public
    host names the server certificate must also cover (see the module docstring).
    """
    dns_names = server_names(names)
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem",
                     folder / "bundle.pem")
    ca_key_path = folder / "ca-key.pem"
    now = dt.datetime.now(dt.timezone.utc)
    if not (files.ca_cert.is_file() and ca_key_path.is_file()):
        ca_key, ca_cert = _issue_ca(now)
        _write_private(ca_key_path, _pem_key(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        files.server_cert.unlink(missing_ok=True)
    if not _leaf_is_current(files.server_cert, now, dns_names) or not files.server_key.is_file():
        issue_leaf(folder, list(dns_names), folder)  # server.pem, server-key.pem
    ca_pem = files.ca_cert.read_bytes()
    roots = system_roots().replace(ca_pem, b"")  # REQUESTS_CA_BUNDLE may point at our bundle already
    bundle = roots.rstrip(b"\n") + b"\n" + ca_pem if roots.strip() else ca_pem
    if not files.bundle.is_file() or files.bundle.read_bytes() != bundle:
        files.bundle.write_bytes(bundle)
    return files


def issue_leaf(tls_folder: Path, names: list[str], out: Path) -> tuple[Path, Path]:
    """A server certificate from the devstack's CA (in ``tls_folder``) for ``names``, written to
    ``out``: for a real server started beside the devstack under a public name (Azurite serving
    ``<account>.blob.core.windows.net``, redis-server with TLS) so clients trust it as they do the devstack."""
    ca_key = serialization.load_pem_private_key((tls_folder / "ca-key.pem").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((tls_folder / "ca.pem").read_bytes())
    key, cert = _issue_server(ca_key, ca_cert, dt.datetime.now(dt.timezone.utc), server_names(names))  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "server-key.pem", _pem_key(key))
    (out / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out / "server.pem", out / "server-key.pem"
