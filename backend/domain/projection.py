"""Projection of runtime state onto the client-facing WorkflowState.

The store keeps the projection next to the history so that GetInstance, the
waits and ListInstanceIDs never replay history.
"""

from __future__ import annotations

from datetime import datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.events import ts
from backend.domain.model import InstanceKey, is_terminal
from backend.domain.state import RuntimeState


def initial_state(
    key: InstanceKey, start: hpb.ExecutionStartedEvent, *, created_at: datetime
) -> opb.WorkflowState:
    st = opb.WorkflowState(
        instanceId=key.instance_id,
        name=start.name,
        workflowStatus=opb.ORCHESTRATION_STATUS_PENDING,
        createdTimestamp=ts(created_at),
        lastUpdatedTimestamp=ts(created_at),
        executionId=start.workflowInstance.executionId,
    )
    if start.HasField("version") and start.version.value:
        st.version.CopyFrom(start.version)
    if start.HasField("input"):
        st.input.CopyFrom(start.input)
    if start.HasField("scheduledStartTimestamp"):
        st.scheduledStartTimestamp.CopyFrom(start.scheduledStartTimestamp)
    if start.HasField("parentInstance"):
        parent = start.parentInstance
        st.parentInstanceId.value = parent.workflowInstance.instanceId
        st.parentAppId.value = parent.appID if parent.HasField("appID") else key.app_id
    st.tags.update(start.tags)
    return st


def project(
    prev: opb.WorkflowState,
    state: RuntimeState,
    *,
    now: datetime,
    custom_status: str | None = None,
    set_custom_status: bool = False,
) -> opb.WorkflowState:
    out = opb.WorkflowState()
    out.CopyFrom(prev)
    out.workflowStatus = state.status  # type: ignore[assignment]
    out.lastUpdatedTimestamp.CopyFrom(ts(now))
    if state.start is not None:
        out.executionId.CopyFrom(state.start.workflowInstance.executionId)
        if state.start.HasField("input"):
            out.input.CopyFrom(state.start.input)
        else:
            out.ClearField("input")
    if state.started_at is not None and not out.HasField("startedAt"):
        out.startedAt.CopyFrom(ts(state.started_at))
    if set_custom_status:
        if custom_status is None:
            out.ClearField("customStatus")
        else:
            out.customStatus.value = custom_status
    if state.completed is not None and is_terminal(state.completed.workflowStatus):
        if not out.HasField("completedTimestamp"):
            out.completedTimestamp.CopyFrom(ts(now))
        if state.completed.HasField("result"):
            out.output.CopyFrom(state.completed.result)
        if state.completed.HasField("failureDetails"):
            out.failureDetails.CopyFrom(state.completed.failureDetails)
    return out


def restart_state(prev: opb.WorkflowState, *, execution_id: str, input_: object) -> opb.WorkflowState:
    """The projection of a new generation after continue-as-new."""
    out = opb.WorkflowState()
    out.CopyFrom(prev)
    for name in ("output", "failureDetails", "completedTimestamp", "customStatus"):
        out.ClearField(name)
    out.workflowStatus = opb.ORCHESTRATION_STATUS_RUNNING
    out.executionId.value = execution_id
    if input_ is None:
        out.ClearField("input")
    else:
        out.input.CopyFrom(input_)  # type: ignore[arg-type]
    return out
