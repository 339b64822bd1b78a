"""Store contract fixtures: every test in this folder runs against each store URL.

Built in: `memory:` and a SQLite file under the test's tmp_path. Set
STORE_TEST_MONGODB_URL (e.g. mongodb://localhost:27017) to add a MongoDB store;
each test then gets its own database, named after a fresh uuid.

Or set STORE_TEST_MONGOD=1 to start a throwaway mongod (a single-node replica
set, tests/store/mongod.py) once for the session and run the MongoDB case on it.
Then a missing or broken mongod fails the MongoDB tests: they are never skipped.
STORE_TEST_MONGODB_URL, when also set, wins (no mongod is started).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from backend.store import Store, open_store

MONGODB_URL_ENV = "STORE_TEST_MONGODB_URL"
MONGOD_ENV = "STORE_TEST_MONGOD"
# The param of the MongoDB case when this session starts its own mongod.
_OWN_MONGOD = "own-mongod"


def _mongodb_params() -> list[object]:
    url = os.environ.get(MONGODB_URL_ENV)
    if not url and os.environ.get(MONGOD_ENV, "").lower() in ("1", "true", "yes"):
        url = _OWN_MONGOD
    return [pytest.param(url, id="mongodb")] if url else []


STORE_PARAMS = [
    pytest.param("memory:", id="memory"),
    pytest.param("sqlite-file", id="sqlite"),
    *_mongodb_params(),
]
# Stores that keep their data when closed and opened again.
DURABLE_PARAMS = [pytest.param("sqlite-file", id="sqlite"), *_mongodb_params()]


@pytest.fixture(scope="session")
def mongod_url() -> Iterator[str]:
    """A mongod of this session's own; fails (never skips) if it cannot start."""
    from tests.store.mongod import Mongod

    server = Mongod.start()
    try:
        yield server.url
    finally:
        server.stop()


def _concrete_url(param: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if param == _OWN_MONGOD:
        param = request.getfixturevalue("mongod_url")
    if param == "sqlite-file":
        return f"sqlite:///{tmp_path}/x.db"  # tmp_path is absolute: sqlite:////abs/.../x.db
    if param.startswith(("mongodb://", "mongodb+srv://")):
        parts = urlsplit(param)
        database = f"store_contract_{uuid.uuid4().hex}"
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
    return param


@pytest.fixture(params=STORE_PARAMS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _concrete_url(request.param, tmp_path, request)


@pytest.fixture(params=DURABLE_PARAMS)
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _concrete_url(request.param, tmp_path, request)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
