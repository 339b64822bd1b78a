"""The MongoDB change feed: which app has new work and which instance changed,
as written by any *other* server sharing the database (needs a replica set).

Every write of ours carries `by` (this store's id; on instance updates with a
per-write suffix, so that the field always changes and shows up in the update
description): the engine already hands its own writes over in process, so
replaying them from the feed would only cost a state read per commit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from backend.store.base import Change
from backend.store.mongo.codec import from_micros

INBOX, ACTIVITIES, INSTANCES = "inbox", "activities", "instances"


def pipeline(own: str) -> list[Mapping[str, Any]]:
    """The changes worth waking for, written by anyone but `own` (filtered in mongod: our own
    writes, most of the traffic, never cross the wire)."""
    mine = {"$regex": f"^{re.escape(own)}(\\.|$)"}
    return [
        {
            "$match": {
                "$or": [
                    {
                        "operationType": "insert",
                        "ns.coll": {"$in": [INBOX, ACTIVITIES]},
                        "fullDocument.by": {"$not": mine},
                    },
                    {
                        "operationType": {"$in": ["insert", "replace"]},
                        "ns.coll": INSTANCES,
                        "fullDocument.by": {"$not": mine},
                    },
                    # Only changes a client can see (state) or that gate work (status): claims,
                    # lease renewals and inbox positions update the instance far more often.
                    {
                        "operationType": "update",
                        "ns.coll": INSTANCES,
                        "updateDescription.updatedFields.by": {"$not": mine},
                        "$or": [
                            {"updateDescription.updatedFields.state": {"$exists": True}},
                            {"updateDescription.updatedFields.status": {"$exists": True}},
                        ],
                    },
                ]
            }
        },
        # Only the keys travel: events and state blobs stay in the database.
        {
            "$project": {
                "ns.coll": 1,
                "fullDocument.app_id": 1,
                "fullDocument.instance_id": 1,
                "fullDocument.by": 1,
                "fullDocument.visible_at": 1,
                "updateDescription.updatedFields.by": 1,
            }
        },
    ]


def writer_of(change: Mapping[str, Any]) -> str:
    """The store id that made this change ("" when unknown)."""
    updated = (change.get("updateDescription") or {}).get("updatedFields")
    tag = updated.get("by") if updated is not None else (change.get("fullDocument") or {}).get("by")
    return tag.split(".", 1)[0] if isinstance(tag, str) else ""


async def follow(db: AsyncDatabase[Any], own: str) -> AsyncIterator[Change]:
    async with await db.watch(pipeline(own), full_document="updateLookup") as stream:
        async for change in stream:
            if writer_of(change) == own:
                continue  # our own write: the engine already knows
            doc = change.get("fullDocument") or {}
            app_id = doc.get("app_id")
            if not isinstance(app_id, str):
                continue  # updated and deleted before the lookup: nothing to wake
            coll = change["ns"]["coll"]
            if coll == INSTANCES:
                yield Change(app_id=app_id, instance_id=str(doc.get("instance_id", "")))
            elif coll == INBOX and isinstance(doc.get("instance_id"), str):
                due = doc.get("visible_at")
                yield Change(
                    app_id=app_id,
                    instance_id=doc["instance_id"],
                    message=True,
                    visible_at=from_micros(due) if isinstance(due, int) and due > 0 else None,
                )
            else:
                yield Change(app_id=app_id)
