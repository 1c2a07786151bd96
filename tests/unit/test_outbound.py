"""shared/outbound.py: what the app makes of an upstream's Retry-After, a shared document, shared TLS contexts."""
from __future__ import annotations

import os
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from shared import deadline, outbound
from shared.outbound import OutboundSession, environment_once, parse_retry_after


@pytest.mark.parametrize("value,expected", [("120", 120), ("0", 0), ("99999", 3600), ("²", None), ("", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", None), (None, None), ("-5", None)])
def test_retry_after_parsing_never_raises(value: str | None, expected: int | None) -> None:
    assert parse_retry_after(value) == expected


# --- share(): one GET of a static document for everyone who asks at once or soon after -------------------------
class Upstream(requests.adapters.BaseAdapter):
    """Answers GETs with ``status`` (after ``gate`` opens), counting them."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status, self.sent, self.gate = status, 0, threading.Event()
        self.timeouts: list[Any] = []
        self.entered = threading.Event()
        self.gate.set()

    def send(self, request: Any, **kwargs: Any) -> requests.Response:
        self.sent += 1
        self.timeouts.append(kwargs.get("timeout"))
        self.entered.set()
        self.gate.wait(10)
        response = requests.Response()
        response.status_code, response._content = self.status, b'{"issuer": "x", "jwks_uri": "y"}'
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


DOC = "https://login.example.test/tenant/v2.0/.well-known/openid-configuration"


def _session(upstream: Upstream) -> OutboundSession:
    session = OutboundSession()
    session.mount("https://", upstream)
    session.share(DOC)
    return session


def test_askers_of_a_shared_document_at_once_and_soon_after_make_one_call() -> None:
    upstream = Upstream()
    upstream.gate.clear()
    session = _session(upstream)
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(session.get, DOC) for _ in range(4)]
        upstream.gate.set()
        bodies = [a.result(10).json() for a in answers]
    bodies.append(session.get(DOC).json())
    assert upstream.sent == 1 and bodies == [{"issuer": "x", "jwks_uri": "y"}] * 5
    assert session.last_status() == 200


def test_only_the_shared_url_without_parameters_is_shared_and_failures_are_not() -> None:
    upstream = Upstream(503)
    session = _session(upstream)
    assert [session.get(DOC).status_code for _ in range(2)] == [503, 503] and upstream.sent == 2
    upstream.status = 200
    session.get(DOC), session.get(DOC), session.get(DOC, params={"p": "1"}), session.get(DOC + "?x")
    session.post(DOC)
    assert upstream.sent == 2 + 1 + 1 + 1 + 1


def test_a_shared_answer_is_kept_for_its_window_only(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(outbound.time, "monotonic", lambda: now[0])
    upstream = Upstream()
    session = _session(upstream)
    session.get(DOC)
    now[0] += outbound.SHARE_SECONDS - 1
    session.get(DOC)
    now[0] += 2
    session.get(DOC)
    assert upstream.sent == 2


def test_waiting_for_another_askers_fetch_is_bounded_by_the_request_deadline() -> None:
    upstream = Upstream()
    upstream.gate.clear()
    session = _session(upstream)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(session.get, DOC)
        while upstream.sent == 0:  # the first asker holds the fetch
            time.sleep(0.001)
        started = time.monotonic()
        with deadline.within(0.1), pytest.raises(requests.Timeout):
            session.get(DOC)
        assert time.monotonic() - started < 1.0
        upstream.gate.set()
        assert first.result(10).status_code == 200


# --- one verifying TLS context per CA bundle, as urllib3 builds per connection -----------------------------------
def _pool_kwargs(verify: Any, cert: Any = None, url: str = "https://login.example.test/x") -> dict[str, Any]:
    request = requests.Request("GET", url).prepare()
    return outbound.SharedTlsContext().build_connection_pool_key_attributes(request, verify, cert)[1]


def test_verified_https_pools_share_one_context_per_bundle(tmp_path: Any) -> None:
    from requests.utils import DEFAULT_CA_BUNDLE_PATH
    default = _pool_kwargs(True)
    assert "ca_certs" not in default and default["ssl_context"] is outbound.tls_context(DEFAULT_CA_BUNDLE_PATH)
    assert _pool_kwargs(True)["ssl_context"] is default["ssl_context"]  # parsed once per process
    context = default["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname  # what urllib3 builds per connection
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path(DEFAULT_CA_BUNDLE_PATH).read_bytes())
    assert _pool_kwargs(str(bundle))["ssl_context"] is outbound.tls_context(str(bundle)) is not context


@pytest.mark.parametrize("verify,cert,url", [(False, None, "https://h/x"), (True, "client.pem", "https://h/x"),
                                             (True, None, "http://h/x")])
def test_unverified_client_certificate_and_plain_http_pools_keep_requests_own_handling(
        verify: Any, cert: Any, url: str) -> None:
    kwargs = _pool_kwargs(verify, cert, url)
    assert "ssl_context" not in kwargs
    assert kwargs["cert_reqs"] == ("CERT_NONE" if verify is False else "CERT_REQUIRED")


def test_a_new_connection_does_not_parse_the_bundle_again() -> None:
    """requests' cert_verify names the bundle on the pool; with the shared context in the pool it is cleared."""
    adapter = outbound.SharedTlsContext()
    pool = SimpleNamespace(ca_certs=None, ca_cert_dir=None, cert_reqs=None)
    adapter.cert_verify(pool, "https://h/x", True, None)
    assert pool.ca_certs is None and pool.ca_cert_dir is None and pool.cert_reqs == "CERT_REQUIRED"
    plain = SimpleNamespace(ca_certs=None, ca_cert_dir=None, cert_reqs=None)
    requests.adapters.HTTPAdapter().cert_verify(plain, "https://h/x", True, None)
    assert plain.ca_certs  # requests alone would load it into every new connection's context


# --- the environment, read once --------------------------------------------------------------------------
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)


def test_without_a_proxy_the_session_reads_the_environment_once_and_keeps_its_ca_bundle(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_proxy_settings(monkeypatch)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "bundle.pem"))
    monkeypatch.setenv("NO_PROXY", "localhost")  # without a proxy, NO_PROXY changes nothing
    session = OutboundSession()
    assert session.trust_env is False and session.verify == str(tmp_path / "bundle.pem")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "curl.pem"))
    assert environment_once() == (False, str(tmp_path / "curl.pem"))
    monkeypatch.delenv("CURL_CA_BUNDLE")
    assert environment_once() == (False, True)


def test_with_a_proxy_requests_keeps_reading_the_environment_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy_settings(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = OutboundSession()
    assert session.trust_env is True and session.verify is True  # requests' own handling, NO_PROXY included
    settings = session.merge_environment_settings("https://graph.example/v1.0/me", {}, None, None, None)
    assert settings["proxies"]["https"] == "http://proxy.example:3128"


def test_a_netrc_entry_never_replaces_a_calls_authorization(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_proxy_settings(monkeypatch)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine graph.example login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    request = requests.Request("GET", "https://graph.example/v1.0/me", headers={"Authorization": "Bearer t"})
    trusting = requests.Session()
    assert trusting.prepare_request(request).headers["Authorization"].startswith("Basic ")  # what requests does
    assert OutboundSession().prepare_request(request).headers["Authorization"] == "Bearer t"


# --- a shared GET's waiters keep their own deadline -------------------------------------------------------------
def test_a_waiter_for_a_shared_document_waits_no_longer_than_its_deadline() -> None:
    upstream = Upstream()
    upstream.gate.clear()  # the first asker's GET hangs
    session = _session(upstream)
    first = threading.Thread(target=lambda: _outcome_of(lambda: session.get(DOC, timeout=(5, 5))))
    first.start()
    assert upstream.entered.wait(5)
    started = time.monotonic()
    with deadline.within(1.0), pytest.raises(requests.Timeout):
        session.get(DOC, timeout=(5, 5))
    assert time.monotonic() - started < 1.6  # its deadline, not connect + read capped (2 s)
    upstream.gate.set()
    first.join(5)


def test_after_a_failed_shared_get_a_waiter_asks_with_what_is_left_of_its_deadline() -> None:
    upstream = Upstream(status=500)
    upstream.gate.clear()
    session = _session(upstream)
    first = threading.Thread(target=lambda: _outcome_of(lambda: session.get(DOC, timeout=(5, 5))))
    first.start()
    assert upstream.entered.wait(5)
    threading.Timer(0.5, upstream.gate.set).start()  # the first asker's 500 comes after half a second
    with deadline.within(2.0):
        assert session.get(DOC, timeout=(5, 5)).status_code == 500  # a failure is not shared: it asks itself
    first.join(5)
    assert upstream.sent == 2 and max(upstream.timeouts[1]) < 1.6  # 2 s less the wait, not 2 s


def _outcome_of(call: Any) -> Any:
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - the thread's outcome, not asserted
        return err


def test_with_a_proxy_a_netrc_entry_still_never_replaces_a_calls_authorization(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_proxy_settings(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine graph.example login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = OutboundSession()
    assert session.trust_env is True
    request = requests.Request("GET", "https://graph.example/v1.0/me", headers={"Authorization": "Bearer t"})
    assert session.prepare_request(request).headers["Authorization"] == "Bearer t"


def test_a_ca_bundle_that_cannot_be_loaded_is_requests_ssl_error(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with pytest.raises(requests.exceptions.SSLError, match="could not be loaded") as err:
        outbound.tls_context(str(bad))
    assert isinstance(err.value, requests.RequestException)  # what every caller maps to 502/503
    with pytest.raises(requests.exceptions.SSLError):
        outbound.tls_context(str(tmp_path / "missing.pem"))


def test_a_path_like_verify_names_its_bundle_not_certifis(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    assert outbound.SharedTlsContext._bundle("https://x", bundle, None) == str(bundle)
    assert outbound.SharedTlsContext._bundle("https://x", True, None) == outbound.DEFAULT_CA_BUNDLE_PATH
    assert outbound.SharedTlsContext._bundle("https://x", False, None) is None
