"""MongoDB store specifics: group commit (store/mongo/batch.py) and the change feed
leaving out this server's own writes. Needs a MongoDB (STORE_TEST_MONGOD=1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from backend.domain.model import InstanceKey, Message
from backend.errors import AlreadyExists, LeaseLost
from backend.store import open_store
from backend.store.base import ActivityLease, Change, Claim
from backend.store.mongo import MongoStore
from backend.store.mongo.inbox import INLINE_MESSAGE_BYTES
from tests.store.conftest import _mongodb_params
from tests.store.test_contract import (
    APP,
    COMPLETED,
    OTHER_APP,
    SUSPENDED,
    T0,
    activity,
    at,
    commit_for,
    control,
    inbox_names,
    lease_all,
    lease_one,
    msg,
    new,
    raised,
)

pytestmark = pytest.mark.parametrize("durable_url", _mongodb_params(), indirect=True)


@contextlib.asynccontextmanager
async def mongo(url: str) -> AsyncIterator[MongoStore]:
    store = open_store(url)
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_concurrent_commits_share_transactions_and_each_is_fenced(durable_url: str) -> None:
    keys = [InstanceKey(APP, f"wf-{n}") for n in range(20)]
    async with mongo(durable_url) as store:
        for key in keys:
            await store.create_instance(new(key), replace_terminal=False)
        leases = await lease_all(store, now=T0, until=at(10))
        assert set(leases) == set(keys)
        # Two of them expire and are taken over by another owner: their commits must fail alone.
        lost = keys[:2]
        for key in lost:
            await store.abandon_workflow(leases[key], retry_at=None)
        taken = await lease_all(store, owner="other", now=at(1))
        assert set(taken) == set(lost)
        before = store._g.transactions
        outcomes = await asyncio.gather(
            *(
                store.commit_workflow(
                    leases[key],
                    commit_for(leases[key], history=[raised(f"{key.instance_id}-{n}") for n in range(3)]),
                    now=at(1),
                )
                for key in keys
            ),
            return_exceptions=True,
        )
        assert [isinstance(o, LeaseLost) for o in outcomes] == [k in lost for k in keys]
        assert store._g.transactions - before < len(keys) - len(lost)  # they shared transactions
        for key in keys:
            names = [e.eventRaised.name for e in await store.get_history(key)]
            assert names == ([] if key in lost else [f"{key.instance_id}-{n}" for n in range(3)])
            assert (await store.get_history(key, 2)) == (await store.get_history(key))[2:]


async def test_concurrent_starts_share_transactions_and_a_duplicate_fails_alone(durable_url: str) -> None:
    fresh = [InstanceKey(APP, f"new-{n}") for n in range(20)]
    done, running = InstanceKey(APP, "done"), InstanceKey(APP, "running")
    async with mongo(durable_url) as store:
        for key in (done, running):
            await store.create_instance(new(key), replace_terminal=False)
        leases = await lease_all(store, now=T0)
        await store.commit_workflow(leases[done], commit_for(leases[done], status=COMPLETED), now=T0)
        await store.abandon_workflow(leases[running], retry_at=None)
        before = store._g.transactions
        outcomes = await asyncio.gather(
            *(
                store.create_instance(new(k, input_=f"in-{k.instance_id}"), replace_terminal=True)
                for k in fresh
            ),
            store.create_instance(
                new(done, input_="again"), replace_terminal=True
            ),  # replaces the terminal one
            store.create_instance(new(running), replace_terminal=True),  # exists and is not terminal
            return_exceptions=True,
        )
        assert all(o is None for o in outcomes[:-1]), outcomes
        assert isinstance(outcomes[-1], AlreadyExists)
        assert store._g.transactions - before < len(fresh)  # the new instances shared transactions
        for key in fresh:
            state = await store.get_state(key)
            assert state is not None and state.input.value == f"in-{key.instance_id}"
        replaced = await store.get_state(done)
        assert replaced is not None and replaced.input.value == "again"
        started = await lease_all(store, now=at(1))
        assert set(started) == {*fresh, done, running}
        assert all(
            [i.event.WhichOneof("eventType") for i in started[k].inbox] == ["executionStarted"] for k in fresh
        )


async def test_concurrent_messages_share_transactions_and_a_missing_target_is_refused_alone(
    durable_url: str,
) -> None:
    keys = [InstanceKey(APP, f"wf-{n}") for n in range(20)]
    async with mongo(durable_url) as store:
        for key in keys:
            await store.create_instance(new(key), replace_terminal=False)
        before = store._g.transactions
        sent = await asyncio.gather(
            *(store.send(msg(key, f"e{n}")) for key in keys for n in range(2)),
            store.send(msg(InstanceKey(APP, "nobody"), "lost")),
        )
        assert sent == [True] * (2 * len(keys)) + [False]
        assert store._g.transactions - before < len(keys)  # they shared transactions
        leases = await lease_all(store, now=at(1))
        assert set(leases) == set(keys)
        for key in keys:  # events wait for the first turn (PENDING takes only its start)
            assert inbox_names(leases[key]) == ["executionStarted"]
            await store.commit_workflow(leases[key], commit_for(leases[key]), now=at(1))
        leases = await lease_all(store, now=at(2))
        for key in keys:  # each instance's messages, in the order they were sent
            assert inbox_names(leases[key]) == ["e0", "e1"]


async def test_activity_results_batch_with_a_lost_one_failing_alone(durable_url: str) -> None:
    parent = InstanceKey(APP, "fan")
    async with mongo(durable_url) as store:
        await store.create_instance(new(parent), replace_terminal=False)
        [lease] = (await lease_all(store, now=T0)).values()
        acts = [activity(parent, f"a{n}", task_id=n) for n in range(10)]
        await store.commit_workflow(lease, commit_for(lease, activities=acts), now=T0)
        held = await store.lease_activities(OTHER_APP, owner="o1", now=T0, until=at(5), limit=100)
        assert len(held) == 10
        # One expires and another owner takes it.
        stolen = await store.lease_activities(OTHER_APP, owner="o2", now=at(6), until=at(60), limit=1)
        assert len(stolen) == 1
        results = await asyncio.gather(
            *(
                store.complete_activity(a, Message(target=parent, event=raised(f"r{a.task.request.taskId}")))
                for a in held
            ),
            return_exceptions=True,
        )
        lost = [a.id == stolen[0].id for a in held]
        assert [isinstance(r, LeaseLost) for r in results] == lost
        [turn] = (await lease_all(store, now=at(7))).values()
        got = sorted(i.event.eventRaised.name for i in turn.inbox)
        assert got == sorted(
            f"r{a.task.request.taskId}" for a, gone in zip(held, lost, strict=True) if not gone
        )
        await store.commit_workflow(turn, commit_for(turn, status=COMPLETED), now=at(7))


async def test_change_feed_leaves_out_our_own_writes(durable_url: str) -> None:
    async with mongo(durable_url) as ours, mongo(durable_url) as theirs:
        feeds = {"ours": ours.changes(), "theirs": theirs.changes()}
        seen: dict[str, list[Change]] = {"ours": [], "theirs": []}
        arrived = asyncio.Event()

        async def collect(name: str) -> None:
            feed = feeds[name]
            assert feed is not None
            async for change in feed:
                seen[name].append(change)
                arrived.set()

        tasks = [asyncio.create_task(collect(n)) for n in feeds]
        try:
            await asyncio.sleep(0.5)  # the change streams are open before the writes
            key = InstanceKey(APP, "mine")
            await ours.create_instance(new(key), replace_terminal=False)
            [lease] = (await lease_all(ours, now=T0)).values()
            await ours.commit_workflow(lease, commit_for(lease, history=[raised("x")]), now=T0)
            # A write by the other server is the marker that our feed has caught up.
            await theirs.create_instance(new(InstanceKey(APP, "theirs")), replace_terminal=False)
            async with asyncio.timeout(20):
                while (
                    Change(app_id=APP, instance_id="theirs") not in seen["ours"]
                    or seen["theirs"].count(Change(app_id=APP, instance_id="mine")) < 2  # create, commit
                ):
                    await arrived.wait()
                    arrived.clear()
            assert Change(app_id=APP, instance_id="mine") not in seen["ours"]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _parents_with_leased_activities(
    store: MongoStore, parents: list[InstanceKey], each: int
) -> list[ActivityLease]:
    """Each parent running with `each` activities (named <parent>-a<n>), all leased to o1."""
    for p in parents:
        await store.create_instance(new(p), replace_terminal=False)
    leases = await lease_all(store, now=T0)
    for p in parents:
        acts = [activity(p, f"{p.instance_id}-a{n}", task_id=n) for n in range(each)]
        await store.commit_workflow(leases[p], commit_for(leases[p], activities=acts), now=T0)
    held = await store.lease_activities(OTHER_APP, owner="o1", now=T0, until=at(30), limit=100)
    assert len(held) == each * len(parents)
    return held


async def test_results_for_many_parents_in_one_batch_keep_each_inbox_in_order(durable_url: str) -> None:
    parents = [InstanceKey(APP, f"p{n}") for n in range(6)]
    async with mongo(durable_url) as store:
        held = await _parents_with_leased_activities(store, parents, 3)
        before = store._g.transactions
        await asyncio.gather(
            *(
                store.complete_activity(a, Message(target=a.task.parent, event=raised(a.task.request.name)))
                for a in held
            )
        )
        assert store._g.transactions - before < len(held)
        for p in parents:  # a message sent afterwards queues behind the results
            assert await store.send(Message(target=p, event=raised(f"{p.instance_id}-last")))
        turns = await lease_all(store, now=at(1))
        for p in parents:
            names = [i.event.eventRaised.name for i in turns[p].inbox]
            assert sorted(names[:3]) == [f"{p.instance_id}-a{n}" for n in range(3)]
            assert names[3:] == [f"{p.instance_id}-last"]


async def test_a_document_locked_by_an_open_transaction_holds_up_only_its_own_items(durable_url: str) -> None:
    """A killed server's transaction stays open on mongod for a minute: results for the
    instance it locks wait, those for other instances in the same batch do not."""
    from urllib.parse import urlsplit

    from pymongo import AsyncMongoClient

    locked, free = InstanceKey(APP, "locked"), InstanceKey(APP, "free")
    async with mongo(durable_url) as store:
        for key in (locked, free):
            await store.create_instance(new(key), replace_terminal=False)
        leases = await lease_all(store, now=T0)
        for key in (locked, free):
            acts = [activity(key, f"{key.instance_id}-{n}", task_id=n) for n in range(2)]
            await store.commit_workflow(leases[key], commit_for(leases[key], activities=acts), now=T0)
        held = await store.lease_activities(OTHER_APP, owner="o1", now=T0, until=at(600), limit=100)
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(durable_url)
        orphan = client.start_session()
        try:
            db = client[urlsplit(durable_url).path.lstrip("/")]
            await orphan.start_transaction()
            await db.instances.update_one(
                {"app_id": APP, "instance_id": locked.instance_id}, {"$set": {"x": 1}}, session=orphan
            )
            done = {
                a.id: asyncio.ensure_future(
                    store.complete_activity(
                        a, Message(target=a.task.parent, event=raised(a.task.request.name))
                    )
                )
                for a in held
            }
            mine = [done[a.id] for a in held if a.task.parent == free]
            theirs = [done[a.id] for a in held if a.task.parent == locked]
            await asyncio.wait_for(asyncio.gather(*mine), 30)  # well inside the transaction's minute
            assert not any(f.done() for f in theirs)
            await orphan.abort_transaction()
            await asyncio.wait_for(asyncio.gather(*theirs), 60)
        finally:
            await orphan.end_session()
            await client.close()
        turns = await lease_all(store, now=at(1))
        for key in (locked, free):
            assert sorted(i.event.eventRaised.name for i in turns[key].inbox) == [
                f"{key.instance_id}-{n}" for n in range(2)
            ]


def _result(act: ActivityLease) -> Message:
    return Message(target=act.task.parent, event=raised(act.task.request.name))


async def test_claimed_messages_are_held_in_the_instance_document(durable_url: str) -> None:
    """A start leased at creation and a result whose claim wins never touch the inbox
    collection: the instance document holds them (`inline`) and the turn's commit removes
    them in its own update."""
    key = InstanceKey(APP, "inline")
    claim = Claim(owner="o1", until=at(30), slots={APP: 1}, now=T0)
    async with mongo(durable_url) as store:
        db = store._d
        lease = await store.create_instance(new(key), replace_terminal=False, claim=claim)
        assert lease is not None and inbox_names(lease) == ["executionStarted"]
        doc = await db.instances.find_one({"instance_id": "inline"})
        assert doc is not None and doc["inline_n"] == 1 and doc["inbox_n"] == 0
        assert await db.inbox.count_documents({"instance_id": "inline"}) == 0
        task = activity(key, "a", task_id=1)
        await store.commit_workflow(lease, commit_for(lease, activities=[task]), now=T0)
        doc = await db.instances.find_one({"instance_id": "inline"})
        assert doc is not None and doc["inline"] == [] and doc["inline_n"] == 0
        [act] = await store.lease_activities(OTHER_APP, owner="o1", now=T0, until=at(30), limit=10)
        won = await store.complete_activity(act, _result(act), claim=claim)
        assert won is not None and inbox_names(won) == ["a"]
        assert await db.inbox.count_documents({"instance_id": "inline"}) == 0
        # A turn that writes only its instance document (its history and messages held
        # there) commits as that one update: no transaction. A new instance likewise.
        before = await _committed_transactions(store)
        await store.commit_workflow(
            won, commit_for(won, status=COMPLETED, history=[raised("end")]), now=at(1)
        )
        await store.create_instance(new(InstanceKey(APP, "inline-2")), replace_terminal=False, claim=claim)
        assert await _committed_transactions(store) == before
        doc = await db.instances.find_one({"instance_id": "inline"})
        assert doc is not None and doc["inline"] == [] and doc["inbox_n"] == 0
        assert [e.eventRaised.name for e in await store.get_history(key)] == ["end"]
        with pytest.raises(LeaseLost):  # the update is fenced like any commit
            await store.commit_workflow(won, commit_for(won, status=COMPLETED), now=at(1))


async def _committed_transactions(store: MongoStore) -> int:
    status = await store._d.client.admin.command("serverStatus")
    return int(status["transactions"]["totalCommitted"])


async def test_results_with_claims_for_many_parents_in_one_batch(durable_url: str) -> None:
    """Results for many parents in one transaction (the bulk path of store/mongo/inbox.py):
    each free parent is claimed once with all its results held inline, a busy parent and a
    suspended one get theirs stored, and nothing is lost or doubled."""
    parents = [InstanceKey(APP, f"c{n}") for n in range(5)]
    busy, asleep = parents[3], parents[4]
    async with mongo(durable_url) as store:
        held = await _parents_with_leased_activities(store, parents, 2)
        # `busy` is leased elsewhere; `asleep` is suspended (waiting: not claimable).
        assert await store.send(msg(busy, "wake"))
        [elsewhere] = await store.lease_workflows(
            APP, owner="other", now=T0, until=at(60), limit=1, instance_ids=[busy.instance_id]
        )
        assert await store.send(control(asleep, "suspend"))
        [nap] = await store.lease_workflows(
            APP, owner="o1", now=T0, until=at(5), limit=1, instance_ids=[asleep.instance_id]
        )
        await store.commit_workflow(nap, commit_for(nap, status=SUSPENDED), now=T0)
        claim = Claim(owner="o1", until=at(30), slots={APP: 10}, now=at(1))
        before = store._g.transactions
        got = await asyncio.gather(*(store.complete_activity(a, _result(a), claim=claim) for a in held))
        assert store._g.transactions - before < len(held)
        won = [lease for lease in got if lease is not None]
        by_key: dict[InstanceKey, list[str]] = {}
        for lease in won:
            assert lease.key not in by_key, "a parent was claimed twice"
            by_key[lease.key] = sorted(i.event.eventRaised.name for i in lease.inbox)
        # Each free parent is claimed once; the lease holds every result delivered with it,
        # and those of a later transaction (if the results were split) wait in the collection.
        assert set(by_key) == set(parents[:3])
        await store.commit_workflow(elsewhere, commit_for(elsewhere), now=at(2))
        for lease in won:
            await store.commit_workflow(lease, commit_for(lease), now=at(2))
        rest = await lease_all(store, now=at(3))
        assert asleep not in rest
        assert await store._d.inbox.count_documents({"instance_id": asleep.instance_id}) == 2
        taken = {k: sorted(v) for k, v in by_key.items()}
        for k, lease in rest.items():
            taken.setdefault(k, []).extend(sorted(i.event.eventRaised.name for i in lease.inbox))
        for p in parents[:4]:
            assert sorted(taken[p]) == [f"{p.instance_id}-a{n}" for n in range(2)]


async def test_only_small_deliveries_are_held_inline_and_never_two(durable_url: str) -> None:
    """A large result (or start) is stored in the inbox collection and its claim takes
    nothing; a claim never wins an instance still holding a lapsed lease's inline messages
    (the instance document stays far from MongoDB's 16 MB limit)."""
    key = InstanceKey(APP, "caps")
    claim = Claim(owner="o1", until=at(30), slots={APP: 1}, now=T0)
    big = "x" * (INLINE_MESSAGE_BYTES + 1)
    async with mongo(durable_url) as store:
        db = store._d
        lease = await store.create_instance(new(key, input_=big), replace_terminal=False, claim=claim)
        assert lease is not None and inbox_names(lease) == ["executionStarted"]
        assert await db.inbox.count_documents({"instance_id": "caps"}) == 1
        tasks = [activity(key, n, task_id=i) for i, n in enumerate(["a", "b", "c"])]
        await store.commit_workflow(lease, commit_for(lease, activities=tasks), now=T0)
        acts = await store.lease_activities(OTHER_APP, owner="o1", now=T0, until=at(30), limit=10)
        by_name = {a.task.request.name: a for a in acts}
        large = Message(target=key, event=raised(big))
        assert await store.complete_activity(by_name["a"], large, claim=claim) is None
        assert await db.inbox.count_documents({"instance_id": "caps"}) == 1
        [took] = await store.lease_workflows(
            APP, owner="o1", now=T0, until=at(5), limit=1, instance_ids=["caps"]
        )
        await store.commit_workflow(took, commit_for(took), now=T0)
        # A small result's claim wins and holds it inline; its lease lapses unused.
        lapsed = await store.complete_activity(
            by_name["b"],
            _result(by_name["b"]),
            claim=Claim(owner="o1", until=at(2), slots={APP: 1}, now=at(1)),
        )
        assert lapsed is not None
        later = Claim(owner="o2", until=at(40), slots={APP: 1}, now=at(3))
        assert await store.complete_activity(by_name["c"], _result(by_name["c"]), claim=later) is None
        doc = await db.instances.find_one({"instance_id": "caps"})
        assert doc is not None and [d["_id"] for d in doc["inline"]] and doc["inline_n"] == 1
        # Both reach the next turn, in delivery order.
        nxt = await lease_one(store, key, owner="o3", now=at(4))
        assert inbox_names(nxt) == ["b", "c"]
