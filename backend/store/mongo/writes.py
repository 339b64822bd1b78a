"""The writes of a MongoDB store transaction: create or delete an instance, apply a batch
of turn commits, activity results, new instances and client messages (their delivery into
inboxes: store/mongo/inbox.py). Each takes the
transaction's session; fencing (the lease tokens) is checked here, in the same
round trip as the first write of each kind."""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from backend.domain.model import ActivityTask, InstanceKey, Message, NewInstance, WorkflowCommit, is_terminal
from backend.store.base import ActivityLease, Claim
from backend.store.mongo import held
from backend.store.mongo.codec import Doc, inline_id, key_filter, micros, pending_token, split_consumed
from backend.store.mongo.history import history_docs, inline_chunk
from backend.store.mongo.inbox import ClaimOnDelivery, Delivery, Inbox, inlinable, inline_doc

DUPLICATE_KEY = 11000  # mongod's error code


class FenceMismatch(Exception):
    """A lease in the batch is no longer held: the batch runs again with a check first."""


@dataclass(frozen=True)
class Turn:
    """One commit to apply: fenced by `fence` (None for a just-created instance's seed)."""

    commit: WorkflowCommit
    fence: str | None
    history_len: int  # committed events before this commit (as leased)
    now: datetime
    # The activity documents to insert, made once (ids and claimed leases stay the same
    # when the transaction is retried); None: made from the commit, none leased.
    activities: list[Doc] | None = None

    @functools.cached_property
    def placed(self) -> Placed:
        """Where this commit's history and consumed messages are, worked out once (a retried
        transaction, or a lone update that turns out not to be one, reuses it)."""
        commit = self.commit
        docs = history_docs(commit.key, 0 if commit.reset_history else self.history_len, commit.new_history)
        held = inline_chunk(docs) if docs else None
        stored, inline = split_consumed([str(i) for i in commit.consumed])
        return Placed(
            held=held, history=[] if held is not None else docs, consumed=stored, consumed_inline=inline
        )


@dataclass(frozen=True)
class Placed:
    held: Doc | None  # the turn's history as one chunk held in the instance document
    history: list[Doc]  # or as documents of the history collection
    consumed: list[ObjectId]  # consumed messages of the inbox collection
    consumed_inline: list[ObjectId]  # and those held in the instance document


@dataclass(frozen=True)
class Start:
    """A new instance to insert (DuplicateKeyError if it exists): its documents, made once;
    `items`, the InboxItem ids of its start message (inline in `instance` when leased)."""

    key: InstanceKey
    instance: Doc
    inbox: list[Doc]
    items: list[str]


@dataclass(frozen=True)
class Send:
    """A message from a client (an event, a control message): delivered if its target exists
    (and with `claim`, lease its target: store/mongo/inbox.py)."""

    message: Message
    claim: ClaimOnDelivery | None = None


@dataclass(frozen=True)
class Result:
    """An activity result: delete the activity (fenced by its lease token), deliver the message
    (and with `claim`, lease its target: store/mongo/inbox.py)."""

    activity: ObjectId
    token: str
    message: Message
    claim: ClaimOnDelivery | None = None


def activity_docs(
    commit: WorkflowCommit, own: str, claim: Claim | None
) -> tuple[list[Doc], list[ActivityLease]]:
    """The commit's activity documents; those `claim` has slots for are leased to its owner,
    and held in the parent's document (`held`) if they all fit (store/mongo/held.py)."""
    slots = dict(claim.slots) if claim is not None else {}
    docs: list[Doc] = []
    leased: list[tuple[Doc, ActivityTask]] = []
    for a in commit.activities:
        doc: Doc = {
            "_id": ObjectId(),
            "app_id": a.app_id,
            "parent_app": a.parent.app_id,
            "parent_id": a.parent.instance_id,
            "request": a.request.SerializeToString(),
            "router": a.router.SerializeToString(),
            "not_before": 0,
            "lease_owner": None,
            "lease_token": None,
            "lease_until": None,
            "by": own,
        }
        if claim is not None and slots.get(a.app_id, 0) > 0:
            slots[a.app_id] -= 1
            leased.append((doc, a))
        docs.append(doc)
    hold = held.fits([d for d, _ in leased])
    leases: list[ActivityLease] = []
    for doc, a in leased:
        assert claim is not None
        token = pending_token() if hold else uuid.uuid4().hex
        doc |= {"lease_owner": claim.owner, "lease_token": token, "lease_until": micros(claim.until)}
        if hold:
            doc["held"] = True
        leases.append(ActivityLease(id=str(doc["_id"]), token=token, task=a))
    return docs, leases


class Writes:
    def __init__(self, db: AsyncDatabase[Doc], own: str) -> None:
        self._instances: AsyncCollection[Doc] = db.instances
        self._history: AsyncCollection[Doc] = db.history
        self._inbox: AsyncCollection[Doc] = db.inbox
        self._activities: AsyncCollection[Doc] = db.activities
        self.own = own  # this store's id: the change feed skips our own writes
        self._stamps = itertools.count()
        self.inbox = Inbox(db, own)

    def stamp(self) -> str:
        """`by` for an instance update: always a new value, so the feed sees who wrote it."""
        return f"{self.own}.{next(self._stamps)}"

    async def delete_instance(self, s: AsyncClientSession, key: InstanceKey) -> None:
        k = key_filter(key)
        await self._instances.delete_one(k, session=s)
        await self._history.delete_many(k, session=s)
        await self._inbox.delete_many(k, session=s)
        await self._activities.delete_many(
            {"parent_app": key.app_id, "parent_id": key.instance_id}, session=s
        )

    async def create(self, s: AsyncClientSession, new: NewInstance, *, replace_terminal: bool) -> bool:
        existing = await self._instances.find_one(
            key_filter(new.key), projection={"status": 1, "generation": 1}, session=s
        )
        generation = 0
        if existing is not None:
            if not (replace_terminal and is_terminal(int(existing["status"]))):
                return False
            await self.delete_instance(s, new.key)
            generation = int(existing.get("generation", 0)) + 1
        await self.insert_new(s, new, generation=generation)
        return True

    async def insert_new(self, s: AsyncClientSession, new: NewInstance, *, generation: int = 0) -> None:
        """Insert the instance and its start message; DuplicateKeyError if it exists."""
        start = self.start(new, None, generation=generation)
        await self._instances.insert_one(start.instance, session=s)
        if start.inbox:
            await self._inbox.insert_many(start.inbox, session=s)

    def start(self, new: NewInstance, lease: tuple[str, str, int] | None, *, generation: int = 0) -> Start:
        """The documents of a new instance (leased as (owner, token, until) when given) and of
        its start message, placed without a counter round trip (the inbox is empty)."""
        start = [] if new.start is None else [new.start]
        front = sum(1 for m in start if m.front)
        owner, token, until = lease if lease is not None else (None, None, None)
        docs = self.inbox.message_docs(new.key, start, (0, 0)) if start else []
        # Leased to us: the start message rides inside the instance document (one insert, and
        # the first turn's commit removes it in its instance update).
        held = lease is not None and inlinable(start)
        inline = [inline_doc(d) for d in docs] if held else []
        stored = [] if held else docs
        instance = {
            **key_filter(new.key),
            "status": int(new.state.workflowStatus),
            "created_at": micros(new.created_at),
            "state": new.state.SerializeToString(),
            "history_len": 0,
            "lease_owner": owner,
            "lease_token": token,
            "lease_until": until,
            "generation": generation,
            "inbox_seq": len(start) - front,
            "inbox_front": -front,
            "inbox_n": len(stored),
            "inline": inline,
            "inline_n": len(inline),
            "hist": [],
            "hist_stored": False,
            "propagated": None if new.propagated is None else new.propagated.SerializeToString(),
            "name": new.state.name,  # the operator listing's filter (store/mongo/queries.py)
            "by": self.stamp(),
        }
        items = [inline_id(d["_id"]) for d in inline] + [str(d["_id"]) for d in stored]
        return Start(new.key, instance, stored, items)

    def _instance_update(self, turn: Turn) -> Doc:
        """The fenced update of a committed instance, with its turn's history if held inline
        (store/mongo/history.py) and its consumed messages."""
        commit = turn.commit
        placed = turn.placed
        added = len(commit.new_history)
        fields: Doc = {
            "status": int(commit.state.workflowStatus),
            "state": commit.state.SerializeToString(),
            "lease_owner": None,
            "lease_token": None,
            "lease_until": None,
            # Fenced by the lease, so the leased length is the committed one.
            "history_len": added if commit.reset_history else turn.history_len + added,
            "by": self.stamp(),
        }
        if commit.reset_history:
            fields["propagated"] = (
                None if commit.propagated is None else commit.propagated.SerializeToString()
            )
            fields |= {
                "hist": [] if placed.held is None else [placed.held],
                "hist_stored": bool(placed.history),
            }
        elif placed.history:
            fields["hist_stored"] = True
        # The activities this commit holds (store/mongo/held.py); a new execution, or one
        # that ends, holds no others (its queued activities are dropped).
        holds = [held.entry(d) for d in turn.activities or () if d.get("held")]
        if commit.reset_history or commit.cancel_pending:
            fields["pending"] = holds
        update: Doc = {"$set": fields, "$inc": {"generation": 1}}
        push: Doc = {}
        if placed.held is not None and not commit.reset_history:
            push["hist"] = placed.held
        if holds and "pending" not in fields:
            push["pending"] = {"$each": holds}
        if push:
            update["$push"] = push
        # The consumed messages leave: inline ones in this same update, the others' count here
        # and their documents in the batch's inbox delete. Exact, because under our lease
        # nobody else consumes or inlines messages of this instance.
        if placed.consumed:
            update["$inc"]["inbox_n"] = -len(placed.consumed)
        if placed.consumed_inline:
            update["$inc"]["inline_n"] = -len(placed.consumed_inline)
            update["$pull"] = {"inline": {"_id": {"$in": placed.consumed_inline}}}
        return update

    def lone_update(self, turn: Turn) -> Doc | None:
        """The turn's whole commit as one update of its instance document, if it writes
        nothing else (no stored history or messages, no new instances, no activities but those
        it holds): as a single-document write it is atomic without a transaction. Most last
        turns are, and most turns that queue an activity."""
        commit = turn.commit
        if commit.reset_history or commit.cancel_pending or commit.new_instances or commit.messages:
            return None
        if turn.placed.consumed or turn.placed.history:
            return None
        if commit.activities and not (turn.activities and all(d.get("held") for d in turn.activities)):
            return None  # activities of the collection (only those held ride in the update)
        return self._instance_update(turn)

    async def apply(
        self,
        s: AsyncClientSession,
        turns: list[Turn],
        results: list[Result],
        starts: Sequence[Start] = (),
        sends: Sequence[Send] = (),
    ) -> Delivery:
        """Write a batch of commits, activity results, new instances and client messages in a
        few round trips; the targets of messages that do not exist (not delivered), and the
        leases the results' claims won.

        The fenced writes come first (the instance updates, the activity deletes): from
        them on a competing claim conflicts with this transaction. If any fence fails,
        FenceMismatch aborts the whole batch (the caller finds which and runs the rest);
        the result is the same as applying the items one by one in order."""
        if turns:
            updates = [
                UpdateOne(
                    {**key_filter(t.commit.key), **({} if t.fence is None else {"lease_token": t.fence})},
                    self._instance_update(t),
                )
                for t in turns
            ]
            done = await self._instances.bulk_write(updates, ordered=False, session=s)
            if done.matched_count != len(turns):
                raise FenceMismatch
        stored = [r for r in results if not held.is_held(r.token)]
        if stored:
            pairs = [{"_id": r.activity, "lease_token": r.token} for r in stored]
            deleted = await self._activities.delete_many(
                pairs[0] if len(pairs) == 1 else {"$or": pairs}, session=s
            )
            if deleted.deleted_count != len(stored):
                raise FenceMismatch
        if len(stored) < len(results):  # held by their parents: taken out of `pending`
            taken = held.fences(
                [(r.message.target, r.activity, r.token) for r in results if held.is_held(r.token)]
            )
            if (await self._instances.bulk_write(taken, ordered=True, session=s)).matched_count != len(taken):
                raise FenceMismatch
        if starts:
            try:
                await self._instances.insert_many([n.instance for n in starts], ordered=True, session=s)
            except BulkWriteError as err:
                errors = err.details.get("writeErrors", [])
                if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
                    raise DuplicateKeyError(errors[0].get("errmsg", "duplicate key"), DUPLICATE_KEY) from err
                raise
        history: list[Doc] = []
        consumed: list[ObjectId] = []
        dropped: list[Doc] = []  # inbox filters of ended executions' timers
        cancelled: list[Doc] = []  # their queued activities
        messages: list[Message] = []
        activities: list[Doc] = []
        for t in turns:
            commit, key = t.commit, t.commit.key
            k = key_filter(key)
            if commit.reset_history:
                await self._history.delete_many(k, session=s)
            history.extend(t.placed.history)
            consumed.extend(t.placed.consumed)
            if commit.cancel_pending:
                # Future timers only ever wait in the inbox collection (inline messages are due).
                dropped.append({**k, "visible_at": {"$gt": micros(t.now)}})
                cancelled.append({"parent_app": key.app_id, "parent_id": key.instance_id})
            for new in commit.new_instances:
                await self.create(s, new, replace_terminal=True)
            messages.extend(commit.messages)
            docs = t.activities if t.activities is not None else activity_docs(commit, self.own, None)[0]
            activities.extend(d for d in docs if not d.get("held"))
        messages.extend(r.message for r in results)
        messages.extend(m.message for m in sends)
        if history:
            await self._history.insert_many(history, ordered=True, session=s)
        # One delete per collection for the whole batch; before the inserts below, which
        # they must not touch.
        if consumed:
            await self._inbox.delete_many({"_id": {"$in": consumed}}, session=s)
        for gone in dropped:  # rare (an ending): one delete each, to keep `inbox_n` exact
            n = (await self._inbox.delete_many(gone, session=s)).deleted_count
            if n:
                k = {"app_id": gone["app_id"], "instance_id": gone["instance_id"]}
                await self._instances.update_one(k, {"$inc": {"inbox_n": -n}}, session=s)
        if cancelled:
            await self._activities.delete_many(
                cancelled[0] if len(cancelled) == 1 else {"$or": cancelled}, session=s
            )
        claims: dict[InstanceKey, ClaimOnDelivery] = {}
        claiming: list[Result | Send] = [*results, *sends]
        for item in claiming:
            if item.claim is not None:
                claims.setdefault(item.message.target, item.claim)  # one claim per target can win
        delivery = await self.inbox.deliver(
            s, messages, placed=[d for n in starts for d in n.inbox], claims=claims
        )
        if activities:
            await self._activities.insert_many(activities, ordered=True, session=s)
        return delivery
