"""RerunWorkflowFromEvent: fork a finished workflow at one of its events.

The new instance keeps the source's history up to the target event, with
every task that had finished by then (its scheduling and its result). The
target task (activity, child workflow or timer) and every task still
unfinished at that point run again; the workflow then replays on a worker and
carries on from there. The source instance is left untouched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from google.protobuf import wrappers_pb2

from backend import limits
from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain import events as ev
from backend.domain import trace
from backend.domain.creation import activity_task, child_instance_id, make_instance
from backend.domain.model import ActivityTask, InstanceKey, Message, NewInstance, WorkflowCommit, is_terminal
from backend.domain.projection import initial_state, project
from backend.domain.state import RuntimeState
from backend.errors import InvalidArgument, NotFound
from backend.limits import quote

_RERUNNABLE = ("taskScheduled", "childWorkflowInstanceCreated", "timerCreated")


@dataclass(frozen=True, kw_only=True)
class RerunRequest:
    source: InstanceKey
    new_key: InstanceKey
    event_id: int
    new_input: wrappers_pb2.StringValue | None  # set: overwrite the target's input
    overwrite_input: bool
    new_child_id: str | None


def _copy(event: hpb.HistoryEvent) -> hpb.HistoryEvent:
    out = hpb.HistoryEvent()
    out.CopyFrom(event)
    return out


def fork(
    req: RerunRequest, source_state: opb.WorkflowState, history: list[hpb.HistoryEvent], *, now: datetime
) -> tuple[NewInstance, WorkflowCommit]:
    """The new instance and the commit that seeds it (history, tasks to run)."""
    if req.new_key == req.source:
        raise InvalidArgument("the rerun needs a new instance ID different from the source's")
    if not is_terminal(source_state.workflowStatus):
        raise InvalidArgument(
            f"workflow {quote(req.source.instance_id)} is not in a terminal state; only finished workflows can be rerun"
        )
    source = RuntimeState.of(history)
    if source.start is not None and source.start.HasField("parentInstance"):
        raise InvalidArgument("cannot rerun from child workflows; rerun their parent instead")
    if req.new_child_id is not None and req.new_child_id == "":
        raise InvalidArgument("newChildWorkflowInstanceID must not be empty when set")

    kept: list[hpb.HistoryEvent] = []
    open_tasks: dict[int, hpb.HistoryEvent] = {}  # scheduled/created/timers not yet finished
    target: hpb.HistoryEvent | None = None
    for original in history:
        event = _copy(original)
        k = ev.kind(event)
        if event.eventId == req.event_id and event.eventId >= 0:
            if k not in _RERUNNABLE:
                raise InvalidArgument(
                    f"event {req.event_id} is a {k}; only activities, child workflows and timers can be rerun"
                )
            target = event
            break
        if k in _RERUNNABLE:
            open_tasks[event.eventId] = event
        elif k in (
            "taskCompleted",
            "taskFailed",
            "childWorkflowInstanceCompleted",
            "childWorkflowInstanceFailed",
        ):
            done = open_tasks.pop(getattr(event, k).taskScheduledId, None)
            if done is not None:
                kept.extend((done, event))
        elif k == "timerFired":
            created = open_tasks.pop(event.timerFired.timerId, None)
            if created is not None:
                kept.extend((created, event))
        elif k == "executionStarted":
            started = event.executionStarted
            started.workflowInstance.instanceId = req.new_key.instance_id
            started.workflowInstance.executionId.value = uuid.uuid4().hex
            started.ClearField("parentTraceContext")  # a rerun is a trace of its own
            started.workflowSpanID.value = trace.new_span_id()
            kept.append(event)
        elif k not in ("executionCompleted", "executionTerminated", "executionStalled"):
            kept.append(event)
    if target is None:
        raise NotFound(
            f"workflow {quote(req.source.instance_id)} has no history event with ID {req.event_id}"
        )

    rerun_info = opb.RerunParentInstanceInfo(instanceID=req.source.instance_id)
    k = ev.kind(target)
    if k == "taskScheduled":
        if req.new_child_id is not None:
            raise InvalidArgument(
                f"event {req.event_id} is an activity: newChildWorkflowInstanceID does not apply"
            )
        target.taskScheduled.rerunParentInstanceInfo.CopyFrom(rerun_info)
        if req.overwrite_input:
            _set_input(target.taskScheduled, req.new_input)
    elif k == "timerCreated":
        if req.overwrite_input or req.new_child_id is not None:
            raise InvalidArgument(
                f"event {req.event_id} is a timer: it takes no input and no child instance ID"
            )
        target.timerCreated.rerunParentInstanceInfo.CopyFrom(rerun_info)
    else:
        child = target.childWorkflowInstanceCreated
        child.rerunParentInstanceInfo.CopyFrom(rerun_info)
        child.instanceId = req.new_child_id or child_instance_id(req.new_key.instance_id, target.eventId)
        if req.overwrite_input:
            _set_input(child, req.new_input)

    rerun = sorted(open_tasks.values(), key=lambda e: e.eventId)
    for event in rerun:  # unfinished children get IDs under the new parent
        if event.HasField("childWorkflowInstanceCreated"):
            event.childWorkflowInstanceCreated.instanceId = child_instance_id(
                req.new_key.instance_id, event.eventId
            )
    rerun.append(target)
    for event in rerun:
        if event.HasField("childWorkflowInstanceCreated"):
            child_id = event.childWorkflowInstanceCreated.instanceId
            if len(child_id) > limits.MAX_INSTANCE_ID_CHARS:
                # A child nobody could address by its ID again must not be created.
                raise InvalidArgument(
                    f"the rerun's child workflow would get an instance ID of {len(child_id)} characters "
                    f"(at most {limits.MAX_INSTANCE_ID_CHARS}): choose a shorter newInstanceID or give "
                    "newChildWorkflowInstanceID"
                )
    return _seed(req.new_key, kept, rerun, now=now)


def _set_input(
    body: hpb.TaskScheduledEvent | hpb.ChildWorkflowInstanceCreatedEvent,
    value: wrappers_pb2.StringValue | None,
) -> None:
    if value is None:
        body.ClearField("input")
    else:
        body.input.CopyFrom(value)


def _seed(
    key: InstanceKey, kept: list[hpb.HistoryEvent], rerun: list[hpb.HistoryEvent], *, now: datetime
) -> tuple[NewInstance, WorkflowCommit]:
    state = RuntimeState.of(kept)
    if state.start is None:
        raise InvalidArgument("the source workflow's history has no start event to rerun from")
    history = [*kept, *rerun]
    context = trace.workflow_span(state.start)[0].to_proto()
    activities: list[ActivityTask] = []
    messages: list[Message] = []
    children: list[NewInstance] = []
    for event in rerun:
        route = event.router if event.HasField("router") else ev.router(key.app_id)
        target_app = route.targetAppID or key.app_id
        if event.HasField("taskScheduled"):
            event.taskScheduled.parentTraceContext.CopyFrom(context)
            activities.append(activity_task(key, state.execution_id, event))
        elif event.HasField("timerCreated"):
            if ev.never_fires(event.timerCreated):
                continue  # nothing to queue for a "wait forever" (events.py)
            fire_at = ev.from_ts(event.timerCreated.fireAt)
            fired = ev.event(
                now, timerFired=hpb.TimerFiredEvent(fireAt=event.timerCreated.fireAt, timerId=event.eventId)
            )
            messages.append(Message(target=key, event=fired, visible_at=max(fire_at, now)))
        else:
            child = event.childWorkflowInstanceCreated
            child.parentTraceContext.CopyFrom(context)
            parent = opb.ParentInstanceInfo(
                taskScheduledId=event.eventId,
                name=ev.sv(state.start.name),
                workflowInstance=opb.WorkflowInstance(
                    instanceId=key.instance_id, executionId=ev.sv(state.execution_id)
                ),
                appID=key.app_id,
            )
            children.append(
                make_instance(
                    InstanceKey(target_app, child.instanceId),
                    name=child.name,
                    version=child.version if child.HasField("version") else None,
                    input_=child.input if child.HasField("input") else None,
                    parent=parent,
                    route=route,
                    now=now,
                    parent_trace=context,
                )
            )
    for event in rerun:
        state.add(event)
    created = initial_state(key, state.start, created_at=now)
    new = NewInstance(key=key, state=project(created, state, now=now), start=None, created_at=now)
    seed = WorkflowCommit(
        key=key,
        consumed=[],
        new_history=history,
        state=new.state,
        messages=messages,
        new_instances=children,
        activities=activities,
    )
    return new, seed
