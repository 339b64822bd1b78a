"""The MongoDB store's schema version, recorded in the database (`meta`, document
{_id: "schema", version: N}), and the upgrades from older layouts, run at open.

Versions:
1  (no `meta` document) history stored one document per event: {seq, event}.
2  history stored per turn: {seq, end, events: [...]} holds positions [seq, end).
3  messages (`inline`, `inline_n`; store/mongo/inbox.py) and small early turns' history
   (`hist`; store/mongo/history.py) may be held in the instance document; `inbox_n` counts an
   instance's messages in the inbox collection, `hist_stored` says it has history there.
   Upgrading marks every existing instance's count unknown and its history stored (its reads
   go to the collections, as before).
4  activities leased at their turn's commit may be held in their parent's document
   (`pending`, store/mongo/held.py) instead of the activities collection. Nothing to upgrade
   (older instances hold none), but servers of version 3 would never find a held activity
   whose lease lapsed, so they must be stopped first.

An upgrade is idempotent, so servers starting together may all run it; servers of an
older version must be stopped first (they do not know the new layout). A database
written by a newer version is refused: its layout is unknown here.
"""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from backend.errors import InvalidArgument
from backend.store.mongo.codec import UNKNOWN_COUNT, Doc
from backend.store.mongo.held import HOLDING

VERSION = 4
SCHEMA_ID = "schema"
_MISSING = (26, 27)  # NamespaceNotFound, IndexNotFound


async def recorded_version(db: AsyncDatabase[Doc]) -> int | None:
    """The version in `meta`; None for a database that has none (new, or version 1)."""
    doc = await db.meta.find_one({"_id": SCHEMA_ID})
    return None if doc is None else int(doc["version"])


async def prepare(db: AsyncDatabase[Doc]) -> int:
    """Bring the database to VERSION (or refuse it); the version found (0: a new database)."""
    found = await recorded_version(db)
    if found is not None and found > VERSION:
        raise InvalidArgument(
            f"the MongoDB database '{db.name}' has store schema version {found}; this server "
            f"knows versions up to {VERSION}: run a server of that version (or newer) on it"
        )
    if found is None:
        # New, or written by version 1: the upgrade is a no-op on an empty database.
        found = 1 if await db.instances.find_one({}, projection={"_id": 1}) is not None else 0
        await _v1_to_v2(db)
    if found < 3:
        await _v2_to_v3(db)
    if found < VERSION:
        # $max: a server of a newer version that raced us never sees its version lowered.
        await db.meta.update_one({"_id": SCHEMA_ID}, {"$max": {"version": VERSION}}, upsert=True)
    return found


async def _v1_to_v2(db: AsyncDatabase[Doc]) -> None:
    """Per-event history documents become one-event chunks, in place, in one command."""
    await db.history.update_many(
        {"event": {"$exists": True}},
        [{"$set": {"events": ["$event"], "end": {"$add": ["$seq", 1]}}}, {"$unset": "event"}],
    )
    # Version 1 looked history up by (key, seq); version 2 by (key, end).
    try:
        await db.history.drop_index("key_seq")
    except OperationFailure as e:
        if e.code not in _MISSING:
            raise


async def _v2_to_v3(db: AsyncDatabase[Doc]) -> None:
    """Instances written before version 3 have an unknown number of stored messages and all
    their history stored."""
    await db.instances.update_many(
        {"inbox_n": {"$exists": False}},
        {"$set": {"inbox_n": UNKNOWN_COUNT, "inline": [], "inline_n": 0, "hist": [], "hist_stored": True}},
    )


HISTORY_INDEXES = [
    IndexModel(
        [("app_id", ASCENDING), ("instance_id", ASCENDING), ("end", ASCENDING)], unique=True, name="key_end"
    )
]


async def create_indexes(db: AsyncDatabase[Doc]) -> None:
    """The indexes of the current layout (create_indexes is a no-op for existing ones)."""
    a = ASCENDING
    await db.instances.create_indexes(
        [
            IndexModel([("app_id", a), ("instance_id", a)], unique=True, name="key"),
            IndexModel([("app_id", a), ("created_at", a)], name="created"),
            IndexModel([("app_id", a), ("status", a)], name="status"),
            IndexModel([("app_id", a), ("lease_until", a)], name="lease_until"),
            IndexModel([("lease_token", a)], name="lease_token"),
            # The general round's search for messages left inline (store/mongo/leases.py).
            IndexModel(
                [("app_id", a), ("inline_n", a)],
                name="inline",
                partialFilterExpression={"inline_n": {"$gt": 0}},
            ),
            # Activities held in their parent (store/mongo/held.py): found lapsed, and renewed;
            # only instances that hold some are indexed (held.HOLDING is in every such query).
            IndexModel([("pending.lease_until", a)], name="held_until", partialFilterExpression=HOLDING),
            IndexModel([("pending.lease_token", a)], name="held_token", partialFilterExpression=HOLDING),
        ]
    )
    await db.history.create_indexes(HISTORY_INDEXES)
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
