"""The MongoDB store's queries: the client's instance lookups and, for operators
(backend/admin), the filtered, keyset-paged instance listing, counts by status and the
waiting-work report, with the indexes they need.

Instance documents carry `name` (the workflow name, also inside `state`), written at
creation; documents made before it existed get it from `backfill_names` at start.
The listing sorts by (created_at, app_id, instance_id) descending; each filter has an index
that ends in those fields, so a page is an index range scan with no in-memory sort.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey
from backend.store.base import InstanceFilter, ListedInstance, ListingCursor, ListingFilter, WaitingWork
from backend.store.mongo import held
from backend.store.mongo.codec import Doc, from_micros, gates_for, micros, unavailable, unleased

_A = ASCENDING
# Read backwards for the newest-first order.
INSTANCE_INDEXES = [
    IndexModel([("created_at", _A), ("app_id", _A), ("instance_id", _A)], name="list_all"),
    IndexModel([("app_id", _A), ("created_at", _A), ("instance_id", _A)], name="list_app"),
    IndexModel([("name", _A), ("created_at", _A), ("app_id", _A), ("instance_id", _A)], name="list_name"),
    IndexModel([("status", _A), ("created_at", _A), ("app_id", _A), ("instance_id", _A)], name="list_status"),
]
NEWEST_FIRST = [("created_at", DESCENDING), ("app_id", DESCENDING), ("instance_id", DESCENDING)]
_BACKFILL_BATCH = 500
_LOOKUP_CHUNK = 1000


async def create_indexes(db: AsyncDatabase[Doc]) -> None:
    await db.instances.create_indexes(INSTANCE_INDEXES)


async def backfill_names(db: AsyncDatabase[Doc]) -> int:
    """Give `name` to instance documents written before it existed; idempotent, so servers
    starting together may all run it. The number of documents updated."""
    done = 0
    while True:
        with unavailable():
            batch = [
                d
                async for d in db.instances.find(
                    {"name": {"$exists": False}}, projection={"state": 1}, limit=_BACKFILL_BATCH
                )
            ]
            if not batch:
                return done
            await db.instances.bulk_write(
                [
                    UpdateOne(
                        {"_id": d["_id"], "name": {"$exists": False}},
                        {"$set": {"name": opb.WorkflowState.FromString(d["state"]).name}},
                    )
                    for d in batch
                ],
                ordered=False,
            )
        done += len(batch)


def listing_filter(where: ListingFilter, after: ListingCursor | None) -> Doc:
    """The find() filter of one listing page (exposed for explain() in tests)."""
    query: Doc = {}
    if where.app_ids is not None:
        apps = sorted(where.app_ids)
        query["app_id"] = apps[0] if len(apps) == 1 else {"$in": apps}
    if where.name is not None:
        query["name"] = where.name
    if where.statuses:
        statuses = sorted(int(s) for s in where.statuses)
        query["status"] = statuses[0] if len(statuses) == 1 else {"$in": statuses}
    if created := _between(where.created_from, where.created_to, "$lt"):
        query["created_at"] = created
    if where.id_prefix:
        query["instance_id"] = {"$regex": "^" + re.escape(where.id_prefix)}
    if after is not None:
        c, a, i = int(after.created), after.app_id, after.instance_id
        keyset = {
            "$or": [
                {"created_at": {"$lt": c}},
                {"created_at": c, "app_id": {"$lt": a}},
                {"created_at": c, "app_id": a, "instance_id": {"$lt": i}},
            ]
        }
        query = {"$and": [query, keyset]} if query else keyset
    return query


async def list_instances(
    db: AsyncDatabase[Doc], where: ListingFilter, after: ListingCursor | None, limit: int
) -> list[ListedInstance]:
    if where.app_ids is not None and not where.app_ids:
        return []
    projection = {"app_id": 1, "instance_id": 1, "created_at": 1, "state": 1, "_id": 0}
    with unavailable():
        cursor = db.instances.find(listing_filter(where, after), projection=projection).sort(NEWEST_FIRST)
        docs = await cursor.limit(limit).to_list()
    return [
        ListedInstance(
            key=InstanceKey(str(d["app_id"]), str(d["instance_id"])),
            created_at=from_micros(int(d["created_at"])),
            state=opb.WorkflowState.FromString(d["state"]),
            cursor=ListingCursor(
                created=int(d["created_at"]), app_id=str(d["app_id"]), instance_id=str(d["instance_id"])
            ),
        )
        for d in docs
    ]


def _between(start: datetime | None, end: datetime | None, upto: str) -> Doc:
    """A created_at condition from `start` (inclusive) to `end` (`upto`: $lt or $lte)."""
    out: Doc = {}
    if start is not None:
        out["$gte"] = micros(start)
    if end is not None:
        out[upto] = micros(end)
    return out


def _apps(app_ids: frozenset[str] | None) -> Doc:
    return {} if app_ids is None else {"app_id": {"$in": sorted(app_ids)}}


async def count_instances(
    db: AsyncDatabase[Doc], app_ids: frozenset[str] | None
) -> dict[tuple[str, int], int]:
    if app_ids is not None and not app_ids:
        return {}
    pipeline: list[Doc] = [
        {"$match": _apps(app_ids)},
        {"$group": {"_id": {"a": "$app_id", "s": "$status"}, "n": {"$sum": 1}}},
    ]
    with unavailable():
        cursor = await db.instances.aggregate(pipeline)
        rows = await cursor.to_list()
    return {(str(r["_id"]["a"]), int(r["_id"]["s"])): int(r["n"]) for r in rows}


def _oid_time(oid: object) -> float | None:
    return oid.generation_time.timestamp() if isinstance(oid, ObjectId) else None


async def waiting_work(db: AsyncDatabase[Doc], app_ids: frozenset[str] | None, now: int) -> list[WaitingWork]:
    if app_ids is not None and not app_ids:
        return []
    found: dict[str, tuple[int, float | None]] = {}

    def add(app: str, n: int, since: float | None) -> None:
        count, oldest = found.get(app, (0, None))
        if since is not None and (oldest is None or since < oldest):
            oldest = since
        found[app] = (count + n, oldest)

    with unavailable():
        # Activities carry no enqueue time on MongoDB: their ObjectId's (to the second) stands in.
        # Due inbox messages per instance and gate; whether the instance may take them (its
        # status, its lease) is checked against the instance documents below.
        cursor = await db.inbox.aggregate(
            [
                {"$match": {**_apps(app_ids), "visible_at": {"$lte": now}}},
                {
                    "$group": {
                        "_id": {"a": "$app_id", "i": "$instance_id", "g": "$gate"},
                        "n": {"$sum": 1},
                        "first": {"$min": "$_id"},
                        "due": {"$min": {"$cond": [{"$gt": ["$visible_at", 0]}, "$visible_at", None]}},
                    }
                },
            ]
        )
        groups = await cursor.to_list()
        states: dict[tuple[str, str], Doc] = {}
        keys = sorted({(g["_id"]["a"], g["_id"]["i"]) for g in groups})
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            async for d in db.instances.find(
                {"$or": [{"app_id": a, "instance_id": i} for a, i in chunk]},
                projection={"app_id": 1, "instance_id": 1, "status": 1, "lease_until": 1, "_id": 0},
            ):
                states[(d["app_id"], d["instance_id"])] = d
        first_by_app: dict[str, ObjectId] = {}
        for g in groups:
            app, iid, gate = g["_id"]["a"], g["_id"]["i"], int(g["_id"]["g"])
            inst = states.get((app, iid))
            if inst is None or (inst.get("lease_until") is not None and int(inst["lease_until"]) >= now):
                continue
            gates = gates_for(int(inst["status"]), False)
            if gates is not None and gate not in gates:
                continue
            due = g.get("due")
            add(app, int(g["n"]), None if due is None else from_micros(int(due)).timestamp())
            if app not in first_by_app or g["first"] < first_by_app[app]:
                first_by_app[app] = g["first"]
        for app, oid in first_by_app.items():
            # Waiting since its event was made (as on SQLite) or, if later, since it came due.
            doc = await db.inbox.find_one({"_id": oid}, projection={"visible_at": 1, "event": 1})
            if doc is not None:
                event = hpb.HistoryEvent.FromString(doc["event"])
                made = (
                    event.timestamp.ToDatetime(tzinfo=UTC).timestamp() if event.HasField("timestamp") else 0.0
                )
                due = from_micros(int(doc["visible_at"])).timestamp() if doc["visible_at"] else 0.0
                add(app, 0, max(made, due) or None)
        # Messages left inline by a lapsed lease (store/mongo/inbox.py): few, read whole.
        async for d in db.instances.find(
            {**_apps(app_ids), "inline_n": {"$gt": 0}, **unleased(now)},
            projection={"app_id": 1, "status": 1, "inline": 1, "_id": 0},
        ):
            gates = gates_for(int(d["status"]), False)
            for m in d.get("inline") or ():
                if int(m["visible_at"]) <= now and (gates is None or int(m["gate"]) in gates):
                    event = hpb.HistoryEvent.FromString(m["event"])
                    stamped = event.timestamp.ToDatetime(tzinfo=UTC) if event.HasField("timestamp") else None
                    add(str(d["app_id"]), 1, None if stamped is None else stamped.timestamp())
        for app, since in await held.lapsed(db, app_ids, now):  # their lease round moves them
            add(app, 1, since)
        cursor = await db.activities.aggregate(
            [
                {"$match": {**_apps(app_ids), "not_before": {"$lte": now}, **unleased(now)}},
                {"$group": {"_id": "$app_id", "n": {"$sum": 1}, "first": {"$min": "$_id"}}},
            ]
        )
        for r in await cursor.to_list():
            add(str(r["_id"]), int(r["n"]), _oid_time(r["first"]))
    return [
        WaitingWork(
            app_id=app, items=n, oldest=None if oldest is None else datetime.fromtimestamp(oldest, UTC)
        )
        for app, (n, oldest) in sorted(found.items())
    ]


async def list_instance_ids(db: AsyncDatabase[Doc], app_id: str, after: str | None, limit: int) -> list[str]:
    if limit == 0:
        return []
    with unavailable():
        cursor = (
            db.instances.find(
                {"app_id": app_id, "instance_id": {"$gt": after or ""}},
                projection={"instance_id": 1, "_id": 0},
            )
            .sort("instance_id", ASCENDING)
            .limit(max(limit, 0))
        )
        return [str(d["instance_id"]) async for d in cursor]


async def find_instances(db: AsyncDatabase[Doc], where: InstanceFilter) -> list[InstanceKey]:
    query: Doc = {"app_id": where.app_id}
    if created := _between(where.created_from, where.created_to, "$lte"):  # both ends included
        query["created_at"] = created
    if where.statuses:
        query["status"] = {"$in": sorted(int(s) for s in where.statuses)}
    with unavailable():
        cursor = db.instances.find(query, projection={"instance_id": 1, "_id": 0}).sort(
            "instance_id", ASCENDING
        )
        return [InstanceKey(where.app_id, str(d["instance_id"])) async for d in cursor]
