"""shared/__init__.py: the function author's API, loaded on first use."""
from __future__ import annotations

import subprocess
import sys

import pytest

import shared
from shared import authorization, downstream, errors, functions, pipeline

from devstack.launch import ROOT


def test_every_exported_name_is_the_one_its_module_defines() -> None:
    homes = {"ApiError": errors, "Call": pipeline, "DownstreamResponse": downstream,
             "Requirement": authorization, "endpoint": functions}
    assert shared.__all__ == sorted(homes)
    for name, module in homes.items():
        assert getattr(shared, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'token'"):
        shared.token  # noqa: B018


def test_importing_a_module_of_the_package_does_not_load_the_app() -> None:
    """Tools and tests that read settings stay cheap: no MSAL, no token cache, no Functions adapter."""
    code = ("import sys, shared.config; "
            "print(sorted(m for m in ('msal', 'shared.functions', 'shared.tokens', 'azure.functions') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
