"""backend/limits.py and the checks built on it: field bounds, timestamps, failure truncation,
and the worker-action checks that refuse a response before anything is applied."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from backend import limits
from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend.domain import applier, failures, validate
from backend.domain import events as ev
from backend.domain.model import InstanceKey
from backend.errors import InvalidArgument, PayloadTooLarge
from tests.unit.test_domain_applier import BASE, KEY, Turn, action, complete, response, schedule

BIG = "x" * (10 * 1024 * 1024)
FAILED = opb.ORCHESTRATION_STATUS_FAILED

# -- quoting and clipping -------------------------------------------------------------------------


def test_quote_keeps_short_values_and_cuts_long_ones() -> None:
    assert limits.quote("charge") == "'charge'"
    assert limits.quote("nul\x00") == "'nul\\x00'"  # control characters never reach a message raw
    quoted = limits.quote(BIG)
    assert len(quoted) < 100 and f"({len(BIG)} characters)" in quoted


def test_clip_bounds_bytes_on_a_character_boundary() -> None:
    assert limits.clip("short") == "short"
    clipped = limits.clip("\U0001f600" * 1024)
    assert len(clipped.encode()) <= limits.MAX_STATUS_MESSAGE_BYTES
    assert clipped.endswith("[...]")
    clipped.encode()  # no half character


def test_receive_limit_follows_the_payload_limit() -> None:
    assert limits.grpc_receive_limit(4 * 1024 * 1024) == 9 * 1024 * 1024
    assert limits.grpc_receive_limit(1024) == 2048 + limits.ENVELOPE_BYTES
    # A client payload just over the limit still reaches our own, clearer check.
    assert limits.grpc_receive_limit(1 << 20) > (1 << 20) + limits.ENVELOPE_BYTES


# -- field checks -----------------------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    "stamp",
    [
        _ts(limits.MIN_TIMESTAMP_SECONDS - 1),  # year 0
        _ts(limits.MAX_TIMESTAMP_SECONDS + 1),  # year 10000
        _ts(2**63 - 1),
        _ts(-(2**63)),
        _ts(0, -1),
        _ts(0, 1_000_000_000),
    ],
    ids=["year-0", "year-10000", "int64-max", "int64-min", "nanos-negative", "nanos-1e9"],
)
def test_timestamps_out_of_range_are_invalid(stamp: timestamp_pb2.Timestamp) -> None:
    with pytest.raises(InvalidArgument, match="fireAt is out of range"):
        validate.timestamp(stamp, "fireAt")


@pytest.mark.parametrize(
    "stamp",
    [_ts(limits.MIN_TIMESTAMP_SECONDS), _ts(limits.MAX_TIMESTAMP_SECONDS, 999_999_999), _ts(0)],
    ids=["0001-01-01", "9999-12-31", "epoch"],
)
def test_timestamps_at_the_ends_of_the_range_are_valid(stamp: timestamp_pb2.Timestamp) -> None:
    assert validate.timestamp(stamp, "fireAt").tzinfo is not None


@pytest.mark.parametrize(
    ("tags", "match"),
    [
        ({f"k{i}": "v" for i in range(limits.MAX_TAGS + 1)}, "101 entries"),
        ({"k" * (limits.MAX_TAG_KEY_CHARS + 1): "v"}, "at most 256"),
        ({"nul\x00": "v"}, "control characters"),
        ({"k": "v" * (limits.MAX_TAG_VALUE_BYTES + 1)}, "at most 2048"),
        ({f"k{i}": "v" * 2000 for i in range(21)}, "at most 40960"),
    ],
    ids=["count", "key-length", "key-nul", "value-size", "total-size"],
)
def test_tags_are_bounded(tags: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate.tags(tags)


def test_tags_within_bounds_pass() -> None:
    validate.tags({f"k{i}": "v" * 300 for i in range(limits.MAX_TAGS)})  # 100 keys, ~30 KB


@pytest.mark.parametrize(
    ("context", "match"),
    [
        (opb.TraceContext(traceParent="0" * 513), "traceParent"),
        (opb.TraceContext(spanID="0" * 257), "spanID"),
        (opb.TraceContext(traceState=ev.sv("k=v," * 5000)), "traceState"),
        (opb.TraceContext(traceParent="00-\x00"), "control characters"),
    ],
)
def test_trace_context_is_bounded(context: opb.TraceContext, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate.trace_context(context)


def test_a_w3c_trace_context_passes() -> None:
    validate.trace_context(
        opb.TraceContext(
            traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            spanID="b7ad6b7169203331",
            traceState=ev.sv(",".join(f"k{i}=" + "v" * 250 for i in range(32))),
        )
    )


@pytest.mark.parametrize(
    ("router", "match"),
    [
        (opb.TaskRouter(targetAppID="a\x00b"), "router.targetAppID"),
        (opb.TaskRouter(targetAppID="a" * 257), "router.targetAppID is 257 characters"),
        (opb.TaskRouter(sourceAppID="s\n"), "router.sourceAppID"),
        (opb.TaskRouter(targetAppNamespace="n" * 300), "router.targetAppNamespace"),
    ],
)
def test_router_fields_are_bounded(router: opb.TaskRouter, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate.router(router)


def test_versions_execution_ids_page_tokens_and_statuses() -> None:
    with pytest.raises(InvalidArgument, match="version is 1025 characters"):
        validate.version(wrappers_pb2.StringValue(value="v" * 1025))
    with pytest.raises(InvalidArgument, match="executionId is 257 characters"):
        validate.execution_id("e" * 257)
    with pytest.raises(InvalidArgument, match="continuationToken"):
        validate.page_token("t" * 1025)
    with pytest.raises(InvalidArgument, match="not workflow statuses"):
        validate.statuses([opb.ORCHESTRATION_STATUS_COMPLETED, 999])
    assert validate.statuses([1, 1, 3]) == frozenset({1, 3})


def test_names_refuse_control_characters() -> None:
    with pytest.raises(InvalidArgument, match="event name"):
        validate.name("a\x00b", "event name")


def test_reasons_are_bounded_by_the_smaller_of_their_bound_and_the_payload_limit() -> None:
    validate.reason(ev.sv("r" * limits.MAX_REASON_BYTES), "reason", 1 << 30)
    with pytest.raises(PayloadTooLarge, match="at most 65536"):
        validate.reason(ev.sv("r" * (limits.MAX_REASON_BYTES + 1)), "reason", 1 << 30)
    with pytest.raises(PayloadTooLarge, match="at most 10"):
        validate.reason(ev.sv("r" * 11), "reason", 10)


def test_long_ids_are_quoted_short_in_errors() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate.new_instance_id(BIG)
    assert len(str(info.value)) < 300


# -- failure details ---------------------------------------------------------------------------------


def test_a_huge_failure_is_truncated_keeping_type_and_retry_flag() -> None:
    huge = opb.TaskFailureDetails(
        errorType="PaymentDeclined",
        errorMessage="m" * 17_000_000,
        stackTrace=ev.sv("s" * 3_000_000),
        isNonRetriable=True,
    )
    cut = failures.bounded(huge)
    assert cut is not huge and len(huge.errorMessage) == 17_000_000  # the original is untouched
    assert cut.errorType == "PaymentDeclined" and cut.isNonRetriable
    assert len(cut.errorMessage.encode()) <= limits.MAX_ERROR_MESSAGE_BYTES
    assert (
        cut.errorMessage.startswith("mmm") and "truncated by the server: 17000000 bytes" in cut.errorMessage
    )
    assert len(cut.stackTrace.value.encode()) <= limits.MAX_STACK_TRACE_BYTES
    assert "truncated by the server: 3000000 bytes" in cut.stackTrace.value
    assert cut.ByteSize() <= limits.MAX_FAILURE_BYTES + 1024


def test_multibyte_messages_are_cut_on_a_character_boundary() -> None:
    cut = failures.bounded(opb.TaskFailureDetails(errorType="E", errorMessage="é" * 100_000))
    cut.errorMessage.encode()
    assert cut.errorMessage.startswith("éé")


def test_deep_failures_keep_twenty_levels_and_say_how_many_were_dropped() -> None:
    outer = opb.TaskFailureDetails(errorType="L0", errorMessage="level 0")
    level = outer
    for i in range(1, 30):
        level.innerFailure.errorType = f"L{i}"
        level.innerFailure.errorMessage = f"level {i}"
        level = level.innerFailure
    cut = failures.bounded(outer)
    depth, level = 1, cut
    while level.HasField("innerFailure"):
        depth, level = depth + 1, level.innerFailure
    assert depth == limits.MAX_FAILURE_DEPTH
    assert level.errorType == "L19" and "10 nested innerFailure level(s) dropped" in level.errorMessage


def test_the_whole_chain_shares_one_budget_outermost_first() -> None:
    outer = opb.TaskFailureDetails(
        errorType="Outer", errorMessage="o" * 60_000, stackTrace=ev.sv("s" * 250_000)
    )
    level = outer
    for i in range(10):
        level.innerFailure.CopyFrom(
            opb.TaskFailureDetails(errorType=f"I{i}", stackTrace=ev.sv("s" * 250_000))
        )
        level = level.innerFailure
    cut = failures.bounded(outer)
    assert cut.errorMessage == "o" * 60_000 and cut.stackTrace.value == "s" * 250_000  # outermost intact
    assert cut.ByteSize() <= limits.MAX_FAILURE_BYTES + 2048


def test_a_failure_within_bounds_is_kept_as_it_is() -> None:
    small = opb.TaskFailureDetails(errorType="E", errorMessage="boom", stackTrace=ev.sv("at f()"))
    assert failures.bounded(small) is small
    assert failures.bound_in_place(small) is False


def test_a_workflows_own_huge_failure_is_truncated_in_history_and_state() -> None:
    huge = opb.TaskFailureDetails(errorType="OrderFailed", errorMessage="m" * 2_000_000)
    commit = Turn(BASE).apply(response(complete(3, FAILED, failure=huge)))
    done = commit.new_history[-1].executionCompleted
    assert done.failureDetails.errorType == "OrderFailed"
    assert len(done.failureDetails.errorMessage.encode()) <= limits.MAX_ERROR_MESSAGE_BYTES
    assert commit.state.failureDetails.errorType == "OrderFailed"
    assert len(commit.state.failureDetails.errorMessage) <= limits.MAX_ERROR_MESSAGE_BYTES


# -- worker actions ------------------------------------------------------------------------------


def _child(instance_id: str = "c1", name: str = "child") -> apb.WorkflowAction:
    return action(5, createChildWorkflow=apb.CreateChildWorkflowAction(instanceId=instance_id, name=name))


def _detached(**fields: object) -> apb.WorkflowAction:
    body = apb.CreateDetachedWorkflowAction(instanceId="d1", name="det")
    for name, value in fields.items():
        if name == "tags":
            body.tags.update(value)  # type: ignore[call-overload]
        elif isinstance(value, str):
            setattr(body, name, value)
        else:
            getattr(body, name).CopyFrom(value)
    return action(5, createDetachedWorkflow=body)


def _timer(**fields: object) -> apb.WorkflowAction:
    return action(5, createTimer=apb.CreateTimerAction(**fields))  # type: ignore[arg-type]


def _send(instance_id: str = "other", name: str = "evt") -> apb.WorkflowAction:
    return action(
        5, sendEvent=apb.SendEventAction(instance=opb.WorkflowInstance(instanceId=instance_id), name=name)
    )


def _routed(target: str) -> apb.WorkflowAction:
    return schedule(5, target=target)


def _carrying(event: hpb.HistoryEvent) -> apb.WorkflowAction:
    return complete(5, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, carryover=[event])


LONG = "n" * (limits.MAX_NAME_CHARS + 1)
LONG_ID = "i" * (limits.MAX_INSTANCE_ID_CHARS + 1)
BAD_TS = _ts(2**63 - 1)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        pytest.param(schedule(5, name=LONG), "scheduleTask.name is 1025 characters", id="activity-name"),
        pytest.param(schedule(5, name="a\x00"), "scheduleTask.name", id="activity-name-nul"),
        pytest.param(
            action(5, scheduleTask=apb.ScheduleTaskAction(name="a", version=ev.sv("v" * 1025))),
            "scheduleTask.version",
            id="activity-version",
        ),
        pytest.param(
            action(5, scheduleTask=apb.ScheduleTaskAction(name="a", taskExecutionId="t" * 257)),
            "taskExecutionId",
            id="task-execution-id",
        ),
        pytest.param(_routed("pay\x00ments"), "router.targetAppID", id="target-app-nul"),
        pytest.param(_routed("a" * 257), "router.targetAppID", id="target-app-long"),
        pytest.param(_child(instance_id=BIG), "createChildWorkflow.instanceId", id="child-id-10mb"),
        pytest.param(_child(instance_id="c\x00"), "createChildWorkflow.instanceId", id="child-id-nul"),
        pytest.param(_child(instance_id="a/b"), "without '/'", id="child-id-slash"),
        pytest.param(_child(name=LONG), "createChildWorkflow.name", id="child-name"),
        pytest.param(_detached(instanceId=LONG_ID), "createDetachedWorkflow.instanceId", id="detached-id"),
        pytest.param(_detached(instanceId="d\x00"), "createDetachedWorkflow.instanceId", id="detached-nul"),
        pytest.param(_detached(name=LONG), "createDetachedWorkflow.name", id="detached-name"),
        pytest.param(
            _detached(scheduledStartTimestamp=BAD_TS),
            "scheduledStartTimestamp is out of range",
            id="detached-start",
        ),
        pytest.param(_detached(tags={"k": "v" * 3000}), "createDetachedWorkflow.tags", id="detached-tags"),
        pytest.param(
            _detached(parentTraceContext=opb.TraceContext(traceParent="t" * 600)),
            "parentTraceContext.traceParent",
            id="detached-trace",
        ),
        pytest.param(
            _detached(executionId=ev.sv("e" * 300)), "createDetachedWorkflow.executionId", id="detached-exec"
        ),
        pytest.param(_timer(fireAt=BAD_TS), "createTimer.fireAt is out of range", id="timer-int64"),
        pytest.param(_timer(fireAt=_ts(0, -5)), "createTimer.fireAt is out of range", id="timer-nanos"),
        pytest.param(_timer(fireAt=ev.ts(ev.utcnow()), name=LONG), "createTimer.name", id="timer-name"),
        pytest.param(
            _timer(externalEvent=hpb.TimerOriginExternalEvent(name=LONG)),
            "externalEvent.name",
            id="timer-origin",
        ),
        pytest.param(_send(instance_id=BIG), "sendEvent.instance.instanceId", id="send-target-10mb"),
        pytest.param(_send(name=LONG), "sendEvent.name", id="send-name"),
        pytest.param(
            action(5, terminateWorkflow=apb.TerminateWorkflowAction(instanceId="t\x00")),
            "terminateWorkflow.instanceId",
            id="terminate-nul",
        ),
        pytest.param(
            complete(5, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, new_version="v" * 1025),
            "newVersion",
            id="new-version",
        ),
        pytest.param(
            _carrying(
                hpb.HistoryEvent(eventId=-1, timestamp=BAD_TS, eventRaised=hpb.EventRaisedEvent(name="e"))
            ),
            "carryoverEvents\\[0\\].timestamp",
            id="carried-timestamp",
        ),
        pytest.param(
            _carrying(ev.event_raised(ev.utcnow(), LONG, None)),
            "carryoverEvents\\[0\\].eventRaised.name",
            id="carried-name",
        ),
    ],
)
def test_oversized_or_malformed_action_fields_are_refused(bad: apb.WorkflowAction, match: str) -> None:
    turn = Turn(BASE)
    with pytest.raises(InvalidArgument, match=match) as info:
        turn.apply(response(bad))
    assert len(str(info.value)) < 500  # never the 10 MB value


def test_child_keys_checks_ids_before_they_reach_a_store() -> None:
    with pytest.raises(InvalidArgument, match=r"createChildWorkflow\.instanceId"):
        applier.child_keys(KEY, response(_child(instance_id=BIG)))
    assert applier.child_keys(KEY, response(_child())) == [InstanceKey(KEY.app_id, "c1")]


def test_response_version_is_bounded() -> None:
    resp = response(schedule(5))
    resp.version.patches.extend(f"p{i}" for i in range(limits.MAX_PATCHES + 1))
    with pytest.raises(InvalidArgument, match=r"version\.patches has 1001 entries"):
        Turn(BASE).apply(resp)


def test_valid_actions_at_the_bounds_are_applied() -> None:
    name = "n" * limits.MAX_NAME_CHARS
    commit = Turn(BASE).apply(
        response(
            schedule(5, name=name, target="a" * limits.MAX_APP_ID_CHARS),
            action(6, createChildWorkflow=apb.CreateChildWorkflowAction(instanceId="c" * 1024, name=name)),
            action(
                7, createTimer=apb.CreateTimerAction(fireAt=_ts(limits.MAX_TIMESTAMP_SECONDS, 999_999_999))
            ),
        )
    )
    assert len(commit.activities) == 1 and len(commit.new_instances) == 1
    # The timer at the last valid moment is recorded; it never fires, so nothing is queued for it.
    assert [e.eventId for e in commit.new_history if e.HasField("timerCreated")] == [7]
    assert commit.messages == []


def test_a_terminate_reason_is_a_payload() -> None:
    big = apb.TerminateWorkflowAction(instanceId="other", reason=ev.sv("r" * 500))
    commit = Turn(BASE, limit=100).apply(response(action(5, terminateWorkflow=big)))
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED


def test_a_default_child_id_past_the_bound_fails_the_child_task_instead_of_creating_it() -> None:
    """Found by the fuzz suite: a 1,024-character parent's default child ID (parent + ':0001')
    named an instance nobody could read, terminate or purge by its ID."""
    long_parent = InstanceKey(KEY.app_id, "p" * limits.MAX_INSTANCE_ID_CHARS)
    turn = Turn(BASE)
    turn.ctx = dataclasses.replace(turn.ctx, key=long_parent)
    commit = turn.apply(response(action(1, createChildWorkflow=apb.CreateChildWorkflowAction(name="child"))))
    assert commit.new_instances == []
    (failed,) = [m.event for m in commit.messages]
    details = failed.childWorkflowInstanceFailed.failureDetails
    assert details.errorType == "InvalidChildInstanceId" and details.isNonRetriable


def test_only_external_events_can_be_carried_over() -> None:
    """Found by the fuzz suite: other kinds went into the next generation's history unchecked."""
    scheduled = ev.event(ev.utcnow(), event_id=3, taskScheduled=hpb.TaskScheduledEvent(name="x" * 300_000))
    resp = response(complete(5, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, carryover=[scheduled]))
    with pytest.raises(InvalidArgument, match="only eventRaised events can be carried over"):
        Turn(BASE).apply(resp)
    raised = ev.event_raised(ev.utcnow(), "go", None)
    commit = Turn(BASE).apply(
        response(complete(5, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, carryover=[raised]))
    )
    assert commit.reset_history
