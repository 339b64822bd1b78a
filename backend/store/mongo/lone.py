"""Commits of one document, atomic without a transaction: one majority write each, taken
when an item is alone in its batch (store/mongo/batch.py) and writes only that document.

* A new instance that holds its start message: one insert.
* A turn that changes only its instance (Writes.lone_update): one update, fenced by the lease.
* An activity result whose activity is pending in its parent (leased at its turn's commit:
  codec.PENDING_PREFIX) and whose claim takes the parent: one findAndModify of the parent
  takes the activity out of `pending`, leases the parent and holds the result inline
  (store/mongo/inbox.py). `pending` is the fence: an activity is listed there only while the
  lease it was claimed with holds it and no result has been delivered (a lease lapsed, or
  given back, leaves it: store/mongo/leases.py, store.py), so a second or stale result
  matches nothing and goes the transaction's way, where its lease token decides.

  The activity document is deleted after the caller is answered. Until then this process
  refuses another result for it (`delivered`); if the delete never happens (a crash), the
  activity's lease lapses, it runs again and its result finds nothing pending: the parent
  drops a duplicate (at least once, never twice into history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from bson import ObjectId
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from backend.errors import LeaseLost
from backend.store.base import WorkflowLease
from backend.store.mongo.codec import PENDING_PREFIX, Doc, key_filter, unavailable
from backend.store.mongo.inbox import inlinable, lone_claim
from backend.store.mongo.leases import NO_HISTORY, read_inboxes
from backend.store.mongo.writes import Result, Send, Start, Turn, Writes

log = logging.getLogger("backend.store.mongo")

DELETE_WAIT = 2.0  # seconds close() gives the activity deletes still under way


@dataclass(frozen=True)
class Committed:
    """What a committed item learned."""

    delivered: bool = True  # False: a message whose target does not exist (nothing stored)
    lease: WorkflowLease | None = None  # an activity result's claim won its parent


COMMITTED = Committed()


class Lone:
    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], writes: Writes) -> None:
        self._client = client
        self._db = db
        self._writes = writes
        self._deleting: dict[ObjectId, asyncio.Task[None]] = {}  # delivered, document still there

    def delivered(self, activity: ObjectId) -> bool:
        """Whether this activity's result was delivered here and its document is being deleted."""
        return activity in self._deleting

    async def commit(self, work: Turn | Result | Start | Send) -> Committed | None:
        """Commit `work` as its one write; None if it writes more (or, for a result, if its
        claim does not take the parent: nothing was written, a transaction delivers it)."""
        with unavailable():
            if isinstance(work, Start) and not work.inbox:
                # A duplicate key reaches the caller, who decides (replace or refuse).
                await self._db.instances.insert_one(work.instance)
                return COMMITTED
            if isinstance(work, Turn) and (update := self._writes.lone_update(work)) is not None:
                fence = {} if work.fence is None else {"lease_token": work.fence}
                done = await self._db.instances.update_one({**key_filter(work.commit.key), **fence}, update)
                if done.matched_count != 1:
                    raise LeaseLost(f"lease on {work.commit.key} is no longer held")
                return COMMITTED
            if isinstance(work, Result) and _lone_result(work):
                return await self._result(work)
        return None

    async def _result(self, work: Result) -> Committed | None:
        claim, target = work.claim, work.message.target
        assert claim is not None
        async with self._client.start_session(causal_consistency=True) as s:
            # Majority-written in a causal session, as every claim is (store/mongo/leases.py).
            doc = await self._db.instances.find_one_and_update(
                {**key_filter(target), "pending": work.activity},
                lone_claim(target, work.message, claim, work.activity),
                projection=NO_HISTORY,
                return_document=ReturnDocument.AFTER,
                session=s,
            )
            if doc is None or doc.get("lease_token") != claim.token:
                return None
            self._forget(work.activity)
            leases = await read_inboxes(
                self._db,
                s,
                target.app_id,
                [(target.instance_id, claim.token, doc)],
                now=claim.now,
                control_only=False,
            )
        return Committed(lease=leases[0] if leases else None)

    def _forget(self, activity: ObjectId) -> None:
        """Delete the activity's document in the background (the module says why that is safe)."""

        async def delete() -> None:
            try:
                with unavailable():
                    await self._db.activities.delete_one({"_id": activity})
            except Exception as err:  # its lease lapses and the parent drops the rerun's result
                log.warning("could not delete completed activity %s: %s", activity, err)
            finally:
                self._deleting.pop(activity, None)

        self._deleting[activity] = asyncio.create_task(delete(), name="mongo-activity-delete")

    async def close(self) -> None:
        tasks = list(self._deleting.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=DELETE_WAIT)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._deleting.clear()


def _lone_result(work: Result) -> bool:
    """A result that may be its parent's one write: pending there, with a claim, small."""
    return work.claim is not None and work.token.startswith(PENDING_PREFIX) and inlinable([work.message])
