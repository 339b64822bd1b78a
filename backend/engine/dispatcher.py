"""The Dispatcher: one loop per app ID that leases due work from the store
while that app has connected workers with free slots, and runs each item as
its own task (a workflow turn or an activity run)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from backend.config import Config
from backend.domain.events import utcnow
from backend.engine.activities import ActivityRuns
from backend.engine.notify import Notifier
from backend.engine.streams import StreamHub
from backend.engine.turns import WorkflowTurns
from backend.store.base import Store
from backend.telemetry import metrics

log = logging.getLogger("backend.dispatcher")

_LEASE_BATCH = 64


class Dispatcher:
    def __init__(
        self,
        app_id: str,
        *,
        owner: str,
        held: set[str],
        store: Store,
        hub: StreamHub,
        notifier: Notifier,
        turns: WorkflowTurns,
        activities: ActivityRuns,
        config: Config,
    ) -> None:
        self.app_id = app_id
        self._owner = owner
        self._held = held
        self._store = store
        self._hub = hub
        self._notifier = notifier
        self._turns = turns
        self._activities = activities
        self._config = config
        self._tasks: set[asyncio.Task[None]] = set()
        # Leased but not yet handed to a stream: counted against free slots.
        self._preparing = {"workflow": 0, "activity": 0}

    def _spawn(self, kind: str, token: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run one leased item as a task; its lease is renewed exactly while the task lives."""
        self._preparing[kind] += 1
        self._held.add(token)

        async def run() -> None:
            started = time.perf_counter()
            try:
                await work()
            finally:
                metrics.work_item_done(self.app_id, kind, started)
                self._held.discard(token)
                self._preparing[kind] -= 1
                self._notifier.wake(self.app_id)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The work items this dispatcher is running now."""
        return set(self._tasks)

    def _free(self, kind: str) -> int:
        return min(_LEASE_BATCH, self._hub.capacity(self.app_id, kind) - self._preparing[kind])

    async def _lease_round(self) -> bool:
        """Lease what fits; True if anything was leased."""
        leased = False
        now = utcnow()
        until = now + timedelta(seconds=self._config.lease_seconds)
        free = self._free("workflow")
        if free > 0:
            for lease in await self._store.lease_workflows(
                self.app_id, owner=self._owner, now=now, until=until, limit=free
            ):
                leased = True
                self._spawn("workflow", lease.token, lambda lease=lease: self._turns.run(lease))  # type: ignore[misc]
        free = self._free("activity")
        if free > 0:
            for act in await self._store.lease_activities(
                self.app_id, owner=self._owner, now=now, until=until, limit=free
            ):
                leased = True
                self._spawn("activity", act.token, lambda act=act: self._activities.run(act))  # type: ignore[misc]
        return leased

    async def _control_round(self) -> bool:
        """No worker is connected: still apply terminate/suspend/resume, which need none."""
        now = utcnow()
        until = now + timedelta(seconds=self._config.lease_seconds)
        leases = await self._store.lease_workflows(
            self.app_id, owner=self._owner, now=now, until=until, limit=_LEASE_BATCH, control_only=True
        )
        for lease in leases:
            self._spawn("workflow", lease.token, lambda lease=lease: self._turns.run(lease))  # type: ignore[misc]
        return bool(leases)

    async def run(self) -> None:
        while True:
            try:
                connected = self._hub.connected(self.app_id)
                if await (self._lease_round() if connected else self._control_round()):
                    continue
                timeout = self._config.poll_seconds
                if connected:
                    now = utcnow()
                    due = await self._store.next_due(self.app_id, now=now)
                    if due is not None:
                        timeout = max(0.0, min(timeout, (due - now).total_seconds()))
                await self._notifier.wait_for_work(self.app_id, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher for app %s hit an error; retrying", self.app_id)
                await asyncio.sleep(self._config.poll_seconds)

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
