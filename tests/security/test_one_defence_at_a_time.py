"""One defence at a time: each test is built so that exactly one defence stands between the attack
and a wrong answer, and removing that defence (and nothing else) makes the test fail.

- the AES-GCM tag check (shared/token_cache/sealing.py ``Sealer.open``: ``AESGCM.decrypt`` verifies the tag):
  a bit flipped in a sealed entry in real Redis, and the tag alone altered;
- the storage key bound as associated data (``seal``/``open`` pass ``storage_key`` as AAD): the same
  sealed bytes under another key name, and a user's entry copied under another user's key;
- cross-instance single-flight (shared/token_cache/layers.py ``TokenCache.flight``): two hosts, one slowed OBO;
- the downstream response size cap (shared/downstream.py ``MAX_BODY``: bounded read + refusal).

Each test's docstring names the defence and the local mutation that was made to see it fail.
Real redis-server (tests/conftest.py ``redis_server``), the session devstack and real function hosts;
no fixed ports; no sleeps as synchronisation.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from shared.token_cache import PREFIX, TokenCache
from shared.downstream import MAX_BODY
from shared.token_cache import Breaker, RedisBackend
from shared.token_cache.sealing import NONCE, Sealer
from shared.token_cache import PartitionStore

from devstack.launch import Admin

KEY_BYTES = os.urandom(32)
KEY = base64.b64encode(KEY_BYTES).decode()
OBO = "on_behalf_of"
TAG = 16

http = requests.Session()
http.trust_env = False


def call(host: dict[str, Any], token: str) -> requests.Response:
    return http.get(host["url"] + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def obo_count(admin: Admin) -> int:
    return int(admin.stats().get("entra.token", {}).get("by_grant", {}).get(OBO, 0))


def redis_l2(redis_server: Any, **extra: str) -> dict[str, str]:
    return {"TokenCache__L2": "redis", "TokenCache__EncryptionKey": KEY,
            "TokenCache__RedisConnectionString": redis_server.url, **extra}


def entry_keys(redis_server: Any) -> set[bytes]:
    """The sealed partitions in Redis (not the single-flight locks)."""
    return {k for k in redis_server.client().scan_iter(PREFIX + "*") if b":lock:" not in k}


def layers_on(redis_server: Any) -> TokenCache:
    """A fresh instance's cache (empty L1) on the shared real Redis, with the app's own classes."""
    return TokenCache(PartitionStore(), Breaker(RedisBackend(redis_server.url, 2.0)), Sealer(KEY_BYTES))


def saved_entry(redis_server: Any, key: str, secret: str) -> bytes:
    writer = layers_on(redis_server)
    part = writer.partition(key, time.time() + 3600)
    part.data["AccessToken"] = {"k": {"secret": secret}}
    writer.save(part, token_expires_at=time.time() + 3600)
    sealed = redis_server.client().get(PREFIX + key)
    assert sealed is not None and secret.encode() not in sealed
    return bytes(sealed)


# --- the GCM tag, alone ---------------------------------------------------------------------------
@pytest.mark.parametrize("alteration", ["last tag bit flipped", "tag zeroed"])
def test_an_entry_whose_gcm_tag_alone_was_altered_is_a_miss(redis_server: Any, alteration: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Defence: the GCM tag check. Mutation that fails it: ``Sealer.open`` decrypting the ciphertext
    with AES-CTR (the GCM keystream) without verifying the tag. The ciphertext, nonce and key name are
    untouched, so the untampered entry opens (the control) and only the tag can refuse the altered one."""
    key = "a1" * 32
    sealed = saved_entry(redis_server, key, "alice-at")
    assert layers_on(redis_server).partition(key, time.time() + 600).data == {"AccessToken": {"k": {"secret": "alice-at"}}}

    body, tag = sealed[:-TAG], sealed[-TAG:]
    altered = body + (tag[:-1] + bytes([tag[-1] ^ 0x01]) if alteration == "last tag bit flipped" else bytes(TAG))
    assert altered[:-TAG] == body and altered != sealed
    redis_server.client().set(PREFIX + key, altered)

    with caplog.at_level(logging.WARNING, "middletier.cache"):
        part = layers_on(redis_server).partition(key, time.time() + 600)
    assert part.data == {}  # a miss: an empty partition, never an exception, never the stored data
    assert any("failed authentication" in r.getMessage() for r in caplog.records)


# --- the associated-data binding, alone -----------------------------------------------------------
def test_the_same_sealed_bytes_under_another_key_name_are_a_miss(redis_server: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Defence: the storage key bound as associated data. Mutation that fails it: ``seal`` and
    ``open`` passing ``None`` as associated data. The bytes are copied unchanged (Redis COPY), so the
    tag is valid and the entry opens under its own name (the control): only the name differs."""
    own, other = "b2" * 32, "c3" * 32
    sealed = saved_entry(redis_server, own, "alice-at")
    r = redis_server.client()
    assert r.execute_command("COPY", PREFIX + own, PREFIX + other) == 1
    assert r.get(PREFIX + other) == sealed  # byte for byte: same nonce, ciphertext and tag

    reader = layers_on(redis_server)
    with caplog.at_level(logging.WARNING, "middletier.cache"):
        assert reader.partition(other, time.time() + 600).data == {}
    assert any("failed authentication" in rec.getMessage() for rec in caplog.records)
    assert reader.partition(own, time.time() + 600).data == {"AccessToken": {"k": {"secret": "alice-at"}}}


# --- through the app: real hosts, real Redis, the Entra emulator -----------------------------------
def test_a_bit_flipped_in_a_sealed_entry_in_redis_is_a_miss_not_an_error_nor_the_altered_tokens(
        devstack: dict[str, Any], host_factory: Any, admin: Admin, redis_server: Any) -> None:
    """Defence: the GCM tag check, read back with the same encryption key. The flipped bit is the low
    bit of the units digit of the sealed ``exp`` (plaintext ``{"exp":<10 digits>...``): GCM without
    its tag is a stream cipher, so the altered entry would still be valid JSON holding alice's
    tokens with a changed expiry. Mutation that fails it: ``Sealer.open`` decrypting with AES-CTR
    without the tag check: host B then serves the altered entry and makes no OBO call."""
    settings = redis_l2(redis_server)
    token, control = admin.mint(user="alice"), admin.mint(user="bob")
    host_a = host_factory(devstack, **settings)
    assert call(host_a, token).status_code == 200
    keys = entry_keys(redis_server)
    assert call(host_a, control).status_code == 200  # bob's entry stays as sealed: the control
    assert len(keys) == 1
    r = redis_server.client()
    (key,) = keys
    value = bytearray(r.get(key))
    value[1 + NONCE + len('{"exp":') + 9] ^= 0x01  # units digit of exp; a digit stays a digit: 0<->1, 2<->3...
    r.set(key, bytes(value))

    host_b = host_factory(devstack, **settings)  # same key, empty L1: it must read the entry from Redis
    before = obo_count(admin)
    assert call(host_b, control).status_code == 200 and obo_count(admin) == before  # host B does use L2
    answer = call(host_b, token)
    assert answer.status_code == 200, answer.text  # a miss, never an error
    assert answer.json()["id"] == devstack["users"]["alice"]["oid"]
    assert obo_count(admin) == before + 1  # the altered entry was not used: a fresh OBO
    log = Path(host_b["log"]).read_text()
    assert "token cache L2 entry failed authentication" in log and "Traceback" not in log


def test_alices_entry_copied_under_bobs_storage_key_is_a_miss_and_bob_gets_his_own_profile(
        devstack: dict[str, Any], host_factory: Any, admin: Admin, redis_server: Any) -> None:
    """Defence: the storage key bound as associated data. Mutation that fails it: ``seal``/``open``
    with ``None`` as associated data: host B then opens alice's entry under bob's key, MSAL finds
    alice's account and Graph token in bob's partition, and bob is answered with alice's profile."""
    settings = redis_l2(redis_server)
    alice, bob = admin.mint(user="alice"), admin.mint(user="bob")
    host_a = host_factory(devstack, **settings)
    assert call(host_a, alice).status_code == 200
    alices_keys = entry_keys(redis_server)
    assert call(host_a, bob).status_code == 200
    bobs_keys = entry_keys(redis_server) - alices_keys
    assert len(alices_keys) == 1 and len(bobs_keys) == 1
    r = redis_server.client()
    (alice_key,), (bob_key,) = alices_keys, bobs_keys
    r.set(bob_key, r.get(alice_key))  # an attacker with write access to Redis, but not the AES key

    host_b = host_factory(devstack, **settings)
    before = obo_count(admin)
    answer = call(host_b, bob)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == devstack["users"]["bob"]["oid"], "bob was answered with another user's data"
    assert obo_count(admin) == before + 1
    assert "token cache L2 entry failed authentication" in Path(host_b["log"]).read_text()
    assert call(host_b, alice).json()["id"] == devstack["users"]["alice"]["oid"]
    assert obo_count(admin) == before + 1  # the control: the copied bytes open under alice's own key


# --- cross-instance single-flight, alone -----------------------------------------------------------
def test_two_instances_with_a_slow_entra_make_one_obo_call_for_one_caller_token(
        devstack: dict[str, Any], host_factory: Any, admin: Admin, redis_server: Any) -> None:
    """Defence: cross-instance single-flight (``TokenCache.flight``: an L2 lock, the loser
    waits for the winner's entry). One request per host, so the in-process lock plays no part; the
    second request is sent only once the first is inside its (slowed) OBO at the Entra emulator, so
    it cannot find the entry already in L2. Mutation that fails it: ``flight`` always yielding True
    (no L2 lock): both hosts call Entra (2 OBO calls)."""
    settings = redis_l2(redis_server)
    host_a, host_b = host_factory(devstack, **settings), host_factory(devstack, **settings)
    for host in (host_a, host_b):  # warm: signing keys, credential, MSAL app (not the caller's cache)
        assert call(host, admin.mint(user="bob")).status_code == 200
    token = admin.mint(user="alice")
    before = obo_count(admin)
    admin.post("/faults", {"service": "entra", "endpoint": "token", "grant": OBO, "latency_ms": 1200, "count": 1})

    def fault_taken() -> bool:
        return not admin.http.get(admin.base + "/faults", timeout=10).json()["faults"]

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, host_a, token)
        deadline = time.monotonic() + 30
        while not fault_taken():  # host A's OBO has reached Entra and is being held there
            assert time.monotonic() < deadline and not first.done(), "host A never reached Entra's token endpoint"
        assert not first.done()  # host A holds the L2 lock now
        second = pool.submit(call, host_b, token)
        answers = [first.result(), second.result()]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert {a.json()["id"] for a in answers} == {devstack["users"]["alice"]["oid"]}
    assert obo_count(admin) == before + 1, f"{obo_count(admin) - before} OBO calls for one caller token"


# --- the downstream size cap, alone ----------------------------------------------------------------
class _OversizedGraph(BaseHTTPRequestHandler):
    """Answers any GET with 200 and a JSON body of ``total`` bytes, streamed; counts what it sent."""

    total = 16 * MAX_BODY
    sent = 0
    done = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        cls = type(self)
        head = b'{"id":"x","pad":"'
        tail = b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(cls.total))
        self.end_headers()
        chunk = b"a" * 65536
        try:
            self.wfile.write(head)
            cls.sent = len(head)
            left = cls.total - len(head) - len(tail)
            while left > 0:
                piece = chunk[:left]
                self.wfile.write(piece)
                cls.sent += len(piece)
                left -= len(piece)
            self.wfile.write(tail)
            cls.sent += len(tail)
        except OSError:
            pass  # the client stopped reading and closed: what a bounded reader does
        finally:
            cls.done.set()

    def log_message(self, *args: Any) -> None:  # keep the (bearer-carrying) requests out of any log
        pass


@pytest.fixture
def oversized_graph(devstack: dict[str, Any]) -> Iterator[str]:
    """A tiny HTTPS server on a free port, with the devstack's server certificate (trusted by hosts)."""
    tls = Path(devstack["state"]) / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server-key.pem")
    _OversizedGraph.sent, _OversizedGraph.done = 0, threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OversizedGraph)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v1.0"
    server.shutdown()
    server.server_close()


def test_a_downstream_body_over_the_size_cap_is_a_502_upstream_error_read_only_up_to_the_cap(
        devstack: dict[str, Any], host_factory: Any, admin: Admin, oversized_graph: str) -> None:
    """Defence: the downstream response size cap (``MAX_BODY``, 4 MiB): the body is read up to
    ``MAX_BODY + 1`` bytes and refused with 502 ``upstream_error`` if longer. A 200 with a valid JSON
    body of 64 MiB. Mutations that fail it: dropping the ``len(body) > MAX_BODY`` refusal (the
    truncated body is answered: not the defined 502), and reading the body unbounded
    (``response.raw.read(decode_content=True)``: the whole 64 MiB is taken in)."""
    host = host_factory(devstack, DownstreamApis__Graph__BaseUrl=oversized_graph)
    answer = call(host, admin.mint(user="alice"))
    assert _OversizedGraph.done.wait(30), "the oversized Graph was never called"
    print(f"\n[size cap] {_OversizedGraph.total >> 20} MiB body offered; {_OversizedGraph.sent >> 20} MiB sent "
          f"before the app closed the connection; app answered {answer.status_code}")
    assert answer.status_code == 502, answer.text[:200]
    problem = answer.json()
    assert problem["error"] == "upstream_error" and problem["upstream"] == "Graph"
    assert problem["detail"] == "The downstream API Graph answered with too large a body."
    assert _OversizedGraph.sent < _OversizedGraph.total // 2, "the app read far past its cap"
    assert len(json.dumps(problem)) < 1024  # the answer carries nothing of the body
