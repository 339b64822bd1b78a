"""Store contract for the operator queries (backend/admin): the filtered, keyset-paged
listing, counts by status and the waiting-work report, on every store; the indexes each
listing uses (SQLite's query plan, MongoDB's explain()); the SQLite `name` migration."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.domain import applier
from backend.domain import events as ev
from backend.domain.model import InstanceKey, NewInstance
from backend.store import Store, open_store
from backend.store.base import ListedInstance, ListingCursor, ListingFilter
from tests.store.conftest import _concrete_url, _mongodb_params
from tests.store.test_contract import (
    APP,
    COMPLETED,
    OTHER_APP,
    PENDING,
    RUNNING,
    SUSPENDED,
    T0,
    activity,
    at,
    commit_for,
    drive,
    lease_one,
    msg,
)


def make(key: InstanceKey, name: str, now: datetime) -> NewInstance:
    return applier.new_instance(
        key,
        name=name,
        version=None,
        input_=ev.sv('"in"'),
        route=ev.router(key.app_id),
        now=now,
        start_at=None,
    )


# (app, id, name, created second, status after one turn or None for PENDING)
ROWS = [
    (APP, "a-1", "checkout", 1, None),
    (APP, "a-2", "refund", 2, RUNNING),
    (APP, "a-3", "checkout", 3, COMPLETED),
    (OTHER_APP, "b-1", "checkout", 3, None),  # same created time as a-3: the tie-break decides
    (APP, "a-4", "checkout", 3, None),
    (OTHER_APP, "b-2", "charge", 4, SUSPENDED),
    (APP, "x-9", "refund", 5, None),
]


async def seed(store: Store) -> None:
    for app, iid, name, second, status in ROWS:
        key = InstanceKey(app, iid)
        await store.create_instance(make(key, name, at(second)), replace_terminal=False)
        if status is not None:
            await drive(store, key, status, now=at(second), history=[ev.workflow_started(at(second))])


def order(rows: list[tuple[str, str, str, int, Any]]) -> list[tuple[str, str]]:
    """Newest first, then app ID and instance ID descending."""
    return [(r[0], r[1]) for r in sorted(rows, key=lambda r: (r[3], r[0], r[1]), reverse=True)]


async def page_all(store: Store, where: ListingFilter, size: int) -> list[ListedInstance]:
    out: list[ListedInstance] = []
    after: ListingCursor | None = None
    while True:
        rows = await store.list_instances(where, after=after, limit=size)
        out.extend(rows)
        if len(rows) < size:
            return out
        after = rows[-1].cursor


def keys(rows: list[ListedInstance]) -> list[tuple[str, str]]:
    return [(r.key.app_id, r.key.instance_id) for r in rows]


async def test_listing_orders_newest_first_and_pages_across_ties(store: Store) -> None:
    await seed(store)
    expected = order(ROWS)
    for size in (1, 2, 3, 100):
        assert keys(await page_all(store, ListingFilter(), size)) == expected, size
    first = (await store.list_instances(ListingFilter(), after=None, limit=1))[0]
    assert first.key == InstanceKey(APP, "x-9") and first.state.name == "refund"
    assert first.created_at == at(5)


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (ListingFilter(app_ids=frozenset({OTHER_APP})), lambda r: r[0] == OTHER_APP),
        (ListingFilter(app_ids=frozenset({APP, OTHER_APP})), lambda r: True),
        (ListingFilter(app_ids=frozenset()), lambda r: False),
        (ListingFilter(name="checkout"), lambda r: r[2] == "checkout"),
        (ListingFilter(statuses=frozenset({PENDING})), lambda r: r[4] is None),
        (ListingFilter(statuses=frozenset({RUNNING, SUSPENDED})), lambda r: r[4] in (RUNNING, SUSPENDED)),
        (ListingFilter(created_from=at(3)), lambda r: r[3] >= 3),
        (ListingFilter(created_to=at(3)), lambda r: r[3] < 3),
        (ListingFilter(created_from=at(2), created_to=at(4)), lambda r: 2 <= r[3] < 4),
        (ListingFilter(id_prefix="a-"), lambda r: r[1].startswith("a-")),
        (ListingFilter(id_prefix="a-%"), lambda r: False),  # no wildcard meaning
        (
            ListingFilter(app_ids=frozenset({APP}), name="checkout", statuses=frozenset({PENDING})),
            lambda r: r[0] == APP and r[2] == "checkout" and r[4] is None,
        ),
    ],
)
async def test_listing_filters(store: Store, where: ListingFilter, match: Any) -> None:
    await seed(store)
    expected = order([r for r in ROWS if match(r)])
    assert keys(await page_all(store, where, 2)) == expected


async def test_counts_by_app_and_status(store: Store) -> None:
    await seed(store)
    assert await store.count_instances(None) == {
        (APP, PENDING): 3,
        (APP, RUNNING): 1,
        (APP, COMPLETED): 1,
        (OTHER_APP, PENDING): 1,
        (OTHER_APP, SUSPENDED): 1,
    }
    assert await store.count_instances(frozenset({OTHER_APP})) == {
        (OTHER_APP, PENDING): 1,
        (OTHER_APP, SUSPENDED): 1,
    }
    assert await store.count_instances(frozenset()) == {}


async def test_waiting_work_counts_what_could_be_taken(store: Store) -> None:
    pending = InstanceKey(APP, "w-pending")
    await store.create_instance(make(pending, "wf", at(1)), replace_terminal=False)
    # A suspended instance holds its events: they are not waiting work.
    suspended = InstanceKey(APP, "w-suspended")
    await store.create_instance(make(suspended, "wf", at(1)), replace_terminal=False)
    await drive(store, suspended, SUSPENDED, now=at(1), history=[ev.workflow_started(at(1))])
    assert await store.send(msg(suspended, "held"))
    # A running instance that schedules an activity on the other app and gets an event.
    running = InstanceKey(APP, "w-running")
    await store.create_instance(make(running, "wf", at(2)), replace_terminal=False)
    lease = await lease_one(store, running, now=at(2))
    await store.commit_workflow(
        lease, commit_for(lease, status=RUNNING, activities=[activity(running, "charge")]), now=at(3)
    )
    # A timer not due yet is not waiting either.
    assert await store.send(msg(running, "later", visible_at=at(3600)))

    now = at(10)
    report = {w.app_id: w for w in await store.waiting_work(None, now=now)}
    assert set(report) == {APP, OTHER_APP}
    assert report[APP].items == 1  # the pending instance's start message
    assert report[OTHER_APP].items == 1  # the activity
    assert report[APP].oldest == at(1)  # the start's event time
    # SQLite records the commit's time; MongoDB the activity's ObjectId time (the real clock).
    assert report[OTHER_APP].oldest is not None
    assert [w.app_id for w in await store.waiting_work(frozenset({OTHER_APP}), now=now)] == [OTHER_APP]
    assert await store.waiting_work(frozenset(), now=now) == []

    # Due messages of a running instance count; once leased they do not.
    assert await store.send(msg(running, "now"))
    report = {w.app_id: w for w in await store.waiting_work(None, now=now)}
    assert report[APP].items == 2
    taken = await lease_one(store, running, now=now)
    report = {w.app_id: w for w in await store.waiting_work(None, now=now)}
    assert report[APP].items == 1
    await store.abandon_workflow(taken, retry_at=None)
    # The timer, once due.
    later = {w.app_id: w for w in await store.waiting_work(None, now=at(4000))}
    assert later[APP].items == 3


# -- indexes -------------------------------------------------------------------------------


PLANS = [
    ListingFilter(),
    ListingFilter(app_ids=frozenset({APP})),
    ListingFilter(name="checkout"),
    ListingFilter(statuses=frozenset({PENDING})),
    ListingFilter(app_ids=frozenset({APP}), created_from=at(2)),
]


async def test_sqlite_listing_uses_an_index_without_sorting(tmp_path: Path) -> None:
    from backend.store import sqlite_queries

    path = tmp_path / "plan.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await seed(store)
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        captured: list[tuple[str, list[object]]] = []

        class Spy:
            def execute(self, sql: str, args: list[object]) -> Any:
                captured.append((sql, list(args)))
                return db.execute(sql, args)

        for where in PLANS:
            captured.clear()

            sqlite_queries.list_instances(
                Spy(), where, ListingCursor(created=at(9).timestamp(), app_id="z", instance_id="z"), 10
            )  # type: ignore[arg-type]
            sql, args = captured[0]
            plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan or "PRIMARY KEY" in plan, (
                where,
                plan,
            )
            assert "TEMP B-TREE" not in plan, (where, plan)


async def test_sqlite_file_from_before_the_name_column_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = open_store(f"sqlite:///{path}?synchronous=normal")
    await store.open()
    try:
        await store.create_instance(make(InstanceKey(APP, "old-1"), "legacy", T0), replace_terminal=False)
        # More than one backfill batch.
        for n in range(1100):
            key = InstanceKey(OTHER_APP, f"many-{n:04d}")
            await store.create_instance(
                make(key, f"other-{n % 3}", T0 + timedelta(seconds=n)), replace_terminal=False
            )
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:  # back to the schema before the operator queries
        for index in ("instances_newest", "instances_name", "instances_status"):
            db.execute(f"DROP INDEX {index}")
        db.execute("ALTER TABLE instances DROP COLUMN name")
        db.execute("ALTER TABLE activities DROP COLUMN enqueued_at")
        db.commit()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        found = await store.list_instances(ListingFilter(name="legacy"), after=None, limit=10)
        assert [r.key.instance_id for r in found] == ["old-1"]
        others = await store.list_instances(ListingFilter(name="other-2"), after=None, limit=1000)
        assert len(others) == len([n for n in range(1100) if n % 3 == 2])
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert {"instances_newest", "instances_name", "instances_status"} <= {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }


@pytest.fixture(params=_mongodb_params())
async def mongo_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from backend.store.mongo import MongoStore

    store = open_store(_concrete_url(request.param, tmp_path, request))
    assert isinstance(store, MongoStore)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _stages(plan: Any) -> list[str]:
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "stage" in node:
                out.append(str(node["stage"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return out


async def test_mongodb_listing_is_an_index_scan_without_sort(mongo_store: Any) -> None:
    from backend.store.mongo import queries as mq

    await seed(mongo_store)
    db = mongo_store._d
    for where in PLANS:
        for after in (None, ListingCursor(created=10**18, app_id="z", instance_id="z")):
            cursor = db.instances.find(mq.listing_filter(where, after)).sort(mq.NEWEST_FIRST).limit(10)
            plan = await cursor.explain()
            stages = _stages(plan["queryPlanner"]["winningPlan"])
            assert "IXSCAN" in stages and "COLLSCAN" not in stages and "SORT" not in stages, (where, stages)


async def test_mongodb_documents_without_a_name_are_backfilled(mongo_store: Any) -> None:
    from backend.store.mongo import queries as mq

    await seed(mongo_store)
    db = mongo_store._d
    await db.instances.update_many({}, {"$unset": {"name": ""}})
    assert await mq.backfill_names(db) == len(ROWS)
    found = await mongo_store.list_instances(ListingFilter(name="charge"), after=None, limit=10)
    assert [r.key.instance_id for r in found] == ["b-2"]
    assert await mq.backfill_names(db) == 0
