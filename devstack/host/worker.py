"""One Python worker process (FUNCTIONS_WORKER_PROCESS_COUNT > 1): `python -m devstack.host.worker --fd N`.

As azure-functions-python-worker's ``Dispatcher``: at its init it sets up OpenTelemetry (WorkerTelemetry),
then each FunctionLoadRequest imports the function's module in this process (its own module globals, so
its own in-process caches; a v2 app: it indexes ``function_app.py`` itself, as the worker does for a load
request marked "worker_indexed"), then invocations run in its own thread pool (PYTHON_THREADPOOL_THREAD_COUNT,
which the host's ApplyWorkerConcurrencyLimits set to 1000 when unset). It reads the app settings from its
environment, inherited from the host (DefaultWorkerProcessFactory). It talks to the host over the socket
``--fd`` (devstack/host/workers.py's frames) and exits when the host's end closes.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .funchost import Entry, FunctionRunner, import_entry, index_entries, log_level, read_host_json, worker_request
from .worker_telemetry import TraceContext, WorkerTelemetry
from .workers import decode_request, encode_response, frame, read_frame


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    load = await read_frame(reader)
    if load is None:
        return
    app_dir = Path(load["app"])
    host_json = read_host_json(app_dir)
    logging.basicConfig(level=log_level(host_json),
                        format="[%(asctime)s] %(name)s %(levelname)s [worker %(process)d] %(message)s")
    runner = FunctionRunner(telemetry=WorkerTelemetry())  # the worker's init request, before the loads
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    # v2 (FunctionLoadRequest with "worker_indexed"): this process indexes the script file itself, once
    indexed = index_entries(app_dir) if any(f.get("worker_indexed") for f in load["functions"]) else {}
    entries: dict[str, Entry] = {f["name"]: indexed[f["name"]] if f.get("worker_indexed") else
                                 import_entry(f["name"], f["module"], f["entry_point"], Path(f["directory"]))
                                 for f in load["functions"]}
    writer.write(frame({"t": "ready", "pid": os.getpid()}))
    tasks: set[asyncio.Task[Any]] = set()

    async def invoke(message: dict[str, Any]) -> None:
        parent, state = message["trace"]
        response = await runner.run(entries[message["function"]], worker_request(decode_request(message["request"])),
                                    TraceContext(parent, state))
        writer.write(frame({"t": "response", "id": message["id"], **encode_response(response)}))

    while (message := await read_frame(reader)) is not None:
        task = asyncio.ensure_future(invoke(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    runner.pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.host.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--worker-id", default="")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the host; the worker ends with its socket
    from ..resolve import install_from_env
    install_from_env()  # DEVSTACK_RESOLVE, inherited from the host, before the app connects anywhere
    asyncio.run(serve(socket.socket(fileno=args.fd)))
    os._exit(0)  # do not wait for function threads still running: the host has gone


if __name__ == "__main__":
    sys.exit(main())
