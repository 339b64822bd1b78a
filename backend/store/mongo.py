"""The shared store: MongoDB (>= 6.0, replica set or sharded cluster) through pymongo's async API.

Many servers may share one database, so nothing here relies on being the only
writer: every rule of store/base.py is enforced by the database itself.

Durability: writes use w="majority" with journaling, reads "majority" from the
primary; a transaction reads one snapshot and commits with w="majority". Only
that combination loses nothing acknowledged, so there is no weaker mode.

Collections (one document per item; nothing grows without bound):

* instances   one per instance, unique (app_id, instance_id): status (the gate
              column), created_at, state (WorkflowState bytes), history_len, the
              lease (lease_owner, lease_token, lease_until), `generation` (+1 on
              every claim and commit) and `inbox_seq`, the next inbox position.
* history     one per event, unique (app_id, instance_id, seq).
* inbox       one per message: gate, visible_at, event bytes and `seq`, taken from
              the instance's inbox_seq, so an inbox keeps its insertion order
              across processes. Its ObjectId (as a string) is the InboxItem id.
* activities  one per queued activity, leased one by one, in ObjectId order.

Every message insert increments its target's inbox_seq in the same transaction:
that write is the existence check, and it conflicts with a concurrent purge or
replace, so no message is ever left behind for an instance that is gone.

Times are stored as integer microseconds since the Unix epoch: exact for every
Python datetime up to 9999-12-31 (BSON dates would round to milliseconds and
let a timer fire up to a millisecond early, or compare equal when it is not).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, ConnectionFailure, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

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
from backend.errors import AlreadyExists, InvalidArgument, LeaseLost, Unavailable
from backend.store.base import ActivityLease, Change, InstanceFilter, Store, WorkflowLease
from backend.store.mongo_feed import follow

T = TypeVar("T")
Doc = dict[str, Any]

DEFAULT_DATABASE = "durabletask"

_STALLED = int(opb.ORCHESTRATION_STATUS_STALLED)
_WAITING = [
    int(opb.ORCHESTRATION_STATUS_PENDING),
    int(opb.ORCHESTRATION_STATUS_SUSPENDED),
    _STALLED,
]
_CONTROL, _START = int(Gate.CONTROL), int(Gate.START)

_WRITE = WriteConcern(w="majority", j=True)
_READ = ReadConcern("majority")
_SNAPSHOT = ReadConcern("snapshot")
# A duplicate key inside a transaction means a concurrent insert committed after
# our snapshot: run the transaction again (it then sees the row) a few times.
_DUPLICATE_RETRIES = 3

# -- times ---------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# SDKs wait "forever" with timers at 9999-12-31.
_LATEST = datetime.max.replace(tzinfo=UTC)


def _t(moment: datetime | None) -> int:
    """Microseconds since the epoch; None is 0, as in the SQLite store."""
    if moment is None:
        return 0
    if moment.tzinfo is None:  # naive means local time, as datetime.timestamp() has it
        moment = moment.astimezone(UTC)
    return (moment - _EPOCH) // _MICRO


_LATEST_T = _t(_LATEST)


def _dt(value: int) -> datetime:
    return _LATEST if value >= _LATEST_T else _EPOCH + value * _MICRO


def _free(now: int) -> Doc:
    """Filter: not leased at `now` (no lease, or it expired)."""
    return {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}


def _gates(status: int, control_only: bool) -> list[int] | None:
    """The gates whose messages an instance with `status` may take (None: all)."""
    if control_only or status == _STALLED:
        return [_CONTROL]
    if status in _WAITING:
        return [_START, _CONTROL]
    return None


def _oid(value: int | str) -> ObjectId | None:
    try:
        return ObjectId(value) if isinstance(value, str) else None
    except InvalidId:
        return None


def _key(key: InstanceKey) -> Doc:
    return {"app_id": key.app_id, "instance_id": key.instance_id}


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except ConnectionFailure as e:  # includes server selection timeouts
        raise Unavailable(f"MongoDB is unreachable: {e}") from e


class MongoStore(Store):
    def __init__(self, url: str, *, database: str | None = None) -> None:
        self._url = url
        self._database = database
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None

    # -- connection ----------------------------------------------------------------------------

    async def open(self) -> None:
        # Fail fast while the database is unreachable (callers get UNAVAILABLE and the
        # engine retries) instead of pymongo's 30 s default; a URL setting wins.
        timeouts: dict[str, Any] = (
            {} if "serverselectiontimeoutms" in self._url.lower() else {"serverSelectionTimeoutMS": 5000}
        )
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                self._url,
                **timeouts,
                w="majority",
                journal=True,
                readConcernLevel="majority",
                readPreference="primary",
                uuidRepresentation="standard",
                appname="durabletask-sidecar",
            )
        except (ConfigurationError, ValueError, TypeError) as e:
            raise InvalidArgument(f"store URL: {e}") from e
        try:
            name = self._database or client.get_default_database(DEFAULT_DATABASE).name
            db = client.get_database(
                name, write_concern=_WRITE, read_concern=_READ, read_preference=ReadPreference.PRIMARY
            )
            try:
                hello = await client.admin.command("hello")
            except PyMongoError as e:
                raise Unavailable(f"cannot reach MongoDB: {e}") from e
            if not hello.get("setName") and hello.get("msg") != "isdbgrid":
                raise InvalidArgument(
                    "the MongoDB store needs a replica set (or a sharded cluster): this server is "
                    "standalone; start mongod with --replSet and run rs.initiate() (a single-node "
                    "replica set is fine)"
                )
            with _unavailable():
                await self._create_indexes(db)
        except BaseException:
            await client.close()
            raise
        self._client, self._db = client, db

    @staticmethod
    async def _create_indexes(db: AsyncDatabase[Doc]) -> None:
        a = ASCENDING
        await db.instances.create_indexes(
            [
                IndexModel([("app_id", a), ("instance_id", a)], unique=True, name="key"),
                IndexModel([("app_id", a), ("created_at", a)], name="created"),
                IndexModel([("app_id", a), ("status", a)], name="status"),
                IndexModel([("app_id", a), ("lease_until", a)], name="lease_until"),
                IndexModel([("lease_owner", a)], name="lease_owner"),
            ]
        )
        await db.history.create_indexes(
            [IndexModel([("app_id", a), ("instance_id", a), ("seq", a)], unique=True, name="key_seq")]
        )
        await db.inbox.create_indexes(
            [
                IndexModel([("app_id", a), ("instance_id", a), ("seq", a)], unique=True, name="key_seq"),
                IndexModel([("app_id", a), ("visible_at", a)], name="due"),
            ]
        )
        await db.activities.create_indexes(
            [
                IndexModel([("app_id", a), ("not_before", a)], name="due"),
                IndexModel([("app_id", a), ("lease_until", a)], name="lease_until"),
                IndexModel([("parent_app", a), ("parent_id", a)], name="parent"),
                IndexModel([("lease_owner", a)], name="lease_owner"),
            ]
        )

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()

    @property
    def _d(self) -> AsyncDatabase[Doc]:
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def _instances(self) -> AsyncCollection[Doc]:
        return self._d.instances

    @property
    def _history(self) -> AsyncCollection[Doc]:
        return self._d.history

    @property
    def _inbox(self) -> AsyncCollection[Doc]:
        return self._d.inbox

    @property
    def _activities(self) -> AsyncCollection[Doc]:
        return self._d.activities

    async def _tx(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run `fn` in one transaction; transient errors and unknown commit results are
        retried by with_transaction, a duplicate key by running it again."""
        assert self._client is not None, "store is not open"
        for attempt in range(_DUPLICATE_RETRIES):
            with _unavailable():
                async with self._client.start_session() as session:
                    try:
                        return await session.with_transaction(
                            fn,
                            read_concern=_SNAPSHOT,
                            write_concern=_WRITE,
                            read_preference=ReadPreference.PRIMARY,
                        )
                    except DuplicateKeyError:
                        if attempt + 1 == _DUPLICATE_RETRIES:
                            raise
        raise AssertionError("unreachable")

    # -- helpers (inside a transaction) ---------------------------------------------------------

    async def _insert_messages(
        self, s: AsyncClientSession, messages: list[Message], *, only_if_exists: bool = True
    ) -> int:
        """Queue messages for instances that exist (in order); the number stored."""
        by_target: dict[InstanceKey, list[Message]] = {}
        for m in messages:
            by_target.setdefault(m.target, []).append(m)
        docs: list[Doc] = []
        for target, batch in by_target.items():
            # Allocating the positions is the existence check, and a write to the
            # instance: a concurrent purge or replace conflicts with it.
            before = await self._instances.find_one_and_update(
                _key(target),
                {"$inc": {"inbox_seq": len(batch)}},
                projection={"inbox_seq": 1, "_id": 0},
                return_document=ReturnDocument.BEFORE,
                session=s,
            )
            if before is None:
                if only_if_exists:
                    continue
                raise AssertionError(f"{target} was just created but is missing")
            first = int(before.get("inbox_seq", 0))
            docs.extend(
                {
                    "_id": ObjectId(),
                    "app_id": target.app_id,
                    "instance_id": target.instance_id,
                    "seq": first + n,
                    "gate": int(m.gate),
                    "visible_at": _t(m.visible_at),
                    "event": m.event.SerializeToString(),
                }
                for n, m in enumerate(batch)
            )
        if docs:
            await self._inbox.insert_many(docs, ordered=True, session=s)
        return len(docs)

    async def _delete_instance(self, s: AsyncClientSession, key: InstanceKey) -> None:
        k = _key(key)
        await self._instances.delete_one(k, session=s)
        await self._history.delete_many(k, session=s)
        await self._inbox.delete_many(k, session=s)
        await self._activities.delete_many(
            {"parent_app": key.app_id, "parent_id": key.instance_id}, session=s
        )

    async def _create(self, s: AsyncClientSession, new: NewInstance, *, replace_terminal: bool) -> bool:
        existing = await self._instances.find_one(
            _key(new.key), projection={"status": 1, "generation": 1}, session=s
        )
        generation = 0
        if existing is not None:
            if not (replace_terminal and is_terminal(int(existing["status"]))):
                return False
            await self._delete_instance(s, new.key)
            generation = int(existing.get("generation", 0)) + 1
        await self._instances.insert_one(
            {
                **_key(new.key),
                "status": int(new.state.workflowStatus),
                "created_at": _t(new.created_at),
                "state": new.state.SerializeToString(),
                "history_len": 0,
                "lease_owner": None,
                "lease_token": None,
                "lease_until": None,
                "generation": generation,
                "inbox_seq": 0,
            },
            session=s,
        )
        if new.start is not None:
            await self._insert_messages(s, [new.start], only_if_exists=False)
        return True

    async def _apply(
        self, s: AsyncClientSession, commit: WorkflowCommit, *, length: int, now: datetime
    ) -> None:
        """Write a commit set; the caller has checked the lease (or just created the instance)."""
        key = commit.key
        k = _key(key)
        if commit.reset_history:
            await self._history.delete_many(k, session=s)
            length = 0
        if commit.new_history:
            await self._history.insert_many(
                [
                    {**k, "seq": length + n, "event": e.SerializeToString()}
                    for n, e in enumerate(commit.new_history)
                ],
                ordered=True,
                session=s,
            )
        length += len(commit.new_history)
        consumed = [oid for oid in (_oid(i) for i in commit.consumed) if oid is not None]
        if consumed:
            await self._inbox.delete_many({"_id": {"$in": consumed}}, session=s)
        if commit.cancel_pending:
            await self._inbox.delete_many({**k, "visible_at": {"$gt": _t(now)}}, session=s)
            await self._activities.delete_many(
                {"parent_app": key.app_id, "parent_id": key.instance_id}, session=s
            )
        for new in commit.new_instances:
            await self._create(s, new, replace_terminal=True)
        await self._insert_messages(s, commit.messages)
        if commit.activities:
            await self._activities.insert_many(
                [
                    {
                        "_id": ObjectId(),
                        "app_id": a.app_id,
                        "parent_app": a.parent.app_id,
                        "parent_id": a.parent.instance_id,
                        "request": a.request.SerializeToString(),
                        "router": a.router.SerializeToString(),
                        "not_before": 0,
                        "lease_owner": None,
                        "lease_token": None,
                        "lease_until": None,
                    }
                    for a in commit.activities
                ],
                ordered=True,
                session=s,
            )
        await self._instances.update_one(
            k,
            {
                "$set": {
                    "status": int(commit.state.workflowStatus),
                    "state": commit.state.SerializeToString(),
                    "history_len": length,
                    "lease_owner": None,
                    "lease_token": None,
                    "lease_until": None,
                }
            },
            session=s,
        )

    # -- client side ---------------------------------------------------------------------------

    async def create_instance(
        self, new: NewInstance, *, replace_terminal: bool, seed: WorkflowCommit | None = None
    ) -> None:
        async def create(s: AsyncClientSession) -> bool:
            if not await self._create(s, new, replace_terminal=replace_terminal):
                return False
            if seed is not None:
                await self._apply(s, seed, length=0, now=new.created_at)
            return True

        if not await self._tx(create):
            raise AlreadyExists(
                f"orchestration instance already exists: '{new.key.instance_id}' on app '{new.key.app_id}'"
            )

    async def get_state(self, key: InstanceKey) -> opb.WorkflowState | None:
        with _unavailable():
            doc = await self._instances.find_one(_key(key), projection={"state": 1})
        return None if doc is None else opb.WorkflowState.FromString(doc["state"])

    async def get_history(self, key: InstanceKey, start: int = 0) -> list[hpb.HistoryEvent]:
        with _unavailable():
            cursor = self._history.find(
                {**_key(key), "seq": {"$gte": start}}, projection={"event": 1, "_id": 0}
            ).sort("seq", ASCENDING)
            return [hpb.HistoryEvent.FromString(d["event"]) async for d in cursor]

    async def list_instance_ids(self, app_id: str, *, after: str | None, limit: int) -> list[str]:
        if limit == 0:
            return []
        with _unavailable():
            cursor = (
                self._instances.find(
                    {"app_id": app_id, "instance_id": {"$gt": after or ""}},
                    projection={"instance_id": 1, "_id": 0},
                )
                .sort("instance_id", ASCENDING)
                .limit(max(limit, 0))
            )
            return [str(d["instance_id"]) async for d in cursor]

    async def find_instances(self, where: InstanceFilter) -> list[InstanceKey]:
        query: Doc = {"app_id": where.app_id}
        created: Doc = {}
        if where.created_from is not None:
            created["$gte"] = _t(where.created_from)
        if where.created_to is not None:
            created["$lte"] = _t(where.created_to)
        if created:
            query["created_at"] = created
        if where.statuses:
            query["status"] = {"$in": sorted(int(s) for s in where.statuses)}
        with _unavailable():
            cursor = self._instances.find(query, projection={"instance_id": 1, "_id": 0}).sort(
                "instance_id", ASCENDING
            )
            return [InstanceKey(where.app_id, str(d["instance_id"])) async for d in cursor]

    async def send(self, message: Message) -> bool:
        async def send(s: AsyncClientSession) -> bool:
            return await self._insert_messages(s, [message]) > 0

        return await self._tx(send)

    async def purge(self, key: InstanceKey, *, only_terminal: bool) -> bool:
        async def purge(s: AsyncClientSession) -> bool:
            doc = await self._instances.find_one(_key(key), projection={"status": 1}, session=s)
            if doc is None or (only_terminal and not is_terminal(int(doc["status"]))):
                return False
            await self._delete_instance(s, key)
            return True

        return await self._tx(purge)

    # -- worker side ---------------------------------------------------------------------------

    async def lease_workflows(
        self,
        app_id: str,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        control_only: bool = False,
    ) -> list[WorkflowLease]:
        if limit == 0:
            return []
        t, until_t = _t(now), _t(until)
        visible: Doc = {"app_id": app_id, "visible_at": {"$lte": t}}
        if control_only:
            visible["gate"] = _CONTROL
        pipeline: list[Mapping[str, Any]] = [
            {"$match": visible},
            {"$group": {"_id": "$instance_id", "gates": {"$addToSet": "$gate"}}},
            {
                "$lookup": {
                    "from": self._instances.name,
                    "localField": "_id",
                    "foreignField": "instance_id",
                    "pipeline": [
                        {"$match": {"app_id": app_id, **_free(t)}},
                        {"$project": {"_id": 0, "status": 1}},
                    ],
                    "as": "i",
                }
            },
            {"$unwind": "$i"},
            # Eligibility (store/base.py): CONTROL always; START unless STALLED;
            # anything once the instance is not waiting.
            {
                "$match": {
                    "$or": [
                        {"gates": _CONTROL},
                        {"gates": _START, "i.status": {"$ne": _STALLED}},
                        {"i.status": {"$nin": _WAITING}},
                    ]
                }
            },
        ]
        if limit > 0:
            # Some candidates may go to a competing owner between the query and the claim.
            pipeline.append({"$limit": 2 * limit})
        leases: list[WorkflowLease] = []
        assert self._client is not None, "store is not open"
        with _unavailable():
            async with self._client.start_session(causal_consistency=True) as s:
                candidates = [str(d["_id"]) async for d in await self._inbox.aggregate(pipeline, session=s)]
                for iid in candidates:
                    if 0 < limit <= len(leases):
                        break
                    lease = await self._claim(
                        s,
                        InstanceKey(app_id, iid),
                        owner=owner,
                        now=t,
                        until=until_t,
                        control_only=control_only,
                    )
                    if lease is not None:
                        leases.append(lease)
        return leases

    async def _claim(
        self, s: AsyncClientSession, key: InstanceKey, *, owner: str, now: int, until: int, control_only: bool
    ) -> WorkflowLease | None:
        token = uuid.uuid4().hex
        doc = await self._instances.find_one_and_update(
            {**_key(key), **_free(now)},
            {
                "$set": {"lease_owner": owner, "lease_token": token, "lease_until": until},
                "$inc": {"generation": 1},
            },
            projection={"_id": 0, "status": 1, "state": 1, "history_len": 1},
            return_document=ReturnDocument.AFTER,
            session=s,
        )
        if doc is None:
            return None  # another owner won it
        query: Doc = {**_key(key), "visible_at": {"$lte": now}}
        gates = _gates(int(doc["status"]), control_only)
        if gates is not None:
            query["gate"] = {"$in": gates}
        cursor = self._inbox.find(query, projection={"event": 1}, session=s).sort("seq", ASCENDING)
        inbox = [
            InboxItem(id=str(d["_id"]), event=hpb.HistoryEvent.FromString(d["event"])) async for d in cursor
        ]
        if not inbox:
            # Another owner's turn took the messages between our query and the claim.
            await self._instances.update_one(
                {**_key(key), "lease_token": token},
                {"$set": {"lease_owner": None, "lease_token": None, "lease_until": None}},
                session=s,
            )
            return None
        return WorkflowLease(
            key=key,
            token=token,
            state=opb.WorkflowState.FromString(doc["state"]),
            history_len=int(doc["history_len"]),
            inbox=inbox,
        )

    async def commit_workflow(self, lease: WorkflowLease, commit: WorkflowCommit, *, now: datetime) -> None:
        async def apply(s: AsyncClientSession) -> None:
            # The fence, and the first write: a competing claim conflicts from here on.
            doc = await self._instances.find_one_and_update(
                {**_key(lease.key), "lease_token": lease.token},
                {"$inc": {"generation": 1}},
                projection={"_id": 0, "history_len": 1},
                session=s,
            )
            if doc is None:
                raise LeaseLost(f"lease on {lease.key} is no longer held")
            await self._apply(s, commit, length=int(doc["history_len"]), now=now)

        await self._tx(apply)

    async def abandon_workflow(self, lease: WorkflowLease, *, retry_at: datetime | None) -> None:
        with _unavailable():
            await self._instances.update_one(
                {**_key(lease.key), "lease_token": lease.token},
                {
                    "$set": {
                        "lease_owner": None,
                        "lease_token": None,
                        "lease_until": None if retry_at is None else _t(retry_at),
                    }
                },
            )

    async def lease_activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]:
        if limit == 0:
            return []
        t, until_t = _t(now), _t(until)
        due: Doc = {"app_id": app_id, "not_before": {"$lte": t}, **_free(t)}
        out: list[ActivityLease] = []
        with _unavailable():
            cursor = self._activities.find(due, projection={"_id": 1}).sort("_id", ASCENDING)
            if limit > 0:
                cursor = cursor.limit(2 * limit)
            candidates = [d["_id"] async for d in cursor]
            for oid in candidates:
                if 0 < limit <= len(out):
                    break
                token = uuid.uuid4().hex
                doc = await self._activities.find_one_and_update(
                    {**due, "_id": oid},
                    {"$set": {"lease_owner": owner, "lease_token": token, "lease_until": until_t}},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    continue  # another owner won it
                out.append(
                    ActivityLease(
                        id=str(oid),
                        token=token,
                        task=ActivityTask(
                            app_id=app_id,
                            parent=InstanceKey(doc["parent_app"], doc["parent_id"]),
                            request=spb.ActivityRequest.FromString(doc["request"]),
                            router=opb.TaskRouter.FromString(doc["router"]),
                        ),
                    )
                )
        return out

    async def complete_activity(self, lease: ActivityLease, result: Message) -> None:
        oid = _oid(lease.id)

        async def complete(s: AsyncClientSession) -> None:
            deleted = 0
            if oid is not None:
                done = await self._activities.delete_one({"_id": oid, "lease_token": lease.token}, session=s)
                deleted = done.deleted_count
            if not deleted:
                raise LeaseLost(f"activity {lease.id} is no longer leased by this server")
            await self._insert_messages(s, [result])

        await self._tx(complete)

    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None:
        oid = _oid(lease.id)
        if oid is None:
            return
        with _unavailable():
            await self._activities.update_one(
                {"_id": oid, "lease_token": lease.token},
                {
                    "$set": {
                        "lease_owner": None,
                        "lease_token": None,
                        "lease_until": None,
                        "not_before": _t(retry_at),
                    }
                },
            )

    async def renew_leases(self, owner: str, *, until: datetime) -> None:
        update = {"$set": {"lease_until": _t(until)}}
        with _unavailable():
            await self._instances.update_many({"lease_owner": owner}, update)
            await self._activities.update_many({"lease_owner": owner}, update)

    def changes(self) -> AsyncIterator[Change] | None:
        return follow(self._d)

    async def retry_stalled(self, app_id: str) -> int:
        # Only the gating field changes; the client-visible state stays STALLED
        # until the retried turn commits (RUNNING) or stalls again.
        with _unavailable():
            result = await self._instances.update_many(
                {"app_id": app_id, "status": _STALLED},
                {"$set": {"status": int(opb.ORCHESTRATION_STATUS_RUNNING)}},
            )
        return result.modified_count

    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        t = _t(now)
        found: list[int] = []
        with _unavailable():
            for collection, field in (
                (self._inbox, "visible_at"),
                (self._instances, "lease_until"),
                (self._activities, "not_before"),
                (self._activities, "lease_until"),
            ):
                doc = await collection.find_one(
                    {"app_id": app_id, field: {"$gt": t}},
                    projection={"_id": 0, field: 1},
                    sort=[(field, ASCENDING)],
                )
                if doc is not None:
                    found.append(int(doc[field]))
        return _dt(min(found)) if found else None
