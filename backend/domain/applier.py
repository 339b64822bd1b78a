"""The Applier: a worker's WorkflowResponse becomes history, messages and tasks.

This is the only place where actions turn into history events: `apply` checks the
response, stalls it if it cannot be applied, and runs each action through the table in
domain/actions.py. Pure: it reads the runtime state and returns a WorkflowCommit; the
store persists it. How executions end or park lives in domain/endings.py.
"""

from __future__ import annotations

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import actions
from backend.domain import events as ev
from backend.domain.actions import payload_sizes, target_app_of
from backend.domain.context import TurnContext
from backend.domain.creation import activity_task, child_instance_id, make_instance, new_instance
from backend.domain.endings import fail, record, stall, terminate
from backend.domain.model import InstanceKey, WorkflowCommit
from backend.domain.projection import project
from backend.domain.state import RuntimeState

__all__ = [
    "TurnContext",
    "activity_task",
    "apply",
    "child_instance_id",
    "child_keys",
    "make_instance",
    "new_instance",
    "record",
    "stall",
    "terminate",
    "validate",
]

validate = actions.validate


def child_keys(key: InstanceKey, response: spb.WorkflowResponse) -> list[InstanceKey]:
    """Instances this response would create (the engine checks them for conflicts first).

    The response's fields are checked first, so no malformed or oversized ID reaches a store.
    """
    actions.validate_shape(response)
    out = []
    for action in response.actions:
        if action.HasField("createChildWorkflow"):
            child = action.createChildWorkflow
            iid = child.instanceId or child_instance_id(key.instance_id, action.id)
            out.append(InstanceKey(target_app_of(key, action), iid))
        elif action.HasField("createDetachedWorkflow") and action.createDetachedWorkflow.instanceId:
            out.append(InstanceKey(target_app_of(key, action), action.createDetachedWorkflow.instanceId))
    return out


def _over_budget(
    ctx: TurnContext, state: RuntimeState, added: list[hpb.HistoryEvent]
) -> opb.TaskFailureDetails | None:
    """The history budget (like Temporal's): `state` holds the turn's new events already."""
    events = state.length + len(added)
    size = state.size + sum(e.ByteSize() for e in added)
    if ctx.max_history_events and events > ctx.max_history_events:
        what = f"{events} events; the limit is {ctx.max_history_events}"
    elif ctx.max_history_bytes and size > ctx.max_history_bytes:
        what = f"{size} bytes; the limit is {ctx.max_history_bytes}"
    else:
        return None
    return ev.failure(
        "HistoryLimitExceeded",
        f"the workflow's history would grow to {what}: continue as new to start a fresh history "
        "(ContinueAsNew), or keep large payloads out of it",
        non_retriable=True,
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
    oversized = [a.id for a in response.actions if any(s > ctx.max_payload_bytes for s in payload_sizes(a))]
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

    applying = actions.Applying(ctx=ctx, state=state, busy_children=busy_children, history=list(new_events))
    actions.run(applying, response)
    if applying.restart is not None:
        return applying.restart
    history = applying.history
    over = _over_budget(ctx, state, history[len(new_events) :])
    if over is not None:
        return fail(ctx, state, new_events, over)
    for item in history[len(new_events) :]:
        state.add(item)
    custom = response.customStatus.value if response.HasField("customStatus") else None
    return WorkflowCommit(
        key=ctx.key,
        consumed=ctx.consumed,
        new_history=history,
        state=project(ctx.stored, state, now=ctx.now, custom_status=custom, set_custom_status=True),
        messages=applying.messages,
        new_instances=applying.instances,
        activities=applying.activities,
        # A completed execution drops its queued activities and timers; with none (the usual
        # case) the store has nothing to look for.
        cancel_pending=state.completed is not None and state.has_pending,
    )
