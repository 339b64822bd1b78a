"""The spans one committed workflow turn completes, derived from the history alone.

A span is emitted when what it covers ends, with the start time its history event recorded:
an activity (TaskScheduled -> TaskCompleted/TaskFailed), a durable timer (TimerCreated ->
TimerFired), and the workflow itself (ExecutionStarted -> ExecutionCompleted, or a
continue-as-new). A child workflow is a workflow whose parent span is its parent's workflow
span. The IDs come from backend/domain/trace.py, so a turn on another replica or after a
restart continues the same trace. Span names and attributes are the reference sidecar's
(durabletask-go api/helpers/tracing.go). Pure: no OpenTelemetry import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain import trace
from backend.domain.model import InstanceKey
from backend.domain.trace import SpanContext

Attributes = dict[str, str | int]


@dataclass(frozen=True, kw_only=True)
class SpanEvent:
    name: str
    at: datetime
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SpanRecord:
    name: str
    app_id: str  # the app the span belongs to (its service, unless OTEL_SERVICE_NAME says)
    context: SpanContext
    parent: SpanContext | None
    kind: str  # "server" or "internal"
    start: datetime
    end: datetime
    attributes: Attributes
    error: str | None = None
    events: tuple[SpanEvent, ...] = ()


def status_name(status: int) -> str:
    """ "COMPLETED", "FAILED", ...: the reference's runtime status strings."""
    return opb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")


def _named(kind: str, name: str, version: str, attributes: Attributes) -> str:
    """`kind||name||version`, as the reference names spans; the version also as an attribute."""
    if version:
        attributes["durabletask.task.version"] = version
        return f"{kind}||{name}||{version}"
    return f"{kind}||{name}" if name else kind


def _at(event: hpb.HistoryEvent) -> datetime:
    return event.timestamp.ToDatetime(tzinfo=UTC)


def _activity(key: InstanceKey, scheduled: hpb.HistoryEvent, done: hpb.HistoryEvent) -> SpanRecord | None:
    task = scheduled.taskScheduled
    workflow = trace.parse(task.parentTraceContext) if task.HasField("parentTraceContext") else None
    if workflow is None or not workflow.sampled:
        return None  # scheduled before tracing was stamped, or not sampled upstream
    attributes: Attributes = {
        "durabletask.type": "activity",
        "durabletask.task.name": task.name,
        "durabletask.task.task_id": scheduled.eventId,
        "durabletask.task.instance_id": key.instance_id,
    }
    name = _named("activity", task.name, task.version.value, attributes)
    error = None
    if done.HasField("taskFailed"):
        error = done.taskFailed.failureDetails.errorMessage or "failed"
    return SpanRecord(
        name=name,
        app_id=scheduled.router.targetAppID or key.app_id,
        context=trace.task_span(workflow, "activity", scheduled.eventId),
        parent=workflow,
        kind="server",
        start=_at(scheduled),
        end=max(_at(done), _at(scheduled)),
        attributes=attributes,
        error=error,
    )


def _timer(
    key: InstanceKey, workflow: SpanContext, created: hpb.HistoryEvent, fired: hpb.HistoryEvent, now: datetime
) -> SpanRecord:
    fire_at = fired.timerFired.fireAt.ToDatetime(tzinfo=UTC)
    return SpanRecord(
        name="timer",
        app_id=key.app_id,
        context=trace.task_span(workflow, "timer", created.eventId),
        parent=workflow,
        kind="internal",
        start=_at(created),
        end=max(now, _at(created)),
        attributes={
            "durabletask.type": "timer",
            "durabletask.fire_at": fire_at.isoformat().replace("+00:00", "Z"),
            "durabletask.task.task_id": created.eventId,
            "durabletask.task.instance_id": key.instance_id,
        },
    )


def _notable(events: Sequence[hpb.HistoryEvent]) -> tuple[SpanEvent, ...]:
    """What the reference adds to a workflow span: external events, suspend, resume, stall."""
    out = []
    for e in events:
        if e.HasField("eventRaised"):
            attrs: Attributes = {"name": e.eventRaised.name, "size": len(e.eventRaised.input.value)}
            out.append(SpanEvent(name="Received external event", at=_at(e), attributes=attrs))
        elif e.HasField("executionSuspended"):
            reason = {"reason": e.executionSuspended.input.value}
            out.append(SpanEvent(name="Execution suspended", at=_at(e), attributes=dict(reason)))
        elif e.HasField("executionResumed"):
            reason = {"reason": e.executionResumed.input.value}
            out.append(SpanEvent(name="Execution resumed", at=_at(e), attributes=dict(reason)))
        elif e.HasField("executionStalled"):
            stalled: Attributes = {
                "reason": opb.StalledReason.Name(e.executionStalled.reason),
                "description": e.executionStalled.description,
            }
            out.append(SpanEvent(name="Execution stalled", at=_at(e), attributes=stalled))
    return tuple(out)


def _workflow(
    key: InstanceKey,
    start: hpb.HistoryEvent,
    events: Sequence[hpb.HistoryEvent],
    status: int,
    end: datetime,
    failure: opb.TaskFailureDetails | None,
) -> SpanRecord | None:
    started = start.executionStarted
    context, parent = trace.workflow_span(started)
    if not context.sampled:
        return None
    attributes: Attributes = {
        "durabletask.type": "orchestration",
        "durabletask.task.name": started.name,
        "durabletask.task.instance_id": key.instance_id,
        "durabletask.runtime_status": status_name(status),
    }
    name = _named("orchestration", started.name, started.version.value, attributes)
    error = None
    if status == opb.ORCHESTRATION_STATUS_FAILED:
        error = (failure.errorMessage if failure is not None else "") or "failed"
    return SpanRecord(
        name=name,
        app_id=key.app_id,
        context=context,
        parent=parent,
        kind="server",
        # From its first turn, as the reference: a scheduled start's wait is not part of the run.
        start=_at(events[0]),
        end=max(end, _at(events[0])),
        attributes=attributes,
        error=error,
        events=_notable(events),
    )


_ENDINGS = frozenset({"taskCompleted", "taskFailed", "timerFired", "executionCompleted"})


def of_turn(
    key: InstanceKey,
    past: Sequence[hpb.HistoryEvent],
    new: Sequence[hpb.HistoryEvent],
    *,
    now: datetime,
    continued_as_new: bool = False,
) -> list[SpanRecord]:
    """The spans that end with this turn: `past` is the committed history before it, `new` the
    events it committed (with continue-as-new: none; the old generation ends)."""
    if not continued_as_new and not any(e.WhichOneof("eventType") in _ENDINGS for e in new):
        return []  # most turns end nothing: no need to walk the history
    events = [*past, *new]
    start = next((e for e in events if e.HasField("executionStarted")), None)
    if start is None:
        return []
    workflow = trace.workflow_span(start.executionStarted)[0]
    scheduled: dict[int, hpb.HistoryEvent] = {}
    timers: dict[int, hpb.HistoryEvent] = {}
    for e in events:
        if e.HasField("taskScheduled"):
            scheduled[e.eventId] = e
        elif e.HasField("timerCreated"):
            timers[e.eventId] = e
    spans: list[SpanRecord] = []
    for e in new:
        if e.HasField("taskCompleted") or e.HasField("taskFailed"):
            done = e.taskCompleted if e.HasField("taskCompleted") else e.taskFailed
            task = scheduled.get(done.taskScheduledId)
            record = _activity(key, task, e) if task is not None else None
            if record is not None:
                spans.append(record)
        elif e.HasField("timerFired") and workflow.sampled:
            created = timers.get(e.timerFired.timerId)
            if created is not None:
                spans.append(_timer(key, workflow, created, e, now))
        elif e.HasField("executionCompleted"):
            completed = e.executionCompleted
            failure = completed.failureDetails if completed.HasField("failureDetails") else None
            record = _workflow(key, start, events, completed.workflowStatus, _at(e), failure)
            if record is not None:
                spans.append(record)
    if continued_as_new:
        record = _workflow(key, start, events, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, now, None)
        if record is not None:
            spans.append(record)
    return spans
