"""In-process wake-ups: dispatchers wait for new work, client waits for an
instance to change. Both also poll, so changes made by other server
processes sharing the store are seen too."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey


class Notifier:
    def __init__(self) -> None:
        self._work: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._watchers: dict[InstanceKey, set[_Watcher]] = defaultdict(set)

    # -- dispatchers -----------------------------------------------------------

    def wake(self, app_id: str | None = None) -> None:
        """New work may exist for the app (None: for every app)."""
        if app_id is None:
            for event in self._work.values():
                event.set()
        else:
            self._work[app_id].set()

    async def wait_for_work(self, app_id: str, timeout: float) -> None:
        event = self._work[app_id]
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        event.clear()

    # -- instance watchers -----------------------------------------------------

    def changed(self, key: InstanceKey, state: opb.WorkflowState | None = None) -> None:
        """The instance changed; `state` is its new client-visible state when the
        change is our own commit (None: unknown, the watcher reads the store)."""
        for watcher in self._watchers.get(key, ()):
            watcher.state = state  # the last change wins
            watcher.event.set()

    async def wait_change(self, key: InstanceKey, timeout: float) -> opb.WorkflowState | None:
        """Wait for a change (or the timeout); the new state if it came with it."""
        watcher = _Watcher()
        self._watchers[key].add(watcher)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await watcher.event.wait()
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[key]
        if watcher.state is None:
            return None
        copy = opb.WorkflowState()
        copy.CopyFrom(watcher.state)  # callers may edit what they get
        return copy


class _Watcher:
    __slots__ = ("event", "state")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.state: opb.WorkflowState | None = None
