"""Activities held in their parent's instance document (`pending`) rather than the
activities collection.

A turn's activities leased at its commit to the committing server (store.base.Claim) are
written into the parent's `pending`, in the same instance update, when they are few and
small: the turn is then one write (store/mongo/lone.py), and so is the result, which takes
its entry out with the same findAndModify that delivers it. Nobody else looks for held
activities while their lease lasts; their tokens start with PENDING_PREFIX, so that the
result, the renewal and the give-back know where the activity is.

The entry is the fence: a result is taken only if the entry with its token is still there.
A lapsed lease (its server died or stalled) is found by the app's lease rounds, which move
the activity to the collection unleased (`evict`), in a transaction that conflicts with a
late result; a given-back lease moves it there too (`give_back`), with its retry time. From
the collection it is leased, renewed and completed like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from backend.domain.model import InstanceKey
from backend.store.mongo.codec import PENDING_PREFIX, Doc, key_filter

MAX_HELD = 16  # activities a commit may hold in its instance document
HELD_BYTES = 64 * 1024  # and their requests' bytes (the document also holds state, history)
EVICT_EVERY_MICROS = 1_000_000  # between one app's searches for lapsed held activities
EVICT_BATCH = 100  # instances moved per search

# Matches the instances that hold any activity: the held indexes are partial on it, so that
# the many instances holding none cost nothing there; every query on them includes it.
HOLDING: Doc = {"pending.0": {"$exists": True}}

Tx = Callable[[Callable[[AsyncClientSession], Awaitable[Any]]], Awaitable[Any]]


def is_held(token: str) -> bool:
    return token.startswith(PENDING_PREFIX)


def fits(leased: list[Doc]) -> bool:
    """Whether a commit's activities leased at the commit may all be held by their parent."""
    return len(leased) <= MAX_HELD and sum(len(d["request"]) + len(d["router"]) for d in leased) <= HELD_BYTES


def entry(doc: Doc) -> Doc:
    """An activity document as held in its parent's `pending`."""
    return {
        k: doc[k] for k in ("_id", "app_id", "request", "router", "lease_owner", "lease_token", "lease_until")
    }


def stored(parent: InstanceKey, held: Doc, *, not_before: int, own: str) -> Doc:
    """A held activity as a document of the collection, unleased."""
    return {
        "_id": held["_id"],
        "app_id": held["app_id"],
        "parent_app": parent.app_id,
        "parent_id": parent.instance_id,
        "request": held["request"],
        "router": held["router"],
        "not_before": not_before,
        "lease_owner": None,
        "lease_token": None,
        "lease_until": None,
        "by": own,
    }


def holding(activity: ObjectId, token: str) -> Doc:
    """Filter part: the instance still holds this activity under this lease."""
    return {"pending": {"$elemMatch": {"_id": activity, "lease_token": token}}}


def fences(results: list[tuple[InstanceKey, ObjectId, str]]) -> list[UpdateOne]:
    """The fenced removals of held activities whose results a transaction delivers: each
    matches only while its entry is there under its token."""
    return [
        UpdateOne({**key_filter(parent), **holding(oid, token)}, {"$pull": {"pending": {"_id": oid}}})
        for parent, oid, token in results
    ]


async def held_tokens(
    db: AsyncDatabase[Doc], s: AsyncClientSession, parents: Collection[InstanceKey]
) -> set[tuple[ObjectId, str]]:
    """(activity, token) of the entries these instances hold, as the transaction reads them."""
    if not parents:
        return set()
    rows = db.instances.find(
        {"$or": [key_filter(k) for k in parents]},
        projection={"_id": 0, "pending._id": 1, "pending.lease_token": 1},
        session=s,
    )
    return {(p["_id"], str(p["lease_token"])) async for d in rows for p in d.get("pending") or ()}


def lapsed_query(now: int, app_id: object = None) -> Doc:
    """Instances holding an activity (of `app_id`, a value or condition) whose lease lapsed
    (the held_until index)."""
    match: Doc = {"lease_until": {"$lt": now}}
    if app_id is not None:
        match["app_id"] = app_id
    return {**HOLDING, "pending": {"$elemMatch": match}}


def renewal_query(tokens: list[str]) -> Doc:
    """Instances holding an activity under one of these lease tokens (the held_token index)."""
    return {**HOLDING, "pending.lease_token": {"$in": tokens}}


class Held:
    def __init__(self, db: AsyncDatabase[Doc], tx: Tx, own: str) -> None:
        self._db = db
        self._tx = tx
        self._own = own
        self._searched: dict[str, int] = {}  # app -> when its lapsed ones were last looked for

    async def evict(self, app_id: str, now: int) -> None:
        """Move the app's held activities whose lease lapsed to the collection, unleased (at
        most once a second per app, by `now`: a lease lapses long after it was last renewed)."""
        last = self._searched.get(app_id)
        if last is not None and last <= now < last + EVICT_EVERY_MICROS:
            return
        self._searched[app_id] = now
        rows = self._db.instances.find(
            lapsed_query(now, app_id), projection={"_id": 0, "app_id": 1, "instance_id": 1}
        ).limit(EVICT_BATCH)
        for key in [InstanceKey(d["app_id"], d["instance_id"]) async for d in rows]:
            await self._move(key, lambda p: p["app_id"] == app_id and int(p["lease_until"] or 0) < now, 0)

    async def give_back(
        self, parent: InstanceKey, activity: ObjectId, token: str, *, not_before: int
    ) -> None:
        """A held activity's lease given back: to the collection, due at `not_before`."""
        await self._move(parent, lambda p: p["_id"] == activity and p["lease_token"] == token, not_before)

    async def _move(self, key: InstanceKey, which: Callable[[Doc], bool], not_before: int) -> None:
        instances, activities = self._db.instances, self._db.activities

        async def move(s: AsyncClientSession) -> None:
            # Read in the transaction's snapshot: a result taking an entry meanwhile conflicts.
            doc = await instances.find_one(key_filter(key), projection={"_id": 0, "pending": 1}, session=s)
            out = [p for p in (doc or {}).get("pending") or () if which(p)]
            if not out:
                return
            ids = [p["_id"] for p in out]
            await instances.update_one(
                key_filter(key), {"$pull": {"pending": {"_id": {"$in": ids}}}}, session=s
            )
            docs = [stored(key, p, not_before=not_before, own=self._own) for p in out]
            await activities.insert_many(docs, ordered=True, session=s)

        await self._tx(move)

    async def renew(self, tokens: list[str], *, until: int) -> None:
        held = [t for t in tokens if is_held(t)]
        if held:
            await self._db.instances.update_many(
                renewal_query(held),
                {"$set": {"pending.$[a].lease_until": until}},
                array_filters=[{"a.lease_token": {"$in": held}}],
            )


async def lapsed(db: AsyncDatabase[Doc], app_ids: frozenset[str] | None, now: int) -> list[tuple[str, float]]:
    """(app, since) of held activities whose lease lapsed, waiting for a lease round to move
    them (the operator view: store/mongo/queries.py); `app_ids` filters the activities' app."""
    out: list[tuple[str, float]] = []
    projection = {"_id": 0, "pending._id": 1, "pending.app_id": 1, "pending.lease_until": 1}
    query = lapsed_query(now, None if app_ids is None else {"$in": sorted(app_ids)})
    async for d in db.instances.find(query, projection=projection):
        for p in d.get("pending") or ():
            if int(p["lease_until"] or 0) < now and (app_ids is None or p["app_id"] in app_ids):
                # Activities carry no enqueue time: their ObjectId's stands in (as in the collection).
                out.append((str(p["app_id"]), p["_id"].generation_time.timestamp()))
    return out
