"""Commits of one document, atomic without a transaction: one majority write each, taken
when an item is alone in its batch (store/mongo/batch.py) and writes only that document.

* A new instance that holds its start message: one insert.
* A turn that changes only its instance (Writes.lone_update): one update, fenced by the lease.
* A turn whose only other writes are activities held in its instance document
  (store/mongo/held.py): the same update.
* An activity result whose activity its parent holds, with a claim that takes the free
  parent: one findAndModify of the parent takes the activity out of `pending` (the fence: its
  entry under the result's lease token), leases the parent and holds the result inline
  (store/mongo/inbox.py). If the claim does not take the parent, nothing is written and the
  result takes a transaction, which removes the entry under the same fence.
* A client's message (an event, a control message) with a claim that takes its free target:
  the same findAndModify, without the fence. Otherwise a transaction stores it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bson import ObjectId
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from backend.domain.model import Message
from backend.errors import LeaseLost
from backend.store.base import WorkflowLease
from backend.store.mongo import held
from backend.store.mongo.codec import Doc, key_filter, unavailable
from backend.store.mongo.inbox import ClaimOnDelivery, inlinable, lone_claim
from backend.store.mongo.leases import NO_HISTORY, read_inboxes
from backend.store.mongo.writes import Result, Send, Start, Turn, Writes


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
            if isinstance(work, Result) and work.claim is not None and _lone_result(work):
                fence = held.holding(work.activity, work.token)
                return await self._claiming(work.message, work.claim, fence, work.activity)
            if isinstance(work, Send) and work.claim is not None and inlinable([work.message]):
                return await self._claiming(work.message, work.claim, {}, None)
        return None

    async def _claiming(
        self, message: Message, claim: ClaimOnDelivery, fence: Doc, activity: ObjectId | None
    ) -> Committed | None:
        """Deliver `message` with the write that claims its target, if the claim wins (and
        takes `activity` out of the target's held ones); None, nothing written, if not."""
        target = message.target
        async with self._client.start_session(causal_consistency=True) as s:
            # Majority-written in a causal session, as every claim is (store/mongo/leases.py).
            doc = await self._db.instances.find_one_and_update(
                {**key_filter(target), **fence},
                lone_claim(target, message, claim, activity),
                projection=NO_HISTORY,
                return_document=ReturnDocument.AFTER,
                session=s,
            )
            if doc is None or doc.get("lease_token") != claim.token:
                return None
            leases = await read_inboxes(
                self._db,
                s,
                target.app_id,
                [(target.instance_id, claim.token, doc)],
                now=claim.now,
                control_only=False,
            )
        return Committed(lease=leases[0] if leases else None)


def _lone_result(work: Result) -> bool:
    """A result that may be its parent's one write: its activity held there, small."""
    return held.is_held(work.token) and inlinable([work.message])
