"""TokenAcquirer's credential handling: a refused credential is reloaded, but not once per request."""
from __future__ import annotations

from shared.acquisition import TokenAcquirer
from shared.config import load_settings

from .test_aadsts import ENV


def test_a_credential_entra_keeps_refusing_is_reloaded_once_per_backoff() -> None:
    now, loads = [0.0], []
    acquirer = TokenAcquirer(load_settings(ENV).azure_ad, lambda: loads.append(1) or "secret",  # type: ignore[func-returns-value]
                             None, failure_backoff=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    acquirer._ensure_credential()
    for _ in range(5):  # five requests, each refused with the credential it saw
        acquirer._reload_credential(acquirer._generation)
    assert len(loads) == 2 and acquirer.counters.credential_reloads == 1
    now[0] += 5.0
    acquirer._reload_credential(acquirer._generation)
    assert len(loads) == 3 and acquirer.counters.credential_reloads == 2


def test_a_reload_by_another_request_is_not_repeated() -> None:
    loads: list[int] = []
    acquirer = TokenAcquirer(load_settings(ENV).azure_ad, lambda: loads.append(1) or "secret",  # type: ignore[func-returns-value]
                             None)  # type: ignore[arg-type]
    acquirer._ensure_credential()
    seen = acquirer._generation
    acquirer._reload_credential(seen)
    acquirer._reload_credential(seen)  # a second request that saw the same, already replaced, credential
    assert len(loads) == 2
