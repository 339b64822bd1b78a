"""Shared pytest wiring for the e2e suites. Imports no SDK and not `backend`."""

from __future__ import annotations

import pytest

from tests.e2e import harness


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in harness.live_processes():
            report.sections.append((f"{proc.name} output tail ({proc.log_path})", proc.log_tail(60)))
