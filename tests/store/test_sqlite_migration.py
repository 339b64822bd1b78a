"""A SQLite file made before a column existed opens, gains it, and keeps its instances."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backend.domain.model import InstanceKey
from backend.store import open_store
from tests.store.test_contract import APP, new

_BEFORE_PROPAGATION = """
CREATE TABLE instances (
    app_id TEXT NOT NULL, instance_id TEXT NOT NULL, status INTEGER NOT NULL, created_at REAL NOT NULL,
    state BLOB NOT NULL, history_len INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_token TEXT,
    lease_until REAL, PRIMARY KEY (app_id, instance_id)
) WITHOUT ROWID;
"""


async def test_an_older_file_gains_the_propagated_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(_BEFORE_PROPAGATION)
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        key = InstanceKey(APP, "kept")
        await store.create_instance(new(key), replace_terminal=False)
        assert await store.get_state(key) is not None
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert "propagated" in {row[1] for row in db.execute("PRAGMA table_info(instances)")}
