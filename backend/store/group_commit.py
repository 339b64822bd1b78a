"""Group commit for the SQLite store: one thread owns the connection and runs
every store call as a transaction, and calls that queue up while a commit is
being synced to disk share the next transaction (and its one fsync).

Each call still succeeds or fails on its own: it runs inside a SAVEPOINT, so
a call that raises is rolled back alone and its caller gets its exception,
while the others in the batch commit. A caller is answered only after the
batch's COMMIT returned; if COMMIT itself fails, every caller in the batch
gets that error (none of their writes is kept). The order of calls is the
order they were queued, so the result is the same as running them one by one.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

MAX_BATCH = 128  # calls per transaction: bounds the latency a batch adds to its first call


@dataclass
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    transaction: bool = True
    outcome: tuple[bool, Any] = field(default=(False, None))  # (ok, result or exception)


_STOP = object()  # queued by stop(): the thread exits after what is before it


class GroupCommitter:
    def __init__(self, name: str = "sqlite-store") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.db: sqlite3.Connection | None = None
        self.transactions = 0  # committed or failed batches, for tests and stats

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(db) in a transaction (shared with other queued calls)."""
        return await self._submit(fn, transaction=True)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run fn() on the store thread outside any transaction (open, close)."""
        return await self._submit(lambda _db: fn(), transaction=False)

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    async def _submit(self, fn: Callable[[sqlite3.Connection], T], *, transaction: bool) -> T:
        loop = asyncio.get_running_loop()
        call = _Call(fn, loop, loop.create_future(), transaction)
        self._queue.put(call)
        result: T = await call.future
        return result

    # -- the store thread ---------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if not first.transaction:
                self._answer([self._plain(first)])
                continue
            batch, held = [first], None
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or not nxt.transaction:
                    held = nxt  # runs after this batch, in queue order
                    break
                batch.append(nxt)
            self._answer(self._transaction(batch))
            if held is _STOP:
                return
            if held is not None:
                self._answer([self._plain(held)])

    def _plain(self, call: _Call) -> _Call:
        try:
            call.outcome = (True, call.fn(self.db))  # type: ignore[arg-type]
        except BaseException as err:
            call.outcome = (False, err)
        return call

    def _transaction(self, batch: list[_Call]) -> list[_Call]:
        db = self.db
        try:
            if db is None:
                raise RuntimeError("store is not open")
            db.execute("BEGIN IMMEDIATE")
            self.transactions += 1
            for call in batch:
                db.execute("SAVEPOINT call")
                try:
                    call.outcome = (True, call.fn(db))
                except Exception as err:
                    call.outcome = (False, err)
                    db.execute("ROLLBACK TO call")  # undo this call alone
                db.execute("RELEASE call")
            db.commit()
        except BaseException as err:
            # The transaction itself failed (BEGIN, a savepoint, COMMIT, a lost
            # transaction): nothing of the batch is kept, every caller hears of it.
            if db is not None and db.in_transaction:
                db.rollback()
            for call in batch:
                call.outcome = (False, err)
        return batch

    @staticmethod
    def _answer(calls: list[_Call]) -> None:
        for call in calls:
            call.loop.call_soon_threadsafe(_settle, call.future, *call.outcome)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
