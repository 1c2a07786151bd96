"""devstack/resolve.py: real host names -> loopback ports inside one process; and the TLS names."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import requests
from cryptography import x509

from devstack import resolve
from devstack.tls import ensure_tls


def test_parse_and_format_round_trip() -> None:
    spec = "Login.MicrosoftOnline.com.=127.0.0.1:8443, *.vault.azure.net=127.0.0.1:8445,graph.test=127.0.0.1,v6.test=[::1]:9"
    mapping = resolve.parse(spec)
    assert mapping == {"login.microsoftonline.com": ("127.0.0.1", 8443), "*.vault.azure.net": ("127.0.0.1", 8445),
                       "graph.test": ("127.0.0.1", None), "v6.test": ("::1", 9)}
    assert resolve.parse(resolve.format_spec(mapping)) == mapping
    assert resolve.parse("") == {}


@pytest.mark.parametrize("bad", ["nohost", "a.test=", "=127.0.0.1", "a.test=not-an-ip", "a.test=127.0.0.1:0",
                                 "a.test=127.0.0.1:99999", "*=127.0.0.1", "*a.test=127.0.0.1", "a.test=[::1]x"])
def test_parse_refuses_what_it_cannot_honour(bad: str) -> None:
    with pytest.raises(ValueError):
        resolve.parse(bad)


def test_lookup_exact_wins_then_longest_wildcard() -> None:
    table = resolve.parse("*.azure.net=127.0.0.1:1,*.vault.azure.net=127.0.0.1:2,kv.vault.azure.net=127.0.0.1:3")
    assert resolve.lookup("KV.vault.azure.net.", table) == ("127.0.0.1", 3)
    assert resolve.lookup("other.vault.azure.net", table) == ("127.0.0.1", 2)
    assert resolve.lookup("a.b.vault.azure.net", table) == ("127.0.0.1", 2)
    assert resolve.lookup("x.azure.net", table) == ("127.0.0.1", 1)
    assert resolve.lookup("vault.azure.net.evil.test", table) is None
    assert resolve.lookup("azure.net", table) is None


@pytest.fixture
def server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = (self.headers.get("Host") or "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_every_client_stack_reaches_the_mapped_port_under_the_real_name(server: int, monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest
    with resolve.mapped(f"api.orders.example.test=127.0.0.1:{server}"):
        addr = socket.getaddrinfo("api.orders.example.test", 443, 0, socket.SOCK_STREAM)
        assert {a[4] for a in addr} == {("127.0.0.1", server)}
        assert socket.gethostbyname("api.orders.example.test") == "127.0.0.1"
        # requests/urllib3: the URL has no port; the Host header keeps the real name.
        assert requests.get("http://api.orders.example.test/x", timeout=5).text == "api.orders.example.test"
        with socket.create_connection(("api.orders.example.test", 80), timeout=5):
            pass
        with urllib.request.urlopen("http://api.orders.example.test/", timeout=5) as r:
            assert r.read() == b"api.orders.example.test"
        with RequestsTransport() as transport:
            response = transport.send(HttpRequest("GET", "http://api.orders.example.test/"))
            assert response.status_code == 200
        assert "api.orders.example.test" in resolve.installed()
        assert "api.orders.example.test" in os.environ["NO_PROXY"]
    assert resolve.installed() == {}
    assert socket.getaddrinfo is resolve._original_getaddrinfo
    with pytest.raises(OSError):
        socket.getaddrinfo("api.orders.example.test", 80)


def test_unmapped_names_use_the_system_resolver(server: int) -> None:
    with resolve.mapped(f"only.this.test=127.0.0.1:{server}"):
        assert {a[4][0] for a in socket.getaddrinfo("127.0.0.1", 1)} == {"127.0.0.1"}
        assert {a[4][1] for a in socket.getaddrinfo("localhost", 7, socket.AF_INET)} == {7}


def test_install_from_env(monkeypatch) -> None:
    try:
        assert resolve.install_from_env({}) == {}
        assert socket.getaddrinfo is resolve._original_getaddrinfo
        got = resolve.install_from_env({resolve.ENV: "a.test=127.0.0.1:1"})
        assert got == {"a.test": ("127.0.0.1", 1)}
        assert resolve.environment({"resolve": "a.test=127.0.0.1:1"}) == {resolve.ENV: "a.test=127.0.0.1:1"}
        assert resolve.environment({"resolve": ""}) == {}
    finally:
        resolve.uninstall()


def _dns_names(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


def test_server_certificate_names_follow_the_public_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    plain = ensure_tls(tmp_path)
    ca = plain.ca_cert.read_bytes()
    assert _dns_names(plain.server_cert) == {"localhost"}
    public = ensure_tls(tmp_path, ["login.microsoftonline.com", "Graph.Microsoft.com", "kv.vault.azure.net"])
    assert _dns_names(public.server_cert) == {"localhost", "login.microsoftonline.com", "graph.microsoft.com",
                                              "kv.vault.azure.net"}
    assert public.ca_cert.read_bytes() == ca  # reissued by the same CA
    leaf = public.server_cert.read_bytes()
    assert ensure_tls(tmp_path, ["kv.vault.azure.net", "graph.microsoft.com", "login.microsoftonline.com"]
                      ).server_cert.read_bytes() == leaf  # same names: reused
    assert _dns_names(ensure_tls(tmp_path).server_cert) == {"localhost"}  # no public names: names none
