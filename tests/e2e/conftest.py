"""Shared pytest wiring for the e2e suites. Imports no SDK and not `backend`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import harness

HERE = Path(__file__).resolve().parent
# Each tree imports an SDK whose generated protos clash with the other's (and with
# backend._proto): they can only run in separate pytest processes.
SDK_TREES = ("dapr", "legacy")


def _requested(tree: Path, config: pytest.Config) -> bool:
    """Whether a command-line path is the tree, inside it, or contains it."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == tree or tree in path.parents or path in tree.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    path = Path(collection_path).resolve()
    if path.parent == HERE and path.name in SDK_TREES and path.is_dir():
        if not _requested(path, config):
            return True  # a sibling of what was asked for (e.g. tests/e2e/cluster)
        if sum(_requested(HERE / tree, config) for tree in SDK_TREES) > 1:
            raise pytest.UsageError(
                "tests/e2e/dapr and tests/e2e/legacy import SDKs whose protobuf symbols "
                "clash; run them as separate pytest invocations "
                "(pytest tests/e2e/dapr; pytest tests/e2e/legacy)."
            )
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in harness.live_processes():
            report.sections.append((f"{proc.name} output tail ({proc.log_path})", proc.log_tail(60)))


@pytest.fixture(scope="session", autouse=True)
def _mongodb_for_the_run():
    """E2E_MONGOD=1 (tox -e sdk-mongo): start one mongod replica set for the
    session and run every server of the suite on it. A mongod that cannot
    start fails the run; it never falls back to another store."""
    import os

    if os.environ.get("E2E_MONGOD") != "1":
        yield
        return
    from tests.store.mongod import Mongod

    server = Mongod.start()
    os.environ[harness.MONGODB_ENV] = server.url
    try:
        yield
    finally:
        os.environ.pop(harness.MONGODB_ENV, None)
        server.stop()
