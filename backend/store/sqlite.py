"""The embedded store: SQLite from the standard library, durable on disk.

All statements run on one dedicated thread holding one connection, so every
method is a single serialized transaction and the event loop never blocks.
The file is opened in exclusive locking mode: one server process owns it,
which is also why leases left by a previous (crashed) run are cleared on open.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain.model import (
    ActivityTask,
    Gate,
    InboxItem,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
    is_terminal,
)
from backend.errors import AlreadyExists, LeaseLost
from backend.store import sqlite_queries
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

T = TypeVar("T")
_IN_CHUNK = 500  # bound parameters per `IN (...)`, well under SQLite's limit

_SCHEMA = """
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

_WAITING = (
    opb.ORCHESTRATION_STATUS_PENDING,
    opb.ORCHESTRATION_STATUS_SUSPENDED,
    opb.ORCHESTRATION_STATUS_STALLED,
)
# Eligibility of an inbox row `b` for instance `i` (see store/base.py).
_ELIGIBLE = f"""b.visible_at <= :now AND (b.gate = {Gate.CONTROL.value}
    OR (b.gate = {Gate.START.value} AND i.status != {opb.ORCHESTRATION_STATUS_STALLED})
    OR i.status NOT IN ({", ".join(str(int(s)) for s in _WAITING)}))"""


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added after a file may have been created."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(instances)")}
    if "propagated" not in columns:
        db.execute("ALTER TABLE instances ADD COLUMN propagated BLOB")
    sqlite_queries.migrate(db)  # the operator queries' name column, enqueued_at and indexes


def _blob(message: hpb.PropagatedHistory | None) -> bytes | None:
    return None if message is None else message.SerializeToString()


def _t(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


# SDKs wait "forever" with timers at 9999-12-31; float rounding must not overflow.
_LATEST = datetime.max.replace(tzinfo=UTC)


def _dt(value: float) -> datetime:
    return _LATEST if value >= _LATEST.timestamp() else datetime.fromtimestamp(value, UTC)


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
            db.executescript(_SCHEMA)
            _migrate(db)
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

    # -- helpers (run on the store thread) -----------------------------------

    @classmethod
    def _insert_messages(cls, db: sqlite3.Connection, messages: list[Message]) -> None:
        # Front messages take ids below every other (the inbox is read in id order); the
        # last of them is placed first so that they keep their given order.
        for m in reversed([m for m in messages if m.front]):
            cls._insert_message(db, m, only_if_exists=True)
        for m in messages:
            if not m.front:
                cls._insert_message(db, m, only_if_exists=True)

    @staticmethod
    def _insert_message(db: sqlite3.Connection, m: Message, *, only_if_exists: bool) -> bool:
        if m.front:
            (lowest,) = db.execute("SELECT COALESCE(MIN(id), 1) FROM inbox").fetchone()
            sql = f"INSERT INTO inbox (id, app_id, instance_id, gate, visible_at, event) SELECT {int(lowest) - 1}, "
            cur = db.execute(
                sql + "?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM instances WHERE app_id=? AND instance_id=?)"
                if only_if_exists
                else sql + "?, ?, ?, ?, ?",
                (
                    m.target.app_id,
                    m.target.instance_id,
                    int(m.gate),
                    _t(m.visible_at),
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
            _t(m.visible_at),
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

    @staticmethod
    def _delete_instance(db: sqlite3.Connection, key: InstanceKey) -> None:
        k = (key.app_id, key.instance_id)
        db.execute("DELETE FROM instances WHERE app_id=? AND instance_id=?", k)
        db.execute("DELETE FROM history WHERE app_id=? AND instance_id=?", k)
        db.execute("DELETE FROM inbox WHERE app_id=? AND instance_id=?", k)
        db.execute("DELETE FROM activities WHERE parent_app=? AND parent_id=?", k)

    def _create(self, db: sqlite3.Connection, new: NewInstance, *, replace_terminal: bool) -> bool:
        row = db.execute(
            "SELECT status FROM instances WHERE app_id=? AND instance_id=?",
            (new.key.app_id, new.key.instance_id),
        ).fetchone()
        if row is not None:
            if not (replace_terminal and is_terminal(row[0])):
                return False
            self._delete_instance(db, new.key)
        db.execute(
            "INSERT INTO instances (app_id, instance_id, status, created_at, state, propagated, name) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                new.key.app_id,
                new.key.instance_id,
                new.state.workflowStatus,
                _t(new.created_at),
                new.state.SerializeToString(),
                _blob(new.propagated),
                new.state.name,
            ),
        )
        if new.start is not None:
            self._insert_message(db, new.start, only_if_exists=False)
        return True

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
            if not self._create(db, new, replace_terminal=replace_terminal):
                return False
            if seed is not None:
                self._apply(db, seed, length=0, now=new.created_at)
                return None
            return self._lease_new(db, new, claim)

        created = await self._run(create)
        if created is False:
            raise AlreadyExists(
                f"orchestration instance already exists: '{new.key.instance_id}' on app '{new.key.app_id}'"
            )
        return created if isinstance(created, WorkflowLease) else None

    @staticmethod
    def _lease_new(db: sqlite3.Connection, new: NewInstance, claim: Claim | None) -> WorkflowLease | None:
        """Lease a just-created instance to the claimant if the claim has a slot for it and
        its start is due."""
        if claim is None or not claim.takes(new):
            return None
        key = new.key
        token = uuid.uuid4().hex
        k = (key.app_id, key.instance_id)
        db.execute(
            "UPDATE instances SET lease_owner=?, lease_token=?, lease_until=? WHERE app_id=? AND instance_id=?",
            (claim.owner, token, _t(claim.until), *k),
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
            args.append(_t(where.created_from))
        if where.created_to is not None:
            sql += " AND created_at<=?"
            args.append(_t(where.created_to))
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
            lambda db: sqlite_queries.waiting_work(db, app_ids, _t(now), eligible=_ELIGIBLE)
        )

    async def send(self, message: Message) -> bool:
        return await self._run(lambda db: self._insert_message(db, message, only_if_exists=True))

    async def purge(self, key: InstanceKey, *, only_terminal: bool) -> bool:
        def purge(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT status FROM instances WHERE app_id=? AND instance_id=?", (key.app_id, key.instance_id)
            ).fetchone()
            if row is None or (only_terminal and not is_terminal(row[0])):
                return False
            self._delete_instance(db, key)
            return True

        return await self._run(purge)

    # -- worker side ---------------------------------------------------------

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
        params: dict[str, object] = {
            "app": app_id,
            "now": _t(now),
            "until": _t(until),
            "owner": owner,
            "limit": limit,
        }
        eligible = _ELIGIBLE + (f" AND b.gate = {Gate.CONTROL.value}" if control_only else "")
        if instance_ids is not None:
            only = sorted(instance_ids)[:_IN_CHUNK]
            if not only:
                return []
            params.update({f"k{n}": iid for n, iid in enumerate(only)})
            eligible += f" AND b.instance_id IN ({', '.join(f':k{n}' for n in range(len(only)))})"
        # A control-only lease takes the start along, so control events never precede it.
        taken = _ELIGIBLE + (
            f" AND b.gate IN ({Gate.CONTROL.value}, {Gate.START.value})" if control_only else ""
        )

        def lease(db: sqlite3.Connection) -> list[WorkflowLease]:
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
                    "UPDATE instances SET lease_owner=?, lease_token=?, lease_until=? "
                    "WHERE app_id=? AND instance_id=?",
                    (owner, token, _t(until), app_id, iid),
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

        return await self._run(lease)

    @staticmethod
    def _check_lease(db: sqlite3.Connection, lease: WorkflowLease) -> int:
        row = db.execute(
            "SELECT lease_token, history_len FROM instances WHERE app_id=? AND instance_id=?",
            (lease.key.app_id, lease.key.instance_id),
        ).fetchone()
        if row is None or row[0] != lease.token:
            raise LeaseLost(f"lease on {lease.key} is no longer held")
        return int(row[1])

    def _apply(
        self,
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
                (_blob(commit.propagated), *key),
            )
            length = 0
        db.executemany(
            "INSERT INTO history (app_id, instance_id, seq, event) VALUES (?, ?, ?, ?)",
            [(*key, length + n, e.SerializeToString()) for n, e in enumerate(commit.new_history)],
        )
        length += len(commit.new_history)
        db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in commit.consumed])
        if commit.cancel_pending:
            db.execute("DELETE FROM inbox WHERE app_id=? AND instance_id=? AND visible_at>?", (*key, _t(now)))
            db.execute("DELETE FROM activities WHERE parent_app=? AND parent_id=?", key)
        for new in commit.new_instances:
            self._create(db, new, replace_terminal=True)
        self._insert_messages(db, commit.messages)
        leased = self._insert_activities(db, commit, now=now, claim=claim)
        db.execute(
            "UPDATE instances SET status=?, state=?, history_len=?, lease_owner=NULL, lease_token=NULL, "
            "lease_until=NULL WHERE app_id=? AND instance_id=?",
            (commit.state.workflowStatus, commit.state.SerializeToString(), length, *key),
        )
        return leased

    @staticmethod
    def _insert_activities(
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
                _t(now),
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
            cur = db.execute(sql, (*row, claim.owner, token, _t(claim.until)))
            leased.append(ActivityLease(id=int(cur.lastrowid or 0), token=token, task=a))
        return leased

    async def commit_workflow(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        *,
        now: datetime,
        claim: Claim | None = None,
    ) -> list[ActivityLease]:
        def apply(db: sqlite3.Connection) -> list[ActivityLease]:
            return self._apply(db, commit, length=self._check_lease(db, lease), now=now, claim=claim)

        return await self._run(apply)

    async def abandon_workflow(self, lease: WorkflowLease, *, retry_at: datetime | None) -> None:
        def abandon(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE instances SET lease_owner=NULL, lease_token=NULL, lease_until=? "
                "WHERE app_id=? AND instance_id=? AND lease_token=?",
                (
                    None if retry_at is None else _t(retry_at),
                    lease.key.app_id,
                    lease.key.instance_id,
                    lease.token,
                ),
            )

        await self._run(abandon)

    async def lease_activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]:
        def lease(db: sqlite3.Connection) -> list[ActivityLease]:
            rows = db.execute(
                "SELECT id, parent_app, parent_id, request, router FROM activities "
                "WHERE app_id=? AND not_before<=? AND (lease_until IS NULL OR lease_until<?) ORDER BY id LIMIT ?",
                (app_id, _t(now), _t(now), limit),
            ).fetchall()
            out = []
            for row in rows:
                token = uuid.uuid4().hex
                db.execute(
                    "UPDATE activities SET lease_owner=?, lease_token=?, lease_until=? WHERE id=?",
                    (owner, token, _t(until), row[0]),
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

        return await self._run(lease)

    async def complete_activity(self, lease: ActivityLease, result: Message) -> None:
        def complete(db: sqlite3.Connection) -> None:
            cur = db.execute("DELETE FROM activities WHERE id=? AND lease_token=?", (lease.id, lease.token))
            if cur.rowcount == 0:
                raise LeaseLost(f"activity {lease.id} is no longer leased by this server")
            self._insert_message(db, result, only_if_exists=True)

        await self._run(complete)

    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE activities SET lease_owner=NULL, lease_token=NULL, lease_until=NULL, not_before=? "
                "WHERE id=? AND lease_token=?",
                (_t(retry_at), lease.id, lease.token),
            )
        )

    async def renew_leases(self, tokens: Collection[str], *, until: datetime) -> None:
        held = list(tokens)

        def renew(db: sqlite3.Connection) -> None:
            for i in range(0, len(held), _IN_CHUNK):
                chunk = held[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for table in ("instances", "activities"):
                    db.execute(
                        f"UPDATE {table} SET lease_until=? WHERE lease_token IN ({marks})",
                        (_t(until), *chunk),
                    )

        await self._run(renew)

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
        def due(db: sqlite3.Connection) -> float | None:
            t = _t(now)
            candidates = [
                db.execute(
                    "SELECT MIN(visible_at) FROM inbox WHERE app_id=? AND visible_at>?", (app_id, t)
                ).fetchone()[0],
                db.execute(
                    "SELECT MIN(lease_until) FROM instances WHERE app_id=? AND lease_until>?", (app_id, t)
                ).fetchone()[0],
                db.execute(
                    "SELECT MIN(not_before) FROM activities WHERE app_id=? AND not_before>?", (app_id, t)
                ).fetchone()[0],
                db.execute(
                    "SELECT MIN(lease_until) FROM activities WHERE app_id=? AND lease_until>?", (app_id, t)
                ).fetchone()[0],
            ]
            found = [c for c in candidates if c is not None]
            return min(found) if found else None

        value = await self._run(due)
        return None if value is None else _dt(value)
