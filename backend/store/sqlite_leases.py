"""The SQLite store's leasing: which work a server may take and the leases it takes.

Functions here run on the store thread with its connection, inside the caller's statement
group (SqliteStore delegates to them). A lease is (owner, token, until) on the row; a row is
free when it has no lease or its lease has expired. Work written with a store.base.Claim is
stored already leased (lease_new, insert_activities).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Collection
from datetime import datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain.model import ActivityTask, Gate, InboxItem, InstanceKey, NewInstance, WorkflowCommit
from backend.errors import LeaseLost
from backend.store.base import ActivityLease, Claim, WorkflowLease
from backend.store.sqlite_schema import ELIGIBLE, IN_CHUNK, WAITING, to_seconds


def lease_new(db: sqlite3.Connection, new: NewInstance, claim: Claim | None) -> WorkflowLease | None:
    """Lease a just-created instance to the claimant if the claim takes it (Claim.takes)."""
    if claim is None or not claim.takes(new):
        return None
    key = new.key
    token = uuid.uuid4().hex
    k = (key.app_id, key.instance_id)
    db.execute(
        "UPDATE instances SET lease_owner=?, lease_token=?, lease_until=? WHERE app_id=? AND instance_id=?",
        (claim.owner, token, to_seconds(claim.until), *k),
    )
    rows = db.execute(
        "SELECT id, event FROM inbox WHERE app_id=? AND instance_id=? ORDER BY id", k
    ).fetchall()
    return WorkflowLease(
        key=key,
        token=token,
        state=new.state,
        history_len=0,
        inbox=[InboxItem(id=r[0], event=hpb.HistoryEvent.FromString(r[1])) for r in rows],
        propagated=new.propagated,
    )


def lease_workflows(
    db: sqlite3.Connection,
    app_id: str,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    control_only: bool,
    instance_ids: Collection[str] | None,
    not_waiting: bool = False,
) -> list[WorkflowLease]:
    """Free instances of the app with eligible inbox messages (store.base.Store.lease_workflows);
    with not_waiting, only instances that are not waiting (Store.complete_activity's claim)."""
    params: dict[str, object] = {
        "app": app_id,
        "now": to_seconds(now),
        "until": to_seconds(until),
        "owner": owner,
        "limit": limit,
    }
    eligible = ELIGIBLE + (f" AND b.gate = {Gate.CONTROL.value}" if control_only else "")
    if instance_ids is not None:
        only = sorted(instance_ids)[:IN_CHUNK]
        if not only:
            return []
        params.update({f"k{n}": iid for n, iid in enumerate(only)})
        eligible += f" AND b.instance_id IN ({', '.join(f':k{n}' for n in range(len(only)))})"
    if not_waiting:
        eligible += f" AND i.status NOT IN ({', '.join(str(int(w)) for w in WAITING)})"
    # A control-only lease takes the start along, so control events never precede it.
    taken = ELIGIBLE + (f" AND b.gate IN ({Gate.CONTROL.value}, {Gate.START.value})" if control_only else "")
    ids = db.execute(
        f"""SELECT DISTINCT b.instance_id FROM inbox b
            JOIN instances i ON i.app_id = b.app_id AND i.instance_id = b.instance_id
            WHERE b.app_id = :app AND (i.lease_until IS NULL OR i.lease_until < :now)
            AND {eligible} LIMIT :limit""",
        params,
    ).fetchall()
    leases = []
    for (iid,) in ids:
        token = uuid.uuid4().hex
        db.execute(
            "UPDATE instances SET lease_owner=?, lease_token=?, lease_until=? WHERE app_id=? AND instance_id=?",
            (owner, token, to_seconds(until), app_id, iid),
        )
        state, history_len, propagated = db.execute(
            "SELECT state, history_len, propagated FROM instances WHERE app_id=? AND instance_id=?",
            (app_id, iid),
        ).fetchone()
        rows = db.execute(
            f"""SELECT b.id, b.event FROM inbox b JOIN instances i
                ON i.app_id = b.app_id AND i.instance_id = b.instance_id
                WHERE b.app_id = :app AND b.instance_id = :iid AND {taken} ORDER BY b.id""",
            {**params, "iid": iid},
        ).fetchall()
        leases.append(
            WorkflowLease(
                key=InstanceKey(app_id, iid),
                token=token,
                state=opb.WorkflowState.FromString(state),
                history_len=history_len,
                inbox=[InboxItem(id=r[0], event=hpb.HistoryEvent.FromString(r[1])) for r in rows],
                propagated=hpb.PropagatedHistory.FromString(propagated) if propagated else None,
            )
        )
    return leases


def check_lease(db: sqlite3.Connection, lease: WorkflowLease) -> int:
    """The instance's stored history length, if the lease is still held (else LeaseLost)."""
    row = db.execute(
        "SELECT lease_token, history_len FROM instances WHERE app_id=? AND instance_id=?",
        (lease.key.app_id, lease.key.instance_id),
    ).fetchone()
    if row is None or row[0] != lease.token:
        raise LeaseLost(f"lease on {lease.key} is no longer held")
    return int(row[1])


def insert_activities(
    db: sqlite3.Connection, commit: WorkflowCommit, *, now: datetime, claim: Claim | None
) -> list[ActivityLease]:
    """Queue the commit's activities; those the claim has slots for are stored leased."""
    slots = dict(claim.slots) if claim is not None else {}
    rows = [
        (
            a.app_id,
            a.parent.app_id,
            a.parent.instance_id,
            a.request.SerializeToString(),
            a.router.SerializeToString(),
            to_seconds(now),
        )
        for a in commit.activities
    ]
    sql = (
        "INSERT INTO activities (app_id, parent_app, parent_id, request, router, enqueued_at, "
        "lease_owner, lease_token, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    if claim is None or not any(slots.values()):
        db.executemany(sql, [(*r, None, None, None) for r in rows])
        return []
    leased: list[ActivityLease] = []
    for a, row in zip(commit.activities, rows, strict=True):
        if slots.get(a.app_id, 0) <= 0:
            db.execute(sql, (*row, None, None, None))
            continue
        slots[a.app_id] -= 1
        token = uuid.uuid4().hex
        cur = db.execute(sql, (*row, claim.owner, token, to_seconds(claim.until)))
        leased.append(ActivityLease(id=int(cur.lastrowid or 0), token=token, task=a))
    return leased


def lease_activities(
    db: sqlite3.Connection, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
) -> list[ActivityLease]:
    """Free, due activities of the app, oldest first."""
    rows = db.execute(
        "SELECT id, parent_app, parent_id, request, router FROM activities "
        "WHERE app_id=? AND not_before<=? AND (lease_until IS NULL OR lease_until<?) ORDER BY id LIMIT ?",
        (app_id, to_seconds(now), to_seconds(now), limit),
    ).fetchall()
    out = []
    for row in rows:
        token = uuid.uuid4().hex
        db.execute(
            "UPDATE activities SET lease_owner=?, lease_token=?, lease_until=? WHERE id=?",
            (owner, token, to_seconds(until), row[0]),
        )
        out.append(
            ActivityLease(
                id=row[0],
                token=token,
                task=ActivityTask(
                    app_id=app_id,
                    parent=InstanceKey(row[1], row[2]),
                    request=spb.ActivityRequest.FromString(row[3]),
                    router=opb.TaskRouter.FromString(row[4]),
                ),
            )
        )
    return out


def renew(db: sqlite3.Connection, tokens: list[str], *, until: datetime) -> None:
    """Extend the leases with these tokens (instances and activities) to `until`."""
    for i in range(0, len(tokens), IN_CHUNK):
        chunk = tokens[i : i + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for table in ("instances", "activities"):
            db.execute(
                f"UPDATE {table} SET lease_until=? WHERE lease_token IN ({marks})",
                (to_seconds(until), *chunk),
            )


# Where work of an app becomes eligible later: a delayed message, an expiring lease, a retry time.
_DUE_COLUMNS = (
    ("inbox", "visible_at"),
    ("instances", "lease_until"),
    ("activities", "not_before"),
    ("activities", "lease_until"),
)


def next_due(db: sqlite3.Connection, app_id: str, *, now: datetime) -> float | None:
    """The earliest later moment at which some work of the app becomes eligible: a delayed
    message, an expiring lease, an activity's retry time."""
    t = to_seconds(now)
    found = []
    for table, column in _DUE_COLUMNS:
        (value,) = db.execute(
            f"SELECT MIN({column}) FROM {table} WHERE app_id=? AND {column}>?", (app_id, t)
        ).fetchone()
        if value is not None:
            found.append(value)
    return min(found) if found else None
