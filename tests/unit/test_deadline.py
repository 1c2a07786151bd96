"""shared/deadline.py: the request's one deadline (a ContextVar), nested blocks, bounded waits, the 504."""
from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest

from shared import deadline
from shared.errors import UpstreamError, problem


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(deadline, "_clock", fake)
    return fake


def test_outside_a_request_nothing_is_bounded(clock: Clock) -> None:
    assert deadline.remaining() is None
    assert deadline.bounded(7.5) == 7.5
    assert deadline.spent() is False
    deadline.check("Entra ID")  # no budget, no 504


def test_within_starts_a_deadline_that_counts_down_and_ends_on_exit(clock: Clock) -> None:
    with deadline.within(2.0):
        assert deadline.remaining() == pytest.approx(2.0)
        clock.now += 0.5
        assert deadline.remaining() == pytest.approx(1.5)
        assert deadline.bounded(10.0) == pytest.approx(1.5)
        assert deadline.bounded(1.0) == 1.0
        clock.now += 5.0
        assert deadline.remaining() == 0.0  # never negative
        assert deadline.bounded(3.0) == 0.0
    assert deadline.remaining() is None


def test_nested_blocks_keep_the_earlier_deadline_and_restore_the_outer(clock: Clock) -> None:
    with deadline.within(5.0):
        with deadline.within(10.0):  # cannot lengthen the request's budget
            assert deadline.remaining() == pytest.approx(5.0)
        with deadline.within(1.0):  # can shorten it
            assert deadline.remaining() == pytest.approx(1.0)
        assert deadline.remaining() == pytest.approx(5.0)
    assert deadline.remaining() is None


def test_restored_even_when_the_block_raises(clock: Clock) -> None:
    with pytest.raises(RuntimeError), deadline.within(1.0):
        raise RuntimeError("boom")
    assert deadline.remaining() is None


def test_check_answers_504_naming_the_service_once_spent(clock: Clock) -> None:
    with deadline.within(1.0):
        deadline.check("Key Vault")  # time left: nothing raised
        clock.now += 1.0 - deadline.EPSILON / 2
        with pytest.raises(UpstreamError) as raised:
            deadline.check("Key Vault")
    status, _, body = problem(raised.value)
    assert status == 504 and body["upstream"] == "Key Vault"
    assert "Key Vault" in body["detail"] and "budget" in body["detail"]


def test_a_zero_or_negative_budget_is_spent_at_once(clock: Clock) -> None:
    with deadline.within(-3.0):
        assert deadline.remaining() == 0.0
        with pytest.raises(UpstreamError):
            deadline.check("the downstream API")


def test_each_thread_sees_only_its_own_deadline(clock: Clock) -> None:
    seen: list[float | None] = []
    with deadline.within(3.0):
        worker = threading.Thread(target=lambda: seen.append(deadline.remaining()))
        worker.start()
        worker.join()
        assert deadline.remaining() == pytest.approx(3.0)
    assert seen == [None]  # a new thread starts with no request's deadline


def test_a_copied_context_carries_the_deadline(clock: Clock) -> None:
    with deadline.within(4.0):
        ctx = contextvars.copy_context()
    assert deadline.remaining() is None
    assert ctx.run(deadline.remaining) == pytest.approx(4.0)


def test_check_raises_budget_spent_an_upstream_error(clock: Clock) -> None:
    with deadline.within(0.0), pytest.raises(deadline.BudgetSpent) as raised:
        deadline.check("identity")
    assert isinstance(raised.value, UpstreamError) and raised.value.status == 504


def loader(first: Exception) -> tuple[Any, list[int]]:
    from shared.context import build_context
    from tests.fakes import env
    tokens = build_context(env()).tokens
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise first
        return "the-secret"
    tokens._load_credential = load
    return tokens, calls


def test_a_vault_failure_is_remembered_for_the_credential_backoff() -> None:
    tokens, calls = loader(UpstreamError("keyvault", "The app's credential could not be loaded from Key Vault.", 503))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            tokens._ensure_credential()
    assert calls == [1]  # the second request was answered from memory: the vault was not asked again


def test_a_request_out_of_time_does_not_poison_the_credential_backoff() -> None:
    tokens, calls = loader(deadline.BudgetSpent("keyvault"))
    with pytest.raises(deadline.BudgetSpent):
        tokens._ensure_credential()
    assert tokens._ensure_credential() == "the-secret" and calls == [1, 1]  # the next request loads it
