"""Dashboard: history events and instance states as JSON rows (pure, no I/O).

The instance page shows each event as one table row: its kind, time, the app that
ran it, the route a cross-app task took, and its payload (cut to a preview; the full
event is one more request away)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import status_name

PREVIEW_CHARS = 512
Json = dict[str, Any]

# The event's payload: which StringValue field of its body holds it.
_PAYLOAD_FIELD = {
    "executionStarted": "input",
    "executionCompleted": "result",
    "executionTerminated": "input",
    "taskScheduled": "input",
    "taskCompleted": "result",
    "childWorkflowInstanceCreated": "input",
    "childWorkflowInstanceCompleted": "result",
    "eventSent": "input",
    "eventRaised": "input",
    "continueAsNew": "input",
    "executionSuspended": "input",
    "executionResumed": "input",
}


def millis(ts: Any) -> int | None:
    """A protobuf Timestamp as epoch milliseconds; None when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return int(ts.seconds * 1000 + ts.nanos // 1_000_000)


def preview(text: str | None) -> tuple[str | None, bool]:
    if text is None:
        return None, False
    if len(text) <= PREVIEW_CHARS:
        return text, False
    return text[:PREVIEW_CHARS], True


def failure(details: opb.TaskFailureDetails) -> Json:
    out: Json = {
        "errorType": details.errorType,
        "errorMessage": details.errorMessage,
        "nonRetriable": details.isNonRetriable,
    }
    if details.HasField("stackTrace"):
        out["stackTrace"] = details.stackTrace.value
    if details.HasField("innerFailure"):
        out["inner"] = failure(details.innerFailure)
    return out


def event_app(event: hpb.HistoryEvent, instance_app: str) -> str:
    """The app that ran what the event is about: a routed task's target (results carry the
    router of their task), else the instance's own app."""
    if not event.HasField("router"):
        return instance_app
    if event.WhichOneof("eventType") in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
        # The child's own result message: routed from the child's app back to the parent.
        return event.router.sourceAppID or instance_app
    return event.router.targetAppID or instance_app


def route(event: hpb.HistoryEvent) -> str | None:
    """ "orders -> payments" for a task that crossed apps."""
    if not event.HasField("router"):
        return None
    r = event.router
    if r.targetAppID and r.targetAppID != r.sourceAppID:
        return f"{r.sourceAppID} -> {r.targetAppID}"
    return None


def name_of(event: hpb.HistoryEvent) -> str | None:
    kind = event.WhichOneof("eventType")
    if kind is None:
        return None
    body = getattr(event, kind)
    if "name" in body.DESCRIPTOR.fields_by_name:
        value = body.name
        return value or None
    return None


def row(seq: int, event: hpb.HistoryEvent, instance_app: str, names: dict[int, str] | None = None) -> Json:
    """One history table row: the payload cut to a preview; a result is named after its task
    (`names`: scheduling eventId -> name)."""
    kind = event.WhichOneof("eventType") or "unknown"
    body = getattr(event, kind) if kind != "unknown" else None
    out: Json = {
        "seq": seq,
        "eventId": event.eventId,
        "type": kind,
        "time": millis(event.timestamp),
        "app": event_app(event, instance_app),
        "route": route(event),
        "name": name_of(event),
    }
    field = _PAYLOAD_FIELD.get(kind)
    if body is not None and field is not None and body.HasField(field):
        out["payload"], out["truncated"] = preview(getattr(body, field).value)
    if body is not None and "taskScheduledId" in body.DESCRIPTOR.fields_by_name:
        out["taskScheduledId"] = body.taskScheduledId
        if names and out["name"] is None:
            out["name"] = names.get(body.taskScheduledId)
    if body is not None and "timerId" in body.DESCRIPTOR.fields_by_name:
        out["timerId"] = body.timerId
    if (
        body is not None
        and "failureDetails" in body.DESCRIPTOR.fields_by_name
        and body.HasField("failureDetails")
    ):
        out["failure"] = failure(body.failureDetails)
    if kind == "childWorkflowInstanceCreated":
        out["child"] = {
            "app": event.router.targetAppID or instance_app,
            "id": event.childWorkflowInstanceCreated.instanceId,
        }
    if kind == "executionCompleted":
        out["status"] = status_name(event.executionCompleted.workflowStatus)
    return out


def full_event(event: hpb.HistoryEvent) -> Json:
    """The whole event, every field (the expanded row)."""
    return json_format.MessageToDict(event, preserving_proto_field_name=False)


def state_json(app_id: str, state: opb.WorkflowState, *, payloads: bool = True) -> Json:
    out: Json = {
        "app": app_id,
        "id": state.instanceId,
        "name": state.name,
        "status": status_name(state.workflowStatus),
        "created": millis(state.createdTimestamp),
        "updated": millis(state.lastUpdatedTimestamp),
        "completed": millis(state.completedTimestamp),
        "started": millis(state.startedAt) if state.HasField("startedAt") else None,
        "scheduledStart": millis(state.scheduledStartTimestamp),
        "version": state.version.value if state.HasField("version") else None,
        "executionId": state.executionId.value if state.HasField("executionId") else None,
        "tags": dict(state.tags),
    }
    if state.HasField("parentInstanceId") and state.parentInstanceId.value:
        out["parent"] = {
            "app": state.parentAppId.value
            if state.HasField("parentAppId") and state.parentAppId.value
            else app_id,
            "id": state.parentInstanceId.value,
        }
    if payloads:
        for field, name in (("input", "input"), ("output", "output"), ("customStatus", "customStatus")):
            if state.HasField(field):
                out[name] = getattr(state, field).value
        if state.HasField("failureDetails"):
            out["failure"] = failure(state.failureDetails)
    return out
