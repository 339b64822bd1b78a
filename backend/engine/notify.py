"""In-process wake-ups: dispatchers wait for new work, client waits for an
instance to change. Both also poll, so changes made by other server
processes sharing the store are seen too."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import datetime

from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey


class Signal:
    """What woke a dispatcher: a general wake (look for any work of the app), instance IDs
    that were just sent messages (claim those directly), and the earliest moment new
    delayed work (a timer) becomes due."""

    __slots__ = ("due", "event", "general", "hints")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.general = False
        self.hints: set[str] = set()
        self.due: datetime | None = None


class Notifier:
    def __init__(self) -> None:
        self._work: dict[str, Signal] = {}  # per app with a dispatcher here (serve)
        self._watchers: dict[InstanceKey, set[_Watcher]] = defaultdict(set)

    # -- dispatchers -----------------------------------------------------------

    def serve(self, app_id: str) -> None:
        """A dispatcher for the app runs here; signals for apps served elsewhere are dropped
        (their servers learn of the writes from the store's change feed, or by polling)."""
        self._work.setdefault(app_id, Signal())

    def wake(self, app_id: str | None = None) -> None:
        """New work of unknown kind may exist for the app (None: for every app): the
        dispatcher looks for any."""
        for signal in self._work.values() if app_id is None else filter(None, (self._work.get(app_id),)):
            signal.general = True
            signal.event.set()

    def hint(self, key: InstanceKey) -> None:
        """The instance was just sent a message that is visible now: its dispatcher claims it
        directly instead of searching the whole app's inbox."""
        signal = self._work.get(key.app_id)
        if signal is not None:
            signal.hints.add(key.instance_id)
            signal.event.set()

    def due(self, app_id: str, at: datetime) -> None:
        """Work of the app becomes eligible at `at` (a timer was queued)."""
        signal = self._work.get(app_id)
        if signal is None:
            return
        if signal.due is None or at < signal.due:
            signal.due = at
        signal.event.set()

    def delivered(self, key: InstanceKey, visible_at: datetime | None, now: datetime) -> None:
        """A message to `key` was stored: a hint if it is visible now, else a due time."""
        if visible_at is None or visible_at <= now:
            self.hint(key)
        else:
            self.due(key.app_id, visible_at)

    async def wait_for_work(self, app_id: str, timeout: float) -> tuple[bool, set[str], datetime | None]:
        """Wait for a signal (or the timeout, which counts as a general wake); what it said:
        (general, hinted instance IDs, earliest new due time)."""
        signal = self._work.setdefault(app_id, Signal())
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        timed_out = False
        if not signal.event.is_set():
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    await signal.event.wait()
            except TimeoutError:
                timed_out = True
        signal.event.clear()
        out = (signal.general or timed_out, signal.hints, signal.due)
        signal.general, signal.hints, signal.due = False, set(), None
        return out

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
