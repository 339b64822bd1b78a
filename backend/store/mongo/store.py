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
* history     one per turn (store/mongo/writes.py: history_docs), holding positions
              [seq, end) as `events`, unique (app_id, instance_id, end).
* meta        the schema version (store/mongo/schema.py).

Turn commits and activity results share transactions (store/mongo/batch.py).
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

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import pymongo
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument, UpdateOne
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
from backend.store.base import (
    ActivityLease,
    Change,
    InstanceFilter,
    ListedInstance,
    ListingCursor,
    ListingFilter,
    Store,
    WaitingWork,
    WorkflowLease,
)
from backend.store.mongo import queries, schema
from backend.store.mongo.batch import GroupCommit
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
from backend.store.mongo.writes import Result, Turn, Writes

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
        self._group: GroupCommit | None = None
        self.schema_found: int | None = None  # the schema version open() found (0: new database)

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
                self.schema_found = await schema.prepare(db)
                await self._create_indexes(db)
                await queries.create_indexes(db)
                await queries.backfill_names(db)
        except BaseException:
            await client.close()
            raise
        self._client, self._db = client, db
        self._writes = Writes(db, uuid.uuid4().hex[:12])
        self._group = GroupCommit(db, self._writes, self._tx)

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
        await db.history.create_indexes(schema.HISTORY_INDEXES)
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
        if self._group is not None:
            await self._group.close()
        client, self._client, self._db, self._writes, self._group = self._client, None, None, None, None
        if client is not None:
            await client.close()

    @property
    def _d(self) -> AsyncDatabase[Doc]:
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def _g(self) -> GroupCommit:
        assert self._group is not None, "store is not open"
        return self._group

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
                await self._w.apply(s, [Turn(seed, None, 0, new.created_at)], [])
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
            # The chunks holding positions >= start; the first may begin before it.
            cursor = self._history.find(
                {**key_filter(key), "end": {"$gt": start}}, projection={"_id": 0, "seq": 1, "events": 1}
            ).sort("end", ASCENDING)
            events: list[hpb.HistoryEvent] = []
            async for d in cursor:
                skip = max(0, start - int(d["seq"]))
                events.extend(hpb.HistoryEvent.FromString(e) for e in d["events"][skip:])
            return events

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

    # Operator queries: backend/store/mongo/queries.py.
    async def list_instances(
        self, where: ListingFilter, *, after: ListingCursor | None, limit: int
    ) -> list[ListedInstance]:
        return await queries.list_instances(self._d, where, after, limit)

    async def count_instances(self, app_ids: frozenset[str] | None) -> dict[tuple[str, int], int]:
        return await queries.count_instances(self._d, app_ids)

    async def waiting_work(self, app_ids: frozenset[str] | None, *, now: datetime) -> list[WaitingWork]:
        return await queries.waiting_work(self._d, app_ids, micros(now))

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
        assert self._client is not None, "store is not open"
        with unavailable():
            async with self._client.start_session(causal_consistency=True) as s:
                candidates = [str(d["_id"]) async for d in await self._inbox.aggregate(pipeline, session=s)]
                if limit > 0:
                    candidates = candidates[:limit]
                claims = {
                    uuid.uuid4().hex: {**key_filter(InstanceKey(app_id, iid)), **unleased(t)}
                    for iid in candidates
                }
                docs = await self._claim_many(
                    s, self._instances, claims, owner=owner, until=until_t, generation=True
                )
                claimed = [(str(d["instance_id"]), str(d["lease_token"]), d) for d in docs]
                if claimed:
                    return await self._with_inboxes(s, app_id, claimed, now=t, control_only=control_only)
        return []

    async def _claim_many(
        self,
        s: AsyncClientSession,
        collection: AsyncCollection[Doc],
        claims: dict[str, Doc],
        *,
        owner: str,
        until: int,
        generation: bool,
    ) -> list[Doc]:
        """Lease every document matching one of `claims` (token -> filter) in one bulk
        write, then read the ones won (another owner may have taken some) in one query."""
        if not claims:
            return []
        lease = {"lease_owner": owner, "lease_until": until}
        bump = {"$inc": {"generation": 1}} if generation else {}
        ops = [UpdateOne(f, {"$set": {**lease, "lease_token": token}, **bump}) for token, f in claims.items()]
        locked = False
        try:
            # A transaction left open by a killed server locks its documents until mongod
            # aborts it (60 s by default): give up on the bulk claim instead of stalling
            # the whole round of this app behind it.
            with pymongo.timeout(CLAIM_MAX_MS / 1000):
                await collection.bulk_write(ops, ordered=False, session=s)
        except PyMongoError as e:
            if not e.timeout:
                raise
            locked = True
        won = [d async for d in collection.find({"lease_token": {"$in": list(claims)}}, session=s)]
        if locked:  # the rest one by one, each skipping a locked document on its own
            taken = {str(d["lease_token"]) for d in won}
            for token, f in claims.items():
                if token not in taken:
                    try:
                        doc = await collection.find_one_and_update(
                            f,
                            {"$set": {**lease, "lease_token": token}, **bump},
                            return_document=ReturnDocument.AFTER,
                            session=s,
                            maxTimeMS=CLAIM_MAX_MS,
                        )
                    except ExecutionTimeout:
                        continue
                    if doc is not None:
                        won.append(doc)
        # The find returns documents in storage order; callers hand work out in claim order
        # (oldest first), so put the won ones back in the order they were asked for.
        order = {token: n for n, token in enumerate(claims)}
        won.sort(key=lambda d: order[str(d["lease_token"])])
        return won

    async def _with_inboxes(
        self,
        s: AsyncClientSession,
        app_id: str,
        claimed: list[tuple[str, str, Doc]],
        *,
        now: int,
        control_only: bool,
    ) -> list[WorkflowLease]:
        """The claimed instances' eligible messages, read in one query (after the claims:
        nobody else takes them now); claims left with none are released."""
        cursor = self._inbox.find(
            {
                "app_id": app_id,
                "instance_id": {"$in": [iid for iid, _, _ in claimed]},
                "visible_at": {"$lte": now},
            },
            projection={"instance_id": 1, "gate": 1, "event": 1},
            session=s,
        ).sort([("instance_id", ASCENDING), ("seq", ASCENDING)])
        rows: dict[str, list[Doc]] = {}
        async for d in cursor:
            rows.setdefault(str(d["instance_id"]), []).append(d)
        leases: list[WorkflowLease] = []
        empty: list[str] = []
        for iid, token, doc in claimed:
            gates = gates_for(int(doc["status"]), control_only)
            inbox = [
                InboxItem(id=str(d["_id"]), event=hpb.HistoryEvent.FromString(d["event"]))
                for d in rows.get(iid, [])
                if gates is None or int(d["gate"]) in gates
            ]
            if not inbox:
                empty.append(token)  # another owner's turn took the messages before our claim
                continue
            leases.append(
                WorkflowLease(
                    key=InstanceKey(app_id, iid),
                    token=token,
                    state=opb.WorkflowState.FromString(doc["state"]),
                    history_len=int(doc["history_len"]),
                    inbox=inbox,
                    propagated=hpb.PropagatedHistory.FromString(doc["propagated"])
                    if doc.get("propagated")
                    else None,
                )
            )
        if empty:
            await self._instances.update_many(
                {"lease_token": {"$in": empty}},
                {"$set": {"lease_owner": None, "lease_token": None, "lease_until": None}},
                session=s,
            )
        return leases

    async def commit_workflow(self, lease: WorkflowLease, commit: WorkflowCommit, *, now: datetime) -> None:
        size = sum(e.ByteSize() for e in commit.new_history) + sum(
            m.event.ByteSize() for m in commit.messages
        )
        await self._g.submit(Turn(commit, lease.token, lease.history_len, now), size)

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
            if limit > 0:
                candidates = candidates[:limit]
            assert self._client is not None, "store is not open"
            async with self._client.start_session(causal_consistency=True) as s:
                claims = {uuid.uuid4().hex: {**due, "_id": oid} for oid in candidates}
                docs = await self._claim_many(
                    s, self._activities, claims, owner=owner, until=until_t, generation=False
                )
            for doc in docs:
                out.append(
                    ActivityLease(
                        id=str(doc["_id"]),
                        token=str(doc["lease_token"]),
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
        """Shares a transaction with the other results and turn commits being written
        (store/mongo/batch.py): a fan-out's results for one parent arrive together."""
        oid = object_id(lease.id)
        if oid is None:
            raise LeaseLost(f"activity {lease.id} is no longer leased by this server")
        await self._g.submit(Result(oid, lease.token, result), result.event.ByteSize())

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
        return follow(self._d, self._w.own)

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
