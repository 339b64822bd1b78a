"""The shared store: MongoDB (>= 6.0, replica set or sharded cluster) through pymongo's async API.

Many servers may share one database, so nothing here relies on being the only
writer: every rule of store/base.py is enforced by the database itself.

Durability: writes use w="majority" with journaling, reads "majority" from the
primary; a transaction reads one snapshot and commits with w="majority". Only
that combination loses nothing acknowledged across a failover. The one way
out is explicit: `durability=local` in the store URL (w=1 with journaling,
local reads), for users who accept losing acknowledged work when a primary
fails over.

Collections (one document per item; nothing grows without bound):

* instances   one per instance, unique (app_id, instance_id): status (the gate
              column), created_at, state (WorkflowState bytes), history_len, the
              lease (lease_owner, lease_token, lease_until), `generation` (+1 on
              every claim and commit) and `inbox_seq`, the next inbox position
              (`inbox_front` counts down from 0 for messages sent ahead of the queue),
              and `propagated`, the history its parent shared with it (or null).
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

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, DuplicateKeyError, ExecutionTimeout, PyMongoError
from pymongo.read_preferences import ReadPreference

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain.model import (
    ActivityTask,
    InboxItem,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
    is_terminal,
)
from backend.errors import AlreadyExists, InvalidArgument, LeaseLost, Unavailable
from backend.store.base import ActivityLease, Change, InstanceFilter, Store, WorkflowLease
from backend.store.mongo.codec import (
    CONTROL,
    DEFAULT_DATABASE,
    DUPLICATE_RETRIES,
    DURABILITY,
    SNAPSHOT,
    STALLED,
    START,
    WAITING,
    Doc,
    T,
    from_micros,
    gates_for,
    key_filter,
    micros,
    object_id,
    unavailable,
    unleased,
)
from backend.store.mongo.feed import follow
from backend.store.mongo.writes import Writes

CLAIM_MAX_MS = 1000  # how long a lease claim may wait on a locked instance document


class MongoStore(Store):
    def __init__(self, url: str, *, database: str | None = None, durability: str = "majority") -> None:
        if durability not in DURABILITY:
            raise InvalidArgument(f"store URL: durability must be one of {', '.join(DURABILITY)}")
        self._url = url
        self._database = database
        self._write, self._read = DURABILITY[durability]
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._writes: Writes | None = None
        # Activity results being written, per parent instance (see complete_activity).
        self._completing: dict[InstanceKey, list[tuple[ActivityLease, Message, asyncio.Future[None]]]] = {}

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
                w=self._write.document["w"],
                journal=True,
                readConcernLevel=self._read.level,
                readPreference="primary",
                uuidRepresentation="standard",
                appname="durabletask-sidecar",
            )
        except (ConfigurationError, ValueError, TypeError) as e:
            raise InvalidArgument(f"store URL: {e}") from e
        try:
            name = self._database or client.get_default_database(DEFAULT_DATABASE).name
            db = client.get_database(
                name,
                write_concern=self._write,
                read_concern=self._read,
                read_preference=ReadPreference.PRIMARY,
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
            with unavailable():
                await self._create_indexes(db)
        except BaseException:
            await client.close()
            raise
        self._client, self._db, self._writes = client, db, Writes(db)

    @staticmethod
    async def _create_indexes(db: AsyncDatabase[Doc]) -> None:
        a = ASCENDING
        await db.instances.create_indexes(
            [
                IndexModel([("app_id", a), ("instance_id", a)], unique=True, name="key"),
                IndexModel([("app_id", a), ("created_at", a)], name="created"),
                IndexModel([("app_id", a), ("status", a)], name="status"),
                IndexModel([("app_id", a), ("lease_until", a)], name="lease_until"),
                IndexModel([("lease_token", a)], name="lease_token"),
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
                IndexModel([("lease_token", a)], name="lease_token"),
            ]
        )

    async def close(self) -> None:
        client, self._client, self._db, self._writes = self._client, None, None, None
        if client is not None:
            await client.close()

    @property
    def _d(self) -> AsyncDatabase[Doc]:
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def _w(self) -> Writes:
        assert self._writes is not None, "store is not open"
        return self._writes

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
        for attempt in range(DUPLICATE_RETRIES):
            with unavailable():
                async with self._client.start_session() as session:
                    try:
                        return await session.with_transaction(
                            fn,
                            read_concern=SNAPSHOT,
                            write_concern=self._write,
                            read_preference=ReadPreference.PRIMARY,
                        )
                    except DuplicateKeyError:
                        if attempt + 1 == DUPLICATE_RETRIES:
                            raise
        raise AssertionError("unreachable")

    # -- client side ---------------------------------------------------------------------------

    async def create_instance(
        self, new: NewInstance, *, replace_terminal: bool, seed: WorkflowCommit | None = None
    ) -> None:
        async def create(s: AsyncClientSession) -> bool:
            if not await self._w.create(s, new, replace_terminal=replace_terminal):
                return False
            if seed is not None:
                await self._w.apply(s, seed, fence=None, now=new.created_at)
            return True

        if not await self._tx(create):
            raise AlreadyExists(
                f"orchestration instance already exists: '{new.key.instance_id}' on app '{new.key.app_id}'"
            )

    async def get_state(self, key: InstanceKey) -> opb.WorkflowState | None:
        with unavailable():
            doc = await self._instances.find_one(key_filter(key), projection={"state": 1})
        return None if doc is None else opb.WorkflowState.FromString(doc["state"])

    async def get_history(self, key: InstanceKey, start: int = 0) -> list[hpb.HistoryEvent]:
        with unavailable():
            cursor = self._history.find(
                {**key_filter(key), "seq": {"$gte": start}}, projection={"event": 1, "_id": 0}
            ).sort("seq", ASCENDING)
            return [hpb.HistoryEvent.FromString(d["event"]) async for d in cursor]

    async def list_instance_ids(self, app_id: str, *, after: str | None, limit: int) -> list[str]:
        if limit == 0:
            return []
        with unavailable():
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
            created["$gte"] = micros(where.created_from)
        if where.created_to is not None:
            created["$lte"] = micros(where.created_to)
        if created:
            query["created_at"] = created
        if where.statuses:
            query["status"] = {"$in": sorted(int(s) for s in where.statuses)}
        with unavailable():
            cursor = self._instances.find(query, projection={"instance_id": 1, "_id": 0}).sort(
                "instance_id", ASCENDING
            )
            return [InstanceKey(where.app_id, str(d["instance_id"])) async for d in cursor]

    async def send(self, message: Message) -> bool:
        async def send(s: AsyncClientSession) -> bool:
            return await self._w.insert_messages(s, [message]) > 0

        return await self._tx(send)

    async def purge(self, key: InstanceKey, *, only_terminal: bool) -> bool:
        async def purge(s: AsyncClientSession) -> bool:
            doc = await self._instances.find_one(key_filter(key), projection={"status": 1}, session=s)
            if doc is None or (only_terminal and not is_terminal(int(doc["status"]))):
                return False
            await self._w.delete_instance(s, key)
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
        t, until_t = micros(now), micros(until)
        visible: Doc = {"app_id": app_id, "visible_at": {"$lte": t}}
        if control_only:
            visible["gate"] = CONTROL
        pipeline: list[Mapping[str, Any]] = [
            {"$match": visible},
            {"$group": {"_id": "$instance_id", "gates": {"$addToSet": "$gate"}}},
            {
                "$lookup": {
                    "from": self._instances.name,
                    "localField": "_id",
                    "foreignField": "instance_id",
                    "pipeline": [
                        {"$match": {"app_id": app_id, **unleased(t)}},
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
                        {"gates": CONTROL},
                        {"gates": START, "i.status": {"$ne": STALLED}},
                        {"i.status": {"$nin": WAITING}},
                    ]
                }
            },
        ]
        if limit > 0:
            # Some candidates may go to a competing owner between the query and the claim.
            pipeline.append({"$limit": 2 * limit})
        leases: list[WorkflowLease] = []
        assert self._client is not None, "store is not open"
        with unavailable():
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
        try:
            doc = await self._instances.find_one_and_update(
                {**key_filter(key), **unleased(now)},
                {
                    "$set": {"lease_owner": owner, "lease_token": token, "lease_until": until},
                    "$inc": {"generation": 1},
                },
                projection={"_id": 0, "status": 1, "state": 1, "history_len": 1, "propagated": 1},
                return_document=ReturnDocument.AFTER,
                session=s,
                # A transaction left open by a killed server locks the document until
                # mongod aborts it (60 s by default): skip it instead of stalling the
                # whole round of this app behind it.
                maxTimeMS=CLAIM_MAX_MS,
            )
        except ExecutionTimeout:
            return None
        if doc is None:
            return None  # another owner won it
        query: Doc = {**key_filter(key), "visible_at": {"$lte": now}}
        gates = gates_for(int(doc["status"]), control_only)
        if gates is not None:
            query["gate"] = {"$in": gates}
        cursor = self._inbox.find(query, projection={"event": 1}, session=s).sort("seq", ASCENDING)
        inbox = [
            InboxItem(id=str(d["_id"]), event=hpb.HistoryEvent.FromString(d["event"])) async for d in cursor
        ]
        if not inbox:
            # Another owner's turn took the messages between our query and the claim.
            await self._instances.update_one(
                {**key_filter(key), "lease_token": token},
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
            propagated=hpb.PropagatedHistory.FromString(doc["propagated"]) if doc.get("propagated") else None,
        )

    async def commit_workflow(self, lease: WorkflowLease, commit: WorkflowCommit, *, now: datetime) -> None:
        async def apply(s: AsyncClientSession) -> None:
            await self._w.apply(s, commit, fence=lease.token, now=now)

        await self._tx(apply)

    async def abandon_workflow(self, lease: WorkflowLease, *, retry_at: datetime | None) -> None:
        with unavailable():
            await self._instances.update_one(
                {**key_filter(lease.key), "lease_token": lease.token},
                {
                    "$set": {
                        "lease_owner": None,
                        "lease_token": None,
                        "lease_until": None if retry_at is None else micros(retry_at),
                    }
                },
            )

    async def lease_activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]:
        if limit == 0:
            return []
        t, until_t = micros(now), micros(until)
        due: Doc = {"app_id": app_id, "not_before": {"$lte": t}, **unleased(t)}
        out: list[ActivityLease] = []
        with unavailable():
            cursor = self._activities.find(due, projection={"_id": 1}).sort("_id", ASCENDING)
            if limit > 0:
                cursor = cursor.limit(2 * limit)
            candidates = [d["_id"] async for d in cursor]
            for oid in candidates:
                if 0 < limit <= len(out):
                    break
                token = uuid.uuid4().hex
                try:
                    doc = await self._activities.find_one_and_update(
                        {**due, "_id": oid},
                        {"$set": {"lease_owner": owner, "lease_token": token, "lease_until": until_t}},
                        return_document=ReturnDocument.AFTER,
                        # As for workflow claims: skip a row an orphaned transaction locks.
                        maxTimeMS=CLAIM_MAX_MS,
                    )
                except ExecutionTimeout:
                    continue
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
        """Results for one parent are written in batches: a fan-out's results arrive
        together, and one transaction each would contend on the parent's inbox
        counter (write conflicts, retried with back-off). Results that arrive while a
        batch for the same parent commits join the next one."""
        parent = result.target
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._completing.get(parent)
        if waiting is not None:
            waiting.append((lease, result, done))
            return await done
        self._completing[parent] = []
        batch = [(lease, result, done)]
        try:
            while batch:
                await self._complete_batch(batch)
                batch, self._completing[parent] = self._completing[parent], []
        finally:
            for _, _, left in self._completing.pop(parent, []):
                if not left.done():  # we were cancelled mid-batch: they run again
                    left.set_exception(Unavailable("the activity result was not written"))
        return await done

    async def _complete_batch(self, batch: list[tuple[ActivityLease, Message, asyncio.Future[None]]]) -> None:
        ids = [oid for oid in (object_id(lease.id) for lease, _, _ in batch) if oid is not None]

        async def complete(s: AsyncClientSession) -> set[str]:
            # Ours: still queued and still under our lease token (fenced by the delete).
            rows = self._activities.find({"_id": {"$in": ids}}, projection={"lease_token": 1}, session=s)
            tokens = {str(d["_id"]): d.get("lease_token") async for d in rows}
            held = {str(lease.id) for lease, _, _ in batch if tokens.get(str(lease.id)) == lease.token}
            if held:
                await self._activities.delete_many({"_id": {"$in": [object_id(i) for i in held]}}, session=s)
                await self._w.insert_messages(s, [m for lease, m, _ in batch if str(lease.id) in held])
            return held

        try:
            held = await self._tx(complete)
        except Exception as err:
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(err)
            return
        for lease, _, done in batch:
            if done.done():
                continue
            if str(lease.id) in held:
                done.set_result(None)
            else:
                done.set_exception(LeaseLost(f"activity {lease.id} is no longer leased by this server"))

    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None:
        oid = object_id(lease.id)
        if oid is None:
            return
        with unavailable():
            await self._activities.update_one(
                {"_id": oid, "lease_token": lease.token},
                {
                    "$set": {
                        "lease_owner": None,
                        "lease_token": None,
                        "lease_until": None,
                        "not_before": micros(retry_at),
                    }
                },
            )

    async def renew_leases(self, tokens: Collection[str], *, until: datetime) -> None:
        held = list(tokens)
        if not held:
            return
        update = {"$set": {"lease_until": micros(until)}}
        with unavailable():
            await self._instances.update_many({"lease_token": {"$in": held}}, update)
            await self._activities.update_many({"lease_token": {"$in": held}}, update)

    def changes(self) -> AsyncIterator[Change] | None:
        return follow(self._d)

    async def retry_stalled(self, app_id: str) -> int:
        # Only the gating field changes; the client-visible state stays STALLED
        # until the retried turn commits (RUNNING) or stalls again.
        with unavailable():
            result = await self._instances.update_many(
                {"app_id": app_id, "status": STALLED},
                {"$set": {"status": int(opb.ORCHESTRATION_STATUS_RUNNING)}},
            )
        return result.modified_count

    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        t = micros(now)
        found: list[int] = []
        with unavailable():
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
        return from_micros(min(found)) if found else None
