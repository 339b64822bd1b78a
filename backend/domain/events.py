"""History-event factories and the small helpers every other module shares.

Events created by the server for things arriving from outside a workflow carry
eventId -1; events produced by an action carry the action's id.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb


def utcnow() -> datetime:
    return datetime.now(UTC)


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def from_ts(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


# SDKs wait "forever" with a timer at the end of time (durabletask-go: 9999-12-31T23:59:59.999999999Z
# for WaitForSingleEvent with no timeout). A timer due in year 9999 never fires: it is recorded
# in history, but nothing is queued for it and it keeps nothing pending.
NEVER = datetime(9999, 1, 1, tzinfo=UTC)


def never_fires(timer: hpb.TimerCreatedEvent) -> bool:
    return timer.HasField("fireAt") and from_ts(timer.fireAt) >= NEVER


def sv(value: str | None) -> wrappers_pb2.StringValue | None:
    return None if value is None else wrappers_pb2.StringValue(value=value)


def event(moment: datetime, *, event_id: int = -1, **kind: object) -> hpb.HistoryEvent:
    """A HistoryEvent with one `eventType` set, e.g. event(now, eventRaised=...)."""
    return hpb.HistoryEvent(eventId=event_id, timestamp=ts(moment), **kind)  # type: ignore[arg-type]


def kind(ev: hpb.HistoryEvent) -> str:
    return ev.WhichOneof("eventType") or ""


def router(source: str, target: str | None = None) -> opb.TaskRouter:
    r = opb.TaskRouter(sourceAppID=source)
    if target:
        r.targetAppID = target
    return r


def workflow_started(moment: datetime) -> hpb.HistoryEvent:
    return event(moment, workflowStarted=hpb.WorkflowStartedEvent())


def event_raised(moment: datetime, name: str, data: wrappers_pb2.StringValue | None) -> hpb.HistoryEvent:
    return event(moment, eventRaised=hpb.EventRaisedEvent(name=name, input=data))


def execution_terminated(
    moment: datetime, output: wrappers_pb2.StringValue | None, *, recurse: bool
) -> hpb.HistoryEvent:
    return event(moment, executionTerminated=hpb.ExecutionTerminatedEvent(input=output, recurse=recurse))


def execution_suspended(moment: datetime, reason: wrappers_pb2.StringValue | None) -> hpb.HistoryEvent:
    return event(moment, executionSuspended=hpb.ExecutionSuspendedEvent(input=reason))


def execution_resumed(moment: datetime, reason: wrappers_pb2.StringValue | None) -> hpb.HistoryEvent:
    return event(moment, executionResumed=hpb.ExecutionResumedEvent(input=reason))


def execution_completed(
    moment: datetime,
    status: int,
    *,
    event_id: int = -1,
    result: wrappers_pb2.StringValue | None = None,
    failure: opb.TaskFailureDetails | None = None,
) -> hpb.HistoryEvent:
    done = hpb.ExecutionCompletedEvent(workflowStatus=status, result=result)  # type: ignore[arg-type]
    if failure is not None:
        done.failureDetails.CopyFrom(failure)
    return event(moment, event_id=event_id, executionCompleted=done)


def failure(error_type: str, message: str, *, non_retriable: bool = False) -> opb.TaskFailureDetails:
    return opb.TaskFailureDetails(errorType=error_type, errorMessage=message, isNonRetriable=non_retriable)
