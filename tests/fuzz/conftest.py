"""Stores for the fuzz suite: a SQLite file in tmp_path and a fresh database on the test mongod.

The MongoDB case comes from tests/store/conftest.py exactly as the store contract gets it
(STORE_TEST_MONGOD=1 starts a throwaway mongod, STORE_TEST_MONGODB_URL names one); without
either it is reported as skipped, never silently dropped. `tox -e fuzz` sets STORE_TEST_MONGOD.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz import settings

# mongod_url is the store suite's session fixture; imported here so tests in this folder can
# use it too (one mongod per session for this folder, started only when a MongoDB case runs).
from tests.store.conftest import MONGOD_ENV, _concrete_url, _mongodb_params, mongod_url  # noqa: F401


def _store_params() -> list[object]:
    mongodb = _mongodb_params() or [
        pytest.param(
            None, id="mongodb", marks=pytest.mark.skip(reason=f"set {MONGOD_ENV}=1 (tox -e fuzz does)")
        )
    ]
    return [pytest.param("sqlite-file", id="sqlite"), *mongodb]


@pytest.fixture(params=_store_params())
def fuzz_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(store name, store URL) for one fuzz run."""
    name = "sqlite" if request.param == "sqlite-file" else "mongodb"
    return name, _concrete_url(request.param, tmp_path, request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and "fuzz_store" in getattr(item, "fixturenames", ()):
        report.sections.append(
            (
                "fuzz seed",
                f"reproduce: FUZZ_SEED={settings.SEED} FUZZ_CASES={settings.CASES} pytest '{item.nodeid}'",
            )
        )
    return report
