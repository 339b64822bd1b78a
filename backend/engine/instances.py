"""Client operations on instances: what the client RPCs do once decoded.

Start, query and wait, raise/suspend/resume/terminate (as inbox messages the
dispatcher delivers), purge (children first), history and paging.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from google.protobuf import wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.config import Config
from backend.domain import events as ev
from backend.domain import validate
from backend.domain.creation import new_instance
from backend.domain.model import Gate, InstanceKey, Message, is_terminal, status_name
from backend.domain.rerun import RerunRequest, fork
from backend.engine.handover import HandOver
from backend.engine.notify import Notifier
from backend.errors import AlreadyExists, FailedPrecondition, NotFound
from backend.store.base import InstanceFilter, Store
from backend.telemetry import metrics

Predicate = Callable[[opb.WorkflowState], bool]


def started(state: opb.WorkflowState) -> bool:
    return state.workflowStatus != opb.ORCHESTRATION_STATUS_PENDING


def finished(state: opb.WorkflowState) -> bool:
    return is_terminal(state.workflowStatus)


class Instances:
    def __init__(self, *, store: Store, notifier: Notifier, config: Config, handover: HandOver) -> None:
        self._store = store
        self._notifier = notifier
        self._config = config
        self._handover = handover  # a start runs its first turn here at once (engine/handover.py)
        self.max_payload = config.max_payload_bytes

    # -- start and query -----------------------------------------------------

    @metrics.counted("create_workflow")
    async def start(
        self,
        key: InstanceKey,
        *,
        name: str,
        source_app: str,
        input_: wrappers_pb2.StringValue | None,
        version: wrappers_pb2.StringValue | None,
        start_at: datetime | None,
        tags: dict[str, str],
        enforce_unique: bool,
        execution_id: str | None = None,
        parent_trace: opb.TraceContext | None = None,
    ) -> str:
        validate.name(name, "workflow name")
        validate.payload(input_, "the workflow input", self._config.max_payload_bytes)
        route = ev.router(source_app, key.app_id if key.app_id != source_app else None)
        new = new_instance(
            key,
            name=name,
            version=version,
            input_=input_,
            route=route,
            now=ev.utcnow(),
            start_at=start_at,
            tags=tags,
            execution_id=execution_id,
            parent_trace=parent_trace,
        )
        try:
            await self._handover.create(new, replace_terminal=not enforce_unique)
        except AlreadyExists:
            existing = await self._store.get_state(key)
            status = status_name(existing.workflowStatus) if existing else "unknown"
            raise AlreadyExists(
                f"orchestration instance already exists: '{key.instance_id}' on app '{key.app_id}' "
                f"is {status}"
                + (" and enforceUniqueInstanceId is set" if existing and finished(existing) else "")
            ) from None
        self._notifier.changed(key)
        return key.instance_id

    @metrics.counted("get_workflow")
    async def get(self, key: InstanceKey) -> opb.WorkflowState | None:
        return await self._store.get_state(key)

    async def wait(self, key: InstanceKey, until: Predicate, *, timeout: float | None) -> opb.WorkflowState:
        """Block until the predicate holds; the caller's deadline bounds it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = await self._store.get_state(key)
        while True:
            if state is None:
                raise NotFound(f"no such instance exists: '{key.instance_id}' on app '{key.app_id}'")
            if until(state):
                return state
            remaining = self._config.poll_seconds
            if deadline is not None:
                remaining = min(remaining, deadline - time.monotonic())
                if remaining <= 0:
                    return state
            # Our own commits hand over the new state; anything else is read again.
            known = await self._notifier.wait_change(key, remaining)
            state = known if known is not None else await self._store.get_state(key)

    # -- messages ----------------------------------------------------------------

    async def _send(self, key: InstanceKey, event: hpb.HistoryEvent, gate: Gate) -> None:
        # Its turn starts here if the instance is free and its app has a slot (engine/handover.py).
        if not await self._handover.send(Message(target=key, event=event, gate=gate)):
            raise NotFound(f"no such instance exists: '{key.instance_id}' on app '{key.app_id}'")

    @metrics.counted("add_event")
    async def raise_event(self, key: InstanceKey, name: str, data: wrappers_pb2.StringValue | None) -> None:
        validate.name(name, "event name")
        validate.payload(data, "the event data", self._config.max_payload_bytes)
        await self._send(key, ev.event_raised(ev.utcnow(), name, data), Gate.EVENT)

    async def _control(self, key: InstanceKey, event: hpb.HistoryEvent, until: Predicate) -> None:
        state = await self._store.get_state(key)
        if state is None:
            raise NotFound(f"no such instance exists: '{key.instance_id}' on app '{key.app_id}'")
        if finished(state):
            return  # nothing left to change; the reference answers OK too
        await self._send(key, event, Gate.CONTROL)
        await self.wait(key, lambda s: until(s) or finished(s), timeout=self._config.control_wait_seconds)

    @metrics.counted("terminate_workflow")
    async def terminate(
        self, key: InstanceKey, output: wrappers_pb2.StringValue | None, *, recursive: bool
    ) -> None:
        validate.payload(output, "the termination output", self._config.max_payload_bytes)
        await self._control(key, ev.execution_terminated(ev.utcnow(), output, recurse=recursive), finished)

    @metrics.counted("suspend_workflow")
    async def suspend(self, key: InstanceKey, reason: wrappers_pb2.StringValue | None) -> None:
        validate.payload(reason, "the suspend reason", self._config.max_payload_bytes)
        await self._control(
            key,
            ev.execution_suspended(ev.utcnow(), reason),
            lambda s: s.workflowStatus == opb.ORCHESTRATION_STATUS_SUSPENDED,
        )

    @metrics.counted("resume_workflow")
    async def resume(self, key: InstanceKey, reason: wrappers_pb2.StringValue | None) -> None:
        validate.payload(reason, "the resume reason", self._config.max_payload_bytes)
        await self._control(
            key,
            ev.execution_resumed(ev.utcnow(), reason),
            lambda s: s.workflowStatus != opb.ORCHESTRATION_STATUS_SUSPENDED,
        )

    @metrics.counted("rerun_workflow")
    async def rerun(self, req: RerunRequest) -> str:
        state = await self._store.get_state(req.source)
        if state is None:
            raise NotFound(
                f"workflow instance does not exist: '{req.source.instance_id}' on app '{req.source.app_id}'"
            )
        history = await self._store.get_history(req.source)
        new, seed = fork(req, state, history, now=ev.utcnow())
        try:
            await self._store.create_instance(new, replace_terminal=False, seed=seed)
        except AlreadyExists:
            raise AlreadyExists(
                f"orchestration instance already exists: '{req.new_key.instance_id}' on app "
                f"'{req.new_key.app_id}'; choose another newInstanceID"
            ) from None
        self._notifier.wake(None)
        return req.new_key.instance_id

    # -- history, listing, purge ------------------------------------------------

    async def history(self, key: InstanceKey) -> list[hpb.HistoryEvent]:
        if await self._store.get_state(key) is None:
            raise NotFound(f"no such instance exists: '{key.instance_id}' on app '{key.app_id}'")
        return await self._store.get_history(key)

    async def list_ids(
        self, app_id: str, *, after: str | None, page_size: int
    ) -> tuple[list[str], str | None]:
        ids = await self._store.list_instance_ids(app_id, after=after, limit=page_size)
        return ids, (ids[-1] if len(ids) == page_size else None)

    async def _children(self, key: InstanceKey) -> list[InstanceKey]:
        out = []
        for event in await self._store.get_history(key):
            if event.HasField("childWorkflowInstanceCreated"):
                app = event.router.targetAppID if event.router.targetAppID else key.app_id
                out.append(InstanceKey(app, event.childWorkflowInstanceCreated.instanceId))
        return out

    @metrics.counted("purge_workflow")
    async def purge(self, key: InstanceKey, *, recursive: bool, force: bool) -> int:
        state = await self._store.get_state(key)
        if state is None:
            raise NotFound(f"no such instance exists: '{key.instance_id}' on app '{key.app_id}'")
        if not force and not finished(state):
            raise FailedPrecondition(
                f"orchestration has not yet completed: '{key.instance_id}' is "
                f"{status_name(state.workflowStatus)}; terminate it first or purge with force"
            )
        return await self._purge_tree(key, recursive=recursive, force=force, seen=set())

    async def _purge_tree(
        self, key: InstanceKey, *, recursive: bool, force: bool, seen: set[InstanceKey]
    ) -> int:
        if key in seen:
            return 0
        seen.add(key)
        count = 0
        if recursive:
            for child in await self._children(key):
                count += await self._purge_tree(child, recursive=True, force=force, seen=seen)
        if await self._store.purge(key, only_terminal=not force):
            count += 1
            self._notifier.changed(key)
        return count

    @metrics.counted("purge_workflow")
    async def purge_where(self, where: InstanceFilter, *, recursive: bool, force: bool) -> int:
        count = 0
        seen: set[InstanceKey] = set()
        for key in await self._store.find_instances(where):
            count += await self._purge_tree(key, recursive=recursive, force=force, seen=seen)
            await asyncio.sleep(0)
        return count


def new_id() -> str:
    return uuid.uuid4().hex
