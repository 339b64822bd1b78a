"""How a turn ends an execution or parks it: completion notices to the parent,
continue-as-new, stall, server-side terminate, and turns that only record events."""

from __future__ import annotations

import uuid
from datetime import datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend.domain import events as ev
from backend.domain import trace
from backend.domain.context import TurnContext
from backend.domain.model import Gate, InboxItem, InstanceKey, Message, WorkflowCommit
from backend.domain.projection import project, restart_state
from backend.domain.state import RuntimeState
from backend.domain.turn import turn_started
from backend.limits import quote


def notify_parent(
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
                f"child workflow {quote(key.instance_id)} ended as "
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


def continue_as_new(
    ctx: TurnContext,
    state: RuntimeState,
    history: list[hpb.HistoryEvent],
    done: apb.CompleteWorkflowAction,
    *,
    propagated: hpb.PropagatedHistory | None = None,
) -> WorkflowCommit:
    """Discard this generation; the next turn starts the new one with the carried events."""
    assert state.start is not None
    key, now = ctx.key, ctx.now
    execution_id = uuid.uuid4().hex
    started = hpb.ExecutionStartedEvent()
    started.CopyFrom(state.start)
    started.workflowInstance.executionId.value = execution_id
    started.ClearField("scheduledStartTimestamp")
    # Each generation is a trace of its own (dapr/dapr#10064: one ever-growing trace otherwise).
    started.ClearField("parentTraceContext")
    started.workflowSpanID.value = trace.new_span_id()
    if done.HasField("result"):
        started.input.CopyFrom(done.result)
    else:
        started.ClearField("input")
    if done.HasField("newVersion") and done.newVersion.value:
        started.version.CopyFrom(done.newVersion)
    start_event = ev.event(now, executionStarted=started)
    if state.start_router is not None:
        start_event.router.CopyFrom(state.start_router)
    messages = [Message(target=key, event=start_event, gate=Gate.START, front=True)]
    for carried in done.carryoverEvents:
        messages.append(Message(target=key, event=carried, front=True))
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
        propagated=propagated,
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
    messages = notify_parent(key, state, completed.executionCompleted, now)
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
    """Append events that need no worker (suspend, resume) or drop duplicates. A start recorded
    this way opens with a WorkflowStarted, as a worker turn would, so replays see its time."""
    history = [i.event for i in batch]
    if history and history[0].HasField("executionStarted"):
        history.insert(0, turn_started(state, ctx.now))
    for item in history:
        state.add(item)
    return WorkflowCommit(
        key=ctx.key, consumed=ctx.consumed, new_history=history, state=project(ctx.stored, state, now=ctx.now)
    )


def fail(
    ctx: TurnContext, state: RuntimeState, new_events: list[hpb.HistoryEvent], details: opb.TaskFailureDetails
) -> WorkflowCommit:
    """The server fails the execution itself (a limit it cannot go past): the turn's events are
    recorded, then the failure; the parent hears of it; queued work is dropped."""
    completed = ev.execution_completed(ctx.now, opb.ORCHESTRATION_STATUS_FAILED, failure=details)
    history = [*new_events, completed]
    state.add(completed)
    return WorkflowCommit(
        key=ctx.key,
        consumed=ctx.consumed,
        new_history=history,
        state=project(ctx.stored, state, now=ctx.now),
        messages=notify_parent(ctx.key, state, completed.executionCompleted, ctx.now),
        cancel_pending=True,
    )
