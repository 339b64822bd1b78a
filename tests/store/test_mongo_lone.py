"""MongoDB: an activity result as one write of its parent (store/mongo/lone.py), and the
`pending` list that fences it. Needs a MongoDB (STORE_TEST_MONGOD=1)."""

from __future__ import annotations

import asyncio

import pytest

from backend.domain.model import InstanceKey, Message
from backend.errors import LeaseLost
from backend.store.base import ActivityLease, Claim, WorkflowLease
from backend.store.mongo import MongoStore
from backend.store.mongo.inbox import INLINE_MESSAGE_BYTES
from tests.store.conftest import _mongodb_params
from tests.store.test_contract import (
    APP,
    OTHER_APP,
    T0,
    activity,
    at,
    commit_for,
    inbox_names,
    lease_one,
    msg,
    new,
    raised,
)
from tests.store.test_mongo_batch import _committed_transactions, mongo

pytestmark = pytest.mark.parametrize("durable_url", _mongodb_params(), indirect=True)


def claim(*, now: float = 0, until: float = 30, owner: str = "o1") -> Claim:
    return Claim(owner=owner, until=at(until), slots={APP: 1, OTHER_APP: 4}, now=at(now))


def result(act: ActivityLease, value: str | None = None) -> Message:
    return Message(target=act.task.parent, event=raised(value or act.task.request.name))


async def _running_with(
    store: MongoStore, key: InstanceKey, *names: str, until: float = 30
) -> tuple[WorkflowLease, list[ActivityLease]]:
    """`key` started and committed a turn queuing `names`, leased with that commit; the turn's
    lease is given back (its parent is free for a result's claim)."""
    lease = await store.create_instance(new(key), replace_terminal=False, claim=claim())
    assert lease is not None
    tasks = [activity(key, n, task_id=i) for i, n in enumerate(names)]
    acts = await store.commit_workflow(
        lease, commit_for(lease, activities=tasks), now=T0, claim=claim(until=until)
    )
    assert [a.task.request.name for a in acts] == list(names)
    return lease, acts


async def _pending(store: MongoStore, key: InstanceKey) -> list[object]:
    doc = await store._d.instances.find_one({"instance_id": key.instance_id}, projection={"pending": 1})
    assert doc is not None
    return list(doc.get("pending", []))


async def _gone(store: MongoStore, act: ActivityLease) -> bool:
    """Whether the activity's document is deleted (in the background: waited for briefly)."""
    for _ in range(100):
        if await store._d.activities.count_documents({"parent_id": act.task.parent.instance_id}) == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_result_pending_in_its_free_parent_is_one_write(durable_url: str) -> None:
    key = InstanceKey(APP, "lone")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        assert len(await _pending(store, key)) == 1
        before = await _committed_transactions(store)
        won = await store.complete_activity(act, result(act), claim=claim(now=1))
        assert won is not None and won.key == key and inbox_names(won) == ["a"]
        assert await _committed_transactions(store) == before  # no transaction
        assert await _pending(store, key) == []
        assert await store._d.inbox.count_documents({"instance_id": "lone"}) == 0
        assert await _gone(store, act)
        with pytest.raises(LeaseLost):  # delivered once: a second result is refused
            await store.complete_activity(act, result(act, "again"), claim=claim(now=2))
        await store.commit_workflow(won, commit_for(won), now=at(2))
        doc = await store._d.instances.find_one({"instance_id": "lone"})
        assert doc is not None and doc["inline"] == [] and doc["inbox_n"] == 0


async def test_a_second_result_while_the_delete_is_under_way_is_refused(durable_url: str) -> None:
    key = InstanceKey(APP, "twice")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        first, second = await asyncio.gather(
            store.complete_activity(act, result(act), claim=claim(now=1)),
            store.complete_activity(act, result(act, "again"), claim=claim(now=1)),
            return_exceptions=True,
        )
        outcomes = [first, second]
        assert sum(isinstance(o, LeaseLost) for o in outcomes) == 1, outcomes
        won = next(o for o in outcomes if isinstance(o, WorkflowLease))
        assert inbox_names(won) == ["a"]
        assert await store._d.inbox.count_documents({"instance_id": "twice"}) == 0


@pytest.mark.parametrize("why", ["parent leased elsewhere", "result too large to hold"])
async def test_a_result_that_cannot_be_one_write_takes_a_transaction(durable_url: str, why: str) -> None:
    key = InstanceKey(APP, "tx")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        value = "a"
        if why == "parent leased elsewhere":
            assert await store.send(msg(key, "wake"))
            await lease_one(store, key, owner="other", now=at(0.5), until=at(60))
        else:
            value = "x" * (INLINE_MESSAGE_BYTES + 1)
        before = await _committed_transactions(store)
        got = await store.complete_activity(act, result(act, value), claim=claim(now=1))
        assert await _committed_transactions(store) == before + 1
        assert await _pending(store, key) == []  # the transaction takes it out too
        stored = [d async for d in store._d.inbox.find({"instance_id": "tx"})]
        # stored in the collection, the parent not claimed (busy, or the result is not held)
        assert got is None
        assert len(stored) == (2 if why == "parent leased elsewhere" else 1)  # with "wake"
        assert await store._d.activities.count_documents({"parent_id": "tx"}) == 0
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act), claim=claim(now=2))


async def test_a_lapsed_pending_activity_taken_by_a_lease_round_refuses_its_old_holder(
    durable_url: str,
) -> None:
    key = InstanceKey(APP, "lapsed")
    async with mongo(durable_url) as store:
        _, [old] = await _running_with(store, key, "a", until=5)
        [new_lease] = await store.lease_activities(OTHER_APP, owner="o2", now=at(10), until=at(40), limit=5)
        assert await _pending(store, key) == []  # taken out before the claim
        with pytest.raises(LeaseLost):
            await store.complete_activity(old, result(old, "stale"), claim=claim(now=11, until=50))
        won = await store.complete_activity(
            new_lease, result(new_lease, "fresh"), claim=claim(now=12, until=50)
        )
        assert won is not None and inbox_names(won) == ["fresh"]


async def test_a_given_back_activity_is_no_longer_pending(durable_url: str) -> None:
    key = InstanceKey(APP, "back")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        await store.abandon_activity(act, retry_at=None)
        assert await _pending(store, key) == []
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act, "stale"), claim=claim(now=1))
        [again] = await store.lease_activities(OTHER_APP, owner="o2", now=at(1), until=at(30), limit=5)
        won = await store.complete_activity(again, result(again), claim=claim(now=2))
        assert won is not None and inbox_names(won) == ["a"]


async def test_a_result_of_an_execution_that_continued_as_new_is_refused(durable_url: str) -> None:
    key = InstanceKey(APP, "can")
    async with mongo(durable_url) as store:
        _, [act, _b] = await _running_with(store, key, "a", "b")
        assert await store.send(msg(key, "restart"))
        lease = await lease_one(store, key, now=at(1))
        # The new execution queues an activity of its own, with task id 0 again.
        [fresh] = await store.commit_workflow(
            lease,
            commit_for(
                lease,
                history=[raised("restarted")],
                reset_history=True,
                cancel_pending=True,
                activities=[activity(key, "new", task_id=0)],
            ),
            now=at(1),
            claim=claim(now=1),
        )
        assert await _pending(store, key) == [await _oid(store, fresh)]
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act, "old"), claim=claim(now=2))
        won = await store.complete_activity(fresh, result(fresh), claim=claim(now=3))
        assert won is not None and inbox_names(won) == ["new"]


async def _oid(store: MongoStore, act: ActivityLease) -> object:
    doc = await store._d.activities.find_one({"lease_token": act.token}, projection={"_id": 1})
    assert doc is not None
    return doc["_id"]
