"""FUNCTIONS_WORKER_PROCESS_COUNT in the local host (devstack/host/workers.py) against the real host's rules.

Sources (Azure/azure-functions-host @89dc438): RpcWorkerConfigFactory.GetWorkerProcessCount (the setting, its
clamp to 1 and MaxProcessCount 10), RpcFunctionInvocationDispatcherLoadBalancer (round-robin),
DefaultWorkerProcessFactory.ApplyWorkerConcurrencyLimits (PYTHON_THREADPOOL_THREAD_COUNT=1000 when unset).
"""
from __future__ import annotations

import asyncio

import pytest

from devstack.host.workers import (SETTING, RoundRobin, WorkerProviderError, concurrency_limits, decode_request,
                                   decode_response, encode_request, encode_response, frame, process_count,
                                   read_frame)


@pytest.mark.parametrize("value, count", [(None, 1), ("", 1), ("0", 1), ("-3", 1), ("1", 1), ("2", 2), ("3", 3),
                                          (" 4 ", 4), ("+5", 5), ("10", 10)])
def test_the_count_as_the_host_reads_it(value: str | None, count: int) -> None:
    env = {} if value is None else {SETTING: value}
    assert process_count(env) == count


@pytest.mark.parametrize("value, reason", [("11", "ProcessCount must not be greater than MaxProcessCount"),
                                           ("100", "ProcessCount must not be greater than MaxProcessCount"),
                                           ("abc", "not in a correct format"), ("3.0", "not in a correct format"),
                                           ("1_0", "not in a correct format"), ("four", "not in a correct format"),
                                           ("99999999999", "too large or too small for an Int32")])
def test_values_the_worker_provider_refuses(value: str, reason: str) -> None:
    with pytest.raises(WorkerProviderError) as refused:
        process_count({SETTING: value})
    text = str(refused.value)
    assert text.startswith("Failed to initialize worker provider for: ")
    assert SETTING in text and repr(value) in text and reason in text


def test_an_unset_thread_count_becomes_1000_for_python_workers() -> None:
    assert concurrency_limits({"FUNCTIONS_WORKER_RUNTIME": "python"})["PYTHON_THREADPOOL_THREAD_COUNT"] == "1000"
    assert concurrency_limits({"FUNCTIONS_WORKER_RUNTIME": "Python", "PYTHON_THREADPOOL_THREAD_COUNT": ""})[
        "PYTHON_THREADPOOL_THREAD_COUNT"] == "1000"  # string.IsNullOrEmpty; the runtime compared ignoring case
    assert concurrency_limits({"FUNCTIONS_WORKER_RUNTIME": "python", "PYTHON_THREADPOOL_THREAD_COUNT": "4"})[
        "PYTHON_THREADPOOL_THREAD_COUNT"] == "4"
    assert "PYTHON_THREADPOOL_THREAD_COUNT" not in concurrency_limits({"FUNCTIONS_WORKER_RUNTIME": "node"})
    assert "PYTHON_THREADPOOL_THREAD_COUNT" not in concurrency_limits({})


def test_round_robin_increments_before_the_modulo() -> None:
    balancer = RoundRobin()
    assert [balancer.choose("abc") for _ in range(7)] == list("bcabcab")
    assert balancer.counter == 7


def test_one_ready_channel_leaves_the_counter_alone() -> None:
    balancer = RoundRobin()
    assert [balancer.choose(["only"]) for _ in range(3)] == ["only"] * 3
    assert balancer.counter == 0
    assert balancer.choose("xy") == "y"  # counter 1


def test_the_counter_goes_on_over_whichever_channels_are_ready() -> None:
    balancer = RoundRobin()
    assert [balancer.choose("abcd") for _ in range(2)] == ["b", "c"]
    assert [balancer.choose("abd") for _ in range(3)] == ["a", "b", "d"]  # "c" died: counters 3, 4, 5


def test_the_counter_wraps_to_zero() -> None:
    balancer = RoundRobin()
    balancer.counter = 2**31 - 1
    assert balancer.choose("abc") == "a" and balancer.counter == 0


def test_no_ready_channel() -> None:
    with pytest.raises(LookupError, match="Did not find any initialized language workers"):
        RoundRobin().choose([])


def test_frames_carry_requests_and_responses_byte_for_byte() -> None:
    request = {"method": "POST", "url": "http://h/api/x?a=1", "headers": {"x-a": "1,2"}, "params": {"a": "1"},
               "route_params": {"id": "a%2Fb"}, "body": bytes(range(256))}
    response = (201, [(b"content-type", b"text/plain; charset=utf-8"), (b"x-\xe9", b"\xff")], b"\x00\x01body")

    async def roundtrip() -> tuple[dict[str, object] | None, dict[str, object] | None, dict[str, object] | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(frame({"request": encode_request(request)}) + frame(encode_response(response)))
        reader.feed_eof()
        return await read_frame(reader), await read_frame(reader), await read_frame(reader)

    first, second, end = asyncio.run(roundtrip())
    assert first is not None and second is not None and end is None
    assert decode_request(first["request"]) == request  # type: ignore[arg-type]
    assert decode_response(second) == response


def test_a_frame_cut_short_reads_as_the_end() -> None:
    async def cut() -> dict[str, object] | None:
        reader = asyncio.StreamReader()
        reader.feed_data(frame({"t": "ready"})[:-2])
        reader.feed_eof()
        return await read_frame(reader)

    assert asyncio.run(cut()) is None
