"""Bad client input gets a clear status, changes nothing, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from tests.service.conftest import RawWorker


async def _status(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def _ids(stub) -> list[str]:  # type: ignore[no-untyped-def]
    return list((await stub.ListInstanceIDs(spb.ListInstanceIDsRequest(pageSize=1000))).instanceIds)


@pytest.mark.parametrize("bad_id", ["slash/id", "x" * 1025, "nul\x00id", "tab\tid", "del\x7fid"])
async def test_invalid_instance_id_is_rejected_and_nothing_is_stored(stub, bad_id) -> None:  # type: ignore[no-untyped-def]
    code, msg = await _status(stub.StartInstance(spb.CreateInstanceRequest(instanceId=bad_id, name="wf")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "without '/' or control characters" in msg
    assert await _ids(stub) == []


@pytest.mark.parametrize(
    "good_id", ["order.2026-12-01", "tenant:42", "with space", "ümlaut-ß-東京", "x" * 300, "x" * 1024]
)
async def test_instance_ids_daprd_accepts_are_accepted(stub, good_id) -> None:  # type: ignore[no-untyped-def]
    """daprd 1.18.1 accepts '.', ':', spaces, any letters and 300 characters (not '/')."""
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId=good_id, name="wf"))
    assert await _ids(stub) == [good_id]
    state = await stub.GetInstance(spb.GetInstanceRequest(instanceId=good_id))
    assert state.exists and state.workflowState.instanceId == good_id
    await stub.TerminateInstance(spb.TerminateRequest(instanceId=good_id))
    await stub.PurgeInstances(spb.PurgeInstancesRequest(instanceId=good_id, force=True))
    assert await _ids(stub) == []


async def test_empty_workflow_name_is_rejected(stub) -> None:  # type: ignore[no-untyped-def]
    code, msg = await _status(stub.StartInstance(spb.CreateInstanceRequest(instanceId="a", name="  ")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "workflow name" in msg
    assert await _ids(stub) == []


async def test_oversized_input_names_the_limit(stub) -> None:  # type: ignore[no-untyped-def]
    big = wrappers_pb2.StringValue(value="x" * 2000)
    code, msg = await _status(
        stub.StartInstance(spb.CreateInstanceRequest(instanceId="big", name="wf", input=big))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "1024 bytes" in msg and "--max-payload-bytes" in msg
    assert await _ids(stub) == []


async def test_unknown_instance_is_not_found_for_every_operation(stub) -> None:  # type: ignore[no-untyped-def]
    calls = [
        stub.RaiseEvent(spb.RaiseEventRequest(instanceId="nope", name="e")),
        stub.TerminateInstance(spb.TerminateRequest(instanceId="nope")),
        stub.SuspendInstance(spb.SuspendRequest(instanceId="nope")),
        stub.ResumeInstance(spb.ResumeRequest(instanceId="nope")),
        stub.PurgeInstances(spb.PurgeInstancesRequest(instanceId="nope")),
        stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="nope")),
    ]
    for call in calls:
        code, msg = await _status(call)
        assert code == grpc.StatusCode.NOT_FOUND, msg
        assert "no such instance exists" in msg
    assert await _ids(stub) == []


async def test_get_instance_of_unknown_id_answers_exists_false(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.GetInstance(spb.GetInstanceRequest(instanceId="ghost"))
    assert response.exists is False


async def test_raise_event_with_empty_name_or_big_payload_is_rejected(stub) -> None:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="ev", name="wf"))
    code, _ = await _status(stub.RaiseEvent(spb.RaiseEventRequest(instanceId="ev", name="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    big = wrappers_pb2.StringValue(value="y" * 5000)
    code, msg = await _status(stub.RaiseEvent(spb.RaiseEventRequest(instanceId="ev", name="e", input=big)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1024" in msg


async def test_duplicate_start_is_already_exists_and_keeps_the_original(stub) -> None:  # type: ignore[no-untyped-def]
    first = wrappers_pb2.StringValue(value='"one"')
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="dup", name="wf", input=first))
    code, msg = await _status(
        stub.StartInstance(
            spb.CreateInstanceRequest(
                instanceId="dup", name="other", input=wrappers_pb2.StringValue(value='"two"')
            )
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "orchestration instance already exists" in msg
    state = (
        await stub.GetInstance(spb.GetInstanceRequest(instanceId="dup", getInputsAndOutputs=True))
    ).workflowState
    assert state.name == "wf" and state.input.value == '"one"'


async def test_purge_of_running_instance_fails_and_keeps_it(stub) -> None:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="live", name="wf"))
    code, msg = await _status(stub.PurgeInstances(spb.PurgeInstancesRequest(instanceId="live")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not yet completed" in msg
    assert (await stub.GetInstance(spb.GetInstanceRequest(instanceId="live"))).exists


async def test_purge_with_force_removes_a_running_instance(stub) -> None:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="forced", name="wf"))
    response = await stub.PurgeInstances(spb.PurgeInstancesRequest(instanceId="forced", force=True))
    assert response.deletedInstanceCount == 1
    assert not (await stub.GetInstance(spb.GetInstanceRequest(instanceId="forced"))).exists


async def test_terminate_needs_no_worker_and_reuse_rules_apply(stub) -> None:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="t1", name="wf"))
    await stub.TerminateInstance(
        spb.TerminateRequest(instanceId="t1", output=wrappers_pb2.StringValue(value='"bye"'))
    )
    done = await stub.WaitForInstanceCompletion(
        spb.GetInstanceRequest(instanceId="t1", getInputsAndOutputs=True), timeout=10
    )
    assert done.workflowState.workflowStatus == opb.ORCHESTRATION_STATUS_TERMINATED
    assert done.workflowState.output.value == '"bye"'
    code, _ = await _status(
        stub.StartInstance(
            spb.CreateInstanceRequest(instanceId="t1", name="wf", enforceUniqueInstanceId=True)
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    # Without enforceUniqueInstanceId a finished instance is replaced.
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="t1", name="wf2"))
    state = (await stub.GetInstance(spb.GetInstanceRequest(instanceId="t1"))).workflowState
    assert state.name == "wf2" and state.workflowStatus == opb.ORCHESTRATION_STATUS_PENDING


async def test_wait_with_deadline_times_out_as_deadline_exceeded(stub) -> None:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="slow", name="wf"))
    code, _ = await _status(
        stub.WaitForInstanceCompletion(spb.GetInstanceRequest(instanceId="slow"), timeout=0.5)
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_completion_with_unknown_token_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    code, msg = await _status(
        stub.CompleteOrchestratorTask(spb.WorkflowResponse(instanceId="x", completionToken="no-such-token"))
    )
    # The token is a capability: the answer never repeats it.
    assert code == grpc.StatusCode.NOT_FOUND and "completion token" in msg and "no-such-token" not in msg
    code, msg = await _status(stub.CompleteActivityTask(spb.ActivityResponse(instanceId="x", taskId=3)))
    assert code == grpc.StatusCode.NOT_FOUND and "no activity work item is in flight" in msg
    code, msg = await _status(stub.CompleteActivityTask(spb.ActivityResponse(taskId=3)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "completionToken" in msg


async def _start_and_take_turn(stub, worker: RawWorker, iid: str) -> spb.WorkItem:  # type: ignore[no-untyped-def]
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId=iid, name="wf"))
    item = await worker.next()
    assert item.workflowRequest.instanceId == iid
    return item


def _complete(token: str, iid: str, *actions: apb.WorkflowAction) -> spb.WorkflowResponse:
    return spb.WorkflowResponse(instanceId=iid, completionToken=token, actions=list(actions))


def _finish(action_id: int, result: str) -> apb.WorkflowAction:
    return apb.WorkflowAction(
        id=action_id,
        completeWorkflow=apb.CompleteWorkflowAction(
            workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED, result=wrappers_pb2.StringValue(value=result)
        ),
    )


@pytest.mark.parametrize(
    ("actions", "needle"),
    [
        ([apb.WorkflowAction(id=0)], "no known type"),
        (
            [
                apb.WorkflowAction(id=1, scheduleTask=apb.ScheduleTaskAction(name="a")),
                apb.WorkflowAction(id=1, scheduleTask=apb.ScheduleTaskAction(name="b")),
            ],
            "duplicate action id 1",
        ),
        ([apb.WorkflowAction(id=2, scheduleTask=apb.ScheduleTaskAction(name=""))], "activity name"),
        (
            [
                apb.WorkflowAction(
                    id=3,
                    completeWorkflow=apb.CompleteWorkflowAction(
                        workflowStatus=opb.ORCHESTRATION_STATUS_PENDING
                    ),
                )
            ],
            "not a completion status",
        ),
    ],
)
async def test_malformed_actions_are_rejected_and_history_is_unchanged(stub, actions, needle) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        item = await _start_and_take_turn(stub, worker, "bad")
        code, msg = await _status(
            stub.CompleteOrchestratorTask(_complete(item.completionToken, "bad", *actions))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in msg
        history = await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="bad"))
        assert list(history.events) == []
        # The same turn is offered again; a good answer now completes the workflow.
        retry = await worker.next()
        assert retry.completionToken != item.completionToken
        assert [e.WhichOneof("eventType") for e in retry.workflowRequest.newEvents] == [
            "workflowStarted",
            "executionStarted",
        ]
        await stub.CompleteOrchestratorTask(_complete(retry.completionToken, "bad", _finish(0, '"ok"')))
        done = await stub.WaitForInstanceCompletion(
            spb.GetInstanceRequest(instanceId="bad", getInputsAndOutputs=True), timeout=10
        )
        assert done.workflowState.output.value == '"ok"'
    finally:
        await worker.close()


async def test_stale_token_after_redispatch_is_rejected(stub) -> None:  # type: ignore[no-untyped-def]
    first = RawWorker(stub)
    item = await _start_and_take_turn(stub, first, "stale")
    await first.close()  # the stream drops: the turn is re-dispatched
    second = RawWorker(stub)
    try:
        again = await second.next()
        assert again.workflowRequest.instanceId == "stale"
        code, _ = await _status(
            stub.CompleteOrchestratorTask(_complete(item.completionToken, "stale", _finish(0, "1")))
        )
        assert code == grpc.StatusCode.NOT_FOUND
        await stub.CompleteOrchestratorTask(_complete(again.completionToken, "stale", _finish(0, '"2"')))
        done = await stub.WaitForInstanceCompletion(
            spb.GetInstanceRequest(instanceId="stale", getInputsAndOutputs=True), timeout=10
        )
        assert done.workflowState.output.value == '"2"'
    finally:
        await second.close()


async def test_activity_result_for_a_task_never_scheduled_is_not_found(stub) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        item = await _start_and_take_turn(stub, worker, "act")
        schedule = apb.WorkflowAction(id=0, scheduleTask=apb.ScheduleTaskAction(name="double"))
        await stub.CompleteOrchestratorTask(_complete(item.completionToken, "act", schedule))
        activity = await worker.next()
        assert activity.activityRequest.name == "double" and activity.activityRequest.taskId == 0
        code, _ = await _status(stub.CompleteActivityTask(spb.ActivityResponse(instanceId="act", taskId=99)))
        assert code == grpc.StatusCode.NOT_FOUND
        code, msg = await _status(
            stub.CompleteActivityTask(
                spb.ActivityResponse(completionToken=activity.completionToken, instanceId="act", taskId=99)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "task 0, not task 99" in msg
        code, _ = await _status(
            stub.CompleteActivityTask(
                spb.ActivityResponse(
                    completionToken=activity.completionToken,
                    instanceId="act",
                    result=wrappers_pb2.StringValue(value="1"),
                    failureDetails=opb.TaskFailureDetails(errorType="x"),
                )
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        await stub.CompleteActivityTask(
            spb.ActivityResponse(
                completionToken=activity.completionToken,
                instanceId="act",
                taskId=0,
                result=wrappers_pb2.StringValue(value="42"),
            )
        )
        turn = await worker.next()
        kinds = [e.WhichOneof("eventType") for e in turn.workflowRequest.newEvents]
        assert kinds == ["workflowStarted", "taskCompleted"]
        assert turn.workflowRequest.newEvents[1].taskCompleted.result.value == "42"
    finally:
        await worker.close()
