"""History propagation in the applier: what an activity or child workflow receives, per scope."""

from __future__ import annotations

import dataclasses

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend.domain import events as ev
from tests.unit.test_domain_applier import APP, BASE, KEY, Turn, action, complete, response, schedule

OWN = opb.HISTORY_PROPAGATION_SCOPE_OWN_HISTORY
LINEAGE = opb.HISTORY_PROPAGATION_SCOPE_LINEAGE
ROOMY = 1 << 20  # a payload limit that the histories here stay under


def _with_scope(a: apb.WorkflowAction, scope: int) -> apb.WorkflowAction:
    body = a.scheduleTask if a.HasField("scheduleTask") else a.createChildWorkflow
    body.historyPropagationScope = scope  # type: ignore[assignment]
    return a


def _child(action_id: int, *, target: str | None = None) -> apb.WorkflowAction:
    return action(
        action_id,
        target=target,
        createChildWorkflow=apb.CreateChildWorkflowAction(name="child", instanceId="c1"),
    )


def _events(chunk: hpb.PropagatedHistoryChunk) -> list[str]:
    return [ev.kind(hpb.HistoryEvent.FromString(raw)) for raw in chunk.rawEvents]


def _received(app: str, instance: str, name: str) -> hpb.PropagatedHistory:
    start = ev.event(ev.utcnow(), executionStarted=hpb.ExecutionStartedEvent(name=name))
    chunk = hpb.PropagatedHistoryChunk(
        rawEvents=[start.SerializeToString()], appId=app, instanceId=instance, workflowName=name
    )
    return hpb.PropagatedHistory(scope=LINEAGE, chunks=[chunk])


def test_own_history_goes_to_the_activity_ending_with_its_scheduling() -> None:
    turn = Turn(BASE, [ev.event_raised(ev.utcnow(), "go", None)], limit=ROOMY)
    commit = turn.apply(response(schedule(0, "first"), _with_scope(schedule(1, "second", target="gpu"), OWN)))
    first, second = commit.activities
    assert not first.request.HasField("propagatedHistory")  # no scope, nothing shared
    shared = second.request.propagatedHistory
    assert shared.scope == OWN
    (chunk,) = shared.chunks
    assert (chunk.appId, chunk.instanceId, chunk.workflowName) == (APP, KEY.instance_id, "wf")
    # committed history + this turn's events + the actions before it, its own scheduling last
    assert _events(chunk) == [
        "workflowStarted",
        "executionStarted",
        "workflowStarted",
        "eventRaised",
        "taskScheduled",
        "taskScheduled",
    ]
    scheduled = [e for e in commit.new_history if e.HasField("taskScheduled")]
    assert scheduled[1].taskScheduled.historyPropagationScope == OWN
    assert not scheduled[0].taskScheduled.HasField("historyPropagationScope")


def test_lineage_puts_what_the_caller_received_first() -> None:
    turn = Turn(BASE, limit=ROOMY)
    turn.ctx = dataclasses.replace(turn.ctx, received=_received("root-app", "root-1", "root"))
    commit = turn.apply(response(_with_scope(_child(0, target="other"), LINEAGE)))
    (child,) = commit.new_instances
    assert child.propagated is not None
    assert [c.appId for c in child.propagated.chunks] == ["root-app", APP]
    assert [c.instanceId for c in child.propagated.chunks] == ["root-1", KEY.instance_id]
    created = next(e for e in commit.new_history if e.HasField("childWorkflowInstanceCreated"))
    assert created.childWorkflowInstanceCreated.historyPropagationScope == LINEAGE
    # OWN_HISTORY drops the ancestors.
    turn = Turn(BASE, limit=ROOMY)
    turn.ctx = dataclasses.replace(turn.ctx, received=_received("root-app", "root-1", "root"))
    (act,) = turn.apply(response(_with_scope(schedule(0), OWN))).activities
    assert [c.appId for c in act.request.propagatedHistory.chunks] == [APP]


def test_continue_as_new_hands_the_next_generation_what_this_one_received() -> None:
    turn = Turn(BASE, limit=ROOMY)
    turn.ctx = dataclasses.replace(turn.ctx, received=_received("root-app", "root-1", "root"))
    commit = turn.apply(response(complete(0, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, result='"next"')))
    assert commit.reset_history and commit.propagated is not None
    assert commit.propagated.scope == LINEAGE
    assert [c.appId for c in commit.propagated.chunks] == ["root-app", APP]
    # A root workflow (nothing received) starts its next generation with nothing.
    commit = Turn(BASE, limit=ROOMY).apply(response(complete(0, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW)))
    assert commit.propagated is None


def test_a_history_too_large_to_propagate_fails_the_task_not_the_workflow() -> None:
    big = [*BASE, *(ev.event_raised(ev.utcnow(), "e", ev.sv("x" * 400)) for _ in range(5))]
    turn = Turn(big, limit=1000)
    commit = turn.apply(response(_with_scope(schedule(0), OWN), _with_scope(_child(1), LINEAGE)))
    assert commit.activities == [] and commit.new_instances == []
    failures = [m.event for m in commit.messages]
    assert failures[0].taskFailed.failureDetails.errorType == "PropagatedHistoryTooLarge"
    assert failures[1].childWorkflowInstanceFailed.failureDetails.errorType == "PropagatedHistoryTooLarge"
    assert failures[0].taskFailed.failureDetails.isNonRetriable
    assert "--max-payload-bytes" in failures[0].taskFailed.failureDetails.errorMessage
