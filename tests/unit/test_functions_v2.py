"""``endpoint`` under the v2 programming model: below ``app.route`` (or a blueprint's), the function the app
records is the wrapper, with the signature the worker checks against the bindings; above it, a clear error."""
from __future__ import annotations

import inspect
import logging
import typing
from types import SimpleNamespace

import azure.functions as func
import pytest

from shared import Call, Requirement, endpoint, functions

from .test_functions import SETTINGS


def make_app() -> tuple[func.FunctionApp, func.Blueprint]:
    app, bp = func.FunctionApp(), func.Blueprint()

    @app.function_name(name="Profile")
    @app.route(route="me", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    @endpoint(Requirement(callers="user"), downstream=("Graph",))
    def me(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        """The body's docstring."""
        return func.HttpResponse("never")

    @bp.route(route="things/{id}")
    @endpoint(Requirement(app_permissions=("Things.Read",), callers="app"))
    def things(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        return func.HttpResponse("never")

    app.register_functions(bp)
    return app, bp


def test_the_recorded_function_is_the_wrapper_with_the_signature_the_worker_binds() -> None:
    app, _ = make_app()
    recorded = {f.get_function_name(): f for f in app.get_functions()}
    assert sorted(recorded) == ["Profile", "things"]  # @app.function_name, else the def's name
    for function in recorded.values():
        user = function.get_user_function()
        assert user.requirement is not None and not hasattr(user, "__wrapped__")
        assert list(inspect.signature(user).parameters) == ["req"]  # the trigger binding's name; no `call`
        assert typing.get_type_hints(user) == {"req": func.HttpRequest, "return": func.HttpResponse}
    assert recorded["Profile"].get_user_function().__doc__ == "The body's docstring."
    assert recorded["things"].get_user_function().requirement.app_permissions == ("Things.Read",)


def test_endpoint_above_app_route_is_refused() -> None:
    app = func.FunctionApp()
    with pytest.raises(TypeError, match=r"@endpoint\(\.\.\.\) goes below @app.route\(\.\.\.\)"):
        @endpoint(Requirement(callers="user"))
        @app.route(route="me")
        def me(req: func.HttpRequest, call: Call) -> func.HttpResponse:
            return func.HttpResponse("never")


def test_the_log_names_the_registered_function_and_route(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    global app_under_test  # the label is looked up in the module that defines the body: this one
    app_under_test, _ = make_app()
    monkeypatch.setattr(functions, "app_context", lambda: SimpleNamespace(settings=SETTINGS))
    request = func.HttpRequest("GET", "http://localhost/api/me", headers={}, body=b"")
    with caplog.at_level(logging.INFO, "middletier"):
        for function in app_under_test.get_functions():
            assert function.get_user_function()(request).status_code == 401  # no token
    lines = [r.getMessage() for r in caplog.records]
    assert any("GET Profile /me -> 401" in line for line in lines), lines
    assert any("GET things /things/{id} -> 401" in line for line in lines), lines


app_under_test: func.FunctionApp | None = None
