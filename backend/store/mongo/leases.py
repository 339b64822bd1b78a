"""Leasing on the MongoDB store: which work is due, and claiming it.

A general lease searches the app's inbox (one aggregate over the inbox with the instances
joined) or its activities; a named lease claims the instances the engine knows it just sent
messages to, by key. Either way the claims are one bulk write (one findAndModify for a single
one), and the claimed instances' inboxes are read in one query.

Candidate searches read locally: they must reflect the latest claims, and the claim itself
decides on the latest data. A claim is majority-written in a causal session, so the inbox and
history reads after it (majority) see at least everything the claimed document reflects; never
w:1: a w:1 claim can see a commit that is not majority-committed yet (the previous owner's,
still being acknowledged), and the majority reads that follow would then miss that commit and
replay its turn (tests/e2e/cluster caught exactly that).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import pymongo
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ExecutionTimeout, PyMongoError
from pymongo.read_concern import ReadConcern

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain.model import ActivityTask, InboxItem, InstanceKey
from backend.store.base import ActivityLease, WorkflowLease
from backend.store.mongo.codec import (
    CONTROL,
    STALLED,
    START,
    UNKNOWN_COUNT,
    WAITING,
    Doc,
    from_micros,
    gates_for,
    inline_id,
    key_filter,
    micros,
    unavailable,
    unleased,
)

CLAIM_MAX_MS = 1000  # how long a lease claim may wait on a locked instance document
LOCAL = ReadConcern("local")
# A claimed instance document, without the history and the activities it holds.
NO_HISTORY = {"hist": 0, "pending": 0}


class Leases:
    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]) -> None:
        self._client = client
        self._db = db

    async def workflows(
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
        if limit == 0:
            return []
        t, until_t = micros(now), micros(until)
        if instance_ids is not None:
            return await self._named(
                app_id,
                sorted(instance_ids)[: limit if limit > 0 else None],
                owner=owner,
                now=t,
                until=until_t,
                control_only=control_only,
            )
        visible: Doc = {"app_id": app_id, "visible_at": {"$lte": t}}
        if control_only:
            visible["gate"] = CONTROL
        pipeline: list[Mapping[str, Any]] = [
            {"$match": visible},
            {"$group": {"_id": "$instance_id", "gates": {"$addToSet": "$gate"}}},
            {
                "$lookup": {
                    "from": self._db.instances.name,
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
        with unavailable():
            async with self._client.start_session(causal_consistency=True) as s:
                inbox = self._db.inbox.with_options(read_concern=LOCAL)
                candidates = [str(d["_id"]) async for d in await inbox.aggregate(pipeline, session=s)]
                for iid in await self._inline_candidates(s, app_id, t, limit, control_only):
                    if iid not in candidates:
                        candidates.append(iid)
                if limit > 0:
                    candidates = candidates[:limit]
                return await self._claim_instances(
                    s, app_id, candidates, owner=owner, now=t, until=until_t, control_only=control_only
                )

    async def _inline_candidates(
        self, s: AsyncClientSession, app_id: str, now: int, limit: int, control_only: bool
    ) -> list[str]:
        """Unleased instances holding eligible messages inline: left by a lease that lapsed
        or was abandoned before its turn committed (store/mongo/inbox.py); a partial index
        keeps this to the few instances that hold any."""
        cursor = self._db.instances.with_options(read_concern=LOCAL).find(
            {"app_id": app_id, "inline_n": {"$gt": 0}, **unleased(now)},
            projection={"_id": 0, "instance_id": 1, "status": 1, "inline.gate": 1, "inline.visible_at": 1},
            session=s,
        )
        if limit > 0:
            cursor = cursor.limit(2 * limit)
        found: list[str] = []
        async for d in cursor:
            gates = gates_for(int(d["status"]), control_only)
            if any(
                int(m["visible_at"]) <= now and (gates is None or int(m["gate"]) in gates)
                for m in d.get("inline") or ()
            ):
                found.append(str(d["instance_id"]))
        return found

    async def _named(
        self, app_id: str, ids: list[str], *, owner: str, now: int, until: int, control_only: bool
    ) -> list[WorkflowLease]:
        """Claim these instances (if unleased) and read their inboxes: no search of the app's
        inbox. A claim finding no eligible message is released."""
        if not ids:
            return []
        with unavailable():
            async with self._client.start_session(causal_consistency=True) as s:
                return await self._claim_instances(
                    s, app_id, ids, owner=owner, now=now, until=until, control_only=control_only
                )

    async def _claim_instances(
        self,
        s: AsyncClientSession,
        app_id: str,
        ids: list[str],
        *,
        owner: str,
        now: int,
        until: int,
        control_only: bool,
    ) -> list[WorkflowLease]:
        claims = {uuid.uuid4().hex: {**key_filter(InstanceKey(app_id, iid)), **unleased(now)} for iid in ids}
        docs = await self._claim_many(
            s, self._db.instances, claims, owner=owner, until=until, generation=True
        )
        claimed = [(str(d["instance_id"]), str(d["lease_token"]), d) for d in docs]
        if not claimed:
            return []
        return await read_inboxes(self._db, s, app_id, claimed, now=now, control_only=control_only)

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
        write, then read the ones won (another owner may have taken some) in one query.

        Claims are majority writes, never w:1: a w:1 claim can see a commit that is not
        majority-committed yet (the previous owner's, still being acknowledged), and the
        majority reads of inbox and history that follow would then miss that commit and
        replay its turn."""
        if not claims:
            return []
        lease = {"lease_owner": owner, "lease_until": until}
        bump = {"$inc": {"generation": 1}} if generation else {}

        async def claim_one(token: str, f: Doc) -> Doc | None:
            """One claim and its document in one round trip; None if lost or locked (a
            transaction left open holds it: a later round tries again)."""
            try:
                doc: Doc | None = await collection.find_one_and_update(
                    f,
                    {"$set": {**lease, "lease_token": token}, **bump},
                    return_document=ReturnDocument.AFTER,
                    projection=NO_HISTORY,
                    session=s,
                    maxTimeMS=CLAIM_MAX_MS,
                )
            except ExecutionTimeout:
                return None
            return doc

        if len(claims) == 1:
            ((token, f),) = claims.items()
            doc = await claim_one(token, f)
            return [] if doc is None else [doc]
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
        won = [
            d
            async for d in collection.find(
                {"lease_token": {"$in": list(claims)}}, projection=NO_HISTORY, session=s
            )
        ]
        if locked:  # the rest one by one, each skipping a locked document on its own
            taken = {str(d["lease_token"]) for d in won}
            for token, f in claims.items():
                if token not in taken and (doc := await claim_one(token, f)) is not None:
                    won.append(doc)
        # The find returns documents in storage order; callers hand work out in claim order
        # (oldest first), so put the won ones back in the order they were asked for.
        order = {token: n for n, token in enumerate(claims)}
        won.sort(key=lambda d: order[str(d["lease_token"])])
        return won

    async def activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]:
        if limit == 0:
            return []
        t, until_t = micros(now), micros(until)
        due: Doc = {"app_id": app_id, "not_before": {"$lte": t}, **unleased(t)}
        out: list[ActivityLease] = []
        with unavailable():
            activities = self._db.activities.with_options(read_concern=LOCAL)  # as in workflows()
            cursor = activities.find(due, projection={"_id": 1}).sort("_id", ASCENDING)
            if limit > 0:
                cursor = cursor.limit(2 * limit)
            candidates = [d["_id"] async for d in cursor]
            if limit > 0:
                candidates = candidates[:limit]
            async with self._client.start_session(causal_consistency=True) as s:
                claims = {uuid.uuid4().hex: {**due, "_id": oid} for oid in candidates}
                docs = await self._claim_many(
                    s, self._db.activities, claims, owner=owner, until=until_t, generation=False
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

    async def retry_stalled(self, app_id: str) -> int:
        # Only the gating field changes; the client-visible state stays STALLED
        # until the retried turn commits (RUNNING) or stalls again.
        with unavailable():
            result = await self._db.instances.update_many(
                {"app_id": app_id, "status": STALLED},
                {"$set": {"status": int(opb.ORCHESTRATION_STATUS_RUNNING)}},
            )
        return result.modified_count

    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        """When the app's next delayed work comes due: a timer, or a lease that expires."""
        t = micros(now)
        found: list[int] = []
        with unavailable():
            for collection, field in (
                (self._db.inbox, "visible_at"),
                (self._db.instances, "lease_until"),
                (self._db.activities, "not_before"),
                (self._db.activities, "lease_until"),
            ):
                doc = await collection.find_one(
                    {"app_id": app_id, field: {"$gt": t}},
                    projection={"_id": 0, field: 1},
                    sort=[(field, ASCENDING)],
                )
                if doc is not None:
                    found.append(int(doc[field]))
        return from_micros(min(found)) if found else None


async def read_inboxes(
    db: AsyncDatabase[Doc],
    s: AsyncClientSession | None,
    app_id: str,
    claimed: list[tuple[str, str, Doc]],
    *,
    now: int,
    control_only: bool,
) -> list[WorkflowLease]:
    """Leases for the claimed (instance ID, token, instance document) of one app: their eligible
    messages, those held inline and those of the inbox collection (read in one query, after
    the claims: nobody else takes them now; none when `inbox_n` says there are none), in
    position order; claims left with none are released."""
    stored = [iid for iid, _, doc in claimed if doc.get("inbox_n", UNKNOWN_COUNT) != 0]
    rows: dict[str, list[tuple[str, Doc]]] = {}
    if stored:
        cursor = db.inbox.find(
            {"app_id": app_id, "instance_id": {"$in": stored}, "visible_at": {"$lte": now}},
            projection={"instance_id": 1, "seq": 1, "gate": 1, "event": 1},
            session=s,
        ).sort([("instance_id", ASCENDING), ("seq", ASCENDING)])
        async for d in cursor:
            rows.setdefault(str(d["instance_id"]), []).append((str(d["_id"]), d))
    leases: list[WorkflowLease] = []
    empty: list[str] = []
    for iid, token, doc in claimed:
        gates = gates_for(int(doc["status"]), control_only)
        held = [(inline_id(d["_id"]), d) for d in doc.get("inline") or () if int(d["visible_at"]) <= now]
        found = rows.get(iid, [])
        if held:
            found = sorted([*found, *held], key=lambda pair: int(pair[1]["seq"]))
        inbox = [
            InboxItem(id=item_id, event=hpb.HistoryEvent.FromString(d["event"]))
            for item_id, d in found
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
        await db.instances.update_many(
            {"lease_token": {"$in": empty}},
            {"$set": {"lease_owner": None, "lease_token": None, "lease_until": None}},
            session=s,
        )
    return leases
