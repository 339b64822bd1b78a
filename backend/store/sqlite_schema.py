"""The SQLite store's tables, the columns added since (migrated in place at open), and how
its values are encoded: moments as float seconds, protobuf messages as bytes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import Gate
from backend.store import sqlite_queries

IN_CHUNK = 500  # bound parameters per `IN (...)`, well under SQLite's limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    app_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    created_at REAL NOT NULL,
    state BLOB NOT NULL,
    history_len INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_until REAL,
    propagated BLOB,
    PRIMARY KEY (app_id, instance_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_created ON instances (app_id, created_at);
CREATE INDEX IF NOT EXISTS instances_lease ON instances (lease_token) WHERE lease_token IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    app_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (app_id, instance_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    gate INTEGER NOT NULL,
    visible_at REAL NOT NULL,
    event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox (app_id, instance_id, id);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (app_id, visible_at);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    parent_app TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    request BLOB NOT NULL,
    router BLOB NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS activities_due ON activities (app_id, not_before);
CREATE INDEX IF NOT EXISTS activities_parent ON activities (parent_app, parent_id);
CREATE INDEX IF NOT EXISTS activities_lease ON activities (lease_token) WHERE lease_token IS NOT NULL;
"""

WAITING = (
    opb.ORCHESTRATION_STATUS_PENDING,
    opb.ORCHESTRATION_STATUS_SUSPENDED,
    opb.ORCHESTRATION_STATUS_STALLED,
)
# Eligibility of an inbox row `b` for instance `i` (see store/base.py).
ELIGIBLE = f"""b.visible_at <= :now AND (b.gate = {Gate.CONTROL.value}
    OR (b.gate = {Gate.START.value} AND i.status != {opb.ORCHESTRATION_STATUS_STALLED})
    OR i.status NOT IN ({", ".join(str(int(s)) for s in WAITING)}))"""


def migrate(db: sqlite3.Connection) -> None:
    """Columns added after a file may have been created."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(instances)")}
    if "propagated" not in columns:
        db.execute("ALTER TABLE instances ADD COLUMN propagated BLOB")
    sqlite_queries.migrate(db)  # the operator queries' name column, enqueued_at and indexes


def blob(message: hpb.PropagatedHistory | None) -> bytes | None:
    return None if message is None else message.SerializeToString()


def to_seconds(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


# SDKs wait "forever" with timers at 9999-12-31; float rounding must not overflow.
LATEST = datetime.max.replace(tzinfo=UTC)


def from_seconds(value: float) -> datetime:
    return LATEST if value >= LATEST.timestamp() else datetime.fromtimestamp(value, UTC)
