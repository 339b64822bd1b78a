"""Group commit of the SQLite store thread: batching, isolation of a failing call, order."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from backend.store.group_commit import GroupCommitter


@pytest.fixture
async def committer():
    gc = GroupCommitter()

    def connect() -> None:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.execute("CREATE TABLE t (v TEXT PRIMARY KEY)")
        gc.db = db

    await gc.call(connect)
    try:
        yield gc
    finally:
        gc.stop()


def insert(value: str):
    def fn(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return fn


def rows(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT v FROM t ORDER BY rowid")]


async def test_calls_queued_during_a_transaction_share_the_next_one(committer: GroupCommitter) -> None:
    gate = threading.Event()

    def blocked(db: sqlite3.Connection) -> str:
        gate.wait(10)
        return insert("first")(db)

    first = asyncio.ensure_future(committer.run(blocked))
    await asyncio.sleep(0.05)  # the store thread is inside `blocked` now
    rest = [asyncio.ensure_future(committer.run(insert(f"v{i}"))) for i in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == "first"
    assert await asyncio.gather(*rest) == [f"v{i}" for i in range(20)]
    assert committer.transactions == 2  # one for `first`, one for the twenty queued behind it
    assert await committer.run(rows) == ["first", *(f"v{i}" for i in range(20))]  # in queue order


async def test_a_failing_call_is_rolled_back_alone(committer: GroupCommitter) -> None:
    gate = threading.Event()

    def blocked(db: sqlite3.Connection) -> None:
        gate.wait(10)

    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES ('half')")
        raise LookupError("boom")

    hold = asyncio.ensure_future(committer.run(blocked))
    await asyncio.sleep(0.05)
    calls = [
        asyncio.ensure_future(committer.run(insert("a"))),
        asyncio.ensure_future(committer.run(half_then_fail)),
        asyncio.ensure_future(committer.run(insert("a"))),  # duplicate key: fails too
        asyncio.ensure_future(committer.run(insert("c"))),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await hold
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == "a" and results[3] == "c"
    assert isinstance(results[1], LookupError)
    assert isinstance(results[2], sqlite3.IntegrityError)
    assert committer.transactions == 2
    assert await committer.run(rows) == ["a", "c"]


async def test_a_failed_commit_fails_every_caller_of_the_batch(committer: GroupCommitter) -> None:
    gate = threading.Event()

    def blocked(db: sqlite3.Connection) -> None:
        gate.wait(10)

    def ends_the_transaction(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES ('lost')")
        db.execute("COMMIT")  # misbehaving call: the batch's RELEASE/COMMIT now fail

    hold = asyncio.ensure_future(committer.run(blocked))
    await asyncio.sleep(0.05)
    calls = [
        asyncio.ensure_future(committer.run(insert("x"))),
        asyncio.ensure_future(committer.run(ends_the_transaction)),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await hold
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, sqlite3.Error) for r in results), results
    assert await committer.run(insert("after")) == "after"  # the thread keeps serving
