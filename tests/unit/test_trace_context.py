"""W3C trace context through a workflow's history (domain/trace.py, the applier's stamping) and
the spans a turn completes (telemetry/trace_spans.py), exported through the real OpenTelemetry
SDK into its in-memory exporter (telemetry/trace_export.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import applier, trace
from backend.domain import events as ev
from backend.domain.context import TurnContext
from backend.domain.model import InstanceKey, WorkflowCommit
from backend.domain.state import RuntimeState
from backend.domain.turn import turn_started
from backend.telemetry import trace_export, trace_spans, tracing

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = InstanceKey("orders", "wf-1")
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
W3C = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


# -- builders --------------------------------------------------------------------------------------


def started_instance(key: InstanceKey = KEY, parent: opb.TraceContext | None = None) -> hpb.HistoryEvent:
    created = applier.new_instance(
        key, name="order", version=None, input_=None, route=ev.router(key.app_id), now=T0, parent_trace=parent
    )
    assert created.start is not None
    return created.start.event


def client_context(flags: str = "01") -> opb.TraceContext:
    return opb.TraceContext(traceParent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}")


class Turn:
    """One worker turn over `history`, as engine/turns.py runs it."""

    def __init__(self, history: list[hpb.HistoryEvent], inbox: list[hpb.HistoryEvent], now: datetime) -> None:
        self.history = history
        self.state = RuntimeState.of(history)
        self.new = [turn_started(self.state, now), *inbox]
        for e in self.new:
            self.state.add(e)
        self.ctx = TurnContext(
            key=KEY, now=now, stored=opb.WorkflowState(), consumed=[], max_payload_bytes=1 << 20, past=history
        )

    def apply(self, *actions: apb.WorkflowAction) -> WorkflowCommit:
        response = spb.WorkflowResponse(instanceId=KEY.instance_id, actions=list(actions))
        return applier.apply(self.ctx, self.state, self.new, response)


def schedule(action_id: int, name: str, app: str | None = None) -> apb.WorkflowAction:
    a = apb.WorkflowAction(id=action_id, scheduleTask=apb.ScheduleTaskAction(name=name, input=ev.sv('"x"')))
    if app:
        a.router.targetAppID = app
    return a


def child(action_id: int, name: str, app: str | None = None) -> apb.WorkflowAction:
    a = apb.WorkflowAction(id=action_id, createChildWorkflow=apb.CreateChildWorkflowAction(name=name))
    if app:
        a.router.targetAppID = app
    return a


def timer(action_id: int, fire_at: datetime) -> apb.WorkflowAction:
    return apb.WorkflowAction(id=action_id, createTimer=apb.CreateTimerAction(fireAt=ev.ts(fire_at)))


def done(action_id: int, status: int = opb.ORCHESTRATION_STATUS_COMPLETED) -> apb.WorkflowAction:
    return apb.WorkflowAction(
        id=action_id, completeWorkflow=apb.CompleteWorkflowAction(workflowStatus=status, result=ev.sv('"ok"'))
    )


def completed(task_id: int, at: datetime) -> hpb.HistoryEvent:
    return ev.event(at, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=task_id, result=ev.sv('"r"')))


def roundtrip(events: list[hpb.HistoryEvent]) -> list[hpb.HistoryEvent]:
    """As a store gives history back after a restart (or to another replica): bytes decoded."""
    return [hpb.HistoryEvent.FromString(e.SerializeToString()) for e in events]


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tc", "expected"),
    [
        (
            opb.TraceContext(traceParent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
            (CLIENT_TRACE, CLIENT_SPAN, "01"),
        ),
        (
            opb.TraceContext(traceParent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),
            (CLIENT_TRACE, CLIENT_SPAN, "00"),
        ),
        # durabletask-go's client: the trace ID alone in traceParent, the span ID in spanID.
        (opb.TraceContext(traceParent=CLIENT_TRACE, spanID=CLIENT_SPAN), (CLIENT_TRACE, CLIENT_SPAN, "01")),
        # A later version may append fields.
        (
            opb.TraceContext(traceParent=f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-01-what"),
            (CLIENT_TRACE, CLIENT_SPAN, "01"),
        ),
        (opb.TraceContext(traceParent=f"00-{'0' * 32}-{CLIENT_SPAN}-01"), None),
        (opb.TraceContext(traceParent=f"00-{CLIENT_TRACE}-{'0' * 16}-01"), None),
        (opb.TraceContext(traceParent=f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), None),
        (opb.TraceContext(traceParent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra"), None),
        (opb.TraceContext(traceParent="not a traceparent"), None),
        (opb.TraceContext(), None),
    ],
)
def test_parse(tc: opb.TraceContext, expected: tuple[str, str, str] | None) -> None:
    got = trace.parse(tc)
    assert (None if got is None else (got.trace_id, got.span_id, got.flags)) == expected


def test_trace_state_travels_with_the_context() -> None:
    tc = client_context()
    tc.traceState.value = "vendor=abc"
    got = trace.parse(tc)
    assert got is not None and got.to_proto().traceState.value == "vendor=abc"


# -- stamping -------------------------------------------------------------------------------------


def test_client_context_parents_the_workflow_span() -> None:
    start = started_instance(parent=client_context())
    started = start.executionStarted
    assert started.parentTraceContext.traceParent == f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    assert re.fullmatch(r"[0-9a-f]{16}", started.workflowSpanID.value)
    span, parent = trace.workflow_span(started)
    assert parent is not None and (parent.trace_id, parent.span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert (span.trace_id, span.span_id) == (CLIENT_TRACE, started.workflowSpanID.value)


def test_without_a_client_context_the_workflow_roots_its_own_trace() -> None:
    start = started_instance()
    span, parent = trace.workflow_span(start.executionStarted)
    assert parent is None
    assert re.fullmatch(r"[0-9a-f]{32}", span.trace_id) and span.trace_id != CLIENT_TRACE
    # The same on every replica and after a restart: derived from the recorded history only.
    again, _ = trace.workflow_span(roundtrip([start])[0].executionStarted)
    assert again == span
    # Two instances are two traces.
    assert (
        trace.workflow_span(started_instance(InstanceKey("orders", "wf-2")).executionStarted)[0].trace_id
        != span.trace_id
    )


def test_activities_and_children_carry_the_workflow_span_across_apps() -> None:
    start = started_instance(parent=client_context())
    workflow, _ = trace.workflow_span(start.executionStarted)
    commit = Turn([start], [], T0).apply(
        schedule(1, "charge", app="payments"), schedule(2, "log"), child(3, "ship", app="shipping")
    )

    by_id = {e.eventId: e for e in commit.new_history if e.eventId > 0}
    for task_id in (1, 2):
        assert by_id[task_id].taskScheduled.parentTraceContext.traceParent == workflow.traceparent
    assert by_id[3].childWorkflowInstanceCreated.parentTraceContext.traceParent == workflow.traceparent

    # The activity's worker receives the activity span: a child of the workflow span, in the same trace.
    requests = {t.request.taskId: t for t in commit.activities}
    assert requests[1].app_id == "payments"
    for task_id, task in requests.items():
        sent = task.request.parentTraceContext.traceParent
        assert W3C.fullmatch(sent), sent
        got = trace.parse(task.request.parentTraceContext)
        assert got is not None and got.trace_id == CLIENT_TRACE
        assert got.span_id not in (workflow.span_id, CLIENT_SPAN)
        assert got == trace.task_span(workflow, "activity", task_id)
    assert requests[1].request.parentTraceContext != requests[2].request.parentTraceContext

    # The child (on another app) starts as a span of its own, whose parent is this workflow's span.
    (new,) = commit.new_instances
    assert new.key == InstanceKey("shipping", f"{KEY.instance_id}:0003")
    assert new.start is not None
    child_span, child_parent = trace.workflow_span(new.start.event.executionStarted)
    assert child_parent == workflow
    assert child_span.trace_id == CLIENT_TRACE and child_span.span_id != workflow.span_id


def test_an_unsampled_client_context_stays_unsampled() -> None:
    start = started_instance(parent=client_context(flags="00"))
    commit = Turn([start], [], T0).apply(schedule(1, "charge"))
    (task,) = commit.activities
    assert task.request.parentTraceContext.traceParent.endswith("-00")
    assert trace_spans.of_turn(KEY, [start], [completed(1, T0)], now=T0) == []


def test_continue_as_new_starts_a_fresh_trace() -> None:
    start = started_instance(parent=client_context())
    turn = Turn([start], [], T0)
    commit = turn.apply(done(1, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW))
    assert commit.reset_history
    (next_start,) = [m.event for m in commit.messages if m.event.HasField("executionStarted")]
    nxt = next_start.executionStarted
    assert not nxt.HasField("parentTraceContext")
    old_span, _ = trace.workflow_span(start.executionStarted)
    new_span, new_parent = trace.workflow_span(nxt)
    assert new_parent is None and new_span.trace_id != old_span.trace_id
    assert nxt.workflowSpanID.value != start.executionStarted.workflowSpanID.value


# -- spans of a turn ------------------------------------------------------------------------------


def run_workflow() -> tuple[hpb.HistoryEvent, list[list[hpb.HistoryEvent]], list[trace_spans.SpanRecord]]:
    """A workflow over four turns, each committed and read back (as after a restart):
    an activity on another app and a timer, then completion. The spans of each turn."""
    start = started_instance(parent=client_context())
    history = [start]
    spans: list[trace_spans.SpanRecord] = []
    turns: list[list[hpb.HistoryEvent]] = []

    def commit(turn: Turn, *actions: apb.WorkflowAction, now: datetime) -> None:
        c = turn.apply(*actions)
        spans.extend(trace_spans.of_turn(KEY, history, c.new_history, now=now))
        turns.append(list(c.new_history))
        history[:] = roundtrip([*history, *c.new_history])

    commit(Turn(history, [], T0), schedule(1, "charge", app="payments"), now=T0)
    t1 = T0 + timedelta(seconds=2)
    commit(Turn(history, [completed(1, t1)], t1), timer(2, T0 + timedelta(seconds=10)), now=t1)
    fire_at = ev.ts(T0 + timedelta(seconds=10))
    fired = [ev.event(t1, timerFired=hpb.TimerFiredEvent(fireAt=fire_at, timerId=2))]
    t2 = T0 + timedelta(seconds=10)
    commit(Turn(history, fired, t2), done(3), now=t2)
    return start, turns, spans


def test_spans_of_a_workflow_form_one_tree() -> None:
    start, _, spans = run_workflow()
    workflow, parent = trace.workflow_span(start.executionStarted)
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["activity||charge", "orchestration||order", "timer"]
    assert {s.context.trace_id for s in spans} == {CLIENT_TRACE}

    wf = by_name["orchestration||order"]
    assert wf.context == workflow and wf.parent == parent
    assert wf.start == T0 and wf.end == T0 + timedelta(seconds=10)
    assert wf.attributes == {
        "durabletask.type": "orchestration",
        "durabletask.task.name": "order",
        "durabletask.task.instance_id": KEY.instance_id,
        "durabletask.runtime_status": "COMPLETED",
    }
    act = by_name["activity||charge"]
    assert act.parent == workflow and act.app_id == "payments"
    assert act.context == trace.task_span(workflow, "activity", 1)
    assert (act.start, act.end) == (T0, T0 + timedelta(seconds=2))
    assert act.attributes["durabletask.task.task_id"] == 1
    tim = by_name["timer"]
    assert tim.parent == workflow and tim.attributes["durabletask.fire_at"] == "2026-01-02T03:04:15Z"
    assert (tim.start, tim.end) == (T0 + timedelta(seconds=2), T0 + timedelta(seconds=10))


def test_a_failed_workflow_span_says_why() -> None:
    start = started_instance()
    turn = Turn([start], [], T0)
    failure = opb.TaskFailureDetails(errorType="Boom", errorMessage="it broke")
    c = turn.apply(
        apb.WorkflowAction(
            id=1,
            completeWorkflow=apb.CompleteWorkflowAction(
                workflowStatus=opb.ORCHESTRATION_STATUS_FAILED, failureDetails=failure
            ),
        )
    )
    (span,) = trace_spans.of_turn(KEY, [start], c.new_history, now=T0)
    assert span.error == "it broke" and span.attributes["durabletask.runtime_status"] == "FAILED"


# -- export through the OpenTelemetry SDK ---------------------------------------------------------


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    previous = tracing.install(trace_export.Tracing([SimpleSpanProcessor(exporter)], env={}))
    try:
        yield exporter
    finally:
        restored = tracing.install(previous)
        assert restored is not None
        restored.shutdown()


def test_export_keeps_the_history_ids(exported: InMemorySpanExporter) -> None:
    start, turns, _ = run_workflow()
    past: list[hpb.HistoryEvent] = [start]
    for new in turns:  # what engine/turns.py calls after each commit
        tracing.workflow_committed(KEY, past, new, now=new[0].timestamp.ToDatetime(tzinfo=UTC))
        past = [*past, *new]
    spans: dict[str, ReadableSpan] = {s.name: s for s in exported.get_finished_spans()}
    assert sorted(spans) == ["activity||charge", "orchestration||order", "timer"]
    workflow, _ = trace.workflow_span(start.executionStarted)
    wf = spans["orchestration||order"]
    assert wf.context is not None and wf.parent is not None
    assert f"{wf.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{wf.context.span_id:016x}" == workflow.span_id
    assert f"{wf.parent.span_id:016x}" == CLIENT_SPAN and wf.parent.is_remote
    assert wf.kind is SpanKind.SERVER
    assert wf.start_time == int(T0.timestamp()) * 10**9
    assert wf.resource.attributes["service.name"] == "orders"
    act = spans["activity||charge"]
    assert act.parent is not None and act.parent.span_id == wf.context.span_id
    assert act.resource.attributes["service.name"] == "payments"  # the app that ran it
    assert act.attributes is not None and act.attributes["durabletask.type"] == "activity"
    assert spans["timer"].kind is SpanKind.INTERNAL
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.values())


def test_without_tracing_the_hook_does_nothing() -> None:
    previous = tracing.install(None)
    try:
        start = started_instance()
        tracing.workflow_committed(KEY, [start], [completed(1, T0)], now=T0)  # no error, no export
        assert tracing.install(None) is None
    finally:
        tracing.install(previous)


@pytest.mark.parametrize(
    ("env", "flag", "on"),
    [
        ({}, False, False),
        ({}, True, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, False, True),
    ],
)
def test_when_tracing_is_on(env: dict[str, str], flag: bool, on: bool) -> None:
    assert tracing.wanted(flag, env) is on


def test_exporters_follow_otel_environment() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert [type(e) for e in trace_export.exporters({})] == [Grpc]
    assert [type(e) for e in trace_export.exporters({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})] == [
        Http
    ]
    assert [type(e) for e in trace_export.exporters({"OTEL_TRACES_EXPORTER": "console,otlp"})] == [
        ConsoleSpanExporter,
        Grpc,
    ]
    assert trace_export.exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    with pytest.raises(tracing.TracingUnavailable, match="zipkin"):
        tracing.start(True, {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_the_workflow_span_notes_external_events_and_starts_at_the_first_turn() -> None:
    start = started_instance()
    first = ev.workflow_started(T0 + timedelta(seconds=1))  # a scheduled start ran a second later
    history = [first, start]
    t1 = T0 + timedelta(seconds=5)
    raised = ev.event_raised(t1, "approve", ev.sv('"yes"'))
    c = Turn(history, [raised], t1).apply(done(1))
    (span,) = trace_spans.of_turn(KEY, history, c.new_history, now=t1)
    assert span.start == T0 + timedelta(seconds=1) and span.end == t1
    assert [(e.name, e.attributes) for e in span.events] == [
        ("Received external event", {"name": "approve", "size": len('"yes"')})
    ]
