"""The engine's wire behaviour, checked with a hand-driven worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from tests.service.conftest import RawWorker


def _kinds(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.WhichOneof("eventType") for e in events]


def _schedule(action_id: int, name: str, target: str | None = None) -> apb.WorkflowAction:
    action = apb.WorkflowAction(id=action_id, scheduleTask=apb.ScheduleTaskAction(name=name))
    if target:
        action.router.targetAppID = target
    return action


def _done(action_id: int, result: str) -> apb.WorkflowAction:
    return apb.WorkflowAction(
        id=action_id,
        completeWorkflow=apb.CompleteWorkflowAction(
            workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED, result=wrappers_pb2.StringValue(value=result)
        ),
    )


async def _answer_activity(stub, item: spb.WorkItem, result: str) -> None:  # type: ignore[no-untyped-def]
    await stub.CompleteActivityTask(
        spb.ActivityResponse(
            completionToken=item.completionToken,
            instanceId=item.activityRequest.workflowInstance.instanceId,
            taskId=item.activityRequest.taskId,
            result=wrappers_pb2.StringValue(value=result),
        )
    )


async def test_stateful_worker_gets_deltas_and_monotonic_turn_times(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub, capabilities=[spb.WORKER_CAPABILITY_STATEFUL_HISTORY])
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="chain", name="wf"))
        turn_times = []
        sent_past = 0  # what the worker would hold in its cache
        for step in range(3):
            item = await worker.next()
            req = item.workflowRequest
            turn_times.append(req.newEvents[0].timestamp.ToDatetime())
            assert req.newEvents[0].HasField("workflowStarted")
            if step == 0:
                assert not req.HasField("cachedHistory") and list(req.pastEvents) == []
            else:
                # Only the delta: the worker already holds `sent_past` events.
                assert req.cachedHistory.eventCount == sent_past
                assert _kinds(req.pastEvents)[-1] == "taskScheduled"
                assert _kinds(req.newEvents) == ["workflowStarted", "taskCompleted"]
            full = await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="chain"))
            sent_past = len(full.events)
            await stub.CompleteWorkflowTask(
                spb.WorkflowResponse(
                    instanceId="chain", completionToken=item.completionToken, actions=[_schedule(step, "act")]
                )
            )
            activity = await worker.next()
            assert activity.activityRequest.taskId == step
            await _answer_activity(stub, activity, str(step))
        assert turn_times == sorted(turn_times) and len(set(turn_times)) == 3
    finally:
        await worker.close()


async def test_stateless_worker_always_gets_full_history(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="full", name="wf"))
        item = await worker.next()
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="full", completionToken=item.completionToken, actions=[_schedule(0, "a")]
            )
        )
        await _answer_activity(stub, await worker.next(), "1")
        second = (await worker.next()).workflowRequest
        assert not second.HasField("cachedHistory")
        assert _kinds(second.pastEvents) == ["workflowStarted", "executionStarted", "taskScheduled"]
    finally:
        await worker.close()


async def test_durable_timer_fires_after_its_time(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="timer", name="wf"))
        item = await worker.next()
        fire_at = datetime.now(UTC) + timedelta(milliseconds=400)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(fire_at)
        timer = apb.WorkflowAction(id=0, createTimer=apb.CreateTimerAction(fireAt=stamp))
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(instanceId="timer", completionToken=item.completionToken, actions=[timer])
        )
        fired = (await worker.next()).workflowRequest
        assert datetime.now(UTC) >= fire_at
        assert _kinds(fired.newEvents) == ["workflowStarted", "timerFired"]
        assert fired.newEvents[1].timerFired.timerId == 0
        assert fired.newEvents[1].timerFired.fireAt == stamp
    finally:
        await worker.close()


async def test_suspend_and_resume_need_no_worker_and_hold_events(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    item = None
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="sus", name="wf"))
        item = await worker.next()
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(instanceId="sus", completionToken=item.completionToken)
        )
    finally:
        await worker.close()
    await stub.SuspendInstance(spb.SuspendRequest(instanceId="sus"))
    state = (await stub.GetInstance(spb.GetInstanceRequest(instanceId="sus"))).workflowState
    assert state.workflowStatus == opb.ORCHESTRATION_STATUS_SUSPENDED
    await stub.RaiseEvent(spb.RaiseEventRequest(instanceId="sus", name="go"))
    worker = RawWorker(stub)
    try:
        with pytest.raises(TimeoutError):  # suspended: the event is held back
            await worker.next(timeout=1.0)
        await stub.ResumeInstance(spb.ResumeRequest(instanceId="sus"))
        turn = await worker.next()
        resumed = turn.workflowRequest
        assert "executionSuspended" in _kinds(resumed.pastEvents)
        if "eventRaised" not in _kinds(resumed.newEvents):
            # Suspended right after a first turn that made no actions: the resume reaches
            # the worker on its own (the code may not have run), the held event follows.
            assert _kinds(resumed.newEvents) == ["workflowStarted", "executionResumed"]
            await stub.CompleteOrchestratorTask(
                spb.WorkflowResponse(instanceId="sus", completionToken=turn.completionToken)
            )
            resumed = (await worker.next()).workflowRequest
        assert "eventRaised" in _kinds(resumed.newEvents)
    finally:
        await worker.close()


async def test_stalled_workflow_waits_and_resumes_when_a_new_worker_connects(stub) -> None:  # type: ignore[no-untyped-def]
    old = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="ver", name="wf"))
        item = await old.next()
        missing = apb.WorkflowAction(
            id=0, workflowVersionNotAvailable=apb.WorkflowVersionNotAvailableAction()
        )
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(instanceId="ver", completionToken=item.completionToken, actions=[missing])
        )
        state = (await stub.GetInstance(spb.GetInstanceRequest(instanceId="ver"))).workflowState
        assert state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
        with pytest.raises(TimeoutError):  # parked: not offered again to the same workers
            await old.next(timeout=1.0)
    finally:
        await old.close()
    new = RawWorker(stub)  # e.g. a deployment that has the version
    try:
        retry = await new.next()
        assert _kinds(retry.workflowRequest.newEvents) == ["workflowStarted", "executionStarted"]
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="ver", completionToken=retry.completionToken, actions=[_done(0, '"v2"')]
            )
        )
        done = await stub.WaitForInstanceCompletion(
            spb.GetInstanceRequest(instanceId="ver", getInputsAndOutputs=True), timeout=10
        )
        assert done.workflowState.output.value == '"v2"'
        history = (await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="ver"))).events
        assert _kinds(history).count("executionStalled") == 1
    finally:
        await new.close()
