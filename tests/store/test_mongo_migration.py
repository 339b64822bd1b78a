"""The MongoDB store's schema version (store/mongo/schema.py): a database written by
version 1 (no `meta`, one history document per event) or version 2 (no message counts) is
upgraded in place at open and its workflows in flight go on; a newer version is refused; a
new database records its version. Needs a MongoDB (STORE_TEST_MONGOD=1)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel

from backend.domain import events as ev
from backend.domain.model import Gate, InstanceKey, Message
from backend.errors import InvalidArgument
from backend.store import open_store
from backend.store.base import Claim
from backend.store.mongo import MongoStore
from backend.store.mongo.codec import micros
from backend.store.mongo.schema import VERSION
from tests.store.conftest import _mongodb_params
from tests.store.test_contract import (
    APP,
    COMPLETED,
    OTHER_APP,
    RUNNING,
    T0,
    activity,
    at,
    commit_for,
    lease_all,
    lease_one,
    msg,
    new,
    raised,
    with_status,
)

pytestmark = pytest.mark.parametrize("durable_url", _mongodb_params(), indirect=True)

KEY = InstanceKey(APP, "in-flight")


def _database(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _running_instance(*, history_len: int) -> dict[str, object]:
    """KEY's instance document as versions 1 and 2 stored it: running, unleased."""
    return {
        "app_id": KEY.app_id,
        "instance_id": KEY.instance_id,
        "status": int(RUNNING),
        "created_at": micros(T0),
        "state": with_status(new(KEY).state, RUNNING).SerializeToString(),
        "history_len": history_len,
        "lease_owner": None,
        "lease_token": None,
        "lease_until": None,
        "generation": 2,
    }


def _queued_activity() -> dict[str, object]:
    """An unleased activity of KEY, as versions 1 and 2 stored it."""
    task = activity(KEY, "pending", task_id=1)
    return {
        "_id": ObjectId(),
        "app_id": task.app_id,
        "parent_app": KEY.app_id,
        "parent_id": KEY.instance_id,
        "request": task.request.SerializeToString(),
        "router": task.router.SerializeToString(),
        "not_before": 0,
        "lease_owner": None,
        "lease_token": None,
        "lease_until": None,
    }


async def _write_version_1(url: str) -> None:
    """What a version-1 server left behind: an instance that ran one turn (two events,
    one activity scheduled and one already answered), in that version's layout."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    try:
        db = client[_database(url)]
        a = ASCENDING
        await db.history.create_indexes(
            [IndexModel([("app_id", a), ("instance_id", a), ("seq", a)], unique=True, name="key_seq")]
        )
        await db.instances.insert_one(
            {
                **_running_instance(history_len=2),
                "inbox_seq": 1,
                "propagated": None,
            }
        )
        await db.history.insert_many(
            [
                {
                    "app_id": KEY.app_id,
                    "instance_id": KEY.instance_id,
                    "seq": n,
                    "event": e.SerializeToString(),
                }
                for n, e in enumerate([ev.workflow_started(T0), raised("v1-turn")])
            ]
        )
        await db.inbox.insert_one(
            {
                "_id": ObjectId(),
                "app_id": KEY.app_id,
                "instance_id": KEY.instance_id,
                "seq": 0,
                "gate": int(Gate.EVENT),
                "visible_at": 0,
                "event": raised("v1-result").SerializeToString(),
            }
        )
        await db.activities.insert_one(_queued_activity())
    finally:
        await client.close()


async def _meta_and_indexes(url: str) -> tuple[dict[str, object] | None, set[str], int]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    try:
        db = client[_database(url)]
        meta = await db.meta.find_one({"_id": "schema"})
        names = {str(i["name"]) async for i in await db.history.list_indexes()}
        old = await db.history.count_documents({"event": {"$exists": True}})
        return meta, names, old
    finally:
        await client.close()


async def test_version_1_database_is_upgraded_in_place_and_its_workflows_go_on(durable_url: str) -> None:
    await _write_version_1(durable_url)
    store = open_store(durable_url)
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        assert store.schema_found == 1
        meta, indexes, old = await _meta_and_indexes(durable_url)
        assert meta is not None and meta["version"] == VERSION
        assert "key_end" in indexes and "key_seq" not in indexes
        assert old == 0
        # The history written by version 1 reads back whole and from any position.
        names = [ev.kind(e) for e in await store.get_history(KEY)]
        assert names == ["workflowStarted", "eventRaised"]
        assert [e.eventRaised.name for e in await store.get_history(KEY, 1)] == ["v1-turn"]
        # The activity version 1 queued runs, its result joins the one already waiting.
        [act] = await store.lease_activities(OTHER_APP, owner="new", now=T0, until=at(30), limit=10)
        assert act.task.request.name == "pending"
        await store.complete_activity(act, Message(target=KEY, event=raised("v2-result")))
        [lease] = (await lease_all(store, now=at(1))).values()
        assert lease.history_len == 2
        assert [i.event.eventRaised.name for i in lease.inbox] == ["v1-result", "v2-result"]
        await store.commit_workflow(
            lease,
            commit_for(lease, status=COMPLETED, history=[raised("v2-turn"), raised("done")]),
            now=at(1),
        )
        state = await store.get_state(KEY)
        assert state is not None and state.workflowStatus == COMPLETED
        history = await store.get_history(KEY)
        assert [e.eventRaised.name for e in history[1:]] == ["v1-turn", "v2-turn", "done"]
        assert [e.eventRaised.name for e in await store.get_history(KEY, 2)] == ["v2-turn", "done"]
    finally:
        await store.close()
    # Opening again finds the current version and changes nothing.
    again = open_store(durable_url)
    assert isinstance(again, MongoStore)
    await again.open()
    try:
        assert again.schema_found == VERSION
        assert len(await again.get_history(KEY)) == 4
    finally:
        await again.close()


async def test_new_database_records_the_schema_version(durable_url: str) -> None:
    store = open_store(durable_url)
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        assert store.schema_found == 0
        meta, indexes, _ = await _meta_and_indexes(durable_url)
        assert meta is not None and meta["version"] == VERSION
        assert "key_end" in indexes
    finally:
        await store.close()


async def test_a_newer_schema_version_is_refused_by_name(durable_url: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(durable_url)
    try:
        await client[_database(durable_url)].meta.insert_one({"_id": "schema", "version": VERSION + 1})
    finally:
        await client.close()
    store = open_store(durable_url)
    with pytest.raises(InvalidArgument, match=f"schema version {VERSION + 1}"):
        await store.open()
    await store.close()


async def _write_version_2(url: str) -> None:
    """What a version-2 server left behind: a running instance with two events waiting in
    the inbox collection, one activity queued; no message counts on the instance."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    try:
        db = client[_database(url)]
        await db.meta.insert_one({"_id": "schema", "version": 2})
        await db.instances.insert_one(
            {
                **_running_instance(history_len=1),
                "inbox_seq": 2,
                "inbox_front": 0,
                "propagated": None,
                "name": "wf",
                "by": "v2",
            }
        )
        await db.history.insert_one(
            {
                **{"app_id": KEY.app_id, "instance_id": KEY.instance_id},
                "seq": 0,
                "end": 1,
                "events": [ev.workflow_started(T0).SerializeToString()],
            }
        )
        await db.inbox.insert_many(
            [
                {
                    "_id": ObjectId(),
                    "app_id": KEY.app_id,
                    "instance_id": KEY.instance_id,
                    "seq": n,
                    "gate": int(Gate.EVENT),
                    "visible_at": 0,
                    "event": raised(name).SerializeToString(),
                    "by": "v2",
                }
                for n, name in enumerate(["v2-a", "v2-b"])
            ]
        )
        await db.activities.insert_one({**_queued_activity(), "by": "v2"})
    finally:
        await client.close()


async def test_version_2_messages_are_never_skipped_after_the_upgrade(durable_url: str) -> None:
    """Version 2 kept no count of an instance's stored messages: after the upgrade its
    claims read the collection whatever the count says, so a turn that takes one of its
    two old events, a new event and a claimed result leave nothing behind."""
    await _write_version_2(durable_url)
    store = open_store(durable_url)
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        assert store.schema_found == 2
        lease = await lease_one(store, KEY, now=at(1))
        assert [i.event.eventRaised.name for i in lease.inbox] == ["v2-a", "v2-b"]
        await store.commit_workflow(
            lease, commit_for(lease, history=[raised("took a")], consumed=[lease.inbox[0].id]), now=at(1)
        )
        # The history version 2 stored and the turn's new part (held inline) read as one.
        assert [ev.kind(e) for e in await store.get_history(KEY)] == ["workflowStarted", "eventRaised"]
        assert [e.eventRaised.name for e in await store.get_history(KEY, 1)] == ["took a"]
        assert await store.send(msg(KEY, "v3"))
        [act] = await store.lease_activities(OTHER_APP, owner="w", now=at(2), until=at(30), limit=10)
        won = await store.complete_activity(
            act,
            Message(target=KEY, event=raised("result")),
            claim=Claim(owner="w", until=at(30), slots={APP: 1}, now=at(2)),
        )
        assert won is not None
        assert [i.event.eventRaised.name for i in won.inbox] == ["v2-b", "v3", "result"]
    finally:
        await store.close()
