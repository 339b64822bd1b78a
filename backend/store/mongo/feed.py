"""The MongoDB change feed: which app has new work and which instance changed,
as written by any server sharing the database (needs a replica set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from backend.store.base import Change

INBOX, ACTIVITIES, INSTANCES = "inbox", "activities", "instances"

_PIPELINE: list[Mapping[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert", "ns.coll": {"$in": [INBOX, ACTIVITIES]}},
                {"operationType": {"$in": ["insert", "replace"]}, "ns.coll": INSTANCES},
                # Only changes a client can see (state) or that gate work (status): claims,
                # lease renewals and inbox positions update the instance far more often.
                {
                    "operationType": "update",
                    "ns.coll": INSTANCES,
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
        }
    },
]


async def follow(db: AsyncDatabase[Any]) -> AsyncIterator[Change]:
    async with await db.watch(_PIPELINE, full_document="updateLookup") as stream:
        async for change in stream:
            doc = change.get("fullDocument") or {}
            app_id = doc.get("app_id")
            if not isinstance(app_id, str):
                continue  # updated and deleted before the lookup: nothing to wake
            if change["ns"]["coll"] == INSTANCES:
                yield Change(app_id=app_id, instance_id=str(doc.get("instance_id", "")))
            else:
                yield Change(app_id=app_id)
