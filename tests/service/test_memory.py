"""Hostile load against a server process, its memory read from /proc: a worker stream that never
reads while 300 workflows with 1 MB inputs arrive, 8 concurrent 60 MB requests and 100 concurrent
8 MB completions. The server's
RSS stays under the ceiling the README documents, and a healthy worker then finishes everything."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from tests.e2e.harness import Server
from tests.service.conftest import RawWorker

pytestmark = pytest.mark.timeout(300)

CEILING_MB = 640  # README, "Limits": what this load may take (measured: 460-560 MB)
# RSS within a few seconds after a burst of large requests ends (measured: about 105 MB; it
# stayed at 780 MB before the server gave freed memory back, service/trim.py).
SETTLED_MB = 300
WORKFLOWS = 300


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """The server's peak RSS, sampled every 50 ms from another thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


async def test_hostile_load_stays_under_the_memory_ceiling(tmp_path: Path) -> None:
    # synchronous=normal: this test is about memory; fsyncs of 300 MB only make it slow.
    server = Server(["default"], store=f"sqlite:///{tmp_path / 'state.db'}?synchronous=normal")
    with server:
        assert server.proc is not None
        sampler = Sampler(server.proc.pid)
        try:
            async with grpc.aio.insecure_channel(server.address()) as channel:
                stub = sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
                silent = stub.GetWorkItems(spb.GetWorkItemsRequest())  # never read
                await asyncio.sleep(0.3)
                payload = wrappers_pb2.StringValue(value="x" * (1 << 20))
                for n in range(WORKFLOWS):
                    await stub.StartInstance(
                        spb.CreateInstanceRequest(instanceId=f"w{n}", name="wf", input=payload)
                    )
                huge = spb.CreateInstanceRequest(
                    name="wf", input=wrappers_pb2.StringValue(value="y" * (60 << 20))
                )
                codes = await asyncio.gather(
                    *(_code(stub.StartInstance(huge, timeout=60)) for _ in range(8)), return_exceptions=True
                )
                assert all(
                    c in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT) for c in codes
                )
                hostile_peak = sampler.peak
                # 100 concurrent 8 MB completions (under the receive limit; at 10 MB they left the
                # server at 1.8 GB). gRPC core reads each accepted request whole before our code
                # sees it, so the burst's own peak follows the attacker's concurrency; what the
                # server keeps is bounded by the budget and given back to the OS afterwards.
                result = wrappers_pb2.StringValue(value="z" * (8 << 20))
                completions = [
                    spb.ActivityResponse(instanceId=f"w{n}", taskId=1, result=result, completionToken=f"t{n}")
                    for n in range(100)
                ]
                codes = await asyncio.gather(
                    *(_code(stub.CompleteActivityTask(c, timeout=60)) for c in completions)
                )
                assert set(codes) <= {
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.NOT_FOUND,
                }
                del result, completions
                settled = await _settle(server.proc.pid, SETTLED_MB / 2)
                print(f"after the 8 MB burst (peak {sampler.peak:.0f} MB): settled at {settled:.0f} MB")
                assert settled < SETTLED_MB
                healthy = RawWorker(stub)
                done: set[str] = set()

                async def answer(item: spb.WorkItem) -> None:
                    complete = apb.WorkflowAction(
                        id=0,
                        completeWorkflow=apb.CompleteWorkflowAction(
                            workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED
                        ),
                    )
                    reply = spb.WorkflowResponse(
                        instanceId=item.workflowRequest.instanceId,
                        completionToken=item.completionToken,
                        actions=[complete],
                    )
                    # NOT_FOUND: answered after the workflow task timeout; the item comes again.
                    if await _code(stub.CompleteOrchestratorTask(reply)) == grpc.StatusCode.OK:
                        done.add(item.workflowRequest.instanceId)

                try:
                    answering: set[asyncio.Task[None]] = set()
                    deadline = time.monotonic() + 240
                    while len(done) < WORKFLOWS and time.monotonic() < deadline:
                        try:
                            item = await healthy.next(timeout=5)
                        except TimeoutError:
                            continue
                        task = asyncio.create_task(answer(item))
                        answering.add(task)
                        task.add_done_callback(answering.discard)
                    await asyncio.gather(*answering)
                    assert len(done) == WORKFLOWS
                finally:
                    await healthy.close()
                    silent.cancel()
                for n in (0, WORKFLOWS // 2, WORKFLOWS - 1):
                    state = (await stub.GetInstance(spb.GetInstanceRequest(instanceId=f"w{n}"))).workflowState
                    assert state.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
        finally:
            sampler.stop()
        print(f"server peak RSS before the burst: {hostile_peak:.0f} MB (ceiling {CEILING_MB} MB)")
        assert hostile_peak < CEILING_MB


async def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _settle(pid: int, below: float) -> float:
    """The server's RSS once it drops below `below`, or after 10 s."""
    now = rss_mb(pid)
    for _ in range(50):
        if now < below:
            break
        await asyncio.sleep(0.2)
        now = rss_mb(pid)
    return now
