"""The cluster tests run only on MongoDB (the sdk-mongo CI env): without a replica set
every test here fails, loudly, instead of being skipped."""

from __future__ import annotations

import pytest

from tests.e2e.cluster.common import require_mongodb_url


@pytest.fixture(scope="module", autouse=True)
def mongodb_base_url() -> str:
    return require_mongodb_url()
