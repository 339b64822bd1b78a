"""The Engine: wires store, streams, turns and dispatchers; starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import timedelta

from backend.config import Config
from backend.domain.events import utcnow
from backend.domain.model import InstanceKey
from backend.engine.activities import ActivityRuns
from backend.engine.dispatcher import Dispatcher
from backend.engine.handover import HandOver
from backend.engine.instances import Instances
from backend.engine.notify import Notifier
from backend.engine.streams import StreamHub
from backend.engine.turns import WorkflowTurns
from backend.store.base import Store

log = logging.getLogger("backend.engine")


class Engine:
    def __init__(self, *, store: Store, config: Config, app_ids: list[str]) -> None:
        self.store = store
        self.config = config
        self.owner = f"server-{uuid.uuid4().hex[:12]}"
        self.served_apps: tuple[str, ...] = tuple(dict.fromkeys(app_ids))  # for status reports
        self.notifier = Notifier()
        self.hub = StreamHub(
            max_workflows_per_stream=config.max_workflows_per_stream,
            max_activities_per_stream=config.max_activities_per_stream,
            max_streams_per_app=config.max_streams_per_app,
            max_bytes_per_stream=config.max_stream_bytes_in_flight,
            stuck_seconds=config.stream_stuck_seconds,
        )
        self.hub.on_capacity(self._capacity_freed)
        self.hub.on_connect(self._worker_connected)
        self._background: set[asyncio.Task[None]] = set()
        # Tokens of the leases our tasks are working on: the only ones we renew.
        self.held: set[str] = set()
        # New work written here starts here without a lease query (engine/handover.py).
        handover = HandOver(store=store, notifier=self.notifier, lease_seconds=config.lease_seconds)
        handover.owner = self.owner
        self.instances = Instances(store=store, notifier=self.notifier, config=config, handover=handover)
        turns = WorkflowTurns(
            store=store, hub=self.hub, notifier=self.notifier, config=config, handover=handover
        )
        activities = ActivityRuns(
            store=store, hub=self.hub, notifier=self.notifier, config=config, handover=handover
        )
        self._dispatchers = [
            Dispatcher(
                app_id,
                owner=self.owner,
                held=self.held,
                store=store,
                hub=self.hub,
                notifier=self.notifier,
                turns=turns,
                activities=activities,
                config=config,
            )
            for app_id in dict.fromkeys(app_ids)  # an app on several listeners has one dispatcher
        ]
        self._by_app = {d.app_id: d for d in self._dispatchers}
        handover.slots = self._by_app
        self._loops: list[asyncio.Task[None]] = []
        self._dispatch_loops: list[asyncio.Task[None]] = []

    def _capacity_freed(self, app_id: str) -> None:
        dispatcher = self._by_app.get(app_id)
        if dispatcher is not None:
            dispatcher.capacity_freed()

    def _worker_connected(self, app_id: str) -> None:
        """New capacity: look for the app's work. A new worker may also carry the version a
        stalled workflow was missing."""
        self.notifier.wake(app_id)

        async def retry() -> None:
            try:
                if await self.store.retry_stalled(app_id):
                    self.notifier.wake(app_id)
            except Exception:
                log.exception("could not retry stalled workflows of app %s", app_id)

        task = asyncio.create_task(retry())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        for dispatcher in self._dispatchers:
            loop = asyncio.create_task(dispatcher.run(), name=f"dispatcher-{dispatcher.app_id}")
            self._dispatch_loops.append(loop)
            self._loops.append(loop)
        self._loops.append(asyncio.create_task(self._renew_leases(), name="lease-renewal"))
        self._loops.append(asyncio.create_task(self._watch_streams(), name="stream-watch"))
        if self.store.changes() is not None:
            self._loops.append(asyncio.create_task(self._follow_changes(), name="store-changes"))

    async def _follow_changes(self) -> None:
        """Wake dispatchers and waiters on writes by other servers sharing the store."""
        while True:
            feed = self.store.changes()
            if feed is None:
                return
            try:
                async for change in feed:
                    if change.instance_id is None:
                        self.notifier.wake(change.app_id)
                    elif change.message:
                        key = InstanceKey(change.app_id, change.instance_id)
                        self.notifier.delivered(key, change.visible_at, utcnow())
                    else:
                        self.notifier.changed(InstanceKey(change.app_id, change.instance_id))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store change feed failed; polling until it is back")
            await asyncio.sleep(self.config.poll_seconds)

    async def _watch_streams(self) -> None:
        """Close streams whose worker stopped reading, so their work moves to others."""
        interval = max(0.1, self.config.stream_stuck_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            for stream in self.hub.close_stuck(time.monotonic()):
                log.warning(
                    "closed worker stream %d of app %s: it took no work item for %.0fs",
                    stream.id,
                    stream.app_id,
                    self.config.stream_stuck_seconds,
                )
                self.notifier.wake(stream.app_id)

    async def _renew_leases(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            if not self.held:
                continue
            try:
                await self.store.renew_leases(
                    frozenset(self.held), until=utcnow() + timedelta(seconds=self.config.lease_seconds)
                )
            except Exception:
                log.exception("lease renewal failed; retrying in %.0fs", interval)

    async def quiesce(self, grace: float) -> int:
        """Stop handing out new work, and give what is in flight up to `grace` seconds to
        complete (workers' streams stay open for their completions). The number still running."""
        for loop in self._dispatch_loops:
            loop.cancel()
        running = [t for d in self._dispatchers for t in d.tasks]
        if running and grace > 0:
            _, still = await asyncio.wait(running, timeout=grace)
            return len(still)
        return len(running)

    async def stop(self) -> None:
        """Stop dispatching; in-flight work is abandoned and stays in the store."""
        self.hub.close_all()
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for dispatcher in self._dispatchers:
            await dispatcher.drain()
