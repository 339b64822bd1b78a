"""Worker RPCs: Hello, GetWorkItems (the work stream), and the completions.

A completion resolves the pending work item in engine/streams and waits for
the turn's commit, so a malformed response is answered with its error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import failures
from backend.engine.encoded import EncodedItem
from backend.engine.streams import StreamHub
from backend.security.interceptor import caller
from backend.service.status import Ctx, grpc_errors

_HEALTH_PING_SECONDS = 30.0


class WorkerRpcs:
    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub

    async def Hello(self, request: empty_pb2.Empty, context: Ctx) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def GetWorkItems(
        self, request: spb.GetWorkItemsRequest, context: Ctx
    ) -> AsyncIterator[spb.WorkItem | EncodedItem]:
        # The stream receives work of the app its credentials proved, and no other.
        async with grpc_errors(context, "GetWorkItems"):
            stream = self._hub.connect(caller(), list(request.capabilities))
        stream.task = asyncio.current_task()
        try:
            while True:
                try:
                    async with asyncio.timeout(_HEALTH_PING_SECONDS):
                        item = await stream.queue.get()
                except TimeoutError:
                    if stream.health_ping:
                        item = spb.WorkItem(healthPing=spb.HealthPing())
                    else:
                        continue
                if item is None:  # the hub closed the stream (server stopping, or stuck)
                    return
                if item.completionToken and not self._hub.is_pending(item.completionToken):
                    continue  # taken back while it waited here: it went to another stream
                # While the worker does not take it, the send waits here: the hub closes
                # a stream whose send has waited too long (engine.py, close_stuck).
                stream.sending_since = time.monotonic()
                yield item
                stream.sending_since = None
        finally:
            self._hub.disconnect(stream)

    async def _complete(
        self,
        kind: str,
        token: str,
        instance_id: str,
        task_id: int,
        response: object,
        context: Ctx,
        rpc: str,
    ) -> spb.CompleteTaskResponse:
        async with grpc_errors(context, rpc):
            pending = self._hub.claim(caller(), kind, token, instance_id, task_id)
            pending.response.set_result(response)
            await asyncio.shield(pending.outcome)
            return spb.CompleteTaskResponse()
        raise AssertionError("unreachable")

    async def CompleteActivityTask(
        self, request: spb.ActivityResponse, context: Ctx
    ) -> spb.CompleteTaskResponse:
        if request.HasField("result") and request.HasField("failureDetails"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "an activity response carries either a result or failureDetails, not both",
            )
        if request.HasField("failureDetails"):
            # Too large a failure is cut, not refused: the task still fails with the user's error.
            failures.bound_in_place(request.failureDetails)
        return await self._complete(
            "activity",
            request.completionToken,
            request.instanceId,
            request.taskId,
            request,
            context,
            "CompleteActivityTask",
        )

    async def CompleteOrchestratorTask(
        self, request: spb.WorkflowResponse, context: Ctx
    ) -> spb.CompleteTaskResponse:
        return await self._complete(
            "workflow",
            request.completionToken,
            request.instanceId,
            -1,
            request,
            context,
            "CompleteOrchestratorTask",
        )

    async def CompleteWorkflowTask(
        self, request: spb.WorkflowResponse, context: Ctx
    ) -> spb.CompleteTaskResponse:
        """The same contract under its new name (Go SDK v0.12 and later)."""
        return await self.CompleteOrchestratorTask(request, context)
