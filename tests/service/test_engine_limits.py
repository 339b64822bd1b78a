"""Runtime bounds the engine enforces: history budgets, work-item timeouts, stuck streams, stream
counts, and retries that back off and end instead of looping hot. Raw gRPC, in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from google.protobuf import wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config
from backend.server import Server
from tests.service.conftest import BASE, RawWorker
from tests.service.test_worker_protocol import _answer_activity, _done, _schedule


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[Server, sgrpc.TaskHubSidecarServiceStub]]:
    srv = Server(config)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.ports['default']}") as channel:
            yield srv, sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await srv.stop()


async def _state(stub: sgrpc.TaskHubSidecarServiceStub, iid: str) -> opb.WorkflowState:
    return (
        await stub.GetInstance(spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True))
    ).workflowState


async def _until(
    stub: sgrpc.TaskHubSidecarServiceStub, iid: str, status: int, timeout: float = 20.0
) -> opb.WorkflowState:
    deadline = time.monotonic() + timeout
    while True:
        state = await _state(stub, iid)
        if state.workflowStatus == status:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid} is {opb.OrchestrationStatus.Name(state.workflowStatus)}")
        await asyncio.sleep(0.05)


async def _answer(
    stub: sgrpc.TaskHubSidecarServiceStub, item: spb.WorkItem, *actions: apb.WorkflowAction
) -> None:
    await stub.CompleteOrchestratorTask(
        spb.WorkflowResponse(
            instanceId=item.workflowRequest.instanceId,
            completionToken=item.completionToken,
            actions=list(actions),
        )
    )


async def test_a_history_past_its_budget_fails_the_workflow_and_spares_the_others() -> None:
    config = replace(BASE, max_history_events=12, max_payload_bytes=1 << 20)
    async with serving(config) as (_, stub):
        worker = RawWorker(stub)
        try:
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="long", name="wf"))
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="short", name="wf"))
            turns = 0
            while True:
                item = await worker.next()
                if item.HasField("activityRequest"):
                    await _answer_activity(stub, item, '"r"')
                    continue
                iid = item.workflowRequest.instanceId
                if iid == "short":
                    await _answer(stub, item, _done(0, '"ok"'))
                    continue
                turns += 1
                await _answer(stub, item, _schedule(turns, "step"))  # one more activity per turn
                if (await _state(stub, "long")).workflowStatus == opb.ORCHESTRATION_STATUS_FAILED:
                    break
                assert turns < 20, "the budget never took effect"
            failed = await _state(stub, "long")
            details = failed.failureDetails
            assert details.errorType == "HistoryLimitExceeded" and details.isNonRetriable
            assert "12" in details.errorMessage and "continue as new" in details.errorMessage
            history = (await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="long"))).events
            assert len(history) <= 12 + 3  # the budget, plus the turn's own events and the failure
            short = await _until(stub, "short", opb.ORCHESTRATION_STATUS_COMPLETED)
            assert short.output.value == '"ok"'
        finally:
            await worker.close()


async def test_a_malformed_answer_is_retried_with_backoff_then_parked() -> None:
    """Not retried forever, not hot: a bounded number of tries, spaced out, then STALLED."""
    config = replace(BASE, retry_failed_turn_seconds=0.2, max_turn_failures=3)
    async with serving(config) as (_, stub):
        worker = RawWorker(stub)
        try:
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="bad", name="wf"))
            seen = []
            for _ in range(3):
                item = await worker.next()
                seen.append(time.monotonic())
                bad = apb.WorkflowAction(id=1, scheduleTask=apb.ScheduleTaskAction(name=""))  # no name
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _answer(stub, item, bad)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stalled = await _until(stub, "bad", opb.ORCHESTRATION_STATUS_STALLED)
            with pytest.raises(TimeoutError):  # parked: no fourth try
                await worker.next(timeout=1.5)
            assert seen[1] - seen[0] >= 0.09 and seen[2] - seen[1] >= 0.19  # backed off, growing
            history = (await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="bad"))).events
            stall = [e.executionStalled for e in history if e.HasField("executionStalled")]
            assert stall and "malformed actions" in stall[-1].description
            assert stalled.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
        finally:
            await worker.close()
        # A new worker (a fixed deployment) gets it again.
        fixed = RawWorker(stub)
        try:
            item = await fixed.next()
            await _answer(stub, item, _done(0, '"fixed"'))
            assert (await _until(stub, "bad", opb.ORCHESTRATION_STATUS_COMPLETED)).output.value == '"fixed"'
        finally:
            await fixed.close()


async def test_a_work_item_not_completed_in_time_goes_to_another_worker() -> None:
    config = replace(BASE, workflow_task_timeout_seconds=1.0)
    async with serving(config) as (_, stub):
        silent = RawWorker(stub)
        try:
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="slow", name="wf"))
            first = await silent.next()  # taken, never answered
            healthy = RawWorker(stub)
            try:
                again = await asyncio.wait_for(_first_item(silent, healthy), 10)
                assert again.workflowRequest.instanceId == "slow"
                assert again.completionToken != first.completionToken
                await _answer(stub, again, _done(0, '"done"'))
                await _until(stub, "slow", opb.ORCHESTRATION_STATUS_COMPLETED)
                # The late answer to the first dispatch changes nothing.
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await _answer(stub, first, _done(0, '"late"'))
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                assert (await _state(stub, "slow")).output.value == '"done"'
            finally:
                await healthy.close()
        finally:
            await silent.close()


async def _first_item(*workers: RawWorker) -> spb.WorkItem:
    tasks = [asyncio.ensure_future(w.next(timeout=30)) for w in workers]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    return done.pop().result()


async def test_a_stream_that_stops_reading_is_closed_and_its_work_moves_on() -> None:
    config = replace(BASE, stream_stuck_seconds=1.0, max_payload_bytes=2 << 20)
    async with serving(config) as (srv, stub):
        # A worker that opens the stream and never reads from it.
        stuck = stub.GetWorkItems(spb.GetWorkItemsRequest())
        await asyncio.sleep(0.2)
        big = wrappers_pb2.StringValue(value="x" * (1 << 20))
        for n in range(40):
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId=f"w{n}", name="wf", input=big))
        await asyncio.sleep(0.5)
        healthy = RawWorker(stub)
        try:
            finished: set[str] = set()
            while len(finished) < 40:
                item = await healthy.next(timeout=30)
                await _answer(stub, item, _done(0, '"ok"'))
                finished.add(item.workflowRequest.instanceId)
            for n in range(40):
                await _until(stub, f"w{n}", opb.ORCHESTRATION_STATUS_COMPLETED)
            # The stuck stream is gone from the server: only the healthy one is left.
            streams = srv.engine.hub._streams.get("default", [])
            assert len(streams) == 1 and streams[0].id != 1
        finally:
            await healthy.close()
            stuck.cancel()


async def test_the_streams_of_one_app_are_bounded() -> None:
    config = replace(BASE, max_streams_per_app=2)
    async with serving(config) as (_, stub):
        a, b = RawWorker(stub), RawWorker(stub)
        try:
            await asyncio.sleep(0.2)
            third = stub.GetWorkItems(spb.GetWorkItemsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await third.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 worker streams" in (err.value.details() or "")
        finally:
            await a.close()
            await b.close()


async def test_a_work_item_that_keeps_losing_its_stream_fails_its_workflow_not_its_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers whose gRPC receive limit is below an item lose their stream each time it comes (the
    raw worker here has the SDKs' default 4 MiB): after a few tries the workflow FAILS with the
    reason, instead of being resent forever, and small work keeps flowing."""
    caplog.set_level(logging.INFO, logger="backend.turns")
    config = replace(BASE, max_payload_bytes=5 << 20, retry_failed_turn_seconds=0.1)
    async with serving(config) as (srv, stub):
        big = wrappers_pb2.StringValue(value="x" * (9 << 19))  # 4.5 MiB
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="heavy", name="wf", input=big))
        status = opb.ORCHESTRATION_STATUS_PENDING
        for _ in range(8):  # each worker's stream dies on the item; it reconnects as a new one
            picky = RawWorker(stub)
            await asyncio.sleep(1.0)
            await picky.close()
            status = (
                await stub.GetInstance(spb.GetInstanceRequest(instanceId="heavy"))
            ).workflowState.workflowStatus
            if status == opb.ORCHESTRATION_STATUS_FAILED:
                break
        assert status == opb.ORCHESTRATION_STATUS_FAILED
        lost = [r for r in caplog.records if "taken back" in r.getMessage() and "heavy" in r.getMessage()]
        assert len(lost) == 3
        roomy = [("grpc.max_receive_message_length", 16 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.ports['default']}", options=roomy) as channel:
            reader = sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
            request = spb.GetInstanceRequest(instanceId="heavy", getInputsAndOutputs=True)
            state = (await reader.GetInstance(request)).workflowState
        assert state.failureDetails.errorType == "WorkItemUndeliverable"
        assert "receive limit" in state.failureDetails.errorMessage
        small = RawWorker(stub)
        try:
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="light", name="wf"))
            item = await small.next()
            assert item.workflowRequest.instanceId == "light"
            await _answer(stub, item, _done(0, '"ok"'))
            await _until(stub, "light", opb.ORCHESTRATION_STATUS_COMPLETED)
        finally:
            await small.close()


async def test_a_turn_answered_after_its_instance_was_purged_gets_not_found_not_aborted() -> None:
    """Found by the fuzz suite: LeaseLost reached the worker as ABORTED."""
    async with serving(BASE) as (_, stub):
        worker = RawWorker(stub)
        try:
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId="gone", name="wf"))
            item = await worker.next()
            await stub.PurgeInstances(spb.PurgeInstancesRequest(instanceId="gone", force=True))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _answer(stub, item, _done(0, '"late"'))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert not (await stub.GetInstance(spb.GetInstanceRequest(instanceId="gone"))).exists
        finally:
            await worker.close()
