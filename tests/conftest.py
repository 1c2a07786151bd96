"""Shared fixtures: a real devstack process on free ports, with its own state folder."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from devstack import launch
from devstack.launch import AZURITE, AZURITE_KEY, Admin, HostFactory, RedisServer, start_azurite, start_devstack, stop

from .secrets_registry import REGISTRY, SECRET_PATTERNS, capture_process_log, hook_msal, hook_sealer

# Property tests explore a fixed sequence of examples: the suite stays deterministic in CI.
hypothesis_settings.register_profile("deterministic", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("deterministic")

# The launchers (devstack/launch.py, shared with bench/; tests import them from there) tell every
# secret they learn to the registry that the session-end log scan looks for.
launch.witness = REGISTRY  # type: ignore[assignment]
REGISTRY.add("Azurite account key", AZURITE_KEY)


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc, info = start_devstack(tmp_path_factory.mktemp("devstack"))
    yield info
    stop(proc)


@pytest.fixture
def admin(devstack: dict[str, Any]) -> Iterator[Admin]:
    a = Admin(devstack)
    yield a
    a.clear_faults()


@pytest.fixture
def private_devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Admin]]:
    """A devstack of the test's own, for tests that change the tenant (rotations, access) in ways
    that must not leak into tests sharing the session devstack."""
    proc, info = start_devstack(tmp_path_factory.mktemp("private-devstack"))
    yield info, Admin(info)
    stop(proc)


# --- the function app under test: the v1 app (the checkout's function.json folders) and the v2 sample -------
APPS = {"v1": launch.ROOT, "v2": launch.ROOT / "samples" / "v2app"}
# Modules whose every test runs against both programming models (the others: v1, the project's shape).
BOTH_MODELS = frozenset({"test_middletier_api", "test_authorization"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app_model" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_MODELS:
        metafunc.parametrize("app_model", sorted(APPS), indirect=True, scope="module")


@pytest.fixture(scope="module")
def app_model(request: pytest.FixtureRequest) -> str:
    """"v1" or "v2": which app ``host_factory`` and ``function_host`` start (a module's tests run per model)."""
    return str(getattr(request, "param", "v1"))


@pytest.fixture(scope="session")
def _session_host_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFactory]:
    factory = HostFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def host_factory(tmp_path_factory: pytest.TempPathFactory, _session_host_factory: HostFactory,
                 app_model: str) -> Iterator[HostFactory]:
    """v1: the session's factory (its hosts live to the end); v2: the module's (its hosts stop with it)."""
    if app_model == "v1":
        yield _session_host_factory
        return
    factory = HostFactory(tmp_path_factory, app=APPS[app_model])
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def _session_function_host(devstack: dict[str, Any], _session_host_factory: HostFactory) -> dict[str, Any]:
    return _session_host_factory(devstack)


@pytest.fixture(scope="module")
def function_host(request: pytest.FixtureRequest, devstack: dict[str, Any], host_factory: HostFactory,
                  app_model: str) -> dict[str, Any]:
    """The v1 app's host is shared by the whole session; the v2 sample's by the module."""
    if app_model == "v1":
        return request.getfixturevalue("_session_function_host")  # type: ignore[no-any-return]
    return host_factory(devstack)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: `make test` installs it (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Real Azurite (npm) blob service on a free port, storing under tmp_path."""
    if not AZURITE.exists():
        pytest.fail("Azurite is not installed: `make test` installs it (npm install)")
    try:
        proc, blob = start_azurite(tmp_path)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield blob
    stop(proc)


# --- no secret in any log: enforced for the whole session ----------------------------------------
# SECRET_PATTERNS (imported above) and the run's registered secrets: tests/secrets_registry.py.
def scan_for_secrets(paths: list[Path], extra: dict[str, str] | None = None) -> list[str]:
    """Hits in ``paths``: secret shapes by pattern, every registered secret of the run in each of its
    forms (raw, base64/base64url, hex, percent-encoded), and ``extra`` (exact strings)."""
    return REGISTRY.scan(paths, extra)


PROCESS_LOG = pytest.StashKey[Any]()


def pytest_sessionstart(session: pytest.Session) -> None:
    hook_msal()    # every token MSAL obtains in this process
    hook_sealer()  # every AES key a cache Sealer is built with
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is not None:  # this process's own log records, at DEBUG, are scanned at the end too
        session.config.stash[PROCESS_LOG] = capture_process_log(base.getbasetemp() / "pytest-process.log")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is None:
        return
    try:
        root = base.getbasetemp()
    except (OSError, ValueError):
        return
    handler = session.config.stash.get(PROCESS_LOG, None)
    if handler is not None:
        import logging
        logging.getLogger().removeHandler(handler)
        handler.close()
    for state in root.glob("host*"):  # function keys written by hosts the fixtures did not start
        REGISTRY.add_function_keys(state / "functions-keys.json")
    import time
    started = time.perf_counter()
    logs = [p for p in root.rglob("*.log") if p.is_file()]
    hits = scan_for_secrets(logs)
    took = time.perf_counter() - started
    if hits:
        print("\nSECRETS FOUND IN LOGS:\n" + "\n".join(hits[:50]))
        session.exitstatus = 1
    else:
        print(f"\nlog scan: {len(logs)} log files, {len(REGISTRY)} registered secrets, 0 found ({took:.2f} s)")
