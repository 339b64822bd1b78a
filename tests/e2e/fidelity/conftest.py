"""Fixtures for the Go SDK fidelity suite: its Go programs, built once per session. Imports no SDK
and not `backend`."""

from __future__ import annotations

import pytest

from tests.e2e import gobuild
from tests.e2e.fidelity import support


@pytest.fixture(scope="session")
def fidelity_programs(tmp_path_factory: pytest.TempPathFactory) -> support.GoPrograms:
    try:
        return support.build(tmp_path_factory.mktemp("fidelity-go"))
    except gobuild.BuildError as exc:
        problem = str(exc)
    # A failure, never a skip (outside the except block, so the report shows just the reason).
    pytest.fail(problem, pytrace=False)
