"""Mutation testing of the security-critical modules with mutmut (`make mutate`; not in `make test`).

    .venv/bin/python bench/mutate.py [module ...]     # default: all, in the order of MODULES

For each module, copies the tree (tracked and new files, minus clients/ and ignored ones) to
bench/out/mutation/<module>/ (git-ignored; one directory per module, so two modules can be run at
once), writes mutmut's config there, and runs `mutmut run "shared.<module>.*"` (2 workers by
default, MUTATE_MAX_CHILDREN). Each
mutant runs only the tests that mutmut's stats pass saw calling the mutated function, out of TESTS
(in-process) plus MODULE_TESTS[module] (which may start a real redis-server or Azurite, as the L2
backends need), with `-x -q -p no:cacheprovider` and hypothesis capped at
MUTATION_HYPOTHESIS_MAX_EXAMPLES generated examples per property test (bench/mutation_pytest.py).

A survivor listed in bench/equivalent_mutants/<module>.json (matched by function and by the mutated
lines, not by mutmut's numbering) is counted as "equivalent", with the reason written there: it is
left out of the kill rate's denominator and listed apart from the survivors.

Writes bench/results/mutation.json (or $MUTATE_RESULT): kill_rate overall and per module, and every
surviving mutant (module, line, the mutation as removed/added lines). Modules not run this time keep
their previous entries. kill_rate = (killed + timeout) / (mutants tested - equivalent); "no tests"
counts as not killed."""
from __future__ import annotations

import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK_ROOT = ROOT / "bench" / "out" / "mutation"
RESULT = Path(os.environ.get("MUTATE_RESULT") or ROOT / "bench" / "results" / "mutation.json").resolve()
EQUIVALENT = ROOT / "bench" / "equivalent_mutants"
MUTMUT = Path(sys.executable).parent / "mutmut"

# Paths under shared/ without ".py" (a module of a package: "token_cache/l2").
MODULES = ["bearer", "token_cache/sealing", "authorization", "aadsts", "validation", "signing_keys",
           "token_cache/layers", "token_cache/l2", "tokens"]
# Modules mutated in part: only these functions (mutmut's keys, without the __mutmut_N suffix).
# tokens.py: its mapping of Entra's answers to the app's typed errors, not the calls to MSAL.
FUNCTIONS: dict[str, list[str]] = {
    "tokens": ["xǁTokensǁ_token_or_raise", "x__failed", "x__is_invalid_client", "x__tenant_not_provisioned"],
}

# In-process tests only (no devstack, host, redis-server or Azurite process): a few seconds in all.
TESTS = [
    "tests/unit/test_config.py",
    "tests/unit/test_errors.py",
    "tests/unit/test_bearer.py",
    "tests/unit/test_validation.py",
    "tests/unit/test_signing_keys.py",
    "tests/unit/test_authorization.py",
    "tests/unit/test_fuzz_properties.py",
    "tests/unit/test_aadsts.py",
    "tests/unit/test_sealing.py",
    "tests/unit/test_tokens.py",
    "tests/unit/test_cache_layers.py",
    "tests/unit/test_token_cache.py",
    "tests/unit/test_context.py",
    "tests/unit/test_memory_estimate.py",
    "tests/unit/test_pipeline.py",
    "tests/security/test_memory_bounds.py",
    # the in-process half of test_input_handling (the rest needs a devstack and a host)
    "tests/security/test_input_handling.py::test_numeric_date_claims_of_another_type_are_refused_as_invalid_token",
    "tests/security/test_input_handling.py::test_non_standard_json_number_constants_are_refused",
    "tests/security/test_input_handling.py::test_integer_and_fractional_numeric_dates_are_still_accepted",
    "tests/security/test_input_handling.py::test_a_token_has_one_spelling_padding_and_non_canonical_base64url_are_refused",
    "tests/security/test_input_handling.py::test_scp_is_split_on_spaces_only_other_whitespace_is_refused",
    "tests/security/test_input_handling.py::test_scp_with_several_ascii_spaces_still_splits",
    "tests/security/test_input_handling.py::test_requests_that_cannot_be_valid_never_spend_the_unknown_kid_refetch",
    "tests/security/test_input_handling.py::test_a_forgery_that_looks_valid_delays_a_rolled_key_by_the_short_interval_only",
    "tests/security/test_input_handling.py::test_keys_are_still_refreshed_daily_and_kept_when_the_refresh_fails",
]
# Tests for one module only: they may start real processes (redis-server, Azurite), which the
# in-process TESTS above never do.
MODULE_TESTS: dict[str, list[str]] = {
    "token_cache/l2": ["tests/unit/test_l2.py"],
}
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "bench.mutation_pytest"]

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}


def work_dir(module: str) -> Path:
    return WORK_ROOT / module


def prepare(module: str) -> None:
    work = work_dir(module)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    # tracked files and new ones not yet committed (not ignored): the tree as it stands
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in files:
        if name and not name.startswith("clients/") and (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    # in case they are not committed yet: the plugin and this module's tests
    for name in ["bench/__init__.py", "bench/mutation_pytest.py",
                 *(t for t in MODULE_TESTS.get(module, []) if (ROOT / t).is_file())]:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    tests = TESTS + [t for t in MODULE_TESTS.get(module, []) if (ROOT / t).is_file()]

    def lst(values: list[str]) -> str:
        return "\n".join(["", *("    " + v for v in values)])

    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = shared/\n"
        f"only_mutate = {lst([f'shared/{module}.py'])}\n"
        # tests/conftest.py imports devstack.launch; test_config holds README's settings table to the declaration
        f"also_copy = {lst(['bench/', 'devstack/', 'README.md'])}\n"
        f"pytest_add_cli_args = {lst(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {lst(tests)}\n")


def function_span(tree: ast.Module, key: str) -> tuple[int, int] | None:
    """Lines (first decorator or def, end) of the function a mutmut key names."""
    name = re.sub(r"__mutmut_\d+$", "", key.rsplit(".", 1)[-1])
    if name.startswith("xǁ"):
        cls, _, meth = name[2:].partition("ǁ")
        scopes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        body = scopes[0].body if scopes else []
    else:
        meth, body = name[2:], tree.body
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == meth:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return start, node.end_lineno or node.lineno
    return None


_STRING = re.compile(r"""[rbfuRBFU]*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


def message_only(removed: list[str], added: list[str]) -> bool:
    """The mutation only alters or drops human-readable text (a literal with a space in it) in a
    `raise` or a log call: the refusal itself, its status and its OAuth error are unchanged."""
    frm, to = " ".join(removed), " ".join(added)
    if not re.match(r"\s*(raise\b|.*\blog(ger)?\.\w+\()", frm):
        return False
    changed = set(_STRING.findall(frm)) - set(_STRING.findall(to))
    if not changed or not all(" " in lit for lit in changed):
        return False

    def residue(text: str) -> str:
        return re.sub(r"[\s,]|None", "", _STRING.sub("", text))

    return residue(frm) == residue(to)


def describe(key: str, module: str) -> dict[str, object]:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(key, path=Path("shared") / f"{module}.py")
    removed = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    source = (ROOT / "shared" / f"{module}.py").read_text()
    lines = source.splitlines()
    line = None
    span = function_span(ast.parse(source), key)
    hunk = re.search(r"^@@ -(\d+)", diff, re.M)
    if span and removed:
        offset = 0
        for ln in diff.splitlines()[3:]:  # after ---, +++ and @@: find the first removed line's offset
            if ln.startswith("-"):
                break
            if not ln.startswith("+"):
                offset += 1
        expected = span[0] + (int(hunk.group(1)) - 1 if hunk else 0) + offset
        hits = [i + 1 for i in range(span[0] - 1, span[1]) if lines[i].strip() == removed[0].strip()]
        line = min(hits, key=lambda n: abs(n - expected)) if hits else expected
    return {"module": f"shared/{module}.py", "line": line, "mutant": key,
            "kind": "message text" if message_only(removed, added) else "behaviour",
            "mutation": {"from": [r.strip() for r in removed], "to": [a.strip() for a in added]}}


def equivalents(module: str) -> list[dict[str, object]]:
    """The register of mutants shown to be equivalent, with why; a missing file means none."""
    path = EQUIVALENT / f"{module}.json"
    return json.loads(path.read_text()) if path.exists() else []


def function_of(key: str) -> str:
    return re.sub(r"__mutmut_\d+$", "", key.rsplit(".", 1)[-1])  # shared.token_cache.l2.xǁBreakerǁget__mutmut_1


def matches(entry: dict[str, object], described: dict[str, object]) -> bool:
    mutation = described["mutation"]
    return (entry["function"] == function_of(str(described["mutant"]))
            and entry["from"] == mutation["from"] and entry["to"] == mutation["to"])  # type: ignore[index]


def collect(module: str) -> dict[str, object]:
    from mutmut.stats import status_by_exit_code

    meta = json.loads((work_dir(module) / "mutants" / "shared" / f"{module}.py.meta").read_text())
    register = equivalents(module)
    equivalent = []
    by_status: dict[str, int] = {}
    survivors = []
    chosen = meta["exit_code_by_key"].items()
    if module in FUNCTIONS:
        chosen = [(k, c) for k, c in chosen if function_of(k) in FUNCTIONS[module]]
    for key, code in sorted(chosen,
                            key=lambda kv: (re.sub(r"\d+$", "", kv[0]), int(re.search(r"\d+$", kv[0]).group()))):
        status = status_by_exit_code[code]
        by_status[status] = by_status.get(status, 0) + 1
        if status not in KILLED and status not in NOT_RUN:
            described = describe(key, module)
            why = next((e["why"] for e in register if matches(e, described)), None)
            if why is not None:
                equivalent.append({**described, "status": status, "why": why})
            else:
                survivors.append({**described, "status": status})
    tested = sum(n for s, n in by_status.items() if s not in NOT_RUN) - len(equivalent)
    killed = sum(n for s, n in by_status.items() if s in KILLED)
    text = sum(1 for m in survivors if m["kind"] == "message text")
    return {"mutants": sum(by_status.values()), "tested": tested, "killed": killed,
            "kill_rate": round(killed / tested, 4) if tested else None,
            "kill_rate_ignoring_message_text": round(killed / (tested - text), 4) if tested - text else None,
            "by_status": by_status, "equivalent": len(equivalent), "survivors_by_kind": {
                "message text": text,
                "behaviour, reached by the tests": sum(1 for m in survivors
                                                       if m["kind"] == "behaviour" and m["status"] == "survived"),
                "behaviour, no test reaches it": sum(1 for m in survivors
                                                     if m["kind"] == "behaviour" and m["status"] != "survived")},
            "survivors": survivors, "equivalents": equivalent}


def main(argv: list[str]) -> int:
    collect_only = "--collect" in argv  # re-aggregate the last run in bench/out/mutation/, no mutmut run
    argv = [a for a in argv if a != "--collect"]
    modules = argv or MODULES
    unknown = set(modules) - set(MODULES)
    if unknown:
        sys.exit(f"unknown modules {sorted(unknown)}; choose from {MODULES}")
    env = {**os.environ, "MUTATION_HYPOTHESIS_MAX_EXAMPLES": os.environ.get("MUTATION_HYPOTHESIS_MAX_EXAMPLES", "50")}
    children = os.environ.get("MUTATE_MAX_CHILDREN", "2")
    previous = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    # entries of modules no longer in MODULES (moved or renamed) are dropped, not kept forever
    per_module: dict[str, dict[str, object]] = {name: entry for name, entry in previous.get("modules", {}).items()
                                                if name in {f"shared/{m}.py" for m in MODULES}}
    for module in modules:
        if collect_only:
            old = per_module.get(f"shared/{module}.py")
            if old is None or not (work_dir(module) / "mutants" / "shared" / f"{module}.py.meta").exists():
                continue
            os.chdir(work_dir(module))
            per_module[f"shared/{module}.py"] = {**collect(module), **{k: old[k] for k in ("seconds", "run_at",
                                                                                          "mutmut_exit")}}
            write(per_module, str(previous.get("hypothesis_max_examples", env["MUTATION_HYPOTHESIS_MAX_EXAMPLES"])),
                  str(previous.get("max_children", children)))
            continue
        prepare(module)
        began = time.monotonic()
        dotted = "shared." + module.replace("/", ".")
        names = [f"{dotted}.{f}__mutmut_*" for f in FUNCTIONS[module]] if module in FUNCTIONS else [f"{dotted}.*"]
        run = subprocess.run([str(MUTMUT), "run", "--max-children", children, *names], env=env,
                             cwd=work_dir(module), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = round(time.monotonic() - began, 1)
        tail = re.sub(r"[^\n]*\r", "", run.stdout)[-600:]
        if not (work_dir(module) / "mutants" / "shared" / f"{module}.py.meta").exists():
            print(f"{module}: mutmut failed (exit {run.returncode}):\n{tail}", file=sys.stderr)
            return 1
        os.chdir(work_dir(module))  # mutmut's diff helper reads mutants/ relative to the working directory
        result = collect(module)
        os.chdir(ROOT)
        if not result["tested"]:  # e.g. mutmut's stats run failed: nothing was tested, which is no score
            print(f"{module}: no mutant was tested (exit {run.returncode}):\n{tail}", file=sys.stderr)
            return 1
        result.update({"seconds": seconds, "run_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "mutmut_exit": run.returncode})
        per_module[f"shared/{module}.py"] = result
        print(f"shared/{module}.py: kill rate {result['kill_rate']} ({result['killed']}/{result['tested']}), "
              f"{len(result['survivors'])} survivors, {result['equivalent']} equivalent, {seconds} s", flush=True)
        write(per_module, env["MUTATION_HYPOTHESIS_MAX_EXAMPLES"], children)
    return 0


def write(per_module: dict[str, dict[str, object]], cap: str, children: str) -> None:
    from importlib.metadata import version

    tested = sum(int(m["tested"]) for m in per_module.values())  # type: ignore[call-overload]
    killed = sum(int(m["killed"]) for m in per_module.values())  # type: ignore[call-overload]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps({
        "tool": f"mutmut {version('mutmut')}",
        "command": "make mutate  (.venv/bin/python bench/mutate.py [module ...])",
        "test_command": ["pytest", *PYTEST_ARGS, "<tests mutmut saw calling the mutated function, out of>", *TESTS,
                         "<and, for one module only>", MODULE_TESTS],
        "hypothesis_max_examples": int(cap),
        "max_children": int(children),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "target": 0.95,
        "kill_rate": round(killed / tested, 4) if tested else None,
        "tested": tested, "killed": killed,
        "kill_rate_by_module": {name: m["kill_rate"] for name, m in per_module.items()},
        "kill_rate_ignoring_message_text_by_module": {name: m.get("kill_rate_ignoring_message_text")
                                                      for name, m in per_module.items()},
        "seconds_by_module": {name: m["seconds"] for name, m in per_module.items()},
        "modules_not_run": [f"shared/{m}.py" for m in MODULES if f"shared/{m}.py" not in per_module],
        "equivalent_register": "bench/equivalent_mutants/<module>.json",
        "survivor_kinds": ("message text: only the human-readable text of a refusal or log line changed "
                           "(status and OAuth error unchanged); behaviour: anything else, of which 'no tests' "
                           "means none of the fast tests calls the function"),
        "equivalent": sum(int(m.get("equivalent", 0)) for m in per_module.values()),  # type: ignore[call-overload]
        "survivors": [s for m in per_module.values() for s in m["survivors"]],  # type: ignore[attr-defined]
        "equivalents": [s for m in per_module.values() for s in m.get("equivalents", [])],  # type: ignore[attr-defined]
        "modules": per_module,
    }, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
