"""FUNCTIONS_WORKER_PROCESS_COUNT: the Python worker in N processes, invocations spread round-robin.

What the real host does (Azure/azure-functions-host @89dc438), and what is emulated here:
- ``RpcWorkerConfigFactory.GetWorkerProcessCount``: the setting, when not empty, is ``int.Parse``d; a value
  below 2 means 1; above ``WorkerProcessCountOptions.MaxProcessCount`` (10: Python's worker.config.json has
  no ``processOptions``) or not a number, the exception is caught by ``AddProvider`` and logged as
  "Failed to initialize worker provider for: ..."; Python then has no worker and no function runs.
  Locally: ``WorkerProviderError``, and the host refuses to start (exit 1, no traceback).
- ``RpcFunctionInvocationDispatcher.StartWorkerProcesses`` starts them 10 s apart
  (``ProcessStartupInterval``); locally all start at once, and the host is ready when every one is.
- ``RpcFunctionInvocationDispatcherLoadBalancer``: ``Interlocked.Increment(ref _counter) % count`` over the
  ready channels, the counter untouched when only one is ready (``RoundRobin``).
- A worker that exits: ``TryFailExecutions`` fails its in-flight invocations (500 from the host), then
  ``DisposeAndRestartWorkerChannel`` starts one new worker; past ``3 × count`` errors in 30 minutes with no
  channel left, the host stops ("Exceeded language worker restart retry count").
- ``DefaultWorkerProcessFactory.ApplyWorkerConcurrencyLimits``: the worker's environment gets
  ``PYTHON_THREADPOOL_THREAD_COUNT=1000`` when it is unset and FUNCTIONS_WORKER_RUNTIME is python
  (``concurrency_limits``).

The host process keeps everything before the worker (routing, keys, CORS, body limits, ToRpcHttp) and
sends the converted request over a socket pair (the real one: gRPC); devstack/host/worker.py is the child.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .funchost import Dispatcher, Function, Response
from .worker_telemetry import TraceContext

log = logging.getLogger("funchost")
SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"  # RpcWorkerConstants.FunctionsWorkerProcessCountSettingName
MAX_PROCESS_COUNT = 10  # WorkerProcessCountOptions.MaxProcessCount
ERROR_WINDOW_SECONDS = 30 * 60  # WorkerRestartErrorIntervalThresholdInMinutes
WORKER_DIR = "workers/python"  # what the host names in its log line (its workers folder)
DEFAULT_CONCURRENCY_LIMIT = "1000"  # RpcWorkerConstants.DefaultConcurrencyLimit
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")  # .NET int.Parse, NumberStyles.Integer
T = TypeVar("T")


class WorkerProviderError(Exception):
    """The Python worker provider failed to initialize: no function can run."""


def process_count(env: Mapping[str, str]) -> int:
    """GetWorkerProcessCount with Python's defaults: empty or unset → 1, ≤ 1 → 1, 2..10 → that many."""
    raw = env.get(SETTING, "")
    if raw == "":
        return 1
    if not _INT.fullmatch(raw):  # FormatException
        reason = f"The input string '{raw}' was not in a correct format."
    elif not -2**31 <= int(raw) < 2**31:  # OverflowException
        reason = "Value was either too large or too small for an Int32."
    elif int(raw) > MAX_PROCESS_COUNT:
        reason = "ProcessCount must not be greater than MaxProcessCount"
    else:
        return max(1, int(raw))
    raise WorkerProviderError(f"Failed to initialize worker provider for: {WORKER_DIR}\n{SETTING}={raw!r}: {reason} "
                              f"(at most {MAX_PROCESS_COUNT}); no Python function can run.")


def concurrency_limits(env: Mapping[str, str]) -> dict[str, str]:
    """DefaultWorkerProcessFactory.ApplyWorkerConcurrencyLimits, applied to every worker process it creates."""
    out = dict(env)
    if not out.get("PYTHON_THREADPOOL_THREAD_COUNT") and out.get("FUNCTIONS_WORKER_RUNTIME", "").lower() == "python":
        out["PYTHON_THREADPOOL_THREAD_COUNT"] = DEFAULT_CONCURRENCY_LIMIT
    return out


class RoundRobin:
    """RpcFunctionInvocationDispatcherLoadBalancer.GetLanguageWorkerChannel: one shared counter,
    incremented before the modulo, left alone when a single channel is ready."""

    def __init__(self) -> None:
        self.counter = 0

    def choose(self, ready: Sequence[T]) -> T:
        if not ready:
            raise LookupError("Did not find any initialized language workers")
        if len(ready) == 1:
            return ready[0]
        self.counter = self.counter + 1 if self.counter < 2**31 - 1 else 0
        return ready[self.counter % len(ready)]


# --- the wire: 4-byte big-endian length, then JSON ----------------------------------------------------
def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the other end closed (or died)."""
    try:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        return json.loads(await reader.readexactly(size))  # type: ignore[no-any-return]
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def encode_request(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "body": base64.b64encode(fields["body"]).decode()}


def decode_request(wire: dict[str, Any]) -> dict[str, Any]:
    return {**wire, "body": base64.b64decode(wire["body"])}


def encode_response(response: Response) -> dict[str, Any]:
    status, headers, body = response
    return {"status": status, "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers],
            "body": base64.b64encode(body).decode()}


def decode_response(wire: dict[str, Any]) -> Response:
    return (int(wire["status"]), [(k.encode("latin-1"), v.encode("latin-1")) for k, v in wire["headers"]],
            base64.b64decode(wire["body"]))


class WorkerChannel:
    """One worker process and its connection (GrpcWorkerChannel + RpcWorkerProcess)."""

    def __init__(self, proc: subprocess.Popen[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.proc, self.reader, self.writer = proc, reader, writer
        self.pid = proc.pid
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.ids = 0

    async def invoke(self, name: str, fields: dict[str, Any], trace_context: TraceContext) -> Response:
        self.ids += 1
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        self.writer.write(frame({"t": "invoke", "id": self.ids, "function": name, "request": encode_request(fields),
                                 "trace": [trace_context.trace_parent, trace_context.trace_state]}))
        return await future

    async def pump(self) -> None:
        """Answers back to their invocations until the worker's end closes."""
        while (message := await read_frame(self.reader)) is not None:
            future = self.pending.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(decode_response(message))

    def fail_executions(self) -> None:
        """TryFailExecutions: every invocation still on this worker fails (the host answers 500)."""
        for future in self.pending.values():
            if not future.done():
                future.set_result((500, [], b""))
        self.pending.clear()


class WorkerStartError(Exception):
    """A worker process exited before it had loaded the functions."""


class WorkerPool(Dispatcher):
    """RpcFunctionInvocationDispatcher for N > 1: starts the worker processes, balances invocations over
    the ready ones, fails a dead worker's invocations and starts one worker in its place."""

    def __init__(self, app_dir: Path, functions: list[Function], count: int,
                 stop_application: Callable[[], None] = lambda: None):
        self.app_dir, self.count, self.stop_application = app_dir, count, stop_application
        self.load = {"t": "load", "app": str(app_dir),
                     "functions": [{"name": f.name, "module": f.module, "entry_point": f.entry_point,
                                    "directory": str(f.directory), "worker_indexed": f.worker_indexed}
                                   for f in functions]}
        self.ready: list[WorkerChannel] = []
        self.balancer = RoundRobin()
        self.errors: deque[float] = deque()
        self.closing = False
        self._any_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """All N at once (the real host: 10 s apart); returns when every one has loaded the functions."""
        await asyncio.gather(*(self._start_one() for _ in range(self.count)))

    async def _start_one(self) -> None:
        parent, child = socket.socketpair()
        env = concurrency_limits(os.environ)
        proc = subprocess.Popen([sys.executable, "-m", "devstack.host.worker", "--fd", str(child.fileno()),
                                 "--worker-id", str(uuid.uuid4())], pass_fds=[child.fileno()], env=env,
                                stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())  # worker stdout: the host log
        child.close()
        log.debug("%s process with Id=%d started", sys.executable, proc.pid)
        reader, writer = await asyncio.open_connection(sock=parent)
        writer.write(frame(self.load))
        hello = await read_frame(reader)
        if hello is None or hello.get("t") != "ready":
            writer.close()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            raise WorkerStartError(f"Language Worker Process exited before it was initialized. Pid={proc.pid}, "
                                   f"exit code {proc.returncode}.")
        channel = WorkerChannel(proc, reader, writer)
        self.ready.append(channel)
        self._any_ready.set()
        log.info("Worker process started and initialized.")
        self._spawn(self._watch(channel))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, channel: WorkerChannel) -> None:
        await channel.pump()
        if channel in self.ready:
            self.ready.remove(channel)
        if not self.ready:
            self._any_ready.clear()
        channel.fail_executions()
        channel.writer.close()
        code = await asyncio.get_running_loop().run_in_executor(None, channel.proc.wait)
        if self.closing:
            return
        log.error("Language Worker Process exited. Pid=%d. Exit code %d.", channel.pid, code)
        now = time.monotonic()
        self.errors.append(now)
        while self.errors and now - self.errors[0] > ERROR_WINDOW_SECONDS:
            self.errors.popleft()
        if len(self.errors) >= 3 * self.count:  # ErrorEventsThreshold
            if not self.ready:
                log.error("Exceeded language worker restart retry count for runtime:python. Shutting down and "
                          "proactively recycling the Functions Host to recover")
                self.stop_application()
            return
        try:
            await self._start_one()  # DisposeAndRestartWorkerChannel: one new worker in its place
        except WorkerStartError as e:
            log.error("%s", e)

    async def invoke(self, name: str, fields: dict[str, Any], trace_context: TraceContext) -> Response:
        while not self.ready:  # WorkerProcessRestarting: wait for a worker to be initialized
            await self._any_ready.wait()
        return await self.balancer.choose(self.ready).invoke(name, fields, trace_context)

    async def close(self) -> None:
        """Closing the connection ends each worker (it exits when the host's end closes)."""
        self.closing = True
        for channel in list(self.ready):
            channel.writer.close()
        for channel in list(self.ready):
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, channel.proc.wait), 10)
            except asyncio.TimeoutError:
                channel.proc.kill()
