"""The local host indexes v2 apps as the Python worker does (devstack/host/indexing.py) and refuses what it refuses.

Texts are the worker's (Azure/azure-functions-python-worker loader.index_function_app, functions.Registry,
utils.common.validate_script_file_name), the azure-functions library's (FunctionBuilder._validate_function,
FunctionRegister.validate_function_names) and the host's (GrpcWorkerChannel: "Worker failed to index functions";
WorkerFunctionMetadataProvider.ValidateFunctionAppFormat; ScriptHost's route checks, as for function.json).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.host.funchost import FunctionsHost, HostSettings, WorkerIndexingError, index_entries, load_functions
from devstack.launch import ROOT

SAMPLE = ROOT / "samples" / "v2app"
KEYS = {"master": "master-key", "default": "host-key"}
HEADER = "import azure.functions as func\nfrom shared import Call, Requirement, endpoint\n"
PLAIN = '''
@app.route(route="{route}", auth_level="anonymous")
def {name}(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("{name}")
'''


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """make(function_app.py text, {more files}) -> app folder; its modules are forgotten afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    monkeypatch.delenv("PYTHON_SCRIPT_FILE_NAME", raising=False)

    def make(source: str, files: dict[str, str] | None = None) -> Path:
        (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
        (tmp_path / "function_app.py").write_text(HEADER + textwrap.dedent(source))
        for name, text in (files or {}).items():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return tmp_path
    yield make
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def fresh(folder: Path) -> Path:
    """Forget the app's modules: a worker indexes once per process (``get_functions()`` refuses a second call,
    its names already taken), and each test here plays a new process."""
    for name, module in list(sys.modules.items()):
        if Path(str(getattr(module, "__file__", None) or "/")).parent == folder:  # function_app.py and its siblings
            del sys.modules[name]
    return folder


def load(folder: Path, caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """(the functions served, the host's warning and error lines)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="funchost"):
        _, functions = load_functions(fresh(folder))
    return [f.name for f in functions], [r.getMessage() for r in caplog.records
                                         if r.levelno >= logging.WARNING and r.name == "funchost"]


def refused(folder: Path) -> str:
    with pytest.raises(WorkerIndexingError) as e:
        load_functions(fresh(folder))
    message = str(e.value)
    assert message.startswith("Worker failed to index functions\n")
    return message.split("\n", 1)[1]


def call(folder: Path, path: str) -> tuple[int, bytes]:
    """One GET through the local host's ASGI app, no socket."""
    host = FunctionsHost(load_functions(fresh(folder))[1], HostSettings(), KEYS, threads=1)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    try:
        asyncio.run(host({"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []},
                         receive, send))
    finally:
        assert host.pool is not None
        host.pool.shutdown()
    return sent[0]["status"], sent[1]["body"]


# --- the sample: the v1 app's functions, as the worker indexes them ------------------------------------
def described(folder: Path) -> set[tuple[str, str, frozenset[str], str]]:
    return {(f.name, f.matcher.template, f.methods, f.auth_level) for f in load_functions(fresh(folder))[1]}


def test_the_v2_sample_registers_the_v1_functions_with_the_same_routes_methods_and_auth_levels(app: Any) -> None:
    v1, v2 = described(ROOT), described(SAMPLE)
    assert v2 == v1 and len(v2) == 3
    functions = {f.name: f for f in load_functions(fresh(SAMPLE))[1]}
    for f in functions.values():
        assert f.worker_indexed and f.entry is not None and f.entry.trigger_param == "req"
        assert not hasattr(f.entry.call, "__wrapped__")  # else inspect.signature shows the body's (req, call)
        assert f.entry.call.requirement is not None   # the endpoint wrapper is what the worker calls
    assert functions["AdminApi"].entry.call.__module__ == "directory"  # registered from the blueprint
    assert functions["AdminApi"].entry.call.requirement.callers == "app"


def test_the_sample_reuses_the_projects_shared_package_and_requirements() -> None:
    assert (SAMPLE / "shared").resolve() == (ROOT / "shared").resolve()
    pins = [[line for line in (folder / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
            for folder in (ROOT, SAMPLE)]
    assert pins[0] == pins[1] and "azure-functions==1.26.0" in pins[1]


def test_the_blueprints_user_id_check_is_the_v1_functions(app: Any) -> None:
    sys.path.insert(0, str(SAMPLE))
    import importlib
    v1, v2 = importlib.import_module("AdminApi"), importlib.import_module("directory")
    assert (v1.OBJECT_ID.pattern, v1.UPN.pattern) == (v2.OBJECT_ID.pattern, v2.UPN.pattern)


def test_a_worker_process_indexes_the_app_again_and_finds_every_function_by_name(app: Any) -> None:
    _, functions = load_functions(fresh(SAMPLE), import_app=False)  # the host: metadata only
    assert [f.entry for f in functions] == [None, None, None] and all(f.worker_indexed for f in functions)
    entries = index_entries(fresh(SAMPLE))  # a worker process: its own import and indexing
    assert sorted(entries) == sorted(f.name for f in functions)
    assert entries["MiddleTierApi"].call.__name__ == "me"


# --- which model: the script file, PYTHON_SCRIPT_FILE_NAME, function.json folders -------------------------
V1_FUNCTION = {"Legacy/function.json": json.dumps({"bindings": [
    {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "route": "legacy"},
    {"type": "http", "direction": "out", "name": "$return"}]}),
    "Legacy/__init__.py": "import azure.functions as func\n"
                          "def main(req: func.HttpRequest) -> func.HttpResponse:\n"
                          "    return func.HttpResponse('legacy')\n"}


def test_with_function_app_py_the_function_json_folders_are_not_read(app: Any, caplog: Any) -> None:
    folder = app("app = func.FunctionApp()\n" + PLAIN.format(route="new", name="new"), V1_FUNCTION)
    served, lines = load(folder, caplog)
    assert served == ["new"]
    assert lines == ["Detected mixed function app. Some functions may not be indexed - Legacy Refer to the "
                     "documentation to filter warning - https://docs.microsoft.com/en-us/azure/azure-functions/"
                     "configure-monitoring?tabs=v2"]
    assert call(folder, "/api/new") == (200, b"new") and call(folder, "/api/legacy")[0] == 404


def test_a_function_app_with_no_function_leaves_indexing_to_the_host(app: Any, caplog: Any) -> None:
    folder = app("app = func.FunctionApp()\n", V1_FUNCTION)
    assert load(folder, caplog) == (["Legacy"], [])  # use_default_metadata_indexing


def test_python_script_file_name_names_the_script(app: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    folder = app("raise RuntimeError('not this one')\n", {"other_app.py": "import azure.functions as func\n"
                 "app = func.FunctionApp()\n" + PLAIN.format(route="other", name="other")})
    monkeypatch.setenv("PYTHON_SCRIPT_FILE_NAME", "other_app.py")
    assert load(folder, caplog) == (["other"], [])
    monkeypatch.setenv("PYTHON_SCRIPT_FILE_NAME", "../other_app.py")
    assert refused(folder) == "InvalidFileNameError: Invalid file name: ../other_app.py"


# --- what the worker refuses: the whole app fails to index ---------------------------------------------
@pytest.mark.parametrize(("source", "message"), [
    ("x = 1\n", "ValueError: Could not find top level function app instances in function_app.py."),
    ("app = func.FunctionApp()\nother = func.FunctionApp()\n",
     "ValueError: More than one FunctionApp or other top level function app instances are defined."),
    ("app = func.FunctionApp()\nsame = app\n",  # the worker counts names, not objects
     "ValueError: More than one FunctionApp or other top level function app instances are defined."),
    ("bp = func.Blueprint()\n" + PLAIN.replace("@app", "@bp").format(route="a", name="a"),
     "ValueError: Could not find top level function app instances in function_app.py."),
    ("app = func.FunctionApp()\n" + PLAIN.format(route="a", name="a") + "\n@app.function_name('a')\n"
     + PLAIN.format(route="b", name="b"),
     "ValueError: Function a does not have a unique function name. Please change @app.function_name() or the "
     "function method name to be unique."),
    ("app = func.FunctionApp()\n@app.function_name('lonely')\ndef lonely(req: func.HttpRequest) -> str:\n"
     "    return ''\n",
     "ValueError: Function lonely does not have a trigger. A valid function must have one and only one trigger "
     "registered."),
    ("app = func.FunctionApp()\n@app.route(route='x')\ndef x(req: func.HttpRequest, extra: str) -> str:\n"
     "    return ''\n",
     "FunctionLoadError: cannot load the x function: the following parameters are declared in Python but not in "
     "function.json: {'extra'}"),
    ("app = func.FunctionApp()\n@app.route(route='x')\ndef x(request: func.HttpRequest) -> str:\n    return ''\n",
     "FunctionLoadError: cannot load the x function: the following parameters are declared in Python but not in "
     "function.json: {'request'}"),
    ("app = func.FunctionApp()\n@app.route(route='x')\ndef x(req: dict) -> str:\n    return ''\n",
     'FunctionLoadError: cannot load the x function: type of req binding in function.json "httpTrigger" does not '
     'match its Python annotation "dict"'),
    ("app = func.FunctionApp()\n@app.route(route='x')\ndef x(req: func.HttpRequest) -> int:\n    return 1\n",
     'FunctionLoadError: cannot load the x function: Python return annotation "int" does not match binding type '
     '"http"'),
    ("import not_installed_anywhere\n",
     "ModuleNotFoundError: No module named 'not_installed_anywhere'. Cannot find module. Please check the "
     "requirements.txt file for the missing module. For more info, please refer the troubleshooting guide: "
     "https://aka.ms/functions-modulenotfound."),
])
def test_what_the_worker_refuses_stops_the_host(app: Any, source: str, message: str) -> None:
    assert refused(app(source)) == message


def test_endpoint_above_app_route_is_refused_at_import(app: Any) -> None:
    folder = app('''
        app = func.FunctionApp()

        @endpoint(Requirement(callers="user"))
        @app.route(route="me")
        def me(req: func.HttpRequest, call: Call) -> func.HttpResponse:
            return func.HttpResponse("")
        ''')
    assert refused(folder).startswith("TypeError: @endpoint(...) goes below @app.route(...), next to the def")


def test_endpoint_with_another_trigger_name_is_refused_as_the_worker_would(app: Any) -> None:
    folder = app('''
        app = func.FunctionApp()

        @app.route(route="me", trigger_arg_name="request")
        @endpoint(Requirement(callers="user"))
        def me(request: func.HttpRequest, call: Call) -> func.HttpResponse:
            return func.HttpResponse("")
        ''')
    assert refused(folder) == ("FunctionLoadError: cannot load the me function: the following parameters are "
                               "declared in Python but not in function.json: {'req'}")


# --- what the host refuses: that function is in error, the others run ----------------------------------
@pytest.mark.parametrize(("source", "error"), [
    (PLAIN.format(route="same", name="first") + PLAIN.format(route="/Same/", name="second"),
     "The 'second' function is in error: The route specified conflicts with the route defined by function 'first'."),
    (PLAIN.format(route="admin/things", name="second"),
     "The 'second' function is in error: The specified route conflicts with one or more built in routes."),
    ("@app.function_name('bad name')\n" + PLAIN.format(route="x", name="second"),
     "The 'bad name' function is in error: 'bad name' is not a valid function name."),
    ("@app.timer_trigger(schedule='0 */5 * * * *', arg_name='timer')\ndef second(timer: func.TimerRequest) -> None:\n"
     "    pass\n",
     "The 'second' function is in error: this local host runs HTTP-triggered functions only, not timerTrigger."),
])
def test_what_the_host_refuses_is_in_error_and_the_others_are_served(app: Any, caplog: Any, source: str,
                                                                     error: str) -> None:
    folder = app("app = func.FunctionApp()\n" + PLAIN.format(route="ok", name="ok") + source)
    served, lines = load(folder, caplog)
    assert lines == [error]
    assert "ok" in served and "second" not in served and "bad name" not in served


def test_disabled_by_app_setting(app: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = app("app = func.FunctionApp()\n" + PLAIN.format(route="a", name="a") + PLAIN.format(route="b", name="b"))
    monkeypatch.setenv("AzureWebJobs.b.Disabled", "true")
    assert load(folder, caplog) == (["a"], [])


# --- invocation: what the worker calls, bound by the trigger's name -----------------------------------
def test_the_request_is_passed_by_the_trigger_bindings_name_and_context_when_asked(app: Any) -> None:
    folder = app('''
        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

        @app.route(route="named/{id}", trigger_arg_name="request")
        def named(request: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            return func.HttpResponse(f"{request.route_params['id']} {context.function_name}")
        ''')
    assert call(folder, "/api/named/7") == (200, b"7 named")


def test_an_endpoint_function_answers_through_the_pipeline_and_its_log_names_the_route(
        app: Any, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = app('''
        app = func.FunctionApp()

        @app.function_name("Profile")
        @app.route(route="me", methods=["GET"], auth_level="anonymous")
        @endpoint(Requirement(callers="user"))
        def me(req: func.HttpRequest, call: Call) -> func.HttpResponse:
            return func.HttpResponse("never: there is no token")
        ''')
    from types import SimpleNamespace

    from shared import functions
    from shared.config import load_settings

    from .test_aadsts import ENV
    monkeypatch.setattr(functions, "app_context", lambda: SimpleNamespace(settings=load_settings(ENV)))
    with caplog.at_level(logging.INFO, logger="middletier"):
        status, body = call(folder, "/api/me")
    assert status == 401 and json.loads(body)["status"] == 401
    assert any("GET Profile /me -> 401" in r.getMessage() for r in caplog.records)


def test_the_entrys_folder_is_the_user_functions_files_as_the_worker_records_it(app: Any) -> None:
    folder = app("app = func.FunctionApp()\n" + PLAIN.format(route="a", name="a"))
    (entry,) = [f.entry for f in load_functions(fresh(folder))[1]]
    assert entry is not None and entry.name == "a" and os.path.samefile(entry.directory, folder)
