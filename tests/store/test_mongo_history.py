"""Where the MongoDB store keeps history (store/mongo/history.py): small early turns inside the
instance document, the rest in the history collection; reads see one history either way.
Needs a MongoDB (STORE_TEST_MONGOD=1)."""

from __future__ import annotations

import pytest

from backend._proto import history_events_pb2 as hpb
from backend.domain import events as ev
from backend.domain.model import InstanceKey
from backend.store.mongo.history import INLINE_EVENTS, INLINE_TURN_BYTES
from tests.store.conftest import _mongodb_params
from tests.store.test_contract import APP, T0, at, commit_for, lease_one, msg, new
from tests.store.test_mongo_batch import mongo

pytestmark = pytest.mark.parametrize("durable_url", _mongodb_params(), indirect=True)

KEY = InstanceKey(APP, "hist")


def named(*names: str) -> list[hpb.HistoryEvent]:
    return [ev.event_raised(T0, n, ev.sv(f'"{n}"')) for n in names]


async def test_small_turns_stay_in_the_instance_and_large_ones_go_to_the_collection(durable_url: str) -> None:
    big = "x" * (INLINE_TURN_BYTES + 1)
    async with mongo(durable_url) as store:
        db = store._d
        await store.create_instance(new(KEY), replace_terminal=False)
        turns = [["t0-a", "t0-b"], [big], ["t2"], [f"t3-{n}" for n in range(INLINE_EVENTS)], ["t4"]]
        for n, names in enumerate(turns):
            if n:
                assert await store.send(msg(KEY, f"wake-{n}"))
            lease = await lease_one(store, KEY, now=at(n))
            await store.commit_workflow(lease, commit_for(lease, history=named(*names)), now=at(n))
        stored = [(d["seq"], d["end"]) async for d in db.history.find({"instance_id": "hist"}).sort("seq")]
        # The big turn, and from position INLINE_EVENTS on, the collection.
        assert stored == [(2, 3), (4, 4 + INLINE_EVENTS), (4 + INLINE_EVENTS, 5 + INLINE_EVENTS)]
        doc = await db.instances.find_one({"instance_id": "hist"})
        assert doc is not None and doc["hist_stored"] is True
        assert [(c["seq"], c["end"]) for c in doc["hist"]] == [(0, 2), (3, 4)]
        everything = [n for names in turns for n in names]
        assert [e.eventRaised.name for e in await store.get_history(KEY)] == everything
        for start in (1, 2, 3, 4, 40, len(everything) - 1, len(everything)):
            assert [e.eventRaised.name for e in await store.get_history(KEY, start)] == everything[start:]


async def test_a_workflow_that_stays_small_never_writes_the_history_collection(durable_url: str) -> None:
    async with mongo(durable_url) as store:
        db = store._d
        await store.create_instance(new(KEY), replace_terminal=False)
        lease = await lease_one(store, KEY, now=at(0))
        await store.commit_workflow(lease, commit_for(lease, history=named("a", "b")), now=at(0))
        assert await db.history.count_documents({}) == 0
        doc = await db.instances.find_one({"instance_id": "hist"})
        assert doc is not None and doc["hist_stored"] is False
        # Continue-as-new starts the history over: the inline part with it.
        assert await store.send(msg(KEY, "again"))
        lease = await lease_one(store, KEY, now=at(1))
        await store.commit_workflow(
            lease,
            commit_for(lease, history=named("fresh"), reset_history=True),
            now=at(1),
        )
        assert [e.eventRaised.name for e in await store.get_history(KEY)] == ["fresh"]
        doc = await db.instances.find_one({"instance_id": "hist"})
        assert doc is not None and [(c["seq"], c["end"]) for c in doc["hist"]] == [(0, 1)]


async def test_a_read_torn_by_a_commit_returns_a_prefix(durable_url: str) -> None:
    """The instance document and the history collection are read one after the other; a chunk
    the instance document did not yet know of (a commit in between) never leaves a hole."""
    async with mongo(durable_url) as store:
        db = store._d
        await store.create_instance(new(KEY), replace_terminal=False)
        events = [e.SerializeToString() for e in named("a", "b", "c", "d")]
        # As if read between two commits: [0, 2) inline, [3, 4) stored, [2, 3) not seen.
        await db.instances.update_one(
            {"instance_id": "hist"},
            {"$set": {"hist": [{"seq": 0, "end": 2, "events": events[:2]}], "hist_stored": True}},
        )
        await db.history.insert_one(
            {"app_id": APP, "instance_id": "hist", "seq": 3, "end": 4, "events": events[3:]}
        )
        assert [e.eventRaised.name for e in await store.get_history(KEY)] == ["a", "b"]
        assert [e.eventRaised.name for e in await store.get_history(KEY, 1)] == ["b"]
        assert await store.get_history(KEY, 2) == []
