"""bench/inprocess.py's request building and invocation, natively and briefly: every case answers 200 through the
function's own entry point, and the per-request figures come out positive (the benchmark itself runs under
valgrind in `make bench`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import inprocess
from devstack.launch import Admin


def test_each_case_answers_200_through_the_entry_point_and_is_measured(devstack: dict[str, Any], admin: Admin,
                                                                      tmp_path: Path) -> None:
    requests, batches = 2, 2
    spec = inprocess.write_spec(tmp_path, "smoke", inprocess.spec_for(
        devstack, admin, inprocess.WARM_UP["ours_cold"] + (inprocess.PRIMER + requests) * batches))
    assert spec.stat().st_mode & 0o077 == 0  # it holds tokens

    cpu = inprocess.run_child(spec, "cpu", requests, batches, tmp_path / "cpu.json", timeout=120)
    assert set(cpu) == set(inprocess.CASES)
    for case, figures in cpu.items():
        assert figures["thread_us_per_request"] > 0, case
        assert len(figures["thread_us_batches"]) == batches and all(x > 0 for x in figures["thread_us_batches"])
    # a request that validates and calls Entra costs more than one that does neither
    assert cpu["ours_cold"]["thread_us_per_request"] > cpu["ours_warm"]["thread_us_per_request"]

    # the marked batches, as callgrind runs them (here without valgrind): every request answered 200
    marked = inprocess.run_child(spec, "callgrind", requests, 1, tmp_path / "marked.json", timeout=120)
    assert list(marked) == list(inprocess.GRIND_ORDER)
    assert all(m["requests"] == m["statuses_200"] == requests for m in marked.values())
    assert all(m["connections_opened"] == 0 for m in marked.values())  # primed: no batch pays a handshake


def test_callgrind_dumps_are_read_in_dump_order(tmp_path: Path) -> None:
    for n, ir in ((2, 20), (10, 100), (1, 10)):
        (tmp_path / f"cg.out.77.{n}").write_text(f"events: Ir\nsummary: {ir}\ntotals: {ir}\n")
    (tmp_path / "cg.out.77").write_text("events: Ir\nsummary: 5\n")  # the rest at exit: not a batch
    assert inprocess.callgrind_dumps(tmp_path) == [10, 20, 100]
