"""Factories of new work: child and top-level instances, and the activity a TaskScheduled asks for.

Pure; used by the applier (children, detached workflows), client starts and reruns.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf import wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import events as ev
from backend.domain import trace
from backend.domain.model import ActivityTask, Gate, InstanceKey, Message, NewInstance
from backend.domain.projection import initial_state


def child_instance_id(parent_id: str, action_id: int) -> str:
    """Default child ID, as the SDKs and the reference runtime build it."""
    return f"{parent_id}:{action_id:04x}"


def activity_task(
    key: InstanceKey,
    execution_id: str,
    scheduled: hpb.HistoryEvent,
    propagated: hpb.PropagatedHistory | None = None,
) -> ActivityTask:
    """The activity a TaskScheduled event asks for, on the app its router targets."""
    task = scheduled.taskScheduled
    request = spb.ActivityRequest(
        name=task.name,
        input=task.input if task.HasField("input") else None,
        workflowInstance=opb.WorkflowInstance(instanceId=key.instance_id, executionId=ev.sv(execution_id)),
        taskId=scheduled.eventId,
        taskExecutionId=task.taskExecutionId,
    )
    if task.HasField("version"):
        request.version.CopyFrom(task.version)
    if propagated is not None:
        request.propagatedHistory.CopyFrom(propagated)
    context = trace.activity_context(scheduled)
    if context is not None:
        request.parentTraceContext.CopyFrom(context)
    route = scheduled.router if scheduled.HasField("router") else ev.router(key.app_id)
    return ActivityTask(app_id=route.targetAppID or key.app_id, parent=key, request=request, router=route)


def make_instance(
    key: InstanceKey,
    *,
    name: str,
    version: wrappers_pb2.StringValue | None,
    input_: wrappers_pb2.StringValue | None,
    parent: opb.ParentInstanceInfo | None,
    route: opb.TaskRouter,
    now: datetime,
    start_at: datetime | None = None,
    tags: dict[str, str] | None = None,
    propagated: hpb.PropagatedHistory | None = None,
    parent_trace: opb.TraceContext | None = None,
) -> NewInstance:
    started = hpb.ExecutionStartedEvent(
        name=name,
        version=version if version is not None and version.value else None,
        input=input_,
        workflowInstance=opb.WorkflowInstance(
            instanceId=key.instance_id, executionId=ev.sv(uuid.uuid4().hex)
        ),
        parentInstance=parent,
        tags=tags or {},
        # Fixed now, so every turn (on any replica) names the same workflow span.
        workflowSpanID=ev.sv(trace.new_span_id()),
    )
    if parent_trace is not None:
        started.parentTraceContext.CopyFrom(parent_trace)
    if start_at is not None:
        started.scheduledStartTimestamp.CopyFrom(ev.ts(start_at))
    start_event = ev.event(now, executionStarted=started)
    start_event.router.CopyFrom(route)
    return NewInstance(
        key=key,
        state=initial_state(key, started, created_at=now),
        start=Message(target=key, event=start_event, gate=Gate.START, visible_at=start_at),
        created_at=now,
        propagated=propagated,
    )


def new_instance(
    key: InstanceKey,
    *,
    name: str,
    version: wrappers_pb2.StringValue | None,
    input_: wrappers_pb2.StringValue | None,
    route: opb.TaskRouter,
    now: datetime,
    start_at: datetime | None = None,
    tags: dict[str, str] | None = None,
    execution_id: str | None = None,
    parent_trace: opb.TraceContext | None = None,
) -> NewInstance:
    """A top-level instance created by a client's StartInstance."""
    created = make_instance(
        key,
        name=name,
        version=version,
        input_=input_,
        parent=None,
        route=route,
        now=now,
        start_at=start_at,
        tags=tags,
        parent_trace=parent_trace,
    )
    assert created.start is not None
    started = created.start.event.executionStarted
    if execution_id:
        started.workflowInstance.executionId.value = execution_id
        created.state.executionId.value = execution_id
    return created
