"""The SQLite store's operator queries (backend/admin): the filtered, keyset-paged instance
listing, counts by status and the waiting-work report, with the schema they need.

Functions here run on the store thread with its connection (SqliteStore delegates to them).
The `name` column holds the workflow name (until it was added the name lived only inside the
state blob: `migrate` adds and backfills it in place); `activities.enqueued_at` records when an
activity was queued (NULL on rows queued before it existed).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey
from backend.store.base import ListedInstance, ListingCursor, ListingFilter, WaitingWork

# Indexes for the listing filters; the table is WITHOUT ROWID, so each index also carries
# (app_id, instance_id) and serves the (created_at, app_id, instance_id) keyset order.
INDEXES = """
CREATE INDEX IF NOT EXISTS instances_newest ON instances (created_at);
CREATE INDEX IF NOT EXISTS instances_name ON instances (name, created_at);
CREATE INDEX IF NOT EXISTS instances_status ON instances (status, created_at);
"""


_BACKFILL_BATCH = 500


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns and indexes of the operator queries to a file made before them."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(instances)")}
    if "name" not in columns:
        db.execute("BEGIN")  # the column and its backfill together, or neither
        db.execute("ALTER TABLE instances ADD COLUMN name TEXT NOT NULL DEFAULT ''")
        after = ("", "")  # in key order, a batch at a time: state blobs may be large
        while True:
            rows = db.execute(
                "SELECT app_id, instance_id, state FROM instances WHERE (app_id, instance_id) > (?, ?) "
                "ORDER BY app_id, instance_id LIMIT ?",
                (*after, _BACKFILL_BATCH),
            ).fetchall()
            if not rows:
                break
            db.executemany(
                "UPDATE instances SET name=? WHERE app_id=? AND instance_id=?",
                [(opb.WorkflowState.FromString(state).name, app, iid) for app, iid, state in rows],
            )
            after = (rows[-1][0], rows[-1][1])
        db.execute("COMMIT")
    activity_columns = {row[1] for row in db.execute("PRAGMA table_info(activities)")}
    if "enqueued_at" not in activity_columns:
        db.execute("ALTER TABLE activities ADD COLUMN enqueued_at REAL")
    db.executescript(INDEXES)


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _in(column: str, values: frozenset[str], args: list[object]) -> str:
    args.extend(sorted(values))
    return f"{column} IN ({', '.join('?' * len(values))})"


def list_instances(
    db: sqlite3.Connection, where: ListingFilter, after: ListingCursor | None, limit: int
) -> list[ListedInstance]:
    clauses: list[str] = []
    args: list[object] = []
    if where.app_ids is not None:
        if not where.app_ids:
            return []
        if len(where.app_ids) == 1:
            clauses.append("app_id = ?")
            args.append(next(iter(where.app_ids)))
        else:
            clauses.append(_in("app_id", where.app_ids, args))
    if where.name is not None:
        clauses.append("name = ?")
        args.append(where.name)
    if where.statuses:
        clauses.append(f"status IN ({', '.join('?' * len(where.statuses))})")
        args.extend(sorted(where.statuses))
    if where.created_from is not None:
        clauses.append("created_at >= ?")
        args.append(where.created_from.timestamp())
    if where.created_to is not None:
        clauses.append("created_at < ?")
        args.append(where.created_to.timestamp())
    if where.id_prefix:
        clauses.append("substr(instance_id, 1, ?) = ?")
        args.extend([len(where.id_prefix), where.id_prefix])
    if after is not None:
        clauses.append("(created_at, app_id, instance_id) < (?, ?, ?)")
        args.extend([after.created, after.app_id, after.instance_id])
    sql = "SELECT app_id, instance_id, created_at, state FROM instances"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY created_at DESC, app_id DESC, instance_id DESC LIMIT ?"
    args.append(limit)
    return [
        ListedInstance(
            key=InstanceKey(app, iid),
            created_at=_dt(created),
            state=opb.WorkflowState.FromString(state),
            cursor=ListingCursor(created=created, app_id=app, instance_id=iid),
        )
        for app, iid, created, state in db.execute(sql, args).fetchall()
    ]


def count_instances(db: sqlite3.Connection, app_ids: frozenset[str] | None) -> dict[tuple[str, int], int]:
    args: list[object] = []
    sql = "SELECT app_id, status, COUNT(*) FROM instances"
    if app_ids is not None:
        if not app_ids:
            return {}
        sql += " WHERE " + _in("app_id", app_ids, args)
    rows = db.execute(sql + " GROUP BY app_id, status", args).fetchall()
    return {(app, int(status)): int(n) for app, status, n in rows}


def waiting_work(
    db: sqlite3.Connection, app_ids: frozenset[str] | None, now: float, *, eligible: str
) -> list[WaitingWork]:
    """`eligible` is the store's inbox eligibility condition over `b` (inbox) and `i`
    (instances), with the parameter :now."""
    if app_ids is not None and not app_ids:
        return []
    params: dict[str, object] = {"now": now}
    only = ""
    if app_ids is not None:
        names = sorted(app_ids)
        params.update({f"a{n}": a for n, a in enumerate(names)})
        only = f" AND {{col}} IN ({', '.join(f':a{n}' for n in range(len(names)))})"
    found: dict[str, tuple[int, float | None]] = {}

    def add(app: str, n: int, since: float | None) -> None:
        count, oldest = found.get(app, (0, None))
        if since is not None and (oldest is None or since < oldest):
            oldest = since
        found[app] = (count + n, oldest)

    inbox = db.execute(
        f"""SELECT b.app_id, COUNT(*), MIN(b.id), MIN(NULLIF(b.visible_at, 0)) FROM inbox b
            JOIN instances i ON i.app_id = b.app_id AND i.instance_id = b.instance_id
            WHERE (i.lease_until IS NULL OR i.lease_until < :now) AND {eligible}{only.format(col="b.app_id")}
            GROUP BY b.app_id""",
        params,
    ).fetchall()
    for app, n, first_id, first_due in inbox:
        # The earliest queued message waits since it was made (its event's timestamp) or,
        # if later, since it came due; a timer that came due earlier may have waited longer.
        row = db.execute("SELECT visible_at, event FROM inbox WHERE id=?", (first_id,)).fetchone()
        since = None
        if row is not None:
            event = hpb.HistoryEvent.FromString(row[1])
            made = event.timestamp.ToDatetime(tzinfo=UTC).timestamp() if event.HasField("timestamp") else 0.0
            since = max(made, row[0]) or None
        if first_due is not None:
            since = first_due if since is None else min(since, first_due)
        add(app, int(n), since)
    activities = db.execute(
        f"""SELECT app_id, COUNT(*), MIN(MAX(COALESCE(enqueued_at, 0), not_before)) FROM activities
            WHERE not_before <= :now AND (lease_until IS NULL OR lease_until < :now){only.format(col="app_id")}
            GROUP BY app_id""",
        params,
    ).fetchall()
    for app, n, since in activities:
        add(app, int(n), since or None)
    return [
        WaitingWork(app_id=app, items=n, oldest=None if oldest is None else _dt(oldest))
        for app, (n, oldest) in sorted(found.items())
    ]
