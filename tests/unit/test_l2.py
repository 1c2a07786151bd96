"""The L2 backends against the real servers (redis-server, Azurite), and the Breaker breaker around
them: what is stored under which key, with which expiry, what a read returns once expired, the lock's
single holder and stale takeover, and the breaker's exact back-off before it asks a failed backend
again. One redis-server and one Azurite per module (free ports), so each run stays a few seconds."""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from shared.config import TokenCacheSettings
from shared.errors import ConfigurationError
from shared.token_cache import BlobBackend, Breaker, RedisBackend, backend_for

from devstack.launch import AZURITE, AZURITE_ACCOUNT, AZURITE_KEY, RedisServer, start_azurite, stop

T0 = 1_000_000.25  # an injected wall clock starts here (a fraction: int() and float parsing both matter)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- servers: once per module -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


@pytest.fixture
def rds(redis_srv: RedisServer) -> Iterator[Any]:
    client = redis_srv.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def azurite_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not AZURITE.exists():
        pytest.fail("Azurite is not installed: `make test` installs it (npm install)")
    try:
        proc, blob = start_azurite(tmp_path_factory.mktemp("azurite"))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield blob["connection_string"]
    stop(proc)


@pytest.fixture
def container(azurite_conn: str) -> Any:
    """A fresh container name per test (not created: the backend creates it), and a plain SDK client
    on it to look at what the backend stored."""
    from azure.storage.blob import BlobServiceClient
    name = "t" + uuid.uuid4().hex[:20]
    return BlobServiceClient.from_connection_string(azurite_conn).get_container_client(name)


def blob(azurite_conn: str, container: Any, clock: Clock, timeout: float = 5.0) -> BlobBackend:
    return BlobBackend(azurite_conn, container.container_name, timeout, clock=clock)


class SilentServer:
    """A real TCP listener that never answers: the kernel completes each client's handshake (listen
    backlog), nothing is ever read or written. ``connections()`` counts the clients that connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._accepted: list[socket.socket] = []

    def connections(self) -> int:
        self.sock.setblocking(False)
        while True:
            try:
                self._accepted.append(self.sock.accept()[0])
            except BlockingIOError:
                return len(self._accepted)

    def close(self) -> None:
        for s in self._accepted:
            s.close()
        self.sock.close()


def outcome_within(fn: Callable[[], Any], seconds: float) -> BaseException | None:
    """Run ``fn`` in a thread; fail unless it returns or raises within ``seconds`` (its exception)."""
    box: dict[str, BaseException] = {}
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001
            box["err"] = err
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), f"still waiting after {seconds} s: the client has no timeout"
    return box.get("err")


# --- backend_for: the backend TokenCache__L2 names ------------------------------------------------------
def test_backend_for_builds_the_named_backend_with_its_settings(redis_srv: RedisServer, azurite_conn: str) -> None:
    redis = backend_for(TokenCacheSettings(l2="redis", redis_url=redis_srv.url, l2_timeout_seconds=0.7,
                                           blob_connection_string=azurite_conn))
    assert isinstance(redis, RedisBackend)
    assert redis._redis.connection_pool.connection_kwargs["socket_timeout"] == 0.7
    blob = backend_for(TokenCacheSettings(l2="blob", blob_connection_string=azurite_conn, blob_container="c-x",
                                          l2_timeout_seconds=0.7, redis_url=redis_srv.url))
    assert isinstance(blob, BlobBackend)
    assert blob._container.container_name == "c-x"
    transport = blob._container._pipeline._transport
    while hasattr(transport, "_transport"):
        transport = transport._transport
    assert transport.connection_config.read_timeout == 0.7


@pytest.mark.parametrize("l2, given, key, problem", [
    ("blob", {"blob_connection_string": "not a connection string"}, "TokenCache__BlobConnectionString",
     "is not a storage connection string"),
    ("blob", {"redis_url": "redis://localhost:1"}, "TokenCache__L2", "names no configured backend"),
    ("redis", {"blob_connection_string": "UseDevelopmentStorage=true"}, "TokenCache__L2", "names no configured backend"),
    ("none", {"redis_url": "redis://localhost:1"}, "TokenCache__L2", "names no configured backend"),
])
def test_backend_for_refuses_a_backend_without_its_connection(l2: str, given: dict[str, str], key: str,
                                                              problem: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        backend_for(TokenCacheSettings(l2=l2, **given))  # type: ignore[arg-type]
    assert err.value.key == key and err.value.detail == f"Setting {key} {problem}."


# --- RedisBackend -------------------------------------------------------------------------------------
def test_redis_stores_the_bytes_under_the_key_and_a_missing_key_is_none(redis_srv: RedisServer, rds: Any) -> None:
    backend = RedisBackend(redis_srv.url, 5.0)
    assert backend.name == "redis"
    assert backend.get("msal-tc:a") is None
    backend.set("msal-tc:a", b"\x00sealed\xff", 60)
    assert rds.get("msal-tc:a") == b"\x00sealed\xff" and rds.keys("*") == [b"msal-tc:a"]
    got = backend.get("msal-tc:a")
    assert got == b"\x00sealed\xff" and type(got) is bytes
    backend.set("msal-tc:a", b"newer", 60)  # overwritten
    assert backend.get("msal-tc:a") == b"newer"


@pytest.mark.parametrize("ttl,expected", [(60, 60), (1, 1), (0, 1), (-5, 1)])
def test_redis_entries_expire_after_their_ttl_and_at_least_one_second(redis_srv: RedisServer, rds: Any,
                                                                      ttl: int, expected: int) -> None:
    RedisBackend(redis_srv.url, 5.0).set("k", b"v", ttl)
    assert (expected - 1) * 1000 < rds.pttl("k") <= expected * 1000


def test_redis_lock_has_one_holder_expires_and_is_released_only_by_its_token(redis_srv: RedisServer,
                                                                             rds: Any) -> None:
    a, b = RedisBackend(redis_srv.url, 5.0), RedisBackend(redis_srv.url, 5.0)
    token = a.acquire_lock("msal-tc:lock:p", 1500)
    assert isinstance(token, str) and len(token) == 32 and int(token, 16) >= 0
    assert rds.get("msal-tc:lock:p") == token.encode() and 500 < rds.pttl("msal-tc:lock:p") <= 1500
    assert b.acquire_lock("msal-tc:lock:p", 1500) is None          # held
    assert a.acquire_lock("msal-tc:lock:p", 1500) is None          # even by the same instance
    b.release_lock("msal-tc:lock:p", "0" * 32)                     # not the holder: no effect
    assert rds.get("msal-tc:lock:p") == token.encode()
    a.release_lock("msal-tc:lock:p", token)
    assert rds.exists("msal-tc:lock:p") == 0
    second = b.acquire_lock("msal-tc:lock:p", 1500)
    assert second is not None and second != token                  # a fresh token per acquisition
    a.release_lock("msal-tc:lock:missing", token)                  # nothing to release: no error


def test_redis_client_is_configured_for_one_bounded_attempt(redis_srv: RedisServer) -> None:
    """The settings given to redis-py, as it holds them: the health check (a PING after 30 s idle) is
    not observable without waiting 30 s, the rest is also shown by behaviour below."""
    kwargs = RedisBackend(redis_srv.url, 0.75)._redis.connection_pool.connection_kwargs
    assert {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout", "retry_on_timeout",
                                   "health_check_interval")} == {
        "socket_timeout": 0.75, "socket_connect_timeout": 0.75, "retry_on_timeout": False,
        "health_check_interval": 30}


def test_a_redis_that_never_answers_costs_one_connection_and_the_timeout() -> None:
    import redis
    silent = SilentServer()
    try:
        err = outcome_within(lambda: RedisBackend(f"redis://127.0.0.1:{silent.port}/0", 0.3).get("k"), 5)
        assert isinstance(err, redis.exceptions.TimeoutError)
        assert silent.connections() == 1  # no retry
    finally:
        silent.close()


class Recording:
    """A backend that answers at once and records the calls that reached it."""
    name, timeout = "recording", 0.3

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return None

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self.calls.append("set")

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        self.calls.append("lock")
        return "t"

    def release_lock(self, key: str, token: str) -> None:
        self.calls.append("release")


@pytest.mark.parametrize("left,asked", [(0.3, True), (0.2999, False), (5.0, True)])
def test_the_breaker_asks_while_one_call_s_timeout_is_left(monkeypatch: pytest.MonkeyPatch, left: float,
                                                           asked: bool) -> None:
    from shared import deadline
    monkeypatch.setattr(deadline, "_clock", lambda: 0.0)  # time stands still: remaining() is exactly ``left``
    backend = Recording()
    g = Breaker(backend)  # type: ignore[arg-type]
    with deadline.within(left):
        g.get("k")
    assert backend.calls == (["get"] if asked else []) and g.stats["skipped"] == (0 if asked else 1)
    g.get("k")  # outside any request: always asked
    assert backend.calls[-1:] == ["get"]


def test_the_breaker_skips_a_call_that_could_outlast_the_request_deadline() -> None:
    from shared import deadline
    silent = SilentServer()
    try:
        g = Breaker(RedisBackend(f"redis://127.0.0.1:{silent.port}/0", 0.3))
        started = time.monotonic()
        with deadline.within(0.2):  # less time left than one call may take: not asked, nothing counted
            assert (g.get("k"), g.set("k", b"v", 60), g.acquire_lock("l", 1000)) == (None, None, "")
        assert time.monotonic() - started < 0.1
        assert silent.connections() == 0 and not g.is_open
        assert g.stats == {"hits": 0, "misses": 1, "writes": 1, "errors": 0, "skipped": 3}
        with deadline.within(5.0):  # enough time: asked, and the silence is a failure as before
            assert g.get("k") is None
        assert silent.connections() == 1 and g.stats["errors"] == 1
    finally:
        silent.close()


# --- BlobBackend ---------------------------------------------------------------------------------------
def test_blob_stores_the_bytes_with_their_expiry_and_creates_the_container(azurite_conn: str,
                                                                           container: Any) -> None:
    clock = Clock()
    backend = blob(azurite_conn, container, clock)
    assert backend.name == "blob"
    assert backend.get("msal-tc:a") is None  # container created on first use, key missing
    backend.set("msal-tc:a", b"\x00sealed\xff", 60)
    assert [b.name for b in container.list_blobs()] == ["msal-tc:a"]
    stored = container.download_blob("msal-tc:a")
    assert stored.readall() == b"\x00sealed\xff"
    assert stored.properties.metadata == {"expires": str(int(T0) + 60)}
    assert backend.get("msal-tc:a") == b"\x00sealed\xff"
    backend.set("msal-tc:a", b"newer", 60)  # overwritten
    assert backend.get("msal-tc:a") == b"newer"


@pytest.mark.parametrize("ttl,expires", [(60, int(T0) + 60), (1, int(T0) + 1), (0, int(T0) + 1),
                                         (-5, int(T0) + 1)])
def test_blob_expiry_is_whole_seconds_and_at_least_one(azurite_conn: str, container: Any, ttl: int,
                                                       expires: int) -> None:
    blob(azurite_conn, container, Clock()).set("k", b"v", ttl)
    assert container.download_blob("k").properties.metadata == {"expires": str(expires)}


@pytest.mark.parametrize("later,served", [(0, True), (60 - 0.25, True), (60 - 0.25 + 1e-3, False),
                                          (3600, False)])
def test_a_blob_entry_is_served_until_its_expiry_second_inclusive(azurite_conn: str, container: Any,
                                                                  later: float, served: bool) -> None:
    clock = Clock()
    backend = blob(azurite_conn, container, clock)
    backend.set("k", b"v", 60)  # expires at int(T0) + 60 = T0 - 0.25 + 60
    clock.now = T0 + later
    assert backend.get("k") == (b"v" if served else None)


def test_a_blob_without_an_expiry_is_a_miss(azurite_conn: str, container: Any) -> None:
    backend = blob(azurite_conn, container, Clock())
    backend.get("x")  # creates the container
    container.upload_blob("written-elsewhere", b"v")
    assert backend.get("written-elsewhere") is None


def test_the_container_is_created_once_per_backend(azurite_conn: str, container: Any) -> None:
    """One create call per process, not one per request: a container deleted under a running
    backend is not re-created (the operator sees the failure)."""
    from azure.core.exceptions import ResourceNotFoundError
    backend = blob(azurite_conn, container, Clock())
    backend.set("a", b"v", 60)
    container.delete_container()
    with pytest.raises(ResourceNotFoundError):
        backend.set("b", b"v", 60)
    other = blob(azurite_conn, container, Clock())  # a new backend creates it again
    other.set("b", b"v", 60)
    assert other.get("b") == b"v"


def test_blob_lock_has_one_holder_and_is_released_only_by_its_token(azurite_conn: str, container: Any) -> None:
    clock = Clock()
    a, b = blob(azurite_conn, container, clock), blob(azurite_conn, container, clock)
    token = a.acquire_lock("lock:p", 1500)
    assert isinstance(token, str) and len(token) == 32 and int(token, 16) >= 0
    held = container.download_blob("lock:p")
    assert held.readall() == token.encode() and held.properties.metadata == {"expires": str(T0 + 1.5)}
    assert b.acquire_lock("lock:p", 1500) is None
    assert a.acquire_lock("lock:p", 1500) is None
    b.release_lock("lock:p", "0" * 32)  # not the holder: no effect
    assert container.download_blob("lock:p").readall() == token.encode()
    a.release_lock("lock:p", token)
    assert [x.name for x in container.list_blobs()] == []
    second = b.acquire_lock("lock:p", 1500)
    assert second is not None and second != token
    a.release_lock("lock:missing", token)  # nothing to release: no error


def test_a_lock_refused_with_412_is_held_as_with_409(azurite_conn: str, container: Any) -> None:
    """A conditional create can be refused with 412 ConditionNotMet (ResourceModifiedError) rather than
    409 BlobAlreadyExists; either way the lock is someone else's: no error, and no second holder. The
    412 is made at the SDK boundary (Azurite answers 409)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
    clock = Clock()
    holder, us = blob(azurite_conn, container, clock), blob(azurite_conn, container, clock)
    token = holder.acquire_lock("lock:p", 1500)
    real_client = us._container.get_blob_client

    class Refuses412:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def upload_blob(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return self._inner.upload_blob(*args, **kwargs)
            except ResourceExistsError as err:
                raise ResourceModifiedError("ConditionNotMet", response=err.response) from None

    us._container.get_blob_client = lambda key: Refuses412(real_client(key))  # type: ignore[method-assign]
    assert us.acquire_lock("lock:p", 1500) is None
    assert container.download_blob("lock:p").readall() == token.encode()


@pytest.mark.parametrize("later,taken", [(1.5, False), (1.5 + 1e-3, True)])
def test_a_stale_blob_lock_is_taken_over_only_after_its_expiry(azurite_conn: str, container: Any, later: float,
                                                               taken: bool) -> None:
    clock = Clock()
    dead, live = blob(azurite_conn, container, clock), blob(azurite_conn, container, clock)
    assert dead.acquire_lock("lock:p", 1500)
    clock.now = T0 + later
    token = live.acquire_lock("lock:p", 2000)
    assert (token is not None) == taken
    if token is not None:
        lock = container.download_blob("lock:p")
        assert lock.readall() == token.encode() and lock.properties.metadata == {"expires": str(T0 + later + 2)}
        assert dead.acquire_lock("lock:p", 2000) is None  # the new holder's expiry protects it


def test_a_lock_blob_without_an_expiry_is_stale(azurite_conn: str, container: Any) -> None:
    backend = blob(azurite_conn, container, Clock())
    backend.get("x")  # creates the container
    container.upload_blob("lock:p", b"left by an older version")
    token = backend.acquire_lock("lock:p", 1000)
    assert token is not None and container.download_blob("lock:p").readall() == token.encode()


def test_a_stale_lock_taken_over_by_another_instance_first_is_not_taken_twice(azurite_conn: str,
                                                                             container: Any) -> None:
    """The takeover is conditional on the stale lock's ETag. The race needs another instance to act
    between our read of the lock's properties and our write: the one fake at the SDK boundary here
    wraps the blob client so that the other instance (real, on the same Azurite) takes over just then."""
    clock = Clock()
    dead, us, rival = (blob(azurite_conn, container, clock) for _ in range(3))
    assert dead.acquire_lock("lock:p", 1000)
    clock.now = T0 + 5
    won: list[str | None] = []
    real_client = us._container.get_blob_client

    class RacingBlob:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def get_blob_properties(self) -> Any:
            props = self._inner.get_blob_properties()
            won.append(rival.acquire_lock("lock:p", 1000))
            return props

    us._container.get_blob_client = lambda key: RacingBlob(real_client(key))  # type: ignore[method-assign]
    assert us.acquire_lock("lock:p", 1000) is None
    assert won[0] is not None and container.download_blob("lock:p").readall() == won[0].encode()


@pytest.mark.parametrize("setting", ["connect", "read", "retries"])
def test_blob_client_is_configured_for_one_bounded_attempt(azurite_conn: str, container: Any, setting: str) -> None:
    """The settings as the SDK holds them (the connect timeout is not observable against a local
    listener, which always accepts); the read timeout and the single attempt are also shown below."""
    backend = blob(azurite_conn, container, Clock(), timeout=0.75)
    transport = backend._container._pipeline._transport
    while hasattr(transport, "_transport"):
        transport = transport._transport
    value = {"connect": lambda: transport.connection_config.timeout,
             "read": lambda: transport.connection_config.read_timeout,
             "retries": lambda: backend._container._config.retry_policy.total_retries}[setting]()
    assert value == {"connect": 0.75, "read": 0.75, "retries": 0}[setting] and backend.timeout == 0.75


def test_a_blob_service_that_never_answers_costs_one_connection_and_the_timeout() -> None:
    from azure.core.exceptions import ServiceResponseError
    silent = SilentServer()
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{silent.port}/{AZURITE_ACCOUNT};")
    try:
        err = outcome_within(lambda: BlobBackend(connection, "c", 0.3).get("k"), 5)
        assert isinstance(err, ServiceResponseError), repr(err)
        assert silent.connections() == 1  # no retry
    finally:
        silent.close()


# --- Breaker over the real Redis --------------------------------------------------------------------
def test_guarded_passes_calls_through_and_counts_them(redis_srv: RedisServer, rds: Any) -> None:
    g = Breaker(RedisBackend(redis_srv.url, 5.0))
    assert g.name == "redis" and not g.is_open
    assert g.get("k") is None
    g.set("k", b"v", 60)
    assert rds.get("k") == b"v" and 59_000 < rds.pttl("k") <= 60_000
    assert g.get("k") == b"v" and g.get("k") == b"v"
    token = g.acquire_lock("lock:k", 1500)
    assert isinstance(token, str) and len(token) == 32
    assert rds.get("lock:k") == token.encode() and 500 < rds.pttl("lock:k") <= 1500
    assert g.acquire_lock("lock:k", 1500) is None  # held: the caller waits for the holder
    g.release_lock("lock:k", token)
    assert rds.exists("lock:k") == 0
    g.release_lock("lock:k", "")  # "" (no lock was taken): nothing to release
    assert g.stats == {"hits": 2, "misses": 1, "writes": 1, "errors": 0, "skipped": 0}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and restart (the module's one stays up)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


UNAVAILABLE = ("token cache L2 (redis) unavailable (ConnectionError); serving from L1 and the identity "
               "provider until it recovers")
BACK = "token cache L2 (redis) is back; using it again"


def test_the_breaker_opens_after_two_failures_and_asks_again_exactly_five_seconds_later(
        own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    g = Breaker(RedisBackend(own_redis.url, 5.0), clock=clock)  # the defaults: 2 failures, 5 s
    caplog.set_level(logging.WARNING, "middletier.cache")
    g.set("k", b"v", 60)
    assert g.get("k") == b"v"
    own_redis.kill()
    assert g.get("k") is None and not g.is_open          # one failure: still closed
    assert g.acquire_lock("lock:k", 1000) == ""          # failed: proceed without a lock
    assert g.is_open                                     # second failure: open
    own_redis.start()
    own_redis.client().set("k", b"v")                    # back, but the breaker does not know yet
    clock.now = T0 + 4.999
    assert g.get("k") is None and g.get("k") is None     # skipped: not asked
    assert g.stats["skipped"] == 2
    clock.now = T0 + 5                                   # exactly open_seconds: one trial call
    assert g.get("k") == b"v" and not g.is_open
    assert [r.getMessage() for r in caplog.records] == [UNAVAILABLE, BACK]
    own_redis.kill()
    assert g.get("k") is None and not g.is_open          # failures were reset: one is not enough
    assert g.get("k") is None and g.is_open
    assert g.stats == {"hits": 2, "misses": 5, "writes": 1, "errors": 4, "skipped": 2}


def test_a_failed_trial_keeps_the_breaker_open_for_another_full_interval_quietly(
        own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    g = Breaker(RedisBackend(own_redis.url, 5.0), failures_to_open=1, open_seconds=2.0, clock=clock)
    caplog.set_level(logging.WARNING, "middletier.cache")
    own_redis.kill()
    g.set("k", b"v", 60)
    assert g.is_open
    clock.now = T0 + 2
    g.set("k", b"v", 60)                                 # the trial fails: open from now on
    assert g.is_open and g.stats["errors"] == 2
    own_redis.start()
    clock.now = T0 + 3.999
    g.set("k", b"v", 60)
    assert own_redis.client().exists("k") == 0           # skipped
    clock.now = T0 + 4
    g.set("k", b"v", 60)
    assert own_redis.client().get("k") == b"v" and not g.is_open
    assert g.stats == {"hits": 0, "misses": 0, "writes": 4, "errors": 2, "skipped": 1}
    assert [r.getMessage() for r in caplog.records] == [UNAVAILABLE, BACK]


class DuringNextCall:
    """Delegates to a real backend; runs ``hook`` once inside its next call, i.e. while Breaker waits
    for that call: what a concurrent request sees, without threads."""

    def __init__(self, inner: RedisBackend) -> None:
        self.inner, self.name = inner, inner.name
        self.hook: Callable[[], None] | None = None

    def _run_hook(self) -> None:
        hook, self.hook = self.hook, None
        if hook:
            hook()

    def get(self, key: str) -> bytes | None:
        self._run_hook()
        return self.inner.get(key)

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._run_hook()
        self.inner.set(key, value, ttl_seconds)

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        return self.inner.acquire_lock(key, ttl_ms)

    def release_lock(self, key: str, token: str) -> None:
        self.inner.release_lock(key, token)


def test_while_the_trial_call_runs_other_calls_are_skipped(own_redis: RedisServer) -> None:
    clock = Clock(T0)
    backend = DuringNextCall(RedisBackend(own_redis.url, 5.0))
    g = Breaker(backend, failures_to_open=1, open_seconds=2.0, clock=clock)
    own_redis.kill()
    assert g.get("k") is None and g.is_open
    own_redis.start()
    own_redis.client().set("k", b"v")
    inner: list[bytes | None] = []
    backend.hook = lambda: inner.append(g.get("k"))
    clock.now = T0 + 2
    assert g.get("k") == b"v"                            # the trial
    assert inner == [None] and g.stats["skipped"] == 1   # the concurrent call was not let through
    assert g.get("k") == b"v" and g.stats["skipped"] == 1
