"""MongoDB: activities held in their parent's document (store/mongo/held.py), so that the
turn that queues them and each result are one write (store/mongo/lone.py), and every way
such an activity leaves: its result, a lapse, a give-back, the end of its execution. Needs a
MongoDB (STORE_TEST_MONGOD=1)."""

from __future__ import annotations

import asyncio

import pytest

from backend.domain.model import InstanceKey, Message
from backend.errors import LeaseLost
from backend.store.base import ActivityLease, Claim, WorkflowLease
from backend.store.mongo import MongoStore
from backend.store.mongo.codec import micros
from backend.store.mongo.held import MAX_HELD, lapsed_query, renewal_query
from backend.store.mongo.inbox import INLINE_MESSAGE_BYTES
from tests.store.conftest import _mongodb_params
from tests.store.test_contract import (
    APP,
    COMPLETED,
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


def claim(*, now: float = 0, until: float = 30, slots: int = 4) -> Claim:
    return Claim(owner="o1", until=at(until), slots={APP: 1, OTHER_APP: slots}, now=at(now))


def result(act: ActivityLease, value: str | None = None) -> Message:
    return Message(target=act.task.parent, event=raised(value or act.task.request.name))


async def _running_with(
    store: MongoStore, key: InstanceKey, *names: str, until: float = 30, slots: int = 4
) -> tuple[WorkflowLease, list[ActivityLease]]:
    """`key` started and committed a turn queuing `names`, leased with that commit."""
    lease = await store.create_instance(new(key), replace_terminal=False, claim=claim())
    assert lease is not None
    tasks = [activity(key, n, task_id=i) for i, n in enumerate(names)]
    acts = await store.commit_workflow(
        lease, commit_for(lease, activities=tasks), now=T0, claim=claim(until=until, slots=slots)
    )
    assert sorted(a.task.request.name for a in acts) == sorted(names)[:slots]
    return lease, acts


async def _held(store: MongoStore, key: InstanceKey) -> list[str]:
    """The names of the activities the instance holds."""
    doc = await store._d.instances.find_one({"instance_id": key.instance_id}, projection={"pending": 1})
    assert doc is not None
    acts = [activity(key, "x").request.FromString(p["request"]) for p in doc.get("pending", [])]
    return [a.name for a in acts]


async def _stored(store: MongoStore, key: InstanceKey) -> int:
    return await store._d.activities.count_documents({"parent_id": key.instance_id})


async def test_a_turn_holding_its_activity_and_the_result_are_one_write_each(durable_url: str) -> None:
    key = InstanceKey(APP, "lone")
    async with mongo(durable_url) as store:
        before = await _committed_transactions(store)
        _, [act] = await _running_with(store, key, "a")
        assert await _held(store, key) == ["a"] and await _stored(store, key) == 0
        won = await store.complete_activity(act, result(act), claim=claim(now=1))
        assert won is not None and won.key == key and inbox_names(won) == ["a"]
        assert await _committed_transactions(store) == before  # start, turn, result: no transaction
        assert await _held(store, key) == [] and await _stored(store, key) == 0
        assert await store._d.inbox.count_documents({"instance_id": "lone"}) == 0
        with pytest.raises(LeaseLost):  # delivered once: a second result is refused
            await store.complete_activity(act, result(act, "again"), claim=claim(now=2))
        await store.commit_workflow(won, commit_for(won, status=COMPLETED), now=at(2))
        doc = await store._d.instances.find_one({"instance_id": "lone"})
        assert doc is not None and doc["inline"] == [] and doc["inbox_n"] == 0


async def test_two_results_of_one_lease_at_once_deliver_one(durable_url: str) -> None:
    key = InstanceKey(APP, "twice")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        outcomes = await asyncio.gather(
            store.complete_activity(act, result(act), claim=claim(now=1)),
            store.complete_activity(act, result(act, "again"), claim=claim(now=1)),
            return_exceptions=True,
        )
        assert sum(isinstance(o, LeaseLost) for o in outcomes) == 1, outcomes
        won = next(o for o in outcomes if isinstance(o, WorkflowLease))
        assert len(won.inbox) == 1
        assert await store._d.inbox.count_documents({"instance_id": "twice"}) == 0


@pytest.mark.parametrize("why", ["parent leased elsewhere", "result too large to hold", "no claim"])
async def test_a_result_that_cannot_be_one_write_takes_a_transaction(durable_url: str, why: str) -> None:
    key = InstanceKey(APP, "tx")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        value = "x" * (INLINE_MESSAGE_BYTES + 1) if why == "result too large to hold" else "a"
        if why == "parent leased elsewhere":
            assert await store.send(msg(key, "wake"))
            await lease_one(store, key, owner="other", now=at(0.5), until=at(60))
        before = await _committed_transactions(store)
        got = await store.complete_activity(
            act, result(act, value), claim=None if why == "no claim" else claim(now=1)
        )
        assert await _committed_transactions(store) == before + 1
        assert got is None  # stored in the inbox collection, the parent not claimed
        assert await _held(store, key) == [] and await _stored(store, key) == 0
        stored = await store._d.inbox.count_documents({"instance_id": "tx"})
        assert stored == (2 if why == "parent leased elsewhere" else 1)  # with "wake"
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act), claim=claim(now=2))


async def test_a_lapsed_held_activity_moves_to_a_lease_round_and_refuses_its_old_holder(
    durable_url: str,
) -> None:
    key = InstanceKey(APP, "lapsed")
    async with mongo(durable_url) as store:
        _, [old] = await _running_with(store, key, "a", until=5)
        assert await store.lease_activities(OTHER_APP, owner="o2", now=at(4), until=at(40), limit=5) == []
        waiting = await store.waiting_work(frozenset({OTHER_APP}), now=at(10))
        assert [(w.app_id, w.items) for w in waiting] == [(OTHER_APP, 1)]  # the operator sees it
        [taken] = await store.lease_activities(OTHER_APP, owner="o2", now=at(10), until=at(40), limit=5)
        assert taken.task == old.task and taken.token != old.token
        assert await _held(store, key) == [] and await _stored(store, key) == 1
        with pytest.raises(LeaseLost):
            await store.complete_activity(old, result(old, "stale"), claim=claim(now=11, until=50))
        won = await store.complete_activity(taken, result(taken, "fresh"), claim=claim(now=12, until=50))
        assert won is not None and inbox_names(won) == ["fresh"]
        assert await _stored(store, key) == 0


async def test_a_renewed_held_activity_is_not_taken(durable_url: str) -> None:
    key = InstanceKey(APP, "renewed")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a", until=5)
        await store.renew_leases([act.token], until=at(60))
        assert await store.lease_activities(OTHER_APP, owner="o2", now=at(10), until=at(40), limit=5) == []
        assert await _held(store, key) == ["a"]
        [taken] = await store.lease_activities(OTHER_APP, owner="o2", now=at(61), until=at(90), limit=5)
        assert taken.task == act.task


async def test_a_given_back_held_activity_waits_for_its_retry_time(durable_url: str) -> None:
    key = InstanceKey(APP, "back")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        await store.abandon_activity(act, retry_at=at(20))
        assert await _held(store, key) == [] and await _stored(store, key) == 1
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act, "stale"), claim=claim(now=1))
        assert await store.lease_activities(OTHER_APP, owner="o2", now=at(10), until=at(30), limit=5) == []
        [again] = await store.lease_activities(OTHER_APP, owner="o2", now=at(21), until=at(50), limit=5)
        won = await store.complete_activity(again, result(again), claim=claim(now=22, until=60))
        assert won is not None and inbox_names(won) == ["a"]


async def test_a_result_of_an_execution_that_continued_as_new_is_refused(durable_url: str) -> None:
    key = InstanceKey(APP, "can")
    async with mongo(durable_url) as store:
        _, [act, _] = await _running_with(store, key, "a", "b")
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
        assert await _held(store, key) == ["new"]
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act, "old"), claim=claim(now=2))
        won = await store.complete_activity(fresh, result(fresh), claim=claim(now=3))
        assert won is not None and inbox_names(won) == ["new"]


async def test_an_execution_that_ends_drops_its_held_activities(durable_url: str) -> None:
    key = InstanceKey(APP, "ends")
    async with mongo(durable_url) as store:
        _, [act] = await _running_with(store, key, "a")
        assert await store.send(msg(key, "stop"))
        lease = await lease_one(store, key, now=at(1))
        await store.commit_workflow(
            lease, commit_for(lease, status=COMPLETED, cancel_pending=True), now=at(1)
        )
        assert await _held(store, key) == []
        with pytest.raises(LeaseLost):
            await store.complete_activity(act, result(act), claim=claim(now=2))
        assert await store._d.inbox.count_documents({"instance_id": "ends"}) == 0


async def test_more_activities_than_a_parent_holds_are_stored(durable_url: str) -> None:
    key = InstanceKey(APP, "many")
    names = [f"a{n:02}" for n in range(MAX_HELD + 1)]
    async with mongo(durable_url) as store:
        before = await _committed_transactions(store)
        _, acts = await _running_with(store, key, *names, slots=len(names))
        assert await _committed_transactions(store) == before + 1  # the turn: a transaction
        assert await _held(store, key) == [] and await _stored(store, key) == len(names)
        got = await asyncio.gather(*(store.complete_activity(a, result(a), claim=claim(now=1)) for a in acts))
        delivered = [n for lease in got if lease is not None for n in inbox_names(lease)]
        stored = await store._d.inbox.count_documents({"instance_id": "many"})
        assert len(delivered) + stored == len(names) and await _stored(store, key) == 0


def _plans(plan: object) -> list[str]:
    """Every stage name in an explain plan."""
    if isinstance(plan, dict):
        return [str(plan.get("stage", "")), *(s for v in plan.values() for s in _plans(v))]
    if isinstance(plan, list):
        return [s for v in plan for s in _plans(v)]
    return []


async def test_lapsed_and_renewed_held_activities_are_found_by_index(durable_url: str) -> None:
    """Lease rounds and renewals look for held activities among every instance: that must be
    an index lookup, never a scan of the collection (the indexes hold only instances that hold
    activities)."""
    async with mongo(durable_url) as store:
        for n in range(3):
            await store.create_instance(new(InstanceKey(APP, f"idle-{n}")), replace_terminal=False)
        _, [act] = await _running_with(store, InstanceKey(APP, "busy"), "a")
        for query, index in (
            (lapsed_query(micros(at(100)), OTHER_APP), "held_until"),
            (lapsed_query(micros(at(100))), "held_until"),
            (renewal_query([act.token]), "held_token"),
        ):
            plan = (await store._d.instances.find(query).explain())["queryPlanner"]["winningPlan"]
            assert "COLLSCAN" not in _plans(plan) and "IXSCAN" in _plans(plan), plan
            assert index in str(plan)
            assert [d["instance_id"] async for d in store._d.instances.find(query)] == ["busy"]
        stats = await store._d.command("collStats", "instances")
        assert stats["nindexes"] >= 2 and stats["indexSizes"]["held_until"] > 0


async def test_a_message_whose_claim_takes_its_free_target_is_one_write(durable_url: str) -> None:
    key = InstanceKey(APP, "event")
    async with mongo(durable_url) as store:
        lease = await store.create_instance(new(key), replace_terminal=False, claim=claim())
        assert lease is not None
        await store.commit_workflow(lease, commit_for(lease), now=T0)  # waits for an event
        before = await _committed_transactions(store)
        delivered, won = await store.deliver(Message(target=key, event=raised("go")), claim=claim(now=1))
        assert delivered and won is not None and inbox_names(won) == ["go"]
        assert await _committed_transactions(store) == before  # no transaction
        assert await store._d.inbox.count_documents({"instance_id": "event"}) == 0
        await store.commit_workflow(won, commit_for(won, status=COMPLETED), now=at(2))
        assert await _committed_transactions(store) == before
        # Its target now busy elsewhere, a message is stored by a transaction instead.
        assert await store.send(msg(key, "wake"))
        await lease_one(store, key, owner="other", now=at(3), until=at(60))
        delivered, won = await store.deliver(Message(target=key, event=raised("late")), claim=claim(now=4))
        assert delivered and won is None
        assert await _committed_transactions(store) > before
        assert await store._d.inbox.count_documents({"instance_id": "event"}) == 2
