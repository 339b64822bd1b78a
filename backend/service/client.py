"""Client RPCs: start, query, wait, raise, terminate, suspend, resume, purge,
list, history. Each decodes its request, calls engine.Instances, encodes.

Every RPC acts as the caller's app (`caller()`); one carrying router.targetAppID acts
on that app's instances only where the policy lets the caller manage them.
"""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from backend import limits
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import validate
from backend.domain.events import utcnow
from backend.domain.model import InstanceKey
from backend.domain.rerun import RerunRequest
from backend.engine.instances import Instances, Predicate, finished, started
from backend.engine.instances import new_id as new_id_
from backend.errors import InvalidArgument, PermissionDenied
from backend.security.interceptor import caller
from backend.security.policy import Policy
from backend.service.status import Ctx, grpc_errors
from backend.store.base import InstanceFilter

_DEFAULT_PAGE = 100
_DEADLINE_GRACE_SECONDS = 5.0


def _check_start(request: spb.CreateInstanceRequest) -> None:
    """StartInstance's bounded fields besides the name and input (the engine checks those)."""
    if request.HasField("version"):
        validate.version(request.version)
    if request.HasField("executionId"):
        validate.execution_id(request.executionId.value)
    validate.tags(request.tags)
    if request.HasField("parentTraceContext"):
        validate.trace_context(request.parentTraceContext)


class ClientRpcs:
    def __init__(self, instances: Instances, policy: Policy) -> None:
        self._instances = instances
        self._policy = policy

    def _target(self, router: opb.TaskRouter | None, operation: str) -> str:
        """The app a request acts on: the caller's own, or router.targetAppID if the policy allows."""
        app = caller()
        validate.router(router)
        if router is None or not router.targetAppID or router.targetAppID == app:
            return app
        target = router.targetAppID
        if not self._policy.may_manage(app, target, operation):
            raise PermissionDenied(
                f"app {limits.quote(app)} may not {operation} instances of app {limits.quote(target)} "
                "(authorization policy)"
            )
        return target

    def _key(self, instance_id: str, router: opb.TaskRouter | None, operation: str) -> InstanceKey:
        return InstanceKey(self._target(router, operation), validate.existing_instance_id(instance_id))

    @staticmethod
    def _router(request: object) -> opb.TaskRouter | None:
        return request.router if request.HasField("router") else None  # type: ignore[attr-defined]

    async def StartInstance(
        self, request: spb.CreateInstanceRequest, context: Ctx
    ) -> spb.CreateInstanceResponse:
        async with grpc_errors(context, "StartInstance"):
            instance_id = validate.new_instance_id(request.instanceId) if request.instanceId else new_id_()
            key = InstanceKey(self._target(self._router(request), "start"), instance_id)
            _check_start(request)
            start_at = (
                validate.timestamp(request.scheduledStartTimestamp, "scheduledStartTimestamp")
                if request.HasField("scheduledStartTimestamp")
                else None
            )
            await self._instances.start(
                key,
                name=request.name,
                source_app=caller(),
                input_=request.input if request.HasField("input") else None,
                version=request.version if request.HasField("version") and request.version.value else None,
                start_at=start_at if start_at and start_at > utcnow() else None,
                tags=dict(request.tags),
                enforce_unique=request.enforceUniqueInstanceId,
                execution_id=request.executionId.value if request.HasField("executionId") else None,
                parent_trace=request.parentTraceContext if request.HasField("parentTraceContext") else None,
            )
            return spb.CreateInstanceResponse(instanceId=key.instance_id)
        raise AssertionError("unreachable")

    @staticmethod
    def _view(state: opb.WorkflowState | None, with_payloads: bool) -> spb.GetInstanceResponse:
        if state is None:
            return spb.GetInstanceResponse(exists=False)
        if not with_payloads:
            for name in ("input", "output", "customStatus", "failureDetails"):
                state.ClearField(name)
        return spb.GetInstanceResponse(exists=True, workflowState=state)

    async def GetInstance(self, request: spb.GetInstanceRequest, context: Ctx) -> spb.GetInstanceResponse:
        async with grpc_errors(context, "GetInstance"):
            key = self._key(request.instanceId, self._router(request), "read")
            return self._view(await self._instances.get(key), request.getInputsAndOutputs)
        raise AssertionError("unreachable")

    async def _wait(
        self, request: spb.GetInstanceRequest, context: Ctx, rpc: str, until: Predicate
    ) -> spb.GetInstanceResponse:
        async with grpc_errors(context, rpc):
            key = self._key(request.instanceId, self._router(request), "read")
            # The client's deadline ends the call (gRPC cancels this task then). Racing it with a
            # DEADLINE_EXCEEDED of our own made "Abort already called" errors; we only answer
            # ourselves if the cancellation never came.
            remaining = context.time_remaining()
            guard = None if remaining is None else remaining + _DEADLINE_GRACE_SECONDS
            state = await self._instances.wait(key, until, timeout=guard)
            if not until(state):
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{rpc}: {limits.quote(key.instance_id)} did not reach the state in time",
                )
            return self._view(state, request.getInputsAndOutputs)
        raise AssertionError("unreachable")

    async def WaitForInstanceStart(
        self, request: spb.GetInstanceRequest, context: Ctx
    ) -> spb.GetInstanceResponse:
        return await self._wait(request, context, "WaitForInstanceStart", started)

    async def WaitForInstanceCompletion(
        self, request: spb.GetInstanceRequest, context: Ctx
    ) -> spb.GetInstanceResponse:
        return await self._wait(request, context, "WaitForInstanceCompletion", finished)

    async def RaiseEvent(self, request: spb.RaiseEventRequest, context: Ctx) -> spb.RaiseEventResponse:
        async with grpc_errors(context, "RaiseEvent"):
            key = self._key(request.instanceId, self._router(request), "raise")
            await self._instances.raise_event(
                key, request.name, request.input if request.HasField("input") else None
            )
            return spb.RaiseEventResponse()
        raise AssertionError("unreachable")

    async def TerminateInstance(self, request: spb.TerminateRequest, context: Ctx) -> spb.TerminateResponse:
        async with grpc_errors(context, "TerminateInstance"):
            key = self._key(request.instanceId, self._router(request), "terminate")
            await self._instances.terminate(
                key, request.output if request.HasField("output") else None, recursive=request.recursive
            )
            return spb.TerminateResponse()
        raise AssertionError("unreachable")

    async def SuspendInstance(self, request: spb.SuspendRequest, context: Ctx) -> spb.SuspendResponse:
        async with grpc_errors(context, "SuspendInstance"):
            key = self._key(request.instanceId, self._router(request), "suspend")
            reason = request.reason if request.HasField("reason") else None
            validate.reason(reason, "reason", self._instances.max_payload)
            await self._instances.suspend(key, reason)
            return spb.SuspendResponse()
        raise AssertionError("unreachable")

    async def ResumeInstance(self, request: spb.ResumeRequest, context: Ctx) -> spb.ResumeResponse:
        async with grpc_errors(context, "ResumeInstance"):
            key = self._key(request.instanceId, self._router(request), "resume")
            reason = request.reason if request.HasField("reason") else None
            validate.reason(reason, "reason", self._instances.max_payload)
            await self._instances.resume(key, reason)
            return spb.ResumeResponse()
        raise AssertionError("unreachable")

    async def PurgeInstances(
        self, request: spb.PurgeInstancesRequest, context: Ctx
    ) -> spb.PurgeInstancesResponse:
        async with grpc_errors(context, "PurgeInstances"):
            router = self._router(request)
            force = request.force if request.HasField("force") else False
            which = request.WhichOneof("request")
            if which == "instanceId":
                key = self._key(request.instanceId, router, "purge")
                count = await self._instances.purge(key, recursive=request.recursive, force=force)
            elif which == "purgeInstanceFilter":
                f = request.purgeInstanceFilter
                app = self._target(router, "purge")
                where = InstanceFilter(
                    app_id=app,
                    created_from=validate.timestamp(f.createdTimeFrom, "purgeInstanceFilter.createdTimeFrom")
                    if f.HasField("createdTimeFrom")
                    else None,
                    created_to=validate.timestamp(f.createdTimeTo, "purgeInstanceFilter.createdTimeTo")
                    if f.HasField("createdTimeTo")
                    else None,
                    statuses=validate.statuses(f.runtimeStatus, "purgeInstanceFilter.runtimeStatus"),
                )
                count = await self._instances.purge_where(where, recursive=request.recursive, force=force)
            else:
                raise InvalidArgument("PurgeInstances needs an instanceId or a purgeInstanceFilter")
            return spb.PurgeInstancesResponse(
                deletedInstanceCount=count, isComplete=wrappers_pb2.BoolValue(value=True)
            )
        raise AssertionError("unreachable")

    async def ListInstanceIDs(
        self, request: spb.ListInstanceIDsRequest, context: Ctx
    ) -> spb.ListInstanceIDsResponse:
        async with grpc_errors(context, "ListInstanceIDs"):
            size = (
                request.pageSize if request.HasField("pageSize") and request.pageSize > 0 else _DEFAULT_PAGE
            )
            size = min(size, limits.MAX_PAGE_SIZE)
            after = (
                validate.page_token(request.continuationToken)
                if request.HasField("continuationToken")
                else None
            )
            ids, token = await self._instances.list_ids(caller(), after=after or None, page_size=size)
            response = spb.ListInstanceIDsResponse(instanceIds=ids)
            if token is not None:
                response.continuationToken = token
            return response
        raise AssertionError("unreachable")

    async def GetInstanceHistory(
        self, request: spb.GetInstanceHistoryRequest, context: Ctx
    ) -> spb.GetInstanceHistoryResponse:
        async with grpc_errors(context, "GetInstanceHistory"):
            key = self._key(request.instanceId, None, "read")
            return spb.GetInstanceHistoryResponse(events=await self._instances.history(key))
        raise AssertionError("unreachable")

    async def RerunWorkflowFromEvent(
        self, request: spb.RerunWorkflowFromEventRequest, context: Ctx
    ) -> spb.RerunWorkflowFromEventResponse:
        async with grpc_errors(context, "RerunWorkflowFromEvent"):
            if not request.sourceInstanceID:
                raise InvalidArgument("sourceInstanceID is required")
            router = self._router(request)
            source = self._key(request.sourceInstanceID, router, "rerun")
            new_id = (
                request.newInstanceID
                if request.HasField("newInstanceID") and request.newInstanceID
                else new_id_()
            )
            new_key = InstanceKey(source.app_id, validate.new_instance_id(new_id, "newInstanceID"))
            if request.HasField("newChildWorkflowInstanceID") and request.newChildWorkflowInstanceID:
                validate.new_instance_id(request.newChildWorkflowInstanceID, "newChildWorkflowInstanceID")
            if request.overwriteInput:
                validate.payload(
                    request.input if request.HasField("input") else None,
                    "the rerun input",
                    self._instances.max_payload,
                )
            created = await self._instances.rerun(
                RerunRequest(
                    source=source,
                    new_key=new_key,
                    event_id=request.eventID,
                    new_input=request.input if request.HasField("input") else None,
                    overwrite_input=request.overwriteInput,
                    new_child_id=request.newChildWorkflowInstanceID
                    if request.HasField("newChildWorkflowInstanceID")
                    else None,
                )
            )
            return spb.RerunWorkflowFromEventResponse(newInstanceID=created)
        raise AssertionError("unreachable")
