"""How work this server just wrote reaches a worker: directly, without searching the store.

The server polls only every 30 s here, so every step below that completes in time was handed
over by the server itself: a started instance, an activity result, a raised event and a
child's completion are claimed by key (hints), a turn's new activities are stored leased to
this server and sent at once, and a timer wakes its app's dispatcher when it is due. The store's
own call counts (the metered store's histogram) show that no general lease round ran.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import Config
from backend.telemetry.metrics import REGISTRY
from tests.service.conftest import BASE, RawWorker

STEP = 5.0  # seconds any one hand-over may take: far below the 30 s poll


@pytest.fixture
def config() -> Config:
    return replace(BASE, poll_seconds=30.0)


def _calls(method: str) -> float:
    value = REGISTRY.get_sample_value(
        "durabletask_sidecar_store_operation_seconds_count", {"store": "sqlite", "operation": method}
    )
    return value or 0.0


def _general_rounds() -> tuple[float, float]:
    # lease_activities and next_due run only in a dispatcher's general round.
    rounds = _calls("lease_activities"), _calls("next_due")
    assert rounds[0] > 0, "the metered store's counts are not where this test looks"
    return rounds


async def _settled() -> tuple[float, float]:
    """The counts once the dispatcher's start-up rounds (server start, worker connect) are over."""
    before = _general_rounds()
    while True:
        await asyncio.sleep(0.3)
        now = _general_rounds()
        if now == before:
            return now
        before = now


def _schedule(action_id: int, name: str) -> apb.WorkflowAction:
    return apb.WorkflowAction(id=action_id, scheduleTask=apb.ScheduleTaskAction(name=name))


def _complete(action_id: int, result: str) -> apb.WorkflowAction:
    return apb.WorkflowAction(
        id=action_id,
        completeWorkflow=apb.CompleteWorkflowAction(
            workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED, result=wrappers_pb2.StringValue(value=result)
        ),
    )


async def _respond(stub, item: spb.WorkItem, *actions: apb.WorkflowAction) -> None:  # type: ignore[no-untyped-def]
    await stub.CompleteOrchestratorTask(
        spb.WorkflowResponse(
            instanceId=item.workflowRequest.instanceId,
            completionToken=item.completionToken,
            actions=list(actions),
        )
    )


def _kinds(item: spb.WorkItem) -> list[str]:
    return [str(e.WhichOneof("eventType")) for e in item.workflowRequest.newEvents]


async def test_work_written_here_is_handed_over_without_lease_rounds(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="warm-up", name="wf"))
        await _respond(stub, await worker.next(STEP), _complete(0, "ok"))
        rounds = await _settled()

        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="p", name="wf"))
        first = await worker.next(STEP)
        assert _kinds(first) == ["workflowStarted", "executionStarted"]
        await _respond(stub, first, _schedule(0, "a"), _schedule(1, "b"))
        # Both activities go out at once, leased by the commit that scheduled them.
        acts = [await worker.next(STEP), await worker.next(STEP)]
        assert sorted(a.activityRequest.name for a in acts) == ["a", "b"]
        for act in acts:
            await stub.CompleteActivityTask(
                spb.ActivityResponse(
                    completionToken=act.completionToken,
                    instanceId="p",
                    taskId=act.activityRequest.taskId,
                    result=wrappers_pb2.StringValue(value=f'"{act.activityRequest.name}"'),
                )
            )
        # The results: one turn, or two if the second arrived while the first turn ran
        # (that instance is claimed again when the turn ends).
        results: list[str] = []
        while len(results) < 2:
            turn = await worker.next(STEP)
            results += [k for k in _kinds(turn) if k == "taskCompleted"]
            if len(results) < 2:
                await _respond(stub, turn)
        await stub.RaiseEvent(spb.RaiseEventRequest(instanceId="p", name="go"))
        await _respond(stub, turn)
        raised = await worker.next(STEP)
        assert "eventRaised" in _kinds(raised)
        await _respond(stub, raised, _complete(2, "done"))
        done = await stub.WaitForInstanceCompletion(spb.GetInstanceRequest(instanceId="p"), timeout=STEP)
        assert done.workflowState.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
        assert _general_rounds() == rounds, "a general lease round ran: work was not handed over"
    finally:
        await worker.close()


async def test_timer_wakes_its_dispatcher_when_due(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="t", name="wf"))
        item = await worker.next(STEP)
        fire_at = datetime.now(UTC) + timedelta(milliseconds=500)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(fire_at)
        await _respond(stub, item, apb.WorkflowAction(id=0, createTimer=apb.CreateTimerAction(fireAt=stamp)))
        fired = await worker.next(STEP)
        assert datetime.now(UTC) >= fire_at
        assert _kinds(fired) == ["workflowStarted", "timerFired"]
    finally:
        await worker.close()


async def test_child_completion_reaches_the_parent(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="parent", name="wf"))
        item = await worker.next(STEP)
        child = apb.WorkflowAction(
            id=0, createChildWorkflow=apb.CreateChildWorkflowAction(instanceId="child", name="sub")
        )
        await _respond(stub, item, child)
        started = await worker.next(STEP)
        assert started.workflowRequest.instanceId == "child"
        await _respond(stub, started, _complete(0, '"c"'))
        back = await worker.next(STEP)
        assert back.workflowRequest.instanceId == "parent"
        assert "childWorkflowInstanceCompleted" in _kinds(back)
    finally:
        await worker.close()


async def test_an_activity_result_leases_its_parent_in_the_same_write(stub) -> None:  # type: ignore[no-untyped-def]
    """The parent is free when its activity's result arrives: the store leases it to this
    server with the result (store.complete_activity's claim), so no claim of any kind runs
    between the result and the parent's next turn."""
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="one", name="wf"))
        await _respond(stub, await worker.next(STEP), _schedule(0, "a"))
        act = await worker.next(STEP)
        assert act.activityRequest.name == "a"
        await _settled()
        claims = _calls("lease_workflows")
        await stub.CompleteActivityTask(
            spb.ActivityResponse(
                completionToken=act.completionToken,
                instanceId="one",
                taskId=act.activityRequest.taskId,
                result=wrappers_pb2.StringValue(value='"a"'),
            )
        )
        turn = await worker.next(STEP)
        assert _kinds(turn) == ["workflowStarted", "taskCompleted"]
        assert _calls("lease_workflows") == claims, "the parent was claimed apart from its result"
        await _respond(stub, turn, _complete(1, "done"))
        done = await stub.WaitForInstanceCompletion(spb.GetInstanceRequest(instanceId="one"), timeout=STEP)
        assert done.workflowState.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
    finally:
        await worker.close()
