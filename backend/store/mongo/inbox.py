"""Delivering messages into inboxes on MongoDB, inside the caller's transaction.

Each message takes its position from its target's counters: `inbox_seq` counts up, and
`inbox_front` counts down from 0 for messages sent ahead of the queue. Reserving positions is
the existence check and a write to the instance document, so a concurrent purge or replace
conflicts with the transaction and no message is left behind for an instance that is gone.

A delivery may carry a claim (an activity result on a server with a free slot for the
parent's app, store.base.Store.complete_activity): the write that reserves the positions
then also leases the target to the claimant if it is unleased and not waiting, and puts the
messages in the instance document itself (`inline`) rather than the inbox collection: the
same write returns them, and the next turn's commit removes them in its instance update.
That saves the separate claim (a majority write), the message insert, the inbox read of the
next turn and its delete. `inbox_n` counts the instance's messages in the collection, so that
a claim that finds it 0 reads no more.

Only a winning claim (or a new instance leased at its start) inlines: whoever holds an
instance's lease is the only one who changes its `inline`, and inline messages are always
due. If the lease lapses, a general round finds them (store/mongo/leases.py). The claim reads the transaction's snapshot,
so it never decides on a commit that is not majority-committed (store/mongo/leases.py says
why that matters); a concurrent claim or commit is a write conflict and the transaction runs
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from backend.domain.model import InstanceKey, Message
from backend.store.base import WorkflowLease
from backend.store.mongo.codec import UNKNOWN_COUNT, WAITING, Doc, key_filter, micros
from backend.store.mongo.leases import NO_HISTORY, read_inboxes

# A delivery held inline is at most this large (the instance document also holds the state,
# up to three payloads, and its early history: store/mongo/history.py).
INLINE_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClaimOnDelivery:
    """Lease the target to `owner` (as `token`, until `until`, microseconds) if it is free at `now`."""

    owner: str
    token: str
    until: int
    now: int

    # The one rule, in two forms: free at `now` (no lease, or it expired), not waiting, and
    # holding nothing inline (left by a lease that lapsed: the claim by key that follows a
    # lost claim takes it), so that at most one delivery is ever held inline.
    def wins(self, doc: Doc) -> bool:
        """Whether the claim takes an instance document as read in the transaction."""
        return (
            int(doc.get("lease_until") or 0) < self.now
            and int(doc["status"]) not in WAITING
            and not doc.get("inline")
        )

    def wins_expression(self) -> Doc:
        """`wins` as an aggregation expression over the document being updated."""
        return {
            "$and": [
                {"$lt": [{"$ifNull": ["$lease_until", 0]}, self.now]},
                {"$not": [{"$in": ["$status", WAITING]}]},
                {"$eq": [{"$size": {"$ifNull": ["$inline", []]}}, 0]},
            ]
        }


def inlinable(batch: list[Message]) -> bool:
    """Whether a delivery may be held in its instance's document: small, and placed at the back."""
    return not any(m.front for m in batch) and sum(m.event.ByteSize() for m in batch) <= INLINE_MESSAGE_BYTES


@dataclass
class Delivery:
    missing: set[InstanceKey] = field(default_factory=set)  # targets that do not exist
    leases: dict[str, WorkflowLease] = field(default_factory=dict)  # by claim token


def _counts(batch: list[Message]) -> tuple[int, int]:
    """(messages placed at the back, messages placed at the front)."""
    front = sum(1 for m in batch if m.front)
    return len(batch) - front, front


def inline_doc(doc: Doc) -> Doc:
    """An inbox document as held in its instance's `inline` (the key and writer are the
    instance's own)."""
    return {k: doc[k] for k in ("_id", "seq", "gate", "visible_at", "event")}


def _claiming_update(
    docs: list[Doc], claim: ClaimOnDelivery, *, lone: bool = False, held: ObjectId | None = None
) -> list[Doc]:
    """Reserve the positions of `docs` (messages placed at the back; their `seq` filled here)
    and, if the instance is free and not waiting, lease it and hold them inline; else count
    them as stored in the collection. `lone`: if the claim does not win, nothing changes (the
    caller stores the messages in a transaction: store/mongo/lone.py); `held`: the activity
    whose result this is, taken out of `pending` if the claim wins. An update pipeline, so that
    it all happens in the one findAndModify; each expression reads the document as it was
    before."""
    free = claim.wins_expression()
    inline = {"$ifNull": ["$inline", []]}
    joined = {
        "$concatArrays": [
            inline,
            [
                {
                    **inline_doc(d),
                    "seq": {"$add": [{"$ifNull": ["$inbox_seq", 0]}, n]},
                    "event": {"$literal": d["event"]},
                }
                for n, d in enumerate(docs)
            ],
        ]
    }
    stored = {"$ifNull": ["$inbox_n", UNKNOWN_COUNT]}
    seq = {"$add": [{"$ifNull": ["$inbox_seq", 0]}, len(docs)]}

    def pick(then: object, name: str) -> Doc:
        return {"$cond": [free, then, f"${name}"]}

    fields: Doc = {
        "inbox_seq": pick(seq, "inbox_seq") if lone else seq,
        "lease_owner": pick({"$literal": claim.owner}, "lease_owner"),
        "lease_token": pick({"$literal": claim.token}, "lease_token"),
        "lease_until": pick(claim.until, "lease_until"),
        "generation": pick({"$add": [{"$ifNull": ["$generation", 0]}, 1]}, "generation"),
        "inline": {"$cond": [free, joined, inline]},
        "inline_n": {"$size": {"$cond": [free, joined, inline]}},
        "inbox_n": pick(stored, "inbox_n")
        if lone
        else {"$cond": [free, stored, {"$add": [stored, len(docs)]}]},
    }
    if held is not None:
        rest = {"$filter": {"input": {"$ifNull": ["$pending", []]}, "cond": {"$ne": ["$$this._id", held]}}}
        fields["pending"] = pick(rest, "pending")
    return [{"$set": fields}]


def lone_claim(
    target: InstanceKey, message: Message, claim: ClaimOnDelivery, held: ObjectId | None = None
) -> list[Doc]:
    """The update of a message delivered alone (store/mongo/lone.py): if the claim wins, the
    message held inline (and `held`, the activity whose result it is, no longer held); else
    no change."""
    docs = Inbox.message_docs_of(target, [message], (0, 0), by="")
    return _claiming_update(docs, claim, lone=True, held=held)


class Inbox:
    def __init__(self, db: AsyncDatabase[Doc], own: str) -> None:
        self._db = db
        self._own = own  # written into each message: the change feed skips our own writes

    async def deliver(
        self,
        s: AsyncClientSession,
        messages: list[Message],
        *,
        only_if_exists: bool = True,
        placed: list[Doc] | None = None,
        claims: Mapping[InstanceKey, ClaimOnDelivery] | None = None,
    ) -> Delivery:
        """Queue messages for instances that exist (in order), with `placed` (inbox documents
        already given their positions) in the same insert; `claims` as the module says."""
        by_target: dict[InstanceKey, list[Message]] = {}
        for m in messages:
            by_target.setdefault(m.target, []).append(m)
        wanted = {k: c for k, c in (claims or {}).items() if k in by_target}
        counters, won = await self._allocate(s, by_target, wanted)
        docs: list[Doc] = []
        for target, batch in by_target.items():
            before = counters.get(target)
            if before is None:
                if only_if_exists:
                    continue
                raise AssertionError(f"{target} was just created but is missing")
            if target not in won:  # a won claim holds its messages inline
                docs.extend(self.message_docs(target, batch, before))
        docs = (placed or []) + docs
        if docs:
            await self._db.inbox.insert_many(docs, ordered=True, session=s)
        delivery = Delivery(missing=set(by_target) - set(counters))
        by_app: dict[str, list[tuple[str, str, Doc]]] = {}
        for key, doc in won.items():
            by_app.setdefault(key.app_id, []).append((key.instance_id, wanted[key].token, doc))
        for app_id, claimed in by_app.items():
            now = max(wanted[InstanceKey(app_id, iid)].now for iid, _, _ in claimed)
            for lease in await read_inboxes(self._db, s, app_id, claimed, now=now, control_only=False):
                delivery.leases[lease.token] = lease
        return delivery

    def message_docs(self, target: InstanceKey, batch: list[Message], before: tuple[int, int]) -> list[Doc]:
        """Inbox documents for `batch`, placed from the target's (inbox_seq, inbox_front)."""
        return self.message_docs_of(target, batch, before, by=self._own)

    @staticmethod
    def message_docs_of(
        target: InstanceKey, batch: list[Message], before: tuple[int, int], *, by: str
    ) -> list[Doc]:
        front = [m for m in batch if m.front]
        back = [m for m in batch if not m.front]
        first, first_front = before[0], before[1] - len(front)
        placed = [(first_front + n, m) for n, m in enumerate(front)] + [
            (first + n, m) for n, m in enumerate(back)
        ]
        return [
            {
                "_id": ObjectId(),
                "app_id": target.app_id,
                "instance_id": target.instance_id,
                "seq": seq,
                "gate": int(m.gate),
                "visible_at": micros(m.visible_at),
                "event": m.event.SerializeToString(),
                "by": by,
            }
            for seq, m in placed
        ]

    async def _allocate(
        self,
        s: AsyncClientSession,
        by_target: dict[InstanceKey, list[Message]],
        claims: Mapping[InstanceKey, ClaimOnDelivery],
    ) -> tuple[dict[InstanceKey, tuple[int, int]], dict[InstanceKey, Doc]]:
        """Reserve inbox positions: (inbox_seq, inbox_front) before the reservation, per
        target that exists; and the instance documents of the targets claimed (their
        messages are then inline in them)."""
        instances = self._db.instances
        out: dict[InstanceKey, tuple[int, int]] = {}
        won: dict[InstanceKey, Doc] = {}
        if len(by_target) < 3:  # one round trip per target
            for target, batch in by_target.items():
                back, front = _counts(batch)
                claim = claims.get(target) if inlinable(batch) else None
                if claim is None:
                    update: Doc = {
                        "$inc": {"inbox_seq": back, "inbox_front": -front, "inbox_n": back + front}
                    }
                    before = await instances.find_one_and_update(
                        key_filter(target),
                        update,
                        projection={"inbox_seq": 1, "inbox_front": 1, "_id": 0},
                        return_document=ReturnDocument.BEFORE,
                        session=s,
                    )
                    if before is not None:
                        out[target] = (int(before.get("inbox_seq", 0)), int(before.get("inbox_front", 0)))
                    continue
                docs = self.message_docs(target, batch, (0, 0))
                after = await instances.find_one_and_update(
                    key_filter(target),
                    _claiming_update(docs, claim),
                    return_document=ReturnDocument.AFTER,
                    projection=NO_HISTORY,
                    session=s,
                )
                if after is not None:
                    out[target] = (int(after["inbox_seq"]) - back, int(after.get("inbox_front", 0)))
                    if after.get("lease_token") == claim.token:
                        won[target] = after
            return out, won
        # Many targets (a batch of activity results): read them all, then one bulk update. The
        # transaction's snapshot makes the pair atomic (a concurrent change is a write conflict).
        rows = instances.find(
            {"$or": [key_filter(t) for t in by_target]},
            projection=NO_HISTORY
            if claims
            else {"_id": 1, "app_id": 1, "instance_id": 1, "inbox_seq": 1, "inbox_front": 1},
            session=s,
        )
        updates: list[UpdateOne] = []
        async for d in rows:
            key = InstanceKey(d["app_id"], d["instance_id"])
            batch = by_target[key]
            positions = out[key] = (int(d.get("inbox_seq", 0)), int(d.get("inbox_front", 0)))
            back, front = _counts(batch)
            inc: Doc = {"inbox_seq": back, "inbox_front": -front}
            update = {"$inc": inc}
            claim = claims.get(key)
            if claim is not None and inlinable(batch) and claim.wins(d):
                lease = {"lease_owner": claim.owner, "lease_token": claim.token, "lease_until": claim.until}
                inline = [inline_doc(m) for m in self.message_docs(key, batch, positions)]
                inc |= {"generation": 1, "inline_n": len(inline)}
                update |= {"$set": lease, "$push": {"inline": {"$each": inline}}}
                won[key] = {
                    **d,
                    **lease,
                    "inline": [*d.get("inline", []), *inline],
                    "inbox_n": d.get("inbox_n", UNKNOWN_COUNT),
                }
            else:
                inc["inbox_n"] = back + front
            updates.append(UpdateOne({"_id": d["_id"]}, update))
        if updates:
            await instances.bulk_write(updates, ordered=False, session=s)
        return out, won
