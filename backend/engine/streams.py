"""Connected GetWorkItems streams, per app ID, and the completion rendezvous.

A dispatched work item is a Pending entry keyed by its completion token. The
worker's Complete* RPC resolves it with the response and then waits until the
turn has committed (or failed), so the worker learns the outcome of its call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend._proto import orchestrator_service_pb2 as spb
from backend.engine.encoded import EncodedItem
from backend.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted

log = logging.getLogger("backend.streams")


class StreamGone(Exception):
    """The stream a work item was sent on disconnected before it completed."""


@dataclass(eq=False)
class WorkerStream:
    app_id: str
    stateful: bool  # WORKER_CAPABILITY_STATEFUL_HISTORY
    health_ping: bool
    id: int = 0
    queue: asyncio.Queue[spb.WorkItem | EncodedItem | None] = field(default_factory=asyncio.Queue)
    workflows: int = 0  # in flight
    activities: int = 0
    warm: dict[str, int] = field(default_factory=dict)  # instance id -> events the worker caches
    pending: set[str] = field(default_factory=set)  # completion tokens
    closed: bool = False
    bytes: int = 0  # encoded size of the work items in flight on it
    # Since when the current send has waited for the worker to take it (None: not sending);
    # a worker that stops reading leaves it set, and the hub closes the stream.
    sending_since: float | None = None
    task: asyncio.Task[Any] | None = None  # the GetWorkItems call, cancelled to close the stream
    last_completion: float = 0.0  # monotonic time of the latest completion from its worker
    # A work item timed out on it with no completion since: no more work until it completes one.
    silent: bool = False
    # Workflow work items sent with the whole history vs. as stateful-history deltas; logged
    # when the stream closes, so an operator (and the conformance runner) can see the cache work.
    full_sends: int = 0
    delta_sends: int = 0


@dataclass(eq=False)
class Pending:
    token: str
    stream: WorkerStream
    kind: str  # "workflow" | "activity"
    instance_id: str
    task_id: int = -1
    size: int = 0
    response: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    outcome: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        # The worker's RPC may be gone before the outcome is known; never warn about it.
        self.outcome.add_done_callback(lambda f: None if f.cancelled() else f.exception())


class StreamHub:
    def __init__(
        self,
        *,
        max_workflows_per_stream: int,
        max_activities_per_stream: int,
        max_streams_per_app: int = 64,
        max_bytes_per_stream: int = 32 * 1024 * 1024,
        stuck_seconds: float = 30.0,
    ) -> None:
        self._streams: dict[str, list[WorkerStream]] = {}
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._max_wf = max_workflows_per_stream
        self._max_act = max_activities_per_stream
        self._max_streams = max_streams_per_app
        self._max_bytes = max_bytes_per_stream
        self._stuck_seconds = stuck_seconds
        self._listeners: list[Callable[[str], None]] = []
        self._connect_listeners: list[Callable[[str], None]] = []

    # -- connections --------------------------------------------------------

    def on_capacity(self, listener: Callable[[str], None]) -> None:
        """Called with an app ID whenever a stream connects or frees a slot."""
        self._listeners.append(listener)

    def on_connect(self, listener: Callable[[str], None]) -> None:
        """Called with an app ID whenever a worker stream of that app connects."""
        self._connect_listeners.append(listener)

    def _signal(self, app_id: str) -> None:
        for listener in self._listeners:
            listener(app_id)

    def connect(self, app_id: str, capabilities: list[int]) -> WorkerStream:
        if len(self._streams.get(app_id, [])) >= self._max_streams:
            raise ResourceExhausted(
                f"app '{app_id}' has {self._max_streams} worker streams connected, the most this server "
                "takes per app; close idle workers or run fewer worker processes"
            )
        stream = WorkerStream(
            app_id=app_id,
            stateful=spb.WORKER_CAPABILITY_STATEFUL_HISTORY in capabilities,
            health_ping=spb.WORKER_CAPABILITY_HEALTH_PING in capabilities,
            id=next(self._ids),
        )
        self._streams.setdefault(app_id, []).append(stream)
        log.info("worker stream %d of app %s connected: stateful=%s", stream.id, app_id, stream.stateful)
        for listener in self._connect_listeners:
            listener(app_id)
        self._signal(app_id)
        return stream

    def disconnect(self, stream: WorkerStream) -> None:
        """Everything in flight on the stream fails with StreamGone and is re-dispatched."""
        if not stream.closed:
            log.info(
                "worker stream %d of app %s closed: stateful=%s workflow_sends full=%d delta=%d",
                stream.id,
                stream.app_id,
                stream.stateful,
                stream.full_sends,
                stream.delta_sends,
            )
        stream.closed = True
        peers = self._streams.get(stream.app_id, [])
        if stream in peers:
            peers.remove(stream)
        for token in list(stream.pending):
            pending = self._pending.pop(token, None)
            if pending is not None and not pending.response.done():
                pending.response.set_exception(StreamGone(f"stream {stream.id} disconnected"))
        stream.pending.clear()
        stream.queue.put_nowait(None)

    def close_stuck(self, now: float) -> list[WorkerStream]:
        """Close the streams whose worker has not taken a work item for stuck_seconds: their
        work goes back to be dispatched to others."""
        stuck = [
            s
            for streams in self._streams.values()
            for s in streams
            if s.sending_since is not None and now - s.sending_since > self._stuck_seconds
        ]
        for stream in stuck:
            self.disconnect(stream)
            if stream.task is not None:
                stream.task.cancel()
        return stuck

    def close_all(self) -> None:
        for streams in list(self._streams.values()):
            for stream in list(streams):
                self.disconnect(stream)

    def connected(self, app_id: str) -> bool:
        return bool(self._streams.get(app_id))

    def stream_counts(self) -> dict[str, int]:
        """Connected worker streams per app ID (for status reports)."""
        return {app: len(streams) for app, streams in self._streams.items() if streams}

    def _takes_more(self, stream: WorkerStream) -> bool:
        return stream.bytes < self._max_bytes and not stream.silent

    def is_pending(self, token: str) -> bool:
        """Still waiting for its completion (not taken back or completed meanwhile)."""
        return token in self._pending

    def capacity(self, app_id: str, kind: str) -> int:
        streams = [s for s in self._streams.get(app_id, []) if self._takes_more(s)]
        if kind == "workflow":
            return sum(max(0, self._max_wf - s.workflows) for s in streams)
        return sum(max(0, self._max_act - s.activities) for s in streams)

    def pick(self, app_id: str, kind: str, instance_id: str = "") -> WorkerStream | None:
        """A stream with a free slot: the one warm for the instance, else the least loaded."""
        streams = [s for s in self._streams.get(app_id, []) if self._takes_more(s)]
        if kind == "workflow":
            free = [s for s in streams if s.workflows < self._max_wf]
            warm = [s for s in free if instance_id in s.warm]
            if warm:
                return warm[0]
            return min(free, key=lambda s: s.workflows, default=None)
        free = [s for s in streams if s.activities < self._max_act]
        return min(free, key=lambda s: s.activities, default=None)

    # -- dispatch and completion -------------------------------------------

    def send(
        self,
        stream: WorkerStream,
        item: spb.WorkItem | EncodedItem,
        *,
        kind: str,
        instance_id: str,
        task_id: int = -1,
        size: int | None = None,
    ) -> Pending:
        token = uuid.uuid4().hex
        item.completionToken = token
        size = item.ByteSize() if size is None else size
        pending = Pending(
            token=token, stream=stream, kind=kind, instance_id=instance_id, task_id=task_id, size=size
        )
        self._pending[token] = pending
        stream.pending.add(token)
        stream.bytes += size
        if kind == "workflow":
            stream.workflows += 1
        else:
            stream.activities += 1
        stream.queue.put_nowait(item)
        return pending

    def finish(self, pending: Pending) -> None:
        """Release the slot a dispatched item held (after commit, abandon or disconnect)."""
        self._pending.pop(pending.token, None)
        stream = pending.stream
        if pending.token in stream.pending:
            stream.bytes -= pending.size
        stream.pending.discard(pending.token)
        if pending.kind == "workflow":
            stream.workflows -= 1
        else:
            stream.activities -= 1
        if not stream.closed:
            self._signal(stream.app_id)

    def claim(self, app_id: str, kind: str, token: str, instance_id: str, task_id: int = -1) -> Pending:
        """The pending item a completion answers, only ever among the work dispatched to the
        caller's own app. By its token; SDKs that never echo it (durabletask-go before v0.14,
        so go-sdk v1.15) are matched by instance (and task) within that app."""
        if not token:
            return self._claim_untokened(app_id, kind, instance_id, task_id)
        pending = self._pending.get(token)
        if pending is None or pending.response.done():
            raise NotFound(
                f"no {kind} work item is waiting for that completion token; it completed "
                "already, or was re-dispatched after its stream disconnected"
            )
        if pending.stream.app_id != app_id:
            raise PermissionDenied(
                f"that work item was dispatched to app '{pending.stream.app_id}'; app '{app_id}' cannot complete it"
            )
        if pending.kind != kind:
            raise InvalidArgument(
                f"that completion token is for a {pending.kind} work item, not a {kind} one"
            )
        if instance_id and pending.instance_id != instance_id:
            raise InvalidArgument(
                f"the completion token was issued for instance '{_short(pending.instance_id)}', "
                f"not '{_short(instance_id)}'"
            )
        if kind == "activity" and pending.task_id != task_id:
            raise InvalidArgument(
                f"the completion token was issued for task {pending.task_id}, not task {task_id}"
            )
        pending.stream.last_completion = time.monotonic()
        pending.stream.silent = False
        return pending

    def _claim_untokened(self, app_id: str, kind: str, instance_id: str, task_id: int) -> Pending:
        if not instance_id:
            raise InvalidArgument("a completion needs the work item's completionToken or its instanceId")
        pending = next(
            (
                p
                for p in self._pending.values()
                if p.kind == kind
                and p.stream.app_id == app_id
                and p.instance_id == instance_id
                and (kind == "workflow" or p.task_id == task_id)
                and not p.response.done()
            ),
            None,
        )
        if pending is None:
            what = f"instance '{_short(instance_id)}'" + (f" task {task_id}" if kind == "activity" else "")
            raise NotFound(f"no {kind} work item is in flight for {what} on app '{app_id}'")
        pending.stream.last_completion = time.monotonic()
        pending.stream.silent = False
        return pending


def _short(value: str, limit: int = 64) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
