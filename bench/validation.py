"""First-sight and repeat validation of a caller's token against a raw RSA-2048 verify, in-process.

Run: .venv/bin/python bench/validation.py [--profile] [--tree PATH]   (make bench runs it through middletier.py)

- raw: ``cryptography``'s RS256 verify of the token's signature, the floor any validator pays;
- first sight: ``TokenValidator.validate`` of tokens it has never seen (each a distinct token, so SHA-256 of the
  token, the parse, the verify, the claim checks and the memo's insert are all in), as a user's first call or a
  token refresh pays it;
- repeat: the same validator on a token it has already proven good (the memo).
Tokens carry the claims an Entra v2 access token does (``aio``, ``name``, ``rh``, ``uti``...), so the JSON
parsed is the real size. Figures are the best of 5 rounds (the machine's noise only ever adds time).
``--profile``: cProfile's top entries of first sight, written to bench/results/validation_profile.txt.
``--tree``: validate with another checkout's ``shared`` (e.g. a ``git worktree`` of the commit before a change).
"""
from __future__ import annotations

import argparse
import base64
import cProfile
import io
import pstats
import sys
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUNDS, N = 5, 1000
ENTRA_CLAIMS = {"aio": "AXQAi/8UAAAA" + "x" * 120, "name": "Alice Example", "preferred_username": "alice@contoso.test",
                "rh": "1.AXkA" + "y" * 60, "sub": "pS8n" + "z" * 39, "ver": "2.0",
                "family_name": "Example", "given_name": "Alice", "ipaddr": "203.0.113.7", "xms_cc": ["CP1"]}


def _best(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=ROUNDS)) / number


def measure(profile: bool = False) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from shared.config import load_settings
    from shared.memory import validator_memo_bytes
    from shared.signing_keys import SigningKeys
    from shared.validation import TokenValidator
    from tests.fakes import INSTANCE, KEY, TENANT, FakeIdP, env, token
    app_settings = load_settings(env())
    settings, cache = app_settings.azure_ad, app_settings.token_cache
    keys = SigningKeys(INSTANCE + TENANT + "/v2.0/.well-known/openid-configuration", FakeIdP(KEY))  # type: ignore
    tokens = [token(**ENTRA_CLAIMS, uti=uuid.uuid4().hex[:22]) for _ in range(N * (ROUNDS + 1))]
    # as the app builds it (shared/context.py): bounded by entries and by its share of the L1 byte budget
    validator = TokenValidator(keys, settings, max_entries=max(cache.l1_max_entries, len(tokens)),
                               max_bytes=validator_memo_bytes(cache.l1_max_bytes))
    validator.validate(tokens[-1])  # keys fetched, code paths warm
    fresh = iter(tokens)
    first = _best(lambda: validator.validate(next(fresh)), N)
    repeat = _best(lambda: validator.validate(tokens[0]), N)
    h, p, s = tokens[0].split(".")
    sig, signed, pub = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), f"{h}.{p}".encode(), KEY.public_key()
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    raw = _best(lambda: pub.verify(sig, signed, pkcs1, sha256), N)
    out: dict[str, Any] = {
        "token_bytes": len(tokens[0]), "raw_rsa_verify_us": round(raw * 1e6, 1),
        "first_sight_us": round(first * 1e6, 1), "repeat_us": round(repeat * 1e6, 1),
        "raw_rsa_verify_per_s": round(1 / raw), "first_sight_validations_per_s": round(1 / first),
        "repeat_validations_per_s": round(1 / repeat), "first_sight_ratio": round(raw / first, 2),
        "repeat_ratio": round(raw / repeat, 2)}
    out["stages_us"] = stages(tokens[0], keys, settings, validator)
    if profile:
        more = [token(**ENTRA_CLAIMS, uti=uuid.uuid4().hex[:22]) for _ in range(N)]
        prof = cProfile.Profile()
        prof.enable()
        for t in more:
            validator.validate(t)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
        out["profile"] = text.getvalue()
    return out


def stages(token: str, keys: Any, settings: Any, validator: Any) -> dict[str, float]:
    """Where a first sight's microseconds go, each stage timed alone (no profiler's overhead); needs the
    measured tree's ``Parsed`` (this tree's validation.py or later)."""
    import hashlib

    from shared import validation as v
    from shared.memory import json_held_bytes
    if not hasattr(v, "Parsed"):
        return {}
    parsed = v._parts(token)
    key = keys.get(parsed.header["kid"])
    caller = v._validate(parsed, keys, settings, "")
    checks = _best(lambda: v._validate(parsed, keys, settings, ""), N)
    verify = _best(lambda: v._verify_signature(key.key, parsed), N)
    return {k: round(t * 1e6, 2) for k, t in {
        "sha256_of_token": _best(lambda: hashlib.sha256(token.encode()).hexdigest(), N),
        "parse_once": _best(lambda: v._parts(token), N),
        "rs256_verify": verify,
        "claims_and_caller": checks - verify,
        "memo_entry_size": _best(lambda: json_held_bytes(parsed.payload_json, caller.claims), N),
    }.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose shared/ is measured")
    args = parser.parse_args()
    sys.path[:0] = [str(args.tree.resolve()), str(ROOT)]
    started = time.monotonic()
    result = measure(args.profile)
    profile = result.pop("profile", None)
    print({k: v for k, v in result.items()}, f"({time.monotonic() - started:.1f} s)")
    if profile:
        path = ROOT / "bench" / "results" / f"validation_profile{'' if args.tree == ROOT else '_tree'}.txt"
        path.write_text(f"# {' '.join(sys.argv)}\n# tree: {args.tree}\n{result}\n{profile}")
        print(profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
