"""Coverage-guided fuzz target (atheris/libFuzzer) for the header parser and the token validator.

Run through the driver, which records iterations: .venv/bin/python bench/fuzz.py [runs]
Or directly:  .venv/bin/python tests/fuzz/fuzz_validate.py -runs=100000
Any exception other than the typed 401/403 errors is a crash (libFuzzer reports and exits non-zero).
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    import jwt  # noqa: F401
    from shared.bearer import bearer_token
    from shared.config import load_settings
    from shared.downstream import challenge_claims
    from shared.errors import AuthenticationError, InsufficientScope
    from shared.signing_keys import SigningKeys
    from shared.authorization import Requirement, check
from shared.validation import validate

from tests.fakes import INSTANCE, KEY, TENANT, FakeIdP, env, token  # noqa: E402

SETTINGS = load_settings(env()).azure_ad
KEYS = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", FakeIdP(KEY))  # type: ignore[arg-type]
SEED = token()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    text = fdp.ConsumeUnicodeNoSurrogates(len(data))
    if mode == 3:  # mutate a real token: keeps the fuzzer near the interesting paths
        cut = fdp.ConsumeIntInRange(0, len(SEED))
        text = SEED[:cut] + text + SEED[cut + len(text):]
    try:
        if mode == 0:
            bearer_token(text)
        elif mode == 1:
            challenge_claims(text)
        else:
            check(validate(text, KEYS, SETTINGS), Requirement(), SETTINGS)
    except (AuthenticationError, InsufficientScope):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
