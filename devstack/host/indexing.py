"""Worker indexing: the Python v2 programming model (``function_app.py``, ``func.FunctionApp``, blueprints).

Ported from the Python worker, Azure/azure-functions-python-worker @ 7e6acf36e43335ad69742923af9ff3d62b99242a:
``dispatcher.load_function_metadata`` (the script file: ``PYTHON_SCRIPT_FILE_NAME``, default ``function_app.py``,
``validate_script_file_name``; no such file: a v1 app, the host indexes its ``function.json`` files),
``loader.index_function_app`` (import it, exactly one top-level ``FunctionRegister``, ``get_functions()``),
``dispatcher.index_functions`` (no function: ``use_default_metadata_indexing``, the host's indexing again) and
``functions.Registry.add_indexed_function`` (the user function's parameters against its bindings). Any
exception there fails the whole metadata request: the host logs "Worker failed to index functions" with it
(Azure/azure-functions-host @ 89dc438 ``GrpcWorkerChannel.ProcessFunctionMetadataResponses``) and runs no
function; locally the host refuses to start (``IndexingError``), which no test can mistake.

What the host then does with the functions (``WorkerFunctionMetadataProvider.ValidateMetadata``: names,
bindings, a trigger; ``ScriptHost``: routes) is the same as for ``function.json``: ``funchost.load_functions``
runs both through ``routes.http_trigger`` with the raw bindings, the JSON the worker sends.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

SCRIPT_FILE_SETTING = "PYTHON_SCRIPT_FILE_NAME"  # constants.PYTHON_SCRIPT_FILE_NAME
DEFAULT_SCRIPT_FILE = "function_app.py"         # constants.PYTHON_SCRIPT_FILE_NAME_DEFAULT
_SCRIPT_FILE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py$")  # utils.common.validate_script_file_name
_MODULE_NOT_FOUND = ("Cannot find module. Please check the requirements.txt file for the missing module. For more "
                     "info, please refer the troubleshooting guide: https://aka.ms/functions-modulenotfound.")
_IN, _OUT, _INOUT = 0, 1, 2  # protos.BindingInfo.Direction


class IndexingError(Exception):
    """The worker's FunctionMetadataResponse failed: the app has no function."""


class FunctionLoadError(RuntimeError):
    """functions.FunctionLoadError, with its message."""

    def __init__(self, function_name: str, msg: str) -> None:
        super().__init__(f"cannot load the {function_name} function: {msg}")


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the worker indexed it: its metadata for the host, its FunctionInfo for invocations."""

    name: str
    bindings: list[dict[str, Any]]  # the raw bindings, as the host parses them
    call: Callable[..., Any]        # Function.get_user_function(): what the worker invokes
    directory: Path                 # FunctionInfo.directory: the user function's file's folder
    wants_context: bool
    trigger_param: str | None       # the parameter the HTTP trigger binds (its binding's name)


def script_file_name(env: Mapping[str, str]) -> str:
    name = env.get(SCRIPT_FILE_SETTING) or DEFAULT_SCRIPT_FILE  # get_app_setting: unset or empty -> default
    if not _SCRIPT_FILE.match(name):
        raise IndexingError(f"Worker failed to index functions\nInvalidFileNameError: Invalid file name: {name}")
    return name


def is_v2_app(app_dir: Path, env: Mapping[str, str]) -> bool:
    """The worker indexes when the script file exists; otherwise the host reads ``*/function.json``."""
    return (app_dir / script_file_name(env)).exists()


def index_app(app_dir: Path, env: Mapping[str, str]) -> list[IndexedFunction] | None:
    """The worker's metadata request. None: no script file, or no function in it (the host indexes
    ``function.json`` instead). The app's folder must be on ``sys.path`` (the worker puts it there)."""
    name = script_file_name(env)
    if not (app_dir / name).exists():
        return None
    try:
        functions = find_app(_import(Path(name).stem), name).get_functions()
        indexed = [add_indexed_function(f) for f in functions]
    except Exception as e:  # the worker answers any exception as a failed metadata request
        raise IndexingError(f"Worker failed to index functions\n{type(e).__name__}: {e}") from e
    return indexed or None


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:  # loader's attach_message_to_exception(ImportError, ...)
        raise type(e)(str(e).rstrip(".") + ". " + _MODULE_NOT_FOUND) from e


def find_app(module: ModuleType, script_file: str) -> func.FunctionRegister:
    """loader.index_function_app: one top-level FunctionRegister (FunctionApp, AsgiFunctionApp, ...); a
    second name for it counts as a second (the worker checks names, not objects)."""
    app: func.FunctionRegister | None = None
    for name in module.__dir__():
        value = getattr(module, name, None)
        if isinstance(value, func.FunctionRegister):
            if app is None:
                app = value
            else:
                raise ValueError(f"More than one {app.__class__.__name__} or other top level function app instances "
                                 "are defined.")
    if app is None:
        raise ValueError(f"Could not find top level function app instances in {script_file}.")
    return app


def add_indexed_function(function: Any) -> IndexedFunction:
    """functions.Registry.add_indexed_function's checks of the user function against its bindings."""
    call = function.get_user_function()
    name = function.get_function_name()
    params = dict(inspect.signature(call).parameters)
    annotations = typing.get_type_hints(call)
    bound: dict[str, Any] = {}
    return_type = None
    for binding in function.get_bindings():
        if binding.direction == _INOUT:
            raise FunctionLoadError(name, '"inout" bindings are not supported')
        if binding.name == "$return":
            if binding.direction != _OUT:
                raise FunctionLoadError(name, '"$return" binding must have direction set to "out"')
            return_type = binding.type
        else:
            bound[binding.name] = binding
    wants_context = "context" in params and "context" not in bound
    if wants_context:
        params.pop("context")
        anno = annotations.get("context")
        if "context" in annotations and (not isinstance(anno, type) or anno.__name__ != "Context"):
            raise FunctionLoadError(name, f'the "context" parameter is expected to be of type '
                                          f"azure.functions.Context, got {anno!r}")
    if set(params) - set(bound):
        raise FunctionLoadError(name, "the following parameters are declared in Python but not in function.json: "
                                      f"{set(params) - set(bound)!r}")
    if set(bound) - set(params):
        raise FunctionLoadError(name, "the following parameters are declared in function.json but not in Python: "
                                      f"{set(bound) - set(params)!r}")
    trigger_param = None
    for param, binding in bound.items():
        if binding.type == "httpTrigger":
            trigger_param = param
            anno = annotations.get(param)
            if param in annotations and not (isinstance(anno, type) and issubclass(anno, (func.HttpRequest, str,
                                                                                          bytes))):
                shown = getattr(anno, "__name__", repr(anno))
                raise FunctionLoadError(name, f'type of {param} binding in function.json "httpTrigger" does not match '
                                              f'its Python annotation "{shown}"')
    if return_type == "http" and "return" in annotations:  # get_function_return_type, for the http binding
        anno = annotations["return"]
        if not isinstance(anno, type):
            raise FunctionLoadError(name, f"has invalid non-type return annotation {anno!r}")
        if not issubclass(anno, (func.HttpResponse, str)):
            raise FunctionLoadError(name, f'Python return annotation "{anno.__name__}" does not match binding type '
                                          '"http"')
    return IndexedFunction(name, [json.loads(b) for b in function.get_raw_bindings()], call,
                           Path(inspect.getfile(call)).parent, wants_context, trigger_param)

