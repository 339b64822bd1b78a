"""The writes of a MongoDB store transaction: queue messages, create or delete an
instance, apply a commit set. Each takes the transaction's session; the caller
has checked the lease (or just created the instance)."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from backend.domain.model import InstanceKey, Message, NewInstance, WorkflowCommit, is_terminal
from backend.errors import LeaseLost
from backend.store.mongo.codec import Doc, key_filter, micros, object_id


class Writes:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._instances: AsyncCollection[Doc] = db.instances
        self._history: AsyncCollection[Doc] = db.history
        self._inbox: AsyncCollection[Doc] = db.inbox
        self._activities: AsyncCollection[Doc] = db.activities

    async def insert_messages(
        self, s: AsyncClientSession, messages: list[Message], *, only_if_exists: bool = True
    ) -> int:
        """Queue messages for instances that exist (in order); the number stored."""
        by_target: dict[InstanceKey, list[Message]] = {}
        for m in messages:
            by_target.setdefault(m.target, []).append(m)
        docs: list[Doc] = []
        for target, batch in by_target.items():
            front = [m for m in batch if m.front]
            back = [m for m in batch if not m.front]
            # Allocating the positions is the existence check, and a write to the
            # instance: a concurrent purge or replace conflicts with it. Front messages
            # count down from 0 (inbox_front), below every position counted up.
            before = await self._instances.find_one_and_update(
                key_filter(target),
                {"$inc": {"inbox_seq": len(back), "inbox_front": -len(front)}},
                projection={"inbox_seq": 1, "inbox_front": 1, "_id": 0},
                return_document=ReturnDocument.BEFORE,
                session=s,
            )
            if before is None:
                if only_if_exists:
                    continue
                raise AssertionError(f"{target} was just created but is missing")
            first = int(before.get("inbox_seq", 0))
            first_front = int(before.get("inbox_front", 0)) - len(front)
            placed = [(first_front + n, m) for n, m in enumerate(front)] + [
                (first + n, m) for n, m in enumerate(back)
            ]
            docs.extend(
                {
                    "_id": ObjectId(),
                    "app_id": target.app_id,
                    "instance_id": target.instance_id,
                    "seq": seq,
                    "gate": int(m.gate),
                    "visible_at": micros(m.visible_at),
                    "event": m.event.SerializeToString(),
                }
                for seq, m in placed
            )
        if docs:
            await self._inbox.insert_many(docs, ordered=True, session=s)
        return len(docs)

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
        await self._instances.insert_one(
            {
                **key_filter(new.key),
                "status": int(new.state.workflowStatus),
                "created_at": micros(new.created_at),
                "state": new.state.SerializeToString(),
                "history_len": 0,
                "lease_owner": None,
                "lease_token": None,
                "lease_until": None,
                "generation": generation,
                "inbox_seq": 0,
                "propagated": None if new.propagated is None else new.propagated.SerializeToString(),
            },
            session=s,
        )
        if new.start is not None:
            await self.insert_messages(s, [new.start], only_if_exists=False)
        return True

    async def apply(
        self, s: AsyncClientSession, commit: WorkflowCommit, *, fence: str | None, now: datetime
    ) -> None:
        """Write a commit set. With `fence` (the lease token), the instance update comes
        first and checks the lease in the same round trip (LeaseLost if it is gone):
        from that write on, a competing claim conflicts with this transaction."""
        key = commit.key
        k = key_filter(key)
        added = len(commit.new_history)
        before = await self._instances.find_one_and_update(
            k if fence is None else {**k, "lease_token": fence},
            {
                "$set": {
                    "status": int(commit.state.workflowStatus),
                    "state": commit.state.SerializeToString(),
                    "lease_owner": None,
                    "lease_token": None,
                    "lease_until": None,
                    **(
                        {
                            "history_len": added,
                            "propagated": None
                            if commit.propagated is None
                            else commit.propagated.SerializeToString(),
                        }
                        if commit.reset_history
                        else {}
                    ),
                },
                "$inc": {"generation": 1, **({} if commit.reset_history else {"history_len": added})},
            },
            projection={"_id": 0, "history_len": 1},
            return_document=ReturnDocument.BEFORE,
            session=s,
        )
        if before is None:
            if fence is not None:
                raise LeaseLost(f"lease on {key} is no longer held")
            raise AssertionError(f"{key} was just created but is missing")
        length = 0 if commit.reset_history else int(before.get("history_len", 0))
        if commit.reset_history:
            await self._history.delete_many(k, session=s)
        if commit.new_history:
            await self._history.insert_many(
                [
                    {**k, "seq": length + n, "event": e.SerializeToString()}
                    for n, e in enumerate(commit.new_history)
                ],
                ordered=True,
                session=s,
            )
        consumed = [oid for oid in (object_id(i) for i in commit.consumed) if oid is not None]
        if consumed:
            await self._inbox.delete_many({"_id": {"$in": consumed}}, session=s)
        if commit.cancel_pending:
            await self._inbox.delete_many({**k, "visible_at": {"$gt": micros(now)}}, session=s)
            await self._activities.delete_many(
                {"parent_app": key.app_id, "parent_id": key.instance_id}, session=s
            )
        for new in commit.new_instances:
            await self.create(s, new, replace_terminal=True)
        await self.insert_messages(s, commit.messages)
        if commit.activities:
            await self._activities.insert_many(
                [
                    {
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
                    }
                    for a in commit.activities
                ],
                ordered=True,
                session=s,
            )
