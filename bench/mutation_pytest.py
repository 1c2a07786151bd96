"""pytest plugin for mutation runs only (`make mutate` loads it with `-p bench.mutation_pytest`).

Hypothesis property tests pin their own `max_examples` (800-2000) with `@settings`, which a profile
cannot override; under mutation every surviving mutant would pay ~17 s of them. When
MUTATION_HYPOTHESIS_MAX_EXAMPLES is set, each collected hypothesis test keeps all its settings
(derandomized, explicit @example cases still run) but explores only that many generated examples.
Never loaded by `make test`: the default CI behaviour is unchanged."""
from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    cap = os.environ.get("MUTATION_HYPOTHESIS_MAX_EXAMPLES")
    if not cap:
        return
    from hypothesis import settings

    for item in items:
        test: Any = getattr(item, "obj", None)
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is not None and current.max_examples > int(cap):
            test._hypothesis_internal_use_settings = settings(current, max_examples=int(cap))
