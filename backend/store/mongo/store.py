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
              `inline` holds messages delivered to the instance together with its
              lease (its start, a result whose claim won: store/mongo/inbox.py), with
              `inline_n` their number; `inbox_n` counts its messages in `inbox`.
              `pending` holds activities leased at the commit that queued them, in
              place of their documents in `activities` (store/mongo/held.py).
* history     one per turn (store/mongo/history.py), holding positions [seq, end)
              as `events`, unique (app_id, instance_id, end); small early turns are
              held in the instance document instead (`hist`, with `hist_stored`
              telling whether any chunk is in the collection).
* meta        the schema version (store/mongo/schema.py).

Turn commits and activity results share transactions (store/mongo/batch.py); an item
alone that writes one document is that one write (store/mongo/lone.py).
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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import datetime

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import (
    InboxItem,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
    is_terminal,
)
from backend.errors import AlreadyExists, InvalidArgument, LeaseLost
from backend.store.base import (
    ActivityLease,
    Change,
    Claim,
    InstanceFilter,
    ListedInstance,
    ListingCursor,
    ListingFilter,
    Store,
    WaitingWork,
    WorkflowLease,
)
from backend.store.mongo import history, queries, schema
from backend.store.mongo.batch import GroupCommit
from backend.store.mongo.codec import (
    DURABILITY,
    Doc,
    T,
    key_filter,
    micros,
    object_id,
    unavailable,
)
from backend.store.mongo.connection import connect, transaction
from backend.store.mongo.feed import follow
from backend.store.mongo.held import Held, is_held
from backend.store.mongo.inbox import ClaimOnDelivery
from backend.store.mongo.leases import Leases
from backend.store.mongo.lone import Lone
from backend.store.mongo.writes import Result, Send, Turn, Writes, activity_docs


def _start_lease(new: NewInstance, claim: Claim | None) -> tuple[str, str, datetime] | None:
    """(owner, token, until) if the claim has a slot for the new instance and its start is due."""
    if claim is None or not claim.takes(new):
        return None
    return claim.owner, uuid.uuid4().hex, claim.until


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
        self._lone: Lone | None = None
        self._held: Held | None = None
        self._leases: Leases | None = None
        self.schema_found: int | None = None  # the schema version open() found (0: new database)

    # -- connection ----------------------------------------------------------------------------

    async def open(self) -> None:
        client, db = await connect(self._url, self._database, write=self._write, read=self._read)
        try:
            with unavailable():
                self.schema_found = await schema.prepare(db)
                await schema.create_indexes(db)
                await queries.create_indexes(db)
                await queries.backfill_names(db)
        except BaseException:
            await client.close()
            raise
        self._client, self._db = client, db
        self._writes = Writes(db, uuid.uuid4().hex[:12])
        self._lone = Lone(client, db, self._writes)
        self._held = Held(db, self._tx, self._writes.own)
        self._group = GroupCommit(db, self._writes, self._tx, self._lone)
        self._leases = Leases(client, db)

    async def close(self) -> None:
        if self._group is not None:
            await self._group.close()
        client, self._client, self._db, self._writes, self._group = self._client, None, None, None, None
        self._leases, self._lone, self._held = None, None, None
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
    def _l(self) -> Leases:
        assert self._leases is not None, "store is not open"
        return self._leases

    @property
    def _h(self) -> Held:
        assert self._held is not None, "store is not open"
        return self._held

    @property
    def _w(self) -> Writes:
        assert self._writes is not None, "store is not open"
        return self._writes

    @property
    def _instances(self) -> AsyncCollection[Doc]:
        return self._d.instances

    @property
    def _activities(self) -> AsyncCollection[Doc]:
        return self._d.activities

    async def _tx(self, fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        assert self._client is not None, "store is not open"
        return await transaction(self._client, self._write, fn)

    # -- client side ---------------------------------------------------------------------------

    async def create_instance(
        self,
        new: NewInstance,
        *,
        replace_terminal: bool,
        seed: WorkflowCommit | None = None,
        claim: Claim | None = None,
    ) -> WorkflowLease | None:
        if seed is None:
            # The common case, a new key: two inserts and the commit. A duplicate key means the
            # instance exists, and the general path below decides (replace or refuse).
            lease = _start_lease(new, claim)
            start = self._w.start(new, None if lease is None else (lease[0], lease[1], micros(lease[2])))
            size = new.state.ByteSize() + (0 if new.start is None else new.start.event.ByteSize())
            try:
                await self._g.submit(start, size)
            except DuplicateKeyError:
                pass
            else:
                if lease is None or new.start is None:
                    return None
                return WorkflowLease(
                    key=new.key,
                    token=lease[1],
                    state=new.state,
                    history_len=0,
                    inbox=[InboxItem(id=i, event=new.start.event) for i in start.items],
                    propagated=new.propagated,
                )

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
        return None

    async def get_state(self, key: InstanceKey) -> opb.WorkflowState | None:
        with unavailable():
            doc = await self._instances.find_one(key_filter(key), projection={"state": 1})
        return None if doc is None else opb.WorkflowState.FromString(doc["state"])

    async def get_history(self, key: InstanceKey, start: int = 0) -> list[hpb.HistoryEvent]:
        with unavailable():
            return await history.read(self._d, key, start)

    # Queries: backend/store/mongo/queries.py.
    async def list_instance_ids(self, app_id: str, *, after: str | None, limit: int) -> list[str]:
        return await queries.list_instance_ids(self._d, app_id, after, limit)

    async def find_instances(self, where: InstanceFilter) -> list[InstanceKey]:
        return await queries.find_instances(self._d, where)

    async def list_instances(
        self, where: ListingFilter, *, after: ListingCursor | None, limit: int
    ) -> list[ListedInstance]:
        return await queries.list_instances(self._d, where, after, limit)

    async def count_instances(self, app_ids: frozenset[str] | None) -> dict[tuple[str, int], int]:
        return await queries.count_instances(self._d, app_ids)

    async def waiting_work(self, app_ids: frozenset[str] | None, *, now: datetime) -> list[WaitingWork]:
        return await queries.waiting_work(self._d, app_ids, micros(now))

    async def send(self, message: Message) -> bool:
        return (await self.deliver(message))[0]

    async def deliver(
        self, message: Message, *, claim: Claim | None = None
    ) -> tuple[bool, WorkflowLease | None]:
        # Shares a transaction with whatever else is being written (store/mongo/batch.py): a
        # burst of raised events costs a few transactions, not one each; alone, a message whose
        # claim takes its free target is one write (store/mongo/lone.py).
        on = None
        if claim is not None and claim.slots.get(message.target.app_id, 0) > 0 and message.visible_at is None:
            on = ClaimOnDelivery(claim.owner, uuid.uuid4().hex, micros(claim.until), micros(claim.now))
        done = await self._g.submit(Send(message, on), message.event.ByteSize())
        return done.delivered, done.lease

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
        instance_ids: Collection[str] | None = None,
    ) -> list[WorkflowLease]:
        return await self._l.workflows(
            app_id,
            owner=owner,
            now=now,
            until=until,
            limit=limit,
            control_only=control_only,
            instance_ids=instance_ids,
        )

    async def commit_workflow(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        *,
        now: datetime,
        claim: Claim | None = None,
    ) -> list[ActivityLease]:
        size = sum(e.ByteSize() for e in commit.new_history) + sum(
            m.event.ByteSize() for m in commit.messages
        )
        docs, leases = activity_docs(commit, self._w.own, claim)
        await self._g.submit(Turn(commit, lease.token, lease.history_len, now, docs), size)
        return leases

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
        with unavailable():
            await self._h.evict(app_id, micros(now))  # lapsed held activities, to be leased here
        return await self._l.activities(app_id, owner=owner, now=now, until=until, limit=limit)

    async def complete_activity(
        self, lease: ActivityLease, result: Message, *, claim: Claim | None = None
    ) -> WorkflowLease | None:
        """Shares a transaction with the other results and turn commits being written
        (store/mongo/batch.py): a fan-out's results for one parent arrive together. The
        claim rides on the inbox position write (store/mongo/inbox.py)."""
        oid = object_id(lease.id)
        if oid is None:
            raise LeaseLost(f"activity {lease.id} is no longer leased by this server")
        on = None
        if claim is not None and claim.slots.get(result.target.app_id, 0) > 0 and result.visible_at is None:
            on = ClaimOnDelivery(claim.owner, uuid.uuid4().hex, micros(claim.until), micros(claim.now))
        done = await self._g.submit(Result(oid, lease.token, result, on), result.event.ByteSize())
        return done.lease

    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None:
        oid = object_id(lease.id)
        if oid is None:
            return
        with unavailable():
            if is_held(lease.token):  # to the collection, due then (store/mongo/held.py)
                await self._h.give_back(lease.task.parent, oid, lease.token, not_before=micros(retry_at))
                return
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
            await self._h.renew(held, until=micros(until))

    def changes(self) -> AsyncIterator[Change] | None:
        return follow(self._d, self._w.own)

    async def retry_stalled(self, app_id: str) -> int:
        return await self._l.retry_stalled(app_id)

    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        return await self._l.next_due(app_id, now=now)
