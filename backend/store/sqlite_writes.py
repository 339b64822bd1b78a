"""The SQLite store's writes, run on its thread inside the caller's transaction: messages into
inboxes, instances created and deleted, and a turn's commit set."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from backend.domain.model import InstanceKey, Message, NewInstance, WorkflowCommit, is_terminal
from backend.store import sqlite_leases
from backend.store.base import ActivityLease, Claim
from backend.store.sqlite_schema import blob, to_seconds


def insert_messages(db: sqlite3.Connection, messages: list[Message]) -> None:
    # Front messages take ids below every other (the inbox is read in id order); the
    # last of them is placed first so that they keep their given order.
    for m in reversed([m for m in messages if m.front]):
        insert_message(db, m, only_if_exists=True)
    for m in messages:
        if not m.front:
            insert_message(db, m, only_if_exists=True)


def insert_message(db: sqlite3.Connection, m: Message, *, only_if_exists: bool) -> bool:
    if m.front:
        (lowest,) = db.execute("SELECT COALESCE(MIN(id), 1) FROM inbox").fetchone()
        sql = (
            f"INSERT INTO inbox (id, app_id, instance_id, gate, visible_at, event) SELECT {int(lowest) - 1}, "
        )
        cur = db.execute(
            sql + "?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM instances WHERE app_id=? AND instance_id=?)"
            if only_if_exists
            else sql + "?, ?, ?, ?, ?",
            (
                m.target.app_id,
                m.target.instance_id,
                int(m.gate),
                to_seconds(m.visible_at),
                m.event.SerializeToString(),
                *((m.target.app_id, m.target.instance_id) if only_if_exists else ()),
            ),
        )
        return cur.rowcount > 0
    sql = "INSERT INTO inbox (app_id, instance_id, gate, visible_at, event) "
    args = (
        m.target.app_id,
        m.target.instance_id,
        int(m.gate),
        to_seconds(m.visible_at),
        m.event.SerializeToString(),
    )
    if only_if_exists:
        cur = db.execute(
            sql + "SELECT ?, ?, ?, ?, ? WHERE EXISTS "
            "(SELECT 1 FROM instances WHERE app_id=? AND instance_id=?)",
            (*args, m.target.app_id, m.target.instance_id),
        )
    else:
        cur = db.execute(sql + "VALUES (?, ?, ?, ?, ?)", args)
    return cur.rowcount > 0


def delete_instance(db: sqlite3.Connection, key: InstanceKey) -> None:
    k = (key.app_id, key.instance_id)
    db.execute("DELETE FROM instances WHERE app_id=? AND instance_id=?", k)
    db.execute("DELETE FROM history WHERE app_id=? AND instance_id=?", k)
    db.execute("DELETE FROM inbox WHERE app_id=? AND instance_id=?", k)
    db.execute("DELETE FROM activities WHERE parent_app=? AND parent_id=?", k)


def create(db: sqlite3.Connection, new: NewInstance, *, replace_terminal: bool) -> bool:
    row = db.execute(
        "SELECT status FROM instances WHERE app_id=? AND instance_id=?",
        (new.key.app_id, new.key.instance_id),
    ).fetchone()
    if row is not None:
        if not (replace_terminal and is_terminal(row[0])):
            return False
        delete_instance(db, new.key)
    db.execute(
        "INSERT INTO instances (app_id, instance_id, status, created_at, state, propagated, name) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            new.key.app_id,
            new.key.instance_id,
            new.state.workflowStatus,
            to_seconds(new.created_at),
            new.state.SerializeToString(),
            blob(new.propagated),
            new.state.name,
        ),
    )
    if new.start is not None:
        insert_message(db, new.start, only_if_exists=False)
    return True


def apply(
    db: sqlite3.Connection,
    commit: WorkflowCommit,
    *,
    length: int,
    now: datetime,
    claim: Claim | None = None,
) -> list[ActivityLease]:
    """Write a commit set; the caller has checked the lease (or just created the instance).
    The activities `claim` took, leased."""
    key = (commit.key.app_id, commit.key.instance_id)
    if commit.reset_history:
        db.execute("DELETE FROM history WHERE app_id=? AND instance_id=?", key)
        db.execute(
            "UPDATE instances SET propagated=? WHERE app_id=? AND instance_id=?",
            (blob(commit.propagated), *key),
        )
        length = 0
    db.executemany(
        "INSERT INTO history (app_id, instance_id, seq, event) VALUES (?, ?, ?, ?)",
        [(*key, length + n, e.SerializeToString()) for n, e in enumerate(commit.new_history)],
    )
    length += len(commit.new_history)
    db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in commit.consumed])
    if commit.cancel_pending:
        db.execute(
            "DELETE FROM inbox WHERE app_id=? AND instance_id=? AND visible_at>?", (*key, to_seconds(now))
        )
        db.execute("DELETE FROM activities WHERE parent_app=? AND parent_id=?", key)
    for new in commit.new_instances:
        create(db, new, replace_terminal=True)
    insert_messages(db, commit.messages)
    leased = sqlite_leases.insert_activities(db, commit, now=now, claim=claim)
    db.execute(
        "UPDATE instances SET status=?, state=?, history_len=?, lease_owner=NULL, lease_token=NULL, "
        "lease_until=NULL WHERE app_id=? AND instance_id=?",
        (commit.state.workflowStatus, commit.state.SerializeToString(), length, *key),
    )
    return leased
