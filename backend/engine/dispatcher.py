"""The Dispatcher: one loop per app ID that leases due work from the store
while that app has connected workers with free slots, and runs each item as
its own task (a workflow turn or an activity run)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from backend.config import Config
from backend.domain.events import utcnow
from backend.domain.model import InstanceKey
from backend.engine.activities import ActivityRuns
from backend.engine.notify import Notifier
from backend.engine.streams import StreamHub
from backend.engine.turns import WorkflowTurns
from backend.store.base import ActivityLease, Store, WorkflowLease
from backend.telemetry import metrics

log = logging.getLogger("backend.dispatcher")

_LEASE_BATCH = 64


class Dispatcher:
    """Work reaches a dispatcher three ways (backend/engine/notify.py):

    * hints: an instance was just sent a message by this server (a start, an activity
      result, a child's completion, a raised event): it is claimed directly, by key;
    * adopted work: a turn's new activities and a just-started instance, stored leased to
      this server (store.base.Claim, engine/slots.py), are run without a query;
    * a general wake (another server's write, a worker connecting, the poll timeout, freed
      capacity after a round that could not take everything): a lease round over the app.
    """

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
        # Leased (or reserved for a commit's activities) but not yet handed to a stream:
        # counted against free slots.
        self._preparing = {"workflow": 0, "activity": 0}
        # Instances with a turn running here, and those sent a message meanwhile (their claim
        # failed: they are claimed again once the turn is over).
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._starved = False  # the last round left work behind for lack of free slots
        self._due: datetime | None = None  # when the next delayed work becomes eligible
        notifier.serve(app_id)

    def _spawn(
        self, kind: str, token: str, work: Callable[[], Awaitable[None]], *, instance_id: str = ""
    ) -> None:
        """Run one leased item as a task; its lease is renewed exactly while the task lives."""
        self._preparing[kind] += 1
        self._held.add(token)
        if instance_id:
            self._running.add(instance_id)

        async def run() -> None:
            started = time.perf_counter()
            try:
                await work()
            finally:
                metrics.work_item_done(self.app_id, kind, started)
                self._held.discard(token)
                self._preparing[kind] -= 1
                if instance_id:
                    self._running.discard(instance_id)
                    if instance_id in self._dirty:
                        self._dirty.discard(instance_id)
                        self._notifier.hint(InstanceKey(self.app_id, instance_id))
                self.capacity_freed()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def capacity_freed(self) -> None:
        """A slot came free: look for more work only if some was left behind for lack of one."""
        if self._starved:
            self._notifier.wake(self.app_id)

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The work items this dispatcher is running now."""
        return set(self._tasks)

    def _free(self, kind: str) -> int:
        return min(_LEASE_BATCH, self._hub.capacity(self.app_id, kind) - self._preparing[kind])

    # -- work stored leased to us (engine/slots.py) ---------------------------------------

    def reserve(self, kind: str, wanted: int) -> int:
        if wanted <= 0 or not self._hub.connected(self.app_id):
            return 0
        granted = max(0, min(wanted, self._free(kind)))
        self._preparing[kind] += granted
        return granted

    def adopt(self, kind: str, leases: Sequence[WorkflowLease | ActivityLease], reserved: int) -> None:
        self._preparing[kind] -= reserved
        for lease in leases:
            if isinstance(lease, WorkflowLease):
                self._spawn_turn(lease)
            else:
                self._spawn("activity", lease.token, lambda act=lease: self._activities.run(act))  # type: ignore[misc]
        if len(leases) < reserved:
            self.capacity_freed()

    # -- lease rounds -----------------------------------------------------------------------

    async def _lease_round(self) -> bool:
        """Lease what fits; True to run another round at once (a whole batch came back and
        slots remain). Work left for lack of slots marks the dispatcher starved."""
        now = utcnow()
        until = now + timedelta(seconds=self._config.lease_seconds)
        again = False
        free = self._free("workflow")
        if free > 0:
            leases = await self._store.lease_workflows(
                self.app_id, owner=self._owner, now=now, until=until, limit=free
            )
            for lease in leases:
                self._spawn_turn(lease)
            again = self._full(len(leases), free, "workflow")
        else:
            self._starved = True
        free = self._free("activity")
        if free > 0:
            acts = await self._store.lease_activities(
                self.app_id, owner=self._owner, now=now, until=until, limit=free
            )
            for act in acts:
                self._spawn("activity", act.token, lambda act=act: self._activities.run(act))  # type: ignore[misc]
            again = self._full(len(acts), free, "activity") or again
        else:
            self._starved = True
        return again

    def _full(self, taken: int, asked: int, kind: str) -> bool:
        """After a lease of `asked` gave `taken`: True if more may wait and slots remain."""
        if taken < asked:
            return False
        if self._free(kind) > 0:
            return True
        self._starved = True
        return False

    async def _hinted_round(self, instance_ids: set[str]) -> None:
        """Claim the hinted instances directly (no search of the app's inbox)."""
        self._dirty |= instance_ids & self._running
        wanted = sorted(instance_ids - self._running)
        free = max(self._free("workflow"), 0)
        if len(wanted) > free:
            self._starved = True  # a general round finds the rest once a slot frees
            wanted = wanted[:free]
        if not wanted:
            return
        now = utcnow()
        until = now + timedelta(seconds=self._config.lease_seconds)
        for lease in await self._store.lease_workflows(
            self.app_id, owner=self._owner, now=now, until=until, limit=len(wanted), instance_ids=wanted
        ):
            self._spawn_turn(lease)

    def _spawn_turn(self, lease: WorkflowLease) -> None:
        self._spawn(
            "workflow",
            lease.token,
            lambda: self._turns.run(lease),
            instance_id=lease.key.instance_id,
        )

    async def _control_round(self) -> bool:
        """No worker is connected: still apply terminate/suspend/resume, which need none."""
        now = utcnow()
        until = now + timedelta(seconds=self._config.lease_seconds)
        leases = await self._store.lease_workflows(
            self.app_id, owner=self._owner, now=now, until=until, limit=_LEASE_BATCH, control_only=True
        )
        for lease in leases:
            self._spawn_turn(lease)
        return len(leases) >= _LEASE_BATCH

    async def run(self) -> None:
        general, hints = True, set[str]()
        while True:
            try:
                connected = self._hub.connected(self.app_id)
                again = False
                if general:
                    self._starved = False
                if not connected:
                    if general or hints:
                        again = await self._control_round()
                else:
                    if hints:
                        await self._hinted_round(hints)
                    if general:
                        again = await self._lease_round()
                if again:
                    general, hints = True, set()
                    continue
                if general and connected:
                    self._due = await self._store.next_due(self.app_id, now=utcnow())
                timeout = self._config.poll_seconds
                if self._due is not None:
                    timeout = max(0.0, min(timeout, (self._due - utcnow()).total_seconds()))
                general, hints, due = await self._notifier.wait_for_work(self.app_id, timeout)
                if due is not None and (self._due is None or due < self._due):
                    self._due = due
                if self._due is not None and self._due <= utcnow():
                    general, self._due = True, None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher for app %s hit an error; retrying", self.app_id)
                general, hints = True, set()
                await asyncio.sleep(self._config.poll_seconds)

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
