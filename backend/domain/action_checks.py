"""Field checks of a worker's WorkflowResponse, one checker per action kind. Pure.

actions.validate() runs them before anything is applied or written, so a malformed or
oversized action is answered INVALID_ARGUMENT and changes nothing. Worker-created child and
detached instance IDs follow the rules of client-chosen ones; instances a worker addresses
(sendEvent, terminateWorkflow) follow the rules of an existing ID. Payloads are not checked
here: one over --max-payload-bytes stalls the workflow (applier.apply). Failure details are
not refused either: they are truncated (domain/failures.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import validate
from backend.errors import InvalidArgument

_COMPLETION_STATUSES = frozenset(
    {
        opb.ORCHESTRATION_STATUS_COMPLETED,
        opb.ORCHESTRATION_STATUS_FAILED,
        opb.ORCHESTRATION_STATUS_TERMINATED,
        opb.ORCHESTRATION_STATUS_CANCELED,
        opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    }
)


def _version(body: Any, what: str, field: str = "version") -> None:
    if body.HasField(field):
        validate.version(getattr(body, field), f"{what}.{field}")


def _schedule_task(what: str, task: apb.ScheduleTaskAction) -> None:
    if not task.name:
        raise InvalidArgument(f"{what} needs an activity name")
    validate.name(task.name, f"{what}.name")
    _version(task, what)
    validate.execution_id(task.taskExecutionId, f"{what}.taskExecutionId")


def _create_child(what: str, child: apb.CreateChildWorkflowAction) -> None:
    if not child.name:
        raise InvalidArgument(f"{what} needs a workflow name")
    validate.name(child.name, f"{what}.name")
    if child.instanceId:  # empty: the server derives it from the parent's ID
        validate.new_instance_id(child.instanceId, f"{what}.instanceId")
    _version(child, what)
    retry = child.retryParentInstanceInfo
    if child.HasField("retryParentInstanceInfo") and retry.instanceID:
        validate.existing_instance_id(retry.instanceID, f"{what}.retryParentInstanceInfo.instanceID")


def _create_detached(what: str, detached: apb.CreateDetachedWorkflowAction) -> None:
    if not detached.name or not detached.instanceId:
        raise InvalidArgument(f"{what} needs a name and an instanceId")
    validate.name(detached.name, f"{what}.name")
    validate.new_instance_id(detached.instanceId, f"{what}.instanceId")
    _version(detached, what)
    if detached.HasField("scheduledStartTimestamp"):
        validate.timestamp(detached.scheduledStartTimestamp, f"{what}.scheduledStartTimestamp")
    if detached.HasField("executionId"):
        validate.execution_id(detached.executionId.value, f"{what}.executionId")
    validate.tags(detached.tags, f"{what}.tags")
    if detached.HasField("parentTraceContext"):
        validate.trace_context(detached.parentTraceContext, f"{what}.parentTraceContext")


def _create_timer(what: str, timer: apb.CreateTimerAction) -> None:
    if timer.HasField("fireAt"):
        validate.timestamp(timer.fireAt, f"{what}.fireAt")
    if timer.HasField("name"):
        validate.optional_name(timer.name, f"{what}.name")
    origin = timer.WhichOneof("origin")
    if origin == "externalEvent":
        validate.optional_name(timer.externalEvent.name, f"{what}.externalEvent.name")
    elif origin == "activityRetry":
        validate.execution_id(timer.activityRetry.taskExecutionId, f"{what}.activityRetry.taskExecutionId")
    elif origin == "childWorkflowRetry" and timer.childWorkflowRetry.instanceId:
        validate.existing_instance_id(
            timer.childWorkflowRetry.instanceId, f"{what}.childWorkflowRetry.instanceId"
        )


def _send_event(what: str, send: apb.SendEventAction) -> None:
    if not send.instance.instanceId or not send.name:
        raise InvalidArgument(f"{what} needs a target instance and a name")
    validate.existing_instance_id(send.instance.instanceId, f"{what}.instance.instanceId")
    if send.instance.HasField("executionId"):
        validate.execution_id(send.instance.executionId.value, f"{what}.instance.executionId")
    validate.name(send.name, f"{what}.name")


def _complete_workflow(what: str, done: apb.CompleteWorkflowAction) -> None:
    if done.workflowStatus not in _COMPLETION_STATUSES:
        raise InvalidArgument(f"{what} status {done.workflowStatus} is not a completion status")
    _version(done, what, "newVersion")
    for i, carried in enumerate(done.carryoverEvents):
        # Carried events enter the next generation's history as they are: a bad time there
        # would fail every later turn. The SDKs carry unprocessed external events only; any other
        # kind would put unchecked fields into a history.
        where = f"{what}.carryoverEvents[{i}]"
        if not carried.HasField("eventRaised"):
            kind = carried.WhichOneof("eventType") or "no event"
            raise InvalidArgument(f"{where} is {kind}: only eventRaised events can be carried over")
        if carried.HasField("timestamp"):
            validate.timestamp(carried.timestamp, f"{where}.timestamp")
        if carried.HasField("eventRaised"):  # bounded, not required: it was accepted once already
            validate.optional_name(carried.eventRaised.name, f"{where}.eventRaised.name")
        if carried.HasField("router"):
            validate.router(carried.router, f"{where}.router")


def _terminate_workflow(what: str, term: apb.TerminateWorkflowAction) -> None:
    if not term.instanceId:
        raise InvalidArgument(f"{what} needs an instanceId")
    validate.existing_instance_id(term.instanceId, f"{what}.instanceId")


def _nothing(what: str, body: object) -> None:
    """workflowVersionNotAvailable carries no fields."""


CHECKS: dict[str, Callable[[str, Any], None]] = {
    "scheduleTask": _schedule_task,
    "createChildWorkflow": _create_child,
    "createDetachedWorkflow": _create_detached,
    "createTimer": _create_timer,
    "sendEvent": _send_event,
    "completeWorkflow": _complete_workflow,
    "terminateWorkflow": _terminate_workflow,
    "workflowVersionNotAvailable": _nothing,
}


def check_action(action: apb.WorkflowAction, kind: str) -> None:
    what = f"action {action.id}: {kind}"
    if action.HasField("router"):
        validate.router(action.router, f"{what} router")
    CHECKS[kind](what, getattr(action, kind))


def check_response(response: spb.WorkflowResponse) -> None:
    """The fields of the response itself (besides its actions and payloads)."""
    if response.HasField("version"):
        if response.version.HasField("name"):
            validate.optional_name(response.version.name, "version.name")
        validate.patches(response.version.patches, "version.patches")
