"""The embedded store: SQLite from the standard library, durable on disk.

All statements run on one dedicated thread holding one connection, so every
method is a single serialized transaction and the event loop never blocks.
The file is opened in exclusive locking mode: one server process owns it,
which is also why leases left by a previous (crashed) run are cleared on open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import (
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
    is_terminal,
)
from backend.errors import AlreadyExists, LeaseLost
from backend.store import sqlite_leases, sqlite_queries, sqlite_writes
from backend.store.base import (
    ActivityLease,
    Claim,
    InstanceFilter,
    ListedInstance,
    ListingCursor,
    ListingFilter,
    Store,
    WaitingWork,
    WorkflowLease,
)
from backend.store.group_commit import GroupCommitter
from backend.store.sqlite_schema import ELIGIBLE, SCHEMA, from_seconds, migrate, to_seconds

T = TypeVar("T")


class SqliteStore(Store):
    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous.upper()
        self._thread: GroupCommitter | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._thread is not None, "store is not open"
        return await self._thread.run(fn)

    async def open(self) -> None:
        thread = GroupCommitter()

        def connect() -> None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA foreign_keys=OFF")
            db.executescript(SCHEMA)
            migrate(db)
            # Sole owner of the file: leases of a previous process died with it.
            db.execute("UPDATE instances SET lease_owner=NULL, lease_token=NULL, lease_until=NULL")
            db.execute("UPDATE activities SET lease_owner=NULL, lease_token=NULL, lease_until=NULL")
            thread.db = db

        try:
            await thread.call(connect)
        except BaseException:
            thread.stop()
            raise
        self._thread = thread

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return

        def disconnect() -> None:
            if thread.db is not None:
                thread.db.close()
                thread.db = None

        await thread.call(disconnect)
        thread.stop()

    # -- client side ---------------------------------------------------------

    async def create_instance(
        self,
        new: NewInstance,
        *,
        replace_terminal: bool,
        seed: WorkflowCommit | None = None,
        claim: Claim | None = None,
    ) -> WorkflowLease | None:
        def create(db: sqlite3.Connection) -> WorkflowLease | bool | None:
            if not sqlite_writes.create(db, new, replace_terminal=replace_terminal):
                return False
            if seed is not None:
                sqlite_writes.apply(db, seed, length=0, now=new.created_at)
                return None
            return sqlite_leases.lease_new(db, new, claim)

        created = await self._run(create)
        if created is False:
            raise AlreadyExists(
                f"orchestration instance already exists: '{new.key.instance_id}' on app '{new.key.app_id}'"
            )
        return created if isinstance(created, WorkflowLease) else None

    async def get_state(self, key: InstanceKey) -> opb.WorkflowState | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT state FROM instances WHERE app_id=? AND instance_id=?", (key.app_id, key.instance_id)
            ).fetchone()
        )
        return None if row is None else opb.WorkflowState.FromString(row[0])

    async def get_history(self, key: InstanceKey, start: int = 0) -> list[hpb.HistoryEvent]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT event FROM history WHERE app_id=? AND instance_id=? AND seq>=? ORDER BY seq",
                (key.app_id, key.instance_id, start),
            ).fetchall()
        )
        return [hpb.HistoryEvent.FromString(r[0]) for r in rows]

    async def list_instance_ids(self, app_id: str, *, after: str | None, limit: int) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT instance_id FROM instances WHERE app_id=? AND instance_id>? ORDER BY instance_id LIMIT ?",
                (app_id, after or "", limit),
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def find_instances(self, where: InstanceFilter) -> list[InstanceKey]:
        sql = "SELECT instance_id FROM instances WHERE app_id=?"
        args: list[object] = [where.app_id]
        if where.created_from is not None:
            sql += " AND created_at>=?"
            args.append(to_seconds(where.created_from))
        if where.created_to is not None:
            sql += " AND created_at<=?"
            args.append(to_seconds(where.created_to))
        if where.statuses:
            sql += f" AND status IN ({', '.join('?' * len(where.statuses))})"
            args.extend(sorted(where.statuses))
        rows = await self._run(lambda db: db.execute(sql + " ORDER BY instance_id", args).fetchall())
        return [InstanceKey(where.app_id, r[0]) for r in rows]

    # Operator queries: backend/store/sqlite_queries.py.
    async def list_instances(
        self, where: ListingFilter, *, after: ListingCursor | None, limit: int
    ) -> list[ListedInstance]:
        return await self._run(lambda db: sqlite_queries.list_instances(db, where, after, limit))

    async def count_instances(self, app_ids: frozenset[str] | None) -> dict[tuple[str, int], int]:
        return await self._run(lambda db: sqlite_queries.count_instances(db, app_ids))

    async def waiting_work(self, app_ids: frozenset[str] | None, *, now: datetime) -> list[WaitingWork]:
        return await self._run(
            lambda db: sqlite_queries.waiting_work(db, app_ids, to_seconds(now), eligible=ELIGIBLE)
        )

    async def send(self, message: Message) -> bool:
        return await self._run(lambda db: sqlite_writes.insert_message(db, message, only_if_exists=True))

    async def deliver(
        self, message: Message, *, claim: Claim | None = None
    ) -> tuple[bool, WorkflowLease | None]:
        def deliver(db: sqlite3.Connection) -> tuple[bool, WorkflowLease | None]:
            if not sqlite_writes.insert_message(db, message, only_if_exists=True):
                return False, None
            return True, _claim_target(db, message, claim) if message.visible_at is None else None

        return await self._run(deliver)

    async def purge(self, key: InstanceKey, *, only_terminal: bool) -> bool:
        def purge(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT status FROM instances WHERE app_id=? AND instance_id=?", (key.app_id, key.instance_id)
            ).fetchone()
            if row is None or (only_terminal and not is_terminal(row[0])):
                return False
            sqlite_writes.delete_instance(db, key)
            return True

        return await self._run(purge)

    # -- worker side: leasing in backend/store/sqlite_leases.py ---------------

    async def lease_workflows(
        self,
        app_id: str,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        control_only: bool = False,
        instance_ids: Collection[str] | None = None,
    ) -> list[WorkflowLease]:
        return await self._run(
            lambda db: sqlite_leases.lease_workflows(
                db,
                app_id,
                owner=owner,
                now=now,
                until=until,
                limit=limit,
                control_only=control_only,
                instance_ids=instance_ids,
            )
        )

    async def commit_workflow(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        *,
        now: datetime,
        claim: Claim | None = None,
    ) -> list[ActivityLease]:
        def apply(db: sqlite3.Connection) -> list[ActivityLease]:
            return sqlite_writes.apply(
                db, commit, length=sqlite_leases.check_lease(db, lease), now=now, claim=claim
            )

        return await self._run(apply)

    async def abandon_workflow(self, lease: WorkflowLease, *, retry_at: datetime | None) -> None:
        def abandon(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE instances SET lease_owner=NULL, lease_token=NULL, lease_until=? "
                "WHERE app_id=? AND instance_id=? AND lease_token=?",
                (
                    None if retry_at is None else to_seconds(retry_at),
                    lease.key.app_id,
                    lease.key.instance_id,
                    lease.token,
                ),
            )

        await self._run(abandon)

    async def lease_activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]:
        return await self._run(
            lambda db: sqlite_leases.lease_activities(
                db, app_id, owner=owner, now=now, until=until, limit=limit
            )
        )

    async def complete_activity(
        self, lease: ActivityLease, result: Message, *, claim: Claim | None = None
    ) -> WorkflowLease | None:
        def complete(db: sqlite3.Connection) -> WorkflowLease | None:
            cur = db.execute("DELETE FROM activities WHERE id=? AND lease_token=?", (lease.id, lease.token))
            if cur.rowcount == 0:
                raise LeaseLost(f"activity {lease.id} is no longer leased by this server")
            sqlite_writes.insert_message(db, result, only_if_exists=True)
            return _claim_target(db, result, claim)

        return await self._run(complete)

    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE activities SET lease_owner=NULL, lease_token=NULL, lease_until=NULL, not_before=? "
                "WHERE id=? AND lease_token=?",
                (to_seconds(retry_at), lease.id, lease.token),
            )
        )

    async def renew_leases(self, tokens: Collection[str], *, until: datetime) -> None:
        held = list(tokens)
        await self._run(lambda db: sqlite_leases.renew(db, held, until=until))

    async def retry_stalled(self, app_id: str) -> int:
        # Only the gating column changes; the client-visible state stays STALLED
        # until the retried turn commits (RUNNING) or stalls again.
        return await self._run(
            lambda db: (
                db.execute(
                    "UPDATE instances SET status=? WHERE app_id=? AND status=?",
                    (opb.ORCHESTRATION_STATUS_RUNNING, app_id, opb.ORCHESTRATION_STATUS_STALLED),
                ).rowcount
            )
        )

    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        value = await self._run(lambda db: sqlite_leases.next_due(db, app_id, now=now))
        return None if value is None else from_seconds(value)


def _claim_target(db: sqlite3.Connection, message: Message, claim: Claim | None) -> WorkflowLease | None:
    """Lease the target of a message just delivered to `claim`'s owner if it is free and may
    take it now (not waiting), in the same transaction: store.base.Store.complete_activity."""
    target = message.target
    if claim is None or claim.slots.get(target.app_id, 0) <= 0:
        return None
    won = sqlite_leases.lease_workflows(
        db,
        target.app_id,
        owner=claim.owner,
        now=claim.now,
        until=claim.until,
        limit=1,
        control_only=False,
        instance_ids=[target.instance_id],
        not_waiting=True,
    )
    return won[0] if won else None
