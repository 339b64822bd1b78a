"""W3C trace context of a workflow, derived from its history: no OpenTelemetry needed.

Every workflow execution has one span whose ID is fixed when its ExecutionStarted is created
(`workflowSpanID`, as the reference sidecar records it). Its parent is the client's
`parentTraceContext`; without one the workflow is the root of a trace whose ID is derived from
the execution ID. Activity and timer spans get IDs derived from the workflow span and the task's
event ID, so any server replica, before or after a restart, computes the same IDs from the
history alone. Pure: used by the applier (stamping) and by telemetry (exporting).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from google.protobuf import wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb

_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
SAMPLED = "01"


@dataclass(frozen=True, kw_only=True)
class SpanContext:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    flags: str = SAMPLED  # 2 hex: bit 0 is "sampled"
    state: str = ""  # W3C tracestate, passed on unchanged

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def to_proto(self) -> opb.TraceContext:
        tc = opb.TraceContext(traceParent=self.traceparent, spanID=self.span_id)
        if self.state:
            tc.traceState.CopyFrom(wrappers_pb2.StringValue(value=self.state))
        return tc

    def child(self, span_id: str) -> SpanContext:
        return SpanContext(trace_id=self.trace_id, span_id=span_id, flags=self.flags, state=self.state)


def _valid_ids(trace_id: str, span_id: str) -> bool:
    return trace_id != "0" * 32 and span_id != "0" * 16


def parse(tc: opb.TraceContext | None) -> SpanContext | None:
    """A W3C `traceparent`, or the older form (trace ID in traceParent, span ID in spanID) that
    durabletask-go's client sends; None when it is neither."""
    if tc is None:
        return None
    text = tc.traceParent.strip().lower()
    state = tc.traceState.value if tc.HasField("traceState") else ""
    m = _TRACEPARENT.fullmatch(text)
    if m is not None:
        version, trace_id, span_id, flags, rest = m.groups()
        if version == "ff" or (version == "00" and rest) or not _valid_ids(trace_id, span_id):
            return None
        return SpanContext(trace_id=trace_id, span_id=span_id, flags=flags, state=state)
    span_id = tc.spanID.strip().lower()
    if _HEX32.fullmatch(text) and _HEX16.fullmatch(span_id) and _valid_ids(text, span_id):
        return SpanContext(trace_id=text, span_id=span_id, flags=SAMPLED, state=state)
    return None


def new_span_id() -> str:
    while True:
        span_id = secrets.token_hex(8)
        if span_id != "0" * 16:
            return span_id


def _derive(length: int, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]
    return digest if digest.strip("0") else "1".rjust(length, "0")


def workflow_span(started: hpb.ExecutionStartedEvent) -> tuple[SpanContext, SpanContext | None]:
    """This execution's span and its parent (None: the workflow is the root of its trace)."""
    instance_id = started.workflowInstance.instanceId
    execution_id = started.workflowInstance.executionId.value
    parent = parse(started.parentTraceContext) if started.HasField("parentTraceContext") else None
    recorded = started.workflowSpanID.value.lower() if started.HasField("workflowSpanID") else ""
    span_id = recorded if _HEX16.fullmatch(recorded) else _derive(16, "workflow", instance_id, execution_id)
    if parent is not None:
        return parent.child(span_id), parent
    trace_id = _derive(32, "trace", instance_id, execution_id)
    return SpanContext(trace_id=trace_id, span_id=span_id), None


def task_span(parent: SpanContext, kind: str, task_id: int) -> SpanContext:
    """The span of one activity or timer (`kind`) of the workflow span `parent`."""
    return parent.child(_derive(16, kind, parent.trace_id, parent.span_id, str(task_id)))


def activity_context(scheduled: hpb.HistoryEvent) -> opb.TraceContext | None:
    """What the activity's worker receives: the activity span, a child of the TaskScheduled's
    context (the workflow span), so the SDK's own activity span joins the trace."""
    if not scheduled.taskScheduled.HasField("parentTraceContext"):
        return None
    workflow = parse(scheduled.taskScheduled.parentTraceContext)
    if workflow is None:
        return None
    return task_span(workflow, "activity", scheduled.eventId).to_proto()
