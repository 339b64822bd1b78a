"""The Applier: a worker's WorkflowResponse becomes history, messages and tasks.

This is the only place where actions turn into history events. It is pure: it
reads the runtime state and returns a WorkflowCommit; the store persists it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from google.protobuf import wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import events as ev
from backend.domain.model import (
    ActivityTask,
    Gate,
    InboxItem,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
)
from backend.domain.projection import initial_state, project, restart_state
from backend.domain.state import RuntimeState
from backend.errors import InvalidArgument
from backend.security.policy import Policy

_COMPLETION_STATUSES = frozenset(
    {
        opb.ORCHESTRATION_STATUS_COMPLETED,
        opb.ORCHESTRATION_STATUS_FAILED,
        opb.ORCHESTRATION_STATUS_TERMINATED,
        opb.ORCHESTRATION_STATUS_CANCELED,
        opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    }
)


_OPEN = Policy()


def _denied(source: str, target: str, what: str) -> opb.TaskFailureDetails:
    """The failure a task gets when the policy forbids its cross-app call: final, never retried."""
    return ev.failure(
        "CrossAppCallDenied",
        f"app '{source}' may not {what} on app '{target}' (authorization policy of the server)",
        non_retriable=True,
    )


@dataclass(frozen=True, kw_only=True)
class TurnContext:
    key: InstanceKey
    now: datetime
    stored: opb.WorkflowState  # the projection before this turn
    consumed: list[int | str]  # the inbox items this turn takes
    max_payload_bytes: int
    # The stall in force before this turn (the turn's own WorkflowStarted clears
    # RuntimeState.stalled, so the applier cannot read it from the state).
    stalled_before: hpb.ExecutionStalledEvent | None = None
    # Which apps this workflow's app may call (activities, children) and manage (events, terminate).
    policy: Policy = _OPEN


def child_instance_id(parent_id: str, action_id: int) -> str:
    """Default child ID, as the SDKs and the reference runtime build it."""
    return f"{parent_id}:{action_id:04x}"


def child_keys(key: InstanceKey, response: spb.WorkflowResponse) -> list[InstanceKey]:
    """Instances this response would create (the engine checks them for conflicts first)."""
    out = []
    for action in response.actions:
        if action.HasField("createChildWorkflow"):
            child = action.createChildWorkflow
            iid = child.instanceId or child_instance_id(key.instance_id, action.id)
            out.append(InstanceKey(_target_app(key, action), iid))
        elif action.HasField("createDetachedWorkflow") and action.createDetachedWorkflow.instanceId:
            out.append(InstanceKey(_target_app(key, action), action.createDetachedWorkflow.instanceId))
    return out


def activity_task(key: InstanceKey, execution_id: str, scheduled: hpb.HistoryEvent) -> ActivityTask:
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
    route = scheduled.router if scheduled.HasField("router") else ev.router(key.app_id)
    return ActivityTask(app_id=route.targetAppID or key.app_id, parent=key, request=request, router=route)


def _target_app(key: InstanceKey, action: apb.WorkflowAction) -> str:
    if action.HasField("router") and action.router.targetAppID:
        return action.router.targetAppID
    return key.app_id


def _stamp(key: InstanceKey, action: apb.WorkflowAction) -> opb.TaskRouter:
    """Every action leaves with sourceAppID = the workflow's app (Java relies on it)."""
    r = opb.TaskRouter(sourceAppID=key.app_id)
    if action.HasField("router"):
        if action.router.targetAppID:
            r.targetAppID = action.router.targetAppID
        if action.router.targetAppNamespace:
            r.targetAppNamespace = action.router.targetAppNamespace
    return r


def _payload_sizes(action: apb.WorkflowAction) -> list[int]:
    k = action.WhichOneof("workflowActionType")
    body = getattr(action, k) if k else None
    sizes = []
    for name in ("input", "result", "data"):
        if body is not None and name in body.DESCRIPTOR.fields_by_name and body.HasField(name):
            sizes.append(len(getattr(body, name).value.encode()))
    return sizes


def validate(state: RuntimeState, response: spb.WorkflowResponse) -> None:
    """Reject a malformed response before anything is written."""
    seen: set[int] = set()
    for action in response.actions:
        k = action.WhichOneof("workflowActionType")
        if k is None:
            raise InvalidArgument(
                f"action {action.id} has no known type; supported: scheduleTask, "
                "createChildWorkflow, createTimer, sendEvent, completeWorkflow, "
                "terminateWorkflow, workflowVersionNotAvailable, createDetachedWorkflow"
            )
        if action.id in seen:
            raise InvalidArgument(f"duplicate action id {action.id} in one response")
        seen.add(action.id)
        if k in ("scheduleTask", "createChildWorkflow", "createTimer") and action.id in state.action_ids:
            raise InvalidArgument(
                f"action id {action.id} ({k}) is already used by an event in this workflow's history"
            )
        if k == "scheduleTask" and not action.scheduleTask.name:
            raise InvalidArgument(f"action {action.id}: scheduleTask needs an activity name")
        if k == "createChildWorkflow" and not action.createChildWorkflow.name:
            raise InvalidArgument(f"action {action.id}: createChildWorkflow needs a workflow name")
        if k == "createDetachedWorkflow":
            detached = action.createDetachedWorkflow
            if not detached.name or not detached.instanceId:
                raise InvalidArgument(
                    f"action {action.id}: createDetachedWorkflow needs a name and an instanceId"
                )
        if k == "sendEvent" and (not action.sendEvent.instance.instanceId or not action.sendEvent.name):
            raise InvalidArgument(f"action {action.id}: sendEvent needs a target instance and a name")
        if k == "terminateWorkflow" and not action.terminateWorkflow.instanceId:
            raise InvalidArgument(f"action {action.id}: terminateWorkflow needs an instanceId")
        if k == "completeWorkflow" and action.completeWorkflow.workflowStatus not in _COMPLETION_STATUSES:
            raise InvalidArgument(
                f"action {action.id}: completeWorkflow status "
                f"{action.completeWorkflow.workflowStatus} is not a completion status"
            )


def apply(
    ctx: TurnContext,
    state: RuntimeState,
    new_events: list[hpb.HistoryEvent],
    response: spb.WorkflowResponse,
    *,
    busy_children: frozenset[InstanceKey] = frozenset(),
) -> WorkflowCommit:
    """Apply a worker's response to a turn whose new events were `new_events`.

    `state` already includes `new_events`. `busy_children` are child IDs that
    exist and are not finished: creating them fails the child task instead.
    """
    validate(state, response)
    key, now = ctx.key, ctx.now

    oversized = [a.id for a in response.actions if any(s > ctx.max_payload_bytes for s in _payload_sizes(a))]
    if (
        response.HasField("customStatus")
        and len(response.customStatus.value.encode()) > ctx.max_payload_bytes
    ):
        oversized.append(-1)
    if oversized:
        return stall(
            ctx,
            state,
            hpb.ExecutionStalledEvent(
                reason=opb.PAYLOAD_SIZE_EXCEEDED,
                description=(
                    f"a payload of action(s) {oversized} exceeds the server limit of "
                    f"{ctx.max_payload_bytes} bytes (--max-payload-bytes)"
                ),
            ),
        )
    if any(a.HasField("workflowVersionNotAvailable") for a in response.actions):
        return stall(
            ctx,
            state,
            hpb.ExecutionStalledEvent(
                reason=opb.VERSION_NOT_AVAILABLE,
                description="the worker has no version of this workflow that can replay its history",
            ),
        )

    if response.HasField("version") and new_events and new_events[0].HasField("workflowStarted"):
        new_events[0].workflowStarted.version.CopyFrom(response.version)

    history = list(new_events)
    messages: list[Message] = []
    activities: list[ActivityTask] = []
    instances: list[NewInstance] = []
    custom = response.customStatus.value if response.HasField("customStatus") else None

    for action in response.actions:
        k = action.WhichOneof("workflowActionType")
        route = _stamp(key, action)
        target_app = route.targetAppID or key.app_id
        if k == "scheduleTask":
            task = action.scheduleTask
            scheduled = ev.event(
                now,
                event_id=action.id,
                taskScheduled=hpb.TaskScheduledEvent(
                    name=task.name,
                    version=task.version if task.HasField("version") else None,
                    input=task.input if task.HasField("input") else None,
                    taskExecutionId=task.taskExecutionId,
                ),
            )
            scheduled.router.CopyFrom(route)
            history.append(scheduled)
            if not ctx.policy.may_call(key.app_id, target_app):
                failed = ev.event(
                    now,
                    taskFailed=hpb.TaskFailedEvent(
                        taskScheduledId=action.id,
                        failureDetails=_denied(key.app_id, target_app, f"run activity '{task.name}'"),
                        taskExecutionId=task.taskExecutionId,
                    ),
                )
                failed.router.CopyFrom(ev.router(target_app, key.app_id))
                messages.append(Message(target=key, event=failed))
                continue
            activities.append(activity_task(key, state.execution_id, scheduled))
        elif k == "createTimer":
            timer = action.createTimer
            created = hpb.TimerCreatedEvent(fireAt=timer.fireAt)
            if timer.HasField("name"):
                created.name = timer.name
            origin = timer.WhichOneof("origin")
            if origin:
                getattr(created, origin).CopyFrom(getattr(timer, origin))
            history.append(ev.event(now, event_id=action.id, timerCreated=created))
            fire_at = ev.from_ts(timer.fireAt) if timer.HasField("fireAt") else now
            fired = ev.event(now, timerFired=hpb.TimerFiredEvent(fireAt=timer.fireAt, timerId=action.id))
            messages.append(Message(target=key, event=fired, visible_at=max(fire_at, now)))
        elif k == "createChildWorkflow":
            child = action.createChildWorkflow
            child_key = InstanceKey(
                target_app, child.instanceId or child_instance_id(key.instance_id, action.id)
            )
            created_ev = ev.event(
                now,
                event_id=action.id,
                childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(
                    instanceId=child_key.instance_id,
                    name=child.name,
                    version=child.version if child.HasField("version") else None,
                    input=child.input if child.HasField("input") else None,
                ),
            )
            created_ev.router.CopyFrom(route)
            history.append(created_ev)
            if not ctx.policy.may_call(key.app_id, target_app):
                refused = ev.event(
                    now,
                    childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(
                        taskScheduledId=action.id,
                        failureDetails=_denied(
                            key.app_id, target_app, f"start child workflow '{child.name}'"
                        ),
                    ),
                )
                refused.router.CopyFrom(ev.router(target_app, key.app_id))
                messages.append(Message(target=key, event=refused))
                continue
            if child_key in busy_children:
                failed = ev.event(
                    now,
                    childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(
                        taskScheduledId=action.id,
                        failureDetails=ev.failure(
                            "WorkflowInstanceAlreadyExists",
                            f"a workflow instance with ID '{child_key.instance_id}' already exists "
                            f"and is not finished on app '{child_key.app_id}'",
                            non_retriable=True,
                        ),
                    ),
                )
                messages.append(Message(target=key, event=failed))
                continue
            parent = opb.ParentInstanceInfo(
                taskScheduledId=action.id,
                name=ev.sv(state.start.name if state.start else ""),
                workflowInstance=opb.WorkflowInstance(
                    instanceId=key.instance_id, executionId=ev.sv(state.execution_id)
                ),
                appID=key.app_id,
            )
            instances.append(
                make_instance(
                    child_key,
                    name=child.name,
                    version=child.version if child.HasField("version") else None,
                    input_=child.input if child.HasField("input") else None,
                    parent=parent,
                    route=route,
                    now=now,
                )
            )
        elif k == "createDetachedWorkflow":
            detached = action.createDetachedWorkflow
            detached_key = InstanceKey(target_app, detached.instanceId)
            history.append(
                ev.event(
                    now,
                    event_id=action.id,
                    detachedWorkflowInstanceCreated=hpb.DetachedWorkflowInstanceCreatedEvent(
                        instanceId=detached.instanceId
                    ),
                )
            )
            if detached_key in busy_children or not ctx.policy.may_call(key.app_id, target_app):
                continue  # an unfinished instance with that ID exists: fire-and-forget, nothing to fail
            only_target = opb.TaskRouter(sourceAppID=target_app)
            if route.targetAppID:
                only_target.targetAppID = route.targetAppID
            start_at = (
                ev.from_ts(detached.scheduledStartTimestamp)
                if detached.HasField("scheduledStartTimestamp")
                else None
            )
            instances.append(
                make_instance(
                    detached_key,
                    name=detached.name,
                    version=detached.version if detached.HasField("version") else None,
                    input_=detached.input if detached.HasField("input") else None,
                    parent=None,
                    route=only_target,
                    now=now,
                    start_at=start_at,
                    tags=dict(detached.tags),
                )
            )
        elif k == "sendEvent":
            send = action.sendEvent
            sent = ev.event(
                now,
                event_id=action.id,
                eventSent=hpb.EventSentEvent(
                    instanceId=send.instance.instanceId,
                    name=send.name,
                    input=send.data if send.HasField("data") else None,
                ),
            )
            sent.router.CopyFrom(route)
            history.append(sent)
            if not ctx.policy.may_manage(key.app_id, target_app, "raise"):
                continue  # recorded as sent; the policy keeps it from the other app's instance
            raised = ev.event_raised(now, send.name, send.data if send.HasField("data") else None)
            raised.router.CopyFrom(route)
            messages.append(Message(target=InstanceKey(target_app, send.instance.instanceId), event=raised))
        elif k == "terminateWorkflow":
            term = action.terminateWorkflow
            if not ctx.policy.may_manage(key.app_id, target_app, "terminate"):
                continue
            terminated = ev.execution_terminated(
                now, term.reason if term.HasField("reason") else None, recurse=term.recurse
            )
            messages.append(
                Message(target=InstanceKey(target_app, term.instanceId), event=terminated, gate=Gate.CONTROL)
            )
        elif k == "completeWorkflow":
            done = action.completeWorkflow
            if done.workflowStatus == opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
                return _continue_as_new(ctx, state, history, done)
            completed = ev.execution_completed(
                now,
                done.workflowStatus,
                event_id=action.id,
                result=done.result if done.HasField("result") else None,
                failure=done.failureDetails if done.HasField("failureDetails") else None,
            )
            completed.router.CopyFrom(route)
            history.append(completed)
            messages.extend(_notify_parent(key, state, completed.executionCompleted, now))
            break  # only the first completion counts; nothing after it runs

    for item in history[len(new_events) :]:
        state.add(item)
    return WorkflowCommit(
        key=key,
        consumed=ctx.consumed,
        new_history=history,
        state=project(ctx.stored, state, now=now, custom_status=custom, set_custom_status=True),
        messages=messages,
        new_instances=instances,
        activities=activities,
        cancel_pending=state.completed is not None,
    )


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
    )
    if start_at is not None:
        started.scheduledStartTimestamp.CopyFrom(ev.ts(start_at))
    start_event = ev.event(now, executionStarted=started)
    start_event.router.CopyFrom(route)
    return NewInstance(
        key=key,
        state=initial_state(key, started, created_at=now),
        start=Message(target=key, event=start_event, gate=Gate.START, visible_at=start_at),
        created_at=now,
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
    )
    assert created.start is not None
    started = created.start.event.executionStarted
    if execution_id:
        started.workflowInstance.executionId.value = execution_id
        created.state.executionId.value = execution_id
    if parent_trace is not None:
        started.parentTraceContext.CopyFrom(parent_trace)
    return created


def _notify_parent(
    key: InstanceKey, state: RuntimeState, done: hpb.ExecutionCompletedEvent, now: datetime
) -> list[Message]:
    """A finished child reports to its parent, on the parent's app."""
    if state.start is None or not state.start.HasField("parentInstance"):
        return []
    parent = state.start.parentInstance
    parent_app = parent.appID if parent.HasField("appID") and parent.appID else key.app_id
    if done.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED:
        note = ev.event(
            now,
            childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(
                taskScheduledId=parent.taskScheduledId,
                result=done.result if done.HasField("result") else None,
            ),
        )
    else:
        details = (
            done.failureDetails
            if done.HasField("failureDetails")
            else ev.failure(
                "WorkflowTerminated"
                if done.workflowStatus == opb.ORCHESTRATION_STATUS_TERMINATED
                else "WorkflowFailed",
                f"child workflow '{key.instance_id}' ended as "
                f"{opb.OrchestrationStatus.Name(done.workflowStatus).removeprefix('ORCHESTRATION_STATUS_')}",
            )
        )
        note = ev.event(
            now,
            childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(
                taskScheduledId=parent.taskScheduledId, failureDetails=details
            ),
        )
    note.router.CopyFrom(ev.router(key.app_id, parent_app))
    return [Message(target=InstanceKey(parent_app, parent.workflowInstance.instanceId), event=note)]


def _continue_as_new(
    ctx: TurnContext,
    state: RuntimeState,
    history: list[hpb.HistoryEvent],
    done: apb.CompleteWorkflowAction,
) -> WorkflowCommit:
    """Discard this generation; the next turn starts the new one with the carried events."""
    assert state.start is not None
    key, now = ctx.key, ctx.now
    execution_id = uuid.uuid4().hex
    started = hpb.ExecutionStartedEvent()
    started.CopyFrom(state.start)
    started.workflowInstance.executionId.value = execution_id
    started.ClearField("scheduledStartTimestamp")
    if done.HasField("result"):
        started.input.CopyFrom(done.result)
    else:
        started.ClearField("input")
    if done.HasField("newVersion") and done.newVersion.value:
        started.version.CopyFrom(done.newVersion)
    start_event = ev.event(now, executionStarted=started)
    if state.start_router is not None:
        start_event.router.CopyFrom(state.start_router)
    messages = [Message(target=key, event=start_event, gate=Gate.START)]
    for carried in done.carryoverEvents:
        messages.append(Message(target=key, event=carried))
    return WorkflowCommit(
        key=key,
        consumed=ctx.consumed,
        reset_history=True,
        new_history=[],
        state=restart_state(
            ctx.stored, execution_id=execution_id, input_=started.input if started.HasField("input") else None
        ),
        messages=messages,
        cancel_pending=True,
    )


def stall(ctx: TurnContext, state: RuntimeState, stalled: hpb.ExecutionStalledEvent) -> WorkflowCommit:
    """Park the workflow: the turn's events stay in the inbox, status STALLED."""
    history = []
    if ctx.stalled_before is None or ctx.stalled_before.reason != stalled.reason:
        history.append(ev.event(ctx.now, executionStalled=stalled))
    shadow = RuntimeState(start=state.start, stalled=stalled, completed=state.completed)
    return WorkflowCommit(
        key=ctx.key,
        consumed=[],
        new_history=history,
        state=project(ctx.stored, shadow, now=ctx.now),
    )


def terminate(ctx: TurnContext, state: RuntimeState, batch: list[InboxItem]) -> WorkflowCommit:
    """Server-side termination: no worker needed, children first if recursive."""
    key, now = ctx.key, ctx.now
    term = next(i.event.executionTerminated for i in batch if i.event.HasField("executionTerminated"))
    history = [i.event for i in batch]
    completed = ev.execution_completed(
        now, opb.ORCHESTRATION_STATUS_TERMINATED, result=term.input if term.HasField("input") else None
    )
    history.append(completed)
    messages = _notify_parent(key, state, completed.executionCompleted, now)
    if term.recurse:
        for task_id, created in state.children.items():
            if task_id in state.children_done:
                continue
            child_app = created.router.targetAppID if created.router.targetAppID else key.app_id
            messages.append(
                Message(
                    target=InstanceKey(child_app, created.childWorkflowInstanceCreated.instanceId),
                    event=ev.execution_terminated(
                        now, term.input if term.HasField("input") else None, recurse=True
                    ),
                    gate=Gate.CONTROL,
                )
            )
    for item in history:
        state.add(item)
    return WorkflowCommit(
        key=key,
        consumed=ctx.consumed,
        new_history=history,
        state=project(ctx.stored, state, now=now),
        messages=messages,
        cancel_pending=True,
    )


def record(ctx: TurnContext, state: RuntimeState, batch: list[InboxItem]) -> WorkflowCommit:
    """Append events that need no worker (suspend, resume) or drop duplicates."""
    history = [i.event for i in batch]
    for item in history:
        state.add(item)
    return WorkflowCommit(
        key=ctx.key, consumed=ctx.consumed, new_history=history, state=project(ctx.stored, state, now=ctx.now)
    )
