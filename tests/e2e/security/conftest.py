"""Fixtures for the Go SDK security suite: the Go programs (built once per session), fresh
certificates and tokens per test. Imports no SDK and not `backend`."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests import pki
from tests.e2e.security import support


@pytest.fixture(scope="session")
def go_programs(tmp_path_factory: pytest.TempPathFactory) -> support.GoPrograms:
    try:
        return support.build(tmp_path_factory.mktemp("go-programs"))
    except support.BuildError as exc:
        problem = str(exc)
    # A failure, never a skip (outside the except block, so the report shows just the reason).
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def creds(tmp_path: Path) -> support.Credentials:
    ca = pki.CA(tmp_path / "pki")
    tokens = {app: secrets.token_urlsafe(24) for app in ("orders", "payments")}
    files = {}
    for app, token in tokens.items():
        path = tmp_path / f"{app}.token"
        path.write_text(token + "\n")  # a trailing newline, as `echo` writes it
        path.chmod(0o600)
        files[app] = path
    return support.Credentials(
        ca=ca,
        server=ca.server(),
        clients={app: ca.client(app) for app in ("orders", "payments")},
        stranger_ca=pki.CA(tmp_path / "stranger", name="stranger-ca"),
        tokens=tokens,
        token_files=files,
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for worker in support.live_workers():
            report.sections.append((f"{worker.name} output ({worker.log_path})", worker.log_text[-6000:]))
