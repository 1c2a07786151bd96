"""L1 bounds, sealing, the L2 breaker and the two-level cache, with an in-memory backend."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable

import pytest

from shared.memory import HOT_ENTRY, PARTITION_OVERHEAD, held_bytes
from shared.token_cache import PREFIX, REFRESH_MARGIN, Breaker, Partition, PartitionStore, Sealer, TokenCache


class MemoryBackend:
    name = "memory"
    timeout = 0.5

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttls: dict[str, int] = {}      # the TTL each key was last written (or locked) with
        self.gets: list[str] = []
        self.on_get: Callable[[str], None] | None = None  # runs once, inside the next get
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._check()
        self.gets.append(key)
        hook, self.on_get = self.on_get, None
        if hook:
            hook(key)
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._check()
        self.data[key] = value
        self.ttls[key] = ttl_seconds

    def acquire_lock(self, key: str, ttl_ms: int) -> str | None:
        self._check()
        self.ttls[key] = ttl_ms
        if key in self.data:
            return None
        self.data[key] = b"x"
        return "t"

    def release_lock(self, key: str, token: str) -> None:
        self._check()
        self.data.pop(key, None)


def test_sealer_opens_only_its_own_entries() -> None:
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal("k1", b"tokens")
    assert sealer.open("k1", sealed) == b"tokens"
    assert sealer.open("k2", sealed) is None                       # moved to another key
    assert Sealer(os.urandom(32)).open("k1", sealed) is None       # another app's key
    assert sealer.open("k1", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None  # tampered
    assert sealer.open("k1", b"short") is None
    with pytest.raises(ValueError):
        Sealer.from_base64("not-32-bytes")


def test_l1_is_bounded_by_count_and_bytes() -> None:
    by_count = PartitionStore(max_partitions=3, max_bytes=10**9)
    for i in range(10):
        by_count.put(Partition(f"{i:08x}", time.time() + 60))
    assert len(by_count) == 3
    by_bytes = PartitionStore(max_partitions=1000, max_bytes=10_000)
    for i in range(100):
        by_bytes.put(Partition(f"{i:08x}", time.time() + 60, size=1000))
    assert by_bytes.bytes <= 10_000 and len(by_bytes) == 10
    huge = by_bytes.put(Partition("ffffffff", time.time() + 60, size=10**6))
    assert huge.key == "ffffffff" and by_bytes.get("ffffffff") is None  # served, not kept


def test_l1_evicts_least_recently_used() -> None:
    store = PartitionStore(max_partitions=2)
    for key in ("aaaaaaaa", "bbbbbbbb"):
        store.put(Partition(key, time.time() + 60))
    store.get("aaaaaaaa")
    store.put(Partition("cccccccc", time.time() + 60))
    assert store.get("aaaaaaaa") is not None and store.get("bbbbbbbb") is None


def layers(backend: MemoryBackend, **kw: Any) -> TokenCache:
    return TokenCache(PartitionStore(), Breaker(backend, open_seconds=kw.pop("open_seconds", 5.0)),
                      Sealer(b"k" * 32), **kw)


def test_l2_fills_a_new_instance() -> None:
    backend = MemoryBackend()
    first = layers(backend)
    part = first.partition("0badc0de" * 8, time.time() + 600)
    part.data["AccessToken"] = {"x": {"secret": "at"}}
    first.save(part, token_expires_at=time.time() + 3600)
    assert all(b"secret" not in v for v in backend.data.values())  # sealed
    second = layers(backend)
    loaded = second.partition("0badc0de" * 8, time.time() + 600)
    assert loaded.data == {"AccessToken": {"x": {"secret": "at"}}}


def test_partition_expiry_follows_the_access_token() -> None:
    cache = layers(MemoryBackend())
    part = cache.partition("1" * 64, time.time() + 7200)
    cache.save(part, token_expires_at=time.time() + 1000)
    assert part.expires_at == pytest.approx(time.time() + 700, abs=2)


def test_breaker_opens_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend()
    now = [0.0]
    guarded = Breaker(backend, failures_to_open=2, open_seconds=5, clock=lambda: now[0])
    backend.down = True
    with caplog.at_level(logging.WARNING, "middletier.cache"):
        for _ in range(10):
            assert guarded.get("k") is None
        assert backend.calls == 2 and guarded.is_open  # then no more calls while open
        now[0] = 6
        assert guarded.get("k") is None and backend.calls == 3  # half-open probe fails: stays open
        backend.down = False
        now[0] = 12
        guarded.set("k", b"v", 10)
        assert not guarded.is_open and guarded.get("k") == b"v"
    warnings = [r.message for r in caplog.records]
    assert sum("unavailable" in m for m in warnings) == 1 and sum("is back" in m for m in warnings) == 1


def test_flight_lets_one_instance_call_and_the_other_wait() -> None:
    backend = MemoryBackend()
    a, b = layers(backend, wait_seconds=0.5), layers(backend, wait_seconds=0.5)
    key = "2" * 64
    part_a, part_b = a.partition(key, time.time() + 600), b.partition(key, time.time() + 600)
    with a.flight(part_a) as leader_a:
        assert leader_a
        part_a.data["AccessToken"] = {"k": {"secret": "from-a"}}
        a.save(part_a, token_expires_at=time.time() + 3600)
        with b.flight(part_b) as leader_b:
            assert not leader_b and part_b.data == part_a.data  # b got a's result, no second call
    assert PREFIX + "lock:" + key not in backend.data  # released


def test_flight_without_a_reachable_l2_proceeds() -> None:
    backend = MemoryBackend()
    backend.down = True
    cache = layers(backend)
    with cache.flight(cache.partition("3" * 64, time.time() + 600)) as leader:
        assert leader


# --- exact behaviour of the layers: what goes to L2, for how long, and what comes back ----------------
KEY32 = b"k" * 32  # layers()'s sealer key
T = 4_000_000_000.0  # far ahead of the real clock that L1 (PartitionStore) expires entries by


class Now:
    def __init__(self, t: float = T) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_an_l2_entry_is_the_compact_document_sealed_under_its_own_key() -> None:
    backend = MemoryBackend()
    cache = layers(backend, clock=Now())
    key = "a" * 64
    part = cache.partition(key, T + 600.9)
    part.data["AccessToken"] = {"x": {"secret": "at"}}
    cache.save(part)  # no access-token expiry given: the partition keeps its own
    assert part.expires_at == T + 600.9 and list(backend.data) == [PREFIX + key]
    assert backend.ttls[PREFIX + key] == 600  # whole seconds left
    plain = Sealer(KEY32).open(PREFIX + key, backend.data[PREFIX + key])
    assert part.version is not None and len(part.version) == 32 and int(part.version, 16) >= 0
    assert plain == (b'{"exp":' + json.dumps(T + 600.9).encode() + b',"v":"' + part.version.encode()
                     + b'","data":{"AccessToken":{"x":{"secret":"at"}}}}')
    version = part.version
    cache.save(part)
    assert part.version != version  # each write is a new version


@pytest.mark.parametrize("left,ttl", [(-10, None), (0.5, None), (0.999, None), (1.0, 1), (1.5, 1), (3600.2, 3600)])
def test_an_entry_goes_to_l2_only_with_at_least_a_whole_second_left(left: float, ttl: int | None) -> None:
    backend = MemoryBackend()
    cache = layers(backend, clock=Now())
    part = Partition("b" * 64, T + left)
    cache.save(part)
    assert backend.ttls.get(PREFIX + "b" * 64) == ttl


@pytest.mark.parametrize("token_expires_in,partition_left", [
    (None, 7200),                       # no token: unchanged
    (1000, 700),                        # the token's expiry minus the refresh margin
    (REFRESH_MARGIN + 1, 1),
    (REFRESH_MARGIN, 7200),             # a token already inside the margin does not shorten it
    (100, 7200),
    (9000, 7200),                       # never lengthened
])
def test_the_partition_expires_with_its_token_minus_the_refresh_margin(token_expires_in: float | None,
                                                                       partition_left: float) -> None:
    backend = MemoryBackend()
    cache = layers(backend, clock=Now())
    part = Partition("c" * 64, T + 7200)
    cache.save(part, None if token_expires_in is None else T + token_expires_in)
    assert part.expires_at == T + partition_left and backend.ttls[PREFIX + "c" * 64] == partition_left


@pytest.mark.parametrize("data,extra_hot_slots", [
    ({}, 0), ({"AccessToken": {}}, 0), ({"AccessToken": {"a": {}}}, 0),
    ({"AccessToken": {"a": {}, "b": {}}}, 1), ({"AccessToken": {str(i): {} for i in range(5)}, "Account": {}}, 4),
])
def test_a_partition_is_sized_with_one_hot_slot_per_access_token_beyond_the_first(
        data: dict[str, Any], extra_hot_slots: int) -> None:
    cache = layers(MemoryBackend(), clock=Now())
    part = Partition("d" * 64, T + 600, data)
    cache.save(part)
    assert part.size == PARTITION_OVERHEAD + held_bytes(data) + HOT_ENTRY * extra_hot_slots
    assert cache.l1.bytes == part.size


def test_an_instance_loads_a_partition_from_l2_once_keeps_it_in_l1_and_accounts_its_size() -> None:
    backend = MemoryBackend()
    writer = layers(backend)
    key = "e" * 64
    part = writer.partition(key, time.time() + 3600)
    part.data["AccessToken"] = {"a": {"secret": "1"}, "b": {"secret": "2"}}
    writer.save(part)
    reader = layers(backend)
    backend.gets.clear()
    loaded = reader.partition(key, time.time() + 60)
    assert loaded.key == key and loaded.data == part.data
    assert loaded.expires_at == pytest.approx(time.time() + 60, abs=2)  # the earlier of the two
    # what the loaded copy holds (its strings are its own; the writer's literals may be shared, and are then
    # not counted: held_bytes skips strings referenced from everywhere, and that depends on the process)
    assert loaded.size == PARTITION_OVERHEAD + held_bytes(loaded.data) + HOT_ENTRY and reader.l1.bytes == loaded.size
    assert reader.partition(key, time.time() + 60) is loaded and backend.gets == [PREFIX + key]


def test_without_l2_a_sealer_alone_changes_nothing() -> None:
    cache = TokenCache(PartitionStore(), None, Sealer(KEY32), clock=Now())
    part = cache.partition("f" * 64, T + 600)
    part.data["AccessToken"] = {"a": {}}
    cache.save(part, T + 1000)
    assert cache.partition("f" * 64, T + 600) is part and cache.reload(part) is False
    with cache.flight(part) as leader:
        assert leader


@pytest.mark.parametrize("in_l2,reloaded", [(None, False), ({}, False), ({"AccessToken": {"a": {}}}, True)])
def test_reload_takes_another_instances_entry_only_when_it_holds_tokens(in_l2: dict[str, Any] | None,
                                                                        reloaded: bool) -> None:
    backend = MemoryBackend()
    key = "9" * 64
    if in_l2 is not None:
        other = layers(backend)
        theirs = other.partition(key, time.time() + 600)
        theirs.data.update(in_l2)
        other.save(theirs)
    cache = TokenCache(PartitionStore(), Breaker(backend), Sealer(KEY32))
    mine = Partition(key, time.time() + 600, {"Account": {"mine": {}}})
    assert cache.reload(mine) is reloaded
    expected = in_l2 if reloaded else {"Account": {"mine": {}}}
    assert mine.data == expected and mine.size == (PARTITION_OVERHEAD + held_bytes(mine.data) if reloaded  # its copy
                                                   else PARTITION_OVERHEAD)
    assert (cache.l1.get(key) is mine) is reloaded


@pytest.mark.parametrize("prefix,stripe", [("00000000", 0), ("00000040", 0), ("0000003f", 63), ("00000041", 1),
                                           ("12345678", 0x78 % 64), ("ffffffff", 63)])
def test_an_l2_load_holds_the_stripe_of_the_keys_first_32_bits_modulo_64(prefix: str, stripe: int) -> None:
    """Which of the 64 stripe locks a load holds (private state, read while the load runs): loads of
    keys on one stripe are serialised, and the keys spread over the stripes by their first 8 hex digits."""
    backend = MemoryBackend()
    cache = layers(backend)
    held: list[list[int]] = []
    backend.on_get = lambda _key: held.append([i for i, lock in enumerate(cache._stripes) if lock.locked()])
    cache.partition(prefix + "1" * 56, time.time() + 600)
    assert held == [[stripe]] and len(cache._stripes) == 64


def test_an_l1_hit_never_waits_behind_another_keys_l2_load() -> None:
    backend = MemoryBackend()
    cache = layers(backend)
    loading, cached = "00000000" + "a" * 56, "00000040" + "b" * 56  # the same stripe
    hit = cache.l1.put(Partition(cached, time.time() + 600))
    got: list[Any] = []
    done = threading.Event()

    def during_load(_key: str) -> None:
        threading.Thread(target=lambda: (got.append(cache.partition(cached, time.time() + 600)), done.set())).start()
        got.append(done.wait(5))

    backend.on_get = during_load
    cache.partition(loading, time.time() + 600)
    assert len(got) == 2 and got[0] is hit and got[1] is True


class LookupSignal(PartitionStore):
    """The real L1, also telling the test once a given thread has looked a key up."""

    def __init__(self, thread_name: str) -> None:
        super().__init__()
        self.thread_name = thread_name
        self.looked = threading.Event()

    def get(self, key: str) -> Partition | None:
        part = super().get(key)
        if threading.current_thread().name == self.thread_name:
            self.looked.set()
        return part


def test_two_requests_missing_the_same_key_load_it_from_l2_once_and_share_the_partition() -> None:
    backend = MemoryBackend()
    key = "5" * 64
    writer = layers(backend)
    theirs = writer.partition(key, time.time() + 600)
    theirs.data["AccessToken"] = {"a": {"secret": "1"}}
    writer.save(theirs)
    l1 = LookupSignal("second")
    cache = TokenCache(l1, Breaker(backend), Sealer(KEY32))
    out: dict[str, Partition] = {}
    second = threading.Thread(target=lambda: out.setdefault("p", cache.partition(key, time.time() + 600)),
                              name="second")
    backend.gets.clear()
    backend.on_get = lambda _key: (second.start(), l1.looked.wait(5))  # the second misses L1 meanwhile
    first = cache.partition(key, time.time() + 600)
    second.join(5)
    assert out["p"] is first and backend.gets == [PREFIX + key]


class FakeTime:
    """The monotonic clock and sleep injected into TokenCache for flight(): sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_lock_is_taken_for_fifteen_seconds_and_a_follower_waits_up_to_ten() -> None:
    backend = MemoryBackend()
    cache = layers(backend)
    key = "7" * 64
    part = cache.partition(key, time.time() + 600)
    with cache.flight(part) as leader:
        assert leader and backend.ttls[PREFIX + "lock:" + key] == 15_000
        clock = FakeTime()
        follower = layers(backend, monotonic=clock.monotonic, sleep=clock.sleep)
        with follower.flight(follower.partition(key, time.time() + 600)) as follower_leads:
            assert follower_leads  # nobody filled the entry in time: it calls the provider itself
        assert 10.0 <= clock.now < 10.0 + 0.02 + 1e-9 and set(clock.slept) == {0.02}


def test_a_waiter_takes_only_an_entry_newer_than_the_one_it_holds() -> None:
    """Issue 18 item 4: the partition already in L2 (an earlier call's tokens) is not the leader's
    answer. Before, the follower reloaded it at once, ended its wait and called Entra as well."""
    backend = MemoryBackend()
    leader, key = layers(backend), "6" * 64
    old = leader.partition(key, time.time() + 600)
    old.data["AccessToken"] = {"graph": {"secret": "old"}}
    leader.save(old)
    clock = FakeTime()
    follower = layers(backend, monotonic=clock.monotonic, sleep=clock.sleep)
    mine = follower.partition(key, time.time() + 600)
    assert mine.data == old.data and mine.version == old.version  # loaded from L2

    def leader_answers_on_the_fifth_sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 5:
            old.data["AccessToken"]["orders"] = {"secret": "new"}
            leader.save(old)
    follower._sleep = leader_answers_on_the_fifth_sleep
    with leader.flight(old) as leads:
        assert leads
        with follower.flight(mine) as follower_leads:
            assert not follower_leads and mine.data["AccessToken"]["orders"] == {"secret": "new"}
            assert len(clock.slept) == 5 and mine.version == old.version


def test_a_lock_free_because_the_leader_just_saved_is_taken_with_the_leaders_entry() -> None:
    """Issue 18 item 3's measurement: a process read the partition before the leader saved, then found
    the lock free (released) and called Entra again. Taking the lock now re-reads L2 first."""
    backend = MemoryBackend()
    leader, follower, key = layers(backend), layers(backend), "4" * 64
    stale = follower.partition(key, time.time() + 600)  # read before the leader's answer: empty
    fresh = leader.partition(key, time.time() + 600)
    with leader.flight(fresh) as leads:
        assert leads
        fresh.data["AccessToken"] = {"k": {"secret": "from-leader"}}
        leader.save(fresh)
    with follower.flight(stale) as follower_leads:
        assert not follower_leads and stale.data == fresh.data and stale.version == fresh.version
    with follower.flight(stale) as follower_leads:
        assert follower_leads  # nothing newer in L2 this time: this instance calls Entra
    assert PREFIX + "lock:" + key not in backend.data  # released both times


def test_reload_swaps_the_partition_only_under_msals_cache_lock() -> None:
    """Issue 18 item 4: MSAL reads and writes a partition under its TokenCache lock; a reload from
    L2 must not swap the dict in the middle of one of those operations (before, it did not wait)."""
    backend = MemoryBackend()
    writer, key = layers(backend), "5" * 64
    theirs = writer.partition(key, time.time() + 600)
    theirs.data["AccessToken"] = {"a": {"secret": "theirs"}}
    writer.save(theirs)
    cache = layers(backend)
    mine = cache.l1.put(Partition(key, time.time() + 600, {"AccessToken": {"b": {"secret": "mine"}}}))
    done = threading.Event()
    with cache.msal._lock:  # an MSAL operation in progress in this thread
        reloader = threading.Thread(target=lambda: (cache.reload(mine), done.set()))
        reloader.start()
        assert not done.wait(0.3) and mine.data == {"AccessToken": {"b": {"secret": "mine"}}}
    assert done.wait(5) and mine.data == theirs.data
    reloader.join(5)


def _l2_without_a_key() -> None:
    TokenCache(PartitionStore(), Breaker(MemoryBackend()))


def _an_entry_sealed_with_another_key() -> None:
    backend = MemoryBackend()
    key = "8" * 64
    backend.data[PREFIX + key] = Sealer(b"o" * 32).seal(PREFIX + key, b'{"exp":1,"data":{}}')
    assert layers(backend).partition(key, time.time() + 600).data == {}


@pytest.mark.parametrize("case,error,logged", [
    (_l2_without_a_key, "an L2 cache needs an encryption key", []),
    (_an_entry_sealed_with_another_key, None, ["token cache L2 entry failed authentication; treating it as a miss"]),
])
def test_operator_facing_texts(case: Callable[[], None], error: str | None, logged: list[str],
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "middletier.cache")
    if error is None:
        case()
    else:
        with pytest.raises(ValueError) as raised:
            case()
        assert str(raised.value) == error
    assert [r.getMessage() for r in caplog.records] == logged


def test_the_l1_it_is_given_is_used_even_while_empty() -> None:
    """An empty PartitionStore is falsy (it has a length): the cache must still keep the one built
    from the settings (its bounds), not swap in a default one."""
    l1 = PartitionStore(max_partitions=3, max_bytes=10_000)
    assert TokenCache(l1).l1 is l1


# --- the entry point: TokenCache.open() and the PartitionHandle acquisition works with -------------------
def test_open_gives_the_assertions_life_else_the_lifetime_asked_for() -> None:
    cache = layers(MemoryBackend(), clock=Now())
    assert cache.open("1" * 64, expires_at=T + 1234).part.expires_at == T + 1234
    assert cache.open("2" * 64).part.expires_at == T + 300  # an assertion without exp: five minutes
    assert cache.open("3" * 64, lifetime=7).part.expires_at == T + 7


def test_open_asks_l2_unless_the_key_is_new() -> None:
    backend = MemoryBackend()
    cache = layers(backend, clock=Now())
    fresh = cache.open("4" * 64, expires_at=T + 60, new=True)
    assert backend.gets == [] and cache.l1.get("4" * 64) is fresh.part
    assert (fresh.part.key, fresh.part.expires_at) == ("4" * 64, T + 60)
    known = cache.open("5" * 64, expires_at=T + 60)
    assert backend.gets == [PREFIX + "5" * 64] and cache.l1.get("5" * 64) is known.part


def test_a_commit_shortens_a_users_partition_to_its_token_and_writes_l2_only_when_msal_changed_it() -> None:
    backend = MemoryBackend()
    cache = layers(backend, clock=Now())
    answer = {"access_token": "at", "expires_in": 1000}
    user = cache.open("6" * 64, expires_at=T + 3600)
    user.commit(answer, ("s",))
    assert user.part.expires_at == T + 1000 - REFRESH_MARGIN and backend.ttls[PREFIX + "6" * 64] == 700
    app = cache.open("7" * 64, lifetime=86400, follows_token=False)  # the app's, a session's: its own life
    app.commit(answer, ("s",))
    assert app.part.expires_at == T + 86400 and backend.ttls[PREFIX + "7" * 64] == 86400
    undated = cache.open("8" * 64, expires_at=T + 3600)
    undated.commit({"access_token": "at", "expires_in": "1000"})  # not a number: the partition keeps its life
    assert undated.part.expires_at == T + 3600 and undated.part.hot == {}
    unchanged = cache.open("9" * 64, expires_at=T + 3600)
    unchanged.commit(answer, ("s",), changed=False)
    assert PREFIX + "9" * 64 not in backend.data and unchanged.part.expires_at == T + 3600
    assert unchanged.part.hot == {("s",): ("at", T + 1000 - REFRESH_MARGIN)}


def test_a_commit_remembers_the_token_until_msal_would_refresh_it() -> None:
    entry = TokenCache(PartitionStore(), clock=Now()).open("a" * 64, expires_at=T + 99_999)
    for scope, token, expires_in in [("a", "short", 3599), ("b", "cae", 86399), ("c", "edge", 7200),
                                     ("d", "gone", 300), ("e", "string", "3599")]:
        entry.commit({"access_token": token, "expires_in": expires_in}, (scope,), changed=False)
    entry.commit({"access_token": "no-scopes", "expires_in": 3599}, changed=False)
    assert entry.part.hot == {("a",): ("short", T + 3599 - REFRESH_MARGIN),   # 5 minutes before expiry
                              ("b",): ("cae", T + 86399 / 2),                 # long-lived: half its life
                              ("c",): ("edge", T + 3600)}                     # 2 hours counts as long-lived


def test_a_remembered_token_is_served_until_its_time_only() -> None:
    now = Now()
    entry = TokenCache(PartitionStore(), clock=now).open("b" * 64, expires_at=T + 99_999)
    assert entry.remembered(("s",)) is None
    entry.part.hot[("s",)] = ("tok", T + 10)
    assert entry.remembered(("s",)) == "tok" and entry.remembered(("other",)) is None
    now.t = T + 10
    assert entry.remembered(("s",)) is None


def test_a_bound_partition_is_what_msal_reads_and_writes() -> None:
    cache = TokenCache()
    assert isinstance(cache.l1, PartitionStore)
    entry = cache.open("c" * 64, expires_at=time.time() + 600)
    with entry.bound():
        assert cache.msal._cache is entry.part.data
    with pytest.raises(RuntimeError):
        cache.msal._cache


def test_exclusive_holds_the_partition_lock_and_across_instances_the_l2_lock() -> None:
    backend = MemoryBackend()
    entry = layers(backend).open("d" * 64, expires_at=time.time() + 600)
    lock = PREFIX + "lock:" + "d" * 64
    with entry.exclusive(1.0, across_instances=True) as held:
        assert held and entry.part.lock.locked() and lock in backend.data
        with entry.exclusive(0.01) as again:
            assert again is False  # a second request of this caller gives up after its wait
    assert not entry.part.lock.locked() and lock not in backend.data
    with entry.exclusive(0.0) as held:
        assert held and entry.part.lock.locked() and lock not in backend.data  # this process only
    assert not entry.part.lock.locked()


# --- answerable: MSAL would serve these scopes from the partition, without a network call ------------
def _at(target: Any = "api://orders/Orders.Read openid", expires_in: Any = 3600, refresh_in: Any = None) -> dict:
    entry: dict[str, Any] = {"target": target}
    if expires_in is not None:
        entry["expires_on"] = str(int(T) + expires_in) if isinstance(expires_in, int) else expires_in
    if refresh_in is not None:
        entry["refresh_on"] = str(int(T) + refresh_in) if isinstance(refresh_in, int) else refresh_in
    return entry


@pytest.mark.parametrize("entries,scopes,answerable", [
    ([_at()], ("api://orders/Orders.Read",), True),
    ([_at()], ("api://orders/Orders.Read", "openid"), True),
    ([_at()], ("api://orders/Orders.Write",), False),               # not among its scopes
    ([_at()], ("api://orders/orders.read",), False),                # MSAL matches scopes exactly
    ([_at(expires_in=REFRESH_MARGIN)], ("api://orders/Orders.Read",), True),      # MSAL: < 300 s is expired
    ([_at(expires_in=REFRESH_MARGIN - 1)], ("api://orders/Orders.Read",), False),
    ([_at(refresh_in=0)], ("api://orders/Orders.Read",), True),     # refresh_on == now: not aging yet
    ([_at(refresh_in=-1)], ("api://orders/Orders.Read",), False),   # aging: MSAL would try to refresh it
    ([_at(expires_in=None)], ("api://orders/Orders.Read",), False),  # no expiry: not trusted
    ([_at(expires_in="soon")], ("api://orders/Orders.Read",), False),
    ([_at(refresh_in="soon")], ("api://orders/Orders.Read",), False),
    ([_at(target="")], ("api://orders/Orders.Read",), False),
    ([{k: v for k, v in _at().items() if k != "target"}], ("api://orders/Orders.Read",), False),
    ([_at(target=None)], ("api://orders/Orders.Read",), False),
    ([_at(expires_in=REFRESH_MARGIN - 1), _at()], ("api://orders/Orders.Read",), True),  # any one will do
    ([], ("api://orders/Orders.Read",), False),
])
def test_answerable_is_msals_own_cache_hit_rule(entries: list[dict[str, Any]], scopes: tuple[str, ...],
                                                answerable: bool) -> None:
    cache = TokenCache(PartitionStore(), clock=Now())
    handle = cache.open("4" * 64, expires_at=T + 600)
    handle.part.data["AccessToken"] = {str(i): entry for i, entry in enumerate(entries)}
    assert handle.answerable(scopes) is answerable
    assert cache.open("3" * 64, expires_at=T + 600).answerable(scopes) is False  # no AccessToken section
