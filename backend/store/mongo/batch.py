"""Group commit for the MongoDB store: new instances, client messages (raised events,
terminate/suspend/resume), turn commits and activity results that arrive while a
transaction is being committed share the next one.

A majority, journaled commit costs the same for one item as for fifty, and so do
the few merged writes of a batch (store/mongo/writes.py: one bulk instance
update, one history insert, one inbox delete, ...). Each item is still fenced by
its own lease token and fails alone: when a fence fails, the batch is aborted,
the held leases are read inside a new transaction and the batch runs again
without the lost ones (they get LeaseLost). Any other error runs the items one
by one, so that the error reaches only the item that caused it. A caller is
answered only after its transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from backend.domain.model import InstanceKey
from backend.errors import LeaseLost, Unavailable
from backend.store.mongo.codec import Doc, T, key_filter, unavailable
from backend.store.mongo.held import held_tokens, is_held
from backend.store.mongo.inbox import Delivery
from backend.store.mongo.lone import COMMITTED, Committed, Lone
from backend.store.mongo.writes import FenceMismatch, Result, Send, Start, Turn, Writes

MAX_BATCH = 64  # items per transaction: bounds the transaction's size and its retry cost
ATTEMPTS_BEFORE_SPLIT = 3  # transaction attempts of a batch before its instances commit apart
SPLIT_WAIT = 1.0  # seconds the queue waits for a split batch before it goes on without it
MAX_BYTES = 8 * 1024 * 1024  # and its payload (a transaction's oplog entries are 16 MB each)

Tx = Callable[[Callable[[AsyncClientSession], Awaitable[T]]], Awaitable[T]]


@dataclass(eq=False)
class _Item:
    work: Turn | Result | Start | Send
    size: int
    key: InstanceKey = field(init=False)  # the instance whose document it writes
    future: asyncio.Future[Committed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def __post_init__(self) -> None:
        work = self.work
        self.key = (
            work.commit.key
            if isinstance(work, Turn)
            else work.key
            if isinstance(work, Start)
            else work.message.target
        )
        # A cancelled caller no longer reads its outcome: mark it retrieved.
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())


class GroupCommit:
    def __init__(self, db: AsyncDatabase[Doc], writes: Writes, tx: Tx[Any], lone: Lone) -> None:
        self._db = db
        self._writes = writes
        self._lone = lone
        self._tx = tx
        self._queue: list[_Item] = []
        self._runner: asyncio.Task[None] | None = None
        # Instances whose items still commit apart (a split batch that outlived SPLIT_WAIT),
        # with the items that came for them since: they wait their turn, not in a batch.
        self._stuck: dict[InstanceKey, list[_Item]] = {}
        self._apart: set[asyncio.Task[None]] = set()
        self.transactions = 0  # committed batches, for tests and stats

    async def submit(self, work: Turn | Result | Start | Send, size: int) -> Committed:
        """Commit `work` with whatever else is queued."""
        item = _Item(work, size)
        self._queue.append(item)
        self._start()
        # The batch goes on if this caller is cancelled: its outcome is then dropped.
        return await asyncio.shield(item.future)

    def _start(self) -> None:
        if self._queue and (self._runner is None or self._runner.done()):
            self._runner = asyncio.create_task(self._run(), name="mongo-group-commit")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        for task in [*([runner] if runner is not None else []), *self._apart]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for item in [*self._queue, *(i for items in self._stuck.values() for i in items)]:
            _settle(item, RuntimeError("store is closed"))
        self._queue.clear()
        self._stuck.clear()

    async def _run(self) -> None:
        while self._queue:
            batch: list[_Item] = []
            size = 0
            while (
                self._queue
                and len(batch) < MAX_BATCH
                and (not batch or size + self._queue[0].size <= MAX_BYTES)
            ):
                item = self._queue.pop(0)
                if item.key in self._stuck:
                    self._stuck[item.key].append(item)
                    continue
                batch.append(item)
                size += item.size
            if not batch:
                continue
            try:
                await self._commit(batch)
            except BaseException as err:  # cancelled (close): nobody may wait forever
                for item in batch:
                    _settle(item, err if isinstance(err, Exception) else RuntimeError("store is closed"))
                raise

    async def _commit(self, batch: list[_Item]) -> None:
        if len(batch) == 1 and await self._alone(batch[0]):
            return
        try:
            try:
                delivery = await self._once(batch, lambda s: self._apply(s, batch))
                lost: list[_Item] = []
            except FenceMismatch:
                lost, delivery = await self._once(batch, lambda s: self._apply_held(s, batch))
        except Unavailable as err:  # the database, not an item: everyone hears of it
            for item in batch:
                _settle(item, err)
            return
        except _Duplicate as err:
            if await self._without_existing(batch, err.key_error):
                return
            await self._each_alone(batch, err)
            return
        except Exception as err:
            await self._each_alone(batch, err)
            return
        self.transactions += 1
        for item in batch:
            if any(item is x for x in lost):
                _settle(item, LeaseLost(_lost_message(item.work)))
            elif isinstance(item.work, Send):
                claim = item.work.claim
                lease = None if claim is None else delivery.leases.get(claim.token)
                _settle(item, None, Committed(delivered=item.key not in delivery.missing, lease=lease))
            elif isinstance(item.work, Result) and item.work.claim is not None:
                _settle(item, None, Committed(lease=delivery.leases.get(item.work.claim.token)))
            else:
                _settle(item, None)

    async def _alone(self, item: _Item) -> bool:
        """Commit an item alone in its batch as its one write if it is one (store/mongo/lone.py)."""
        try:
            outcome = await self._lone.commit(item.work)
        except Exception as err:
            _settle(item, err)
            return True
        if outcome is None:
            return False
        self.transactions += 1
        _settle(item, None, outcome)
        return True

    async def _without_existing(self, batch: list[_Item], key_error: DuplicateKeyError) -> bool:
        """New instances that exist get the duplicate key error; the rest commit together.
        False if none exists (the duplicate came from elsewhere)."""
        starts = [i for i in batch if isinstance(i.work, Start)]
        try:
            with unavailable():
                rows = self._db.instances.find(
                    {"$or": [key_filter(i.key) for i in starts]},
                    projection={"_id": 0, "app_id": 1, "instance_id": 1},
                )
                found = {InstanceKey(d["app_id"], d["instance_id"]) async for d in rows}
        except Unavailable as err:
            for item in batch:
                _settle(item, err)
            return True
        existing = [i for i in starts if i.key in found]
        if not existing:
            return False
        for item in existing:
            _settle(item, key_error)
        rest = [i for i in batch if not any(i is x for x in existing)]
        if rest:
            await self._commit(rest)
        return True

    async def _each_alone(self, batch: list[_Item], err: Exception) -> None:
        """After an error: each instance's items on their own, so that it reaches only its cause."""
        groups = _by_key(batch)
        if len(groups) > 1:
            await self._split(groups)
        elif len(batch) > 1:
            for item in batch:  # one by one: an error reaches only its own caller
                await self._commit([item])
        else:
            _settle(batch[0], err.key_error if isinstance(err, _Duplicate) else err)

    async def _once(self, batch: list[_Item], fn: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """A batch's transaction, retried a few times on conflicts: a conflict that lasts (a
        document an orphaned transaction holds for a minute) must not hold up the items of
        other instances. Items of one instance are retried as any transaction is."""
        calls = 0
        several = len({i.key for i in batch}) > 1
        starts = any(isinstance(i.work, Start) for i in batch)

        async def attempt(s: AsyncClientSession) -> T:
            nonlocal calls
            calls += 1
            if several and calls > ATTEMPTS_BEFORE_SPLIT:
                raise _Split
            try:
                return await fn(s)
            except DuplicateKeyError as err:
                if starts:  # most likely an instance that exists: no use running it again
                    raise _Duplicate(err) from err
                raise

        result: T = await self._tx(attempt)
        return result

    async def _split(self, groups: list[list[_Item]]) -> None:
        """Each instance's items in a transaction of their own, concurrently. Those not done
        within SPLIT_WAIT go on apart from the queue, and later items for their instance wait
        for them: the rest of the server's commits do not wait behind one stuck document."""
        tasks = {asyncio.create_task(self._commit(g), name="mongo-commit-apart"): g for g in groups}
        _, pending = await asyncio.wait(tasks, timeout=SPLIT_WAIT)
        for task in pending:
            key = tasks[task][0].key
            self._stuck.setdefault(key, [])
            self._apart.add(task)
            task.add_done_callback(functools.partial(self._released, key=key, group=tasks[task]))

    def _released(self, task: asyncio.Task[None], *, key: InstanceKey, group: list[_Item]) -> None:
        self._apart.discard(task)
        if task.cancelled() or task.exception() is not None:
            for item in group:
                _settle(item, RuntimeError("store is closed"))
        self._queue[0:0] = self._stuck.pop(key, [])
        self._start()

    async def _apply(self, s: AsyncClientSession, batch: list[_Item]) -> Delivery:
        return await self._writes.apply(
            s,
            [i.work for i in batch if isinstance(i.work, Turn)],
            [i.work for i in batch if isinstance(i.work, Result)],
            [i.work for i in batch if isinstance(i.work, Start)],
            [i.work for i in batch if isinstance(i.work, Send)],
        )

    async def _apply_held(self, s: AsyncClientSession, batch: list[_Item]) -> tuple[list[_Item], Delivery]:
        """Read which leases are still held (in the transaction's snapshot), apply the rest;
        the lost items, and what the delivery of the rest's messages found."""
        turns = [i for i in batch if isinstance(i.work, Turn)]
        results = [i for i in batch if isinstance(i.work, Result)]
        held: set[tuple[str, str, str | None]] = set()
        fences = [t.work.fence for t in turns if isinstance(t.work, Turn) and t.work.fence is not None]
        if fences:
            rows = self._db.instances.find(
                {"lease_token": {"$in": fences}},
                projection={"_id": 0, "app_id": 1, "instance_id": 1, "lease_token": 1},
                session=s,
            )
            held = {(d["app_id"], d["instance_id"], d["lease_token"]) async for d in rows}
        tokens: dict[Any, Any] = {}
        works = [r.work for r in results if isinstance(r.work, Result)]
        if ids := [w.activity for w in works if not is_held(w.token)]:
            rows = self._db.activities.find({"_id": {"$in": ids}}, projection={"lease_token": 1}, session=s)
            tokens = {d["_id"]: d.get("lease_token") async for d in rows}
        # Activities held by their parents: their entries' tokens (store/mongo/held.py).
        parents = {w.message.target for w in works if is_held(w.token)}
        tokens |= dict(await held_tokens(self._db, s, parents))

        def holds(item: _Item) -> bool:
            work = item.work
            if isinstance(work, Start | Send):
                return True  # not fenced: a duplicate key, or a missing target, is its failure
            if isinstance(work, Result):
                return tokens.get(work.activity) == work.token
            if work.fence is None:
                return True
            k = key_filter(work.commit.key)
            return (k["app_id"], k["instance_id"], work.fence) in held

        live = [i for i in batch if holds(i)]
        delivery = await self._apply(s, live) if live else Delivery()
        return [i for i in batch if not any(i is x for x in live)], delivery


def _by_key(batch: list[_Item]) -> list[list[_Item]]:
    groups: dict[InstanceKey, list[_Item]] = {}
    for item in batch:
        groups.setdefault(item.key, []).append(item)
    return list(groups.values())


class _Split(Exception):
    """The batch's transaction hit a conflict: its items go on one by one."""


class _Duplicate(Exception):
    """A batch with new instances hit a duplicate key: its items go on one by one, and a new
    instance that exists gets the DuplicateKeyError (its caller decides)."""

    def __init__(self, key_error: DuplicateKeyError) -> None:
        super().__init__(str(key_error))
        self.key_error = key_error


def _lost_message(work: Turn | Result | Start | Send) -> str:
    if isinstance(work, Result):
        return f"activity {work.activity} is no longer leased by this server"
    if isinstance(work, Start | Send):
        return "not fenced"  # never: neither holds a lease
    return f"lease on {work.commit.key} is no longer held"


def _settle(item: _Item, err: Exception | None, outcome: Committed = COMMITTED) -> None:
    if item.future.done():
        return
    if err is None:
        item.future.set_result(outcome)
    else:
        item.future.set_exception(err)
