"""The Dapr workflow HTTP API, as daprd serves it (dapr pkg/api/http/workflow.go):

    POST /v1.0/workflows/dapr/{workflowName}/start[?instanceID=]   -> 202 {"instanceID": ...}
    GET  /v1.0/workflows/dapr/{instanceID}                         -> 200 the instance
    POST /v1.0/workflows/dapr/{instanceID}/terminate               -> 202
    POST /v1.0/workflows/dapr/{instanceID}/raiseEvent/{eventName}  -> 202
    POST /v1.0/workflows/dapr/{instanceID}/pause                   -> 202
    POST /v1.0/workflows/dapr/{instanceID}/resume                  -> 202
    POST /v1.0/workflows/dapr/{instanceID}/purge                   -> 202

also under v1.0-beta1 and v1.0-alpha1, which daprd 1.18 still serves; like daprd 1.18 we take
any component name (its built-in engine is the only one). Bodies are passed as-is
(start: the input; raiseEvent: the event data). `?appID=` acts on another app's instances, as
router.targetAppID does over gRPC, where the policy lets the caller manage them. Errors are
daprd's body {"errorCode": "ERR_...", "message": ...}; where daprd answers 500 for a client's
mistake (unknown instance, a duplicate start, purging a running instance) we answer 404 / 409.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf import wrappers_pb2

from backend import errors, limits
from backend._proto import orchestration_pb2 as opb
from backend.domain import validate
from backend.domain.model import InstanceKey
from backend.engine.instances import new_id
from backend.http.auth import CALLER_KEY, error
from backend.security.policy import Policy

if TYPE_CHECKING:
    from backend.engine.instances import Instances

log = logging.getLogger("backend.http")

VERSIONS = ("v1.0", "v1.0-beta1", "v1.0-alpha1")
_MAX_NEW_ID = 64  # daprd's limit on instance IDs it creates (bytes, as Go counts them)

# daprd's error code per operation, for failures that are not the client's
_OP_CODES = {
    "start": "ERR_START_WORKFLOW",
    "read": "ERR_GET_WORKFLOW",
    "terminate": "ERR_TERMINATE_WORKFLOW",
    "raise": "ERR_RAISE_EVENT_WORKFLOW",
    "suspend": "ERR_PAUSE_WORKFLOW",
    "resume": "ERR_RESUME_WORKFLOW",
    "purge": "ERR_PURGE_WORKFLOW",
}


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _status_name(status: int) -> str:
    return opb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")


def instance_body(state: opb.WorkflowState) -> dict[str, object]:
    """daprd's GetWorkflowResponse in JSON (protojson names and RFC 3339 timestamps)."""
    properties: dict[str, str] = {}
    if state.HasField("input"):
        properties["dapr.workflow.input"] = state.input.value
    if state.HasField("output"):
        properties["dapr.workflow.output"] = state.output.value
    if state.HasField("customStatus"):
        properties["dapr.workflow.custom_status"] = state.customStatus.value
    if state.HasField("failureDetails"):
        properties["dapr.workflow.failure.error_type"] = state.failureDetails.errorType
        properties["dapr.workflow.failure.error_message"] = state.failureDetails.errorMessage
    return {
        "instanceID": state.instanceId,
        "workflowName": state.name,
        "createdAt": state.createdTimestamp.ToJsonString(),
        "lastUpdatedAt": state.lastUpdatedTimestamp.ToJsonString(),
        "runtimeStatus": _status_name(state.workflowStatus),
        "properties": properties,
    }


def _text(body: bytes, what: str) -> wrappers_pb2.StringValue | None:
    if not body:
        return None
    try:
        return wrappers_pb2.StringValue(value=body.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Refusal(400, "ERR_MALFORMED_REQUEST", f"{what} is not UTF-8 text") from None


class DaprWorkflowApi:
    def __init__(self, instances: Instances, policy: Policy, max_body: int, apps: tuple[str, ...]) -> None:
        self._apps = apps
        self._instances = instances
        self._policy = policy
        self._max_body = max_body

    # -- plumbing ----------------------------------------------------------------------------
    def _caller(self, request: web.Request) -> str:
        """The app the request acts as; the operator's token acts as `?appID=` (or the first app)."""
        caller = request.get(CALLER_KEY)
        if caller is None:  # the operator (http/auth.py): any app
            return request.query.get("appID") or self._apps[0]
        return str(caller)

    def _target(self, request: web.Request, operation: str) -> str:
        caller = self._caller(request)
        target = request.query.get("appID") or caller
        if target != caller:
            try:
                validate.app_id(target, "appID")
            except errors.InvalidArgument as err:
                raise _Refusal(400, "ERR_MALFORMED_REQUEST", str(err)) from None
            if not self._policy.may_manage(caller, target, operation):
                raise _Refusal(
                    403,
                    "ERR_PERMISSION_DENIED",
                    f"app {limits.quote(caller)} may not {operation} instances of app "
                    f"{limits.quote(target)} (authorization policy)",
                )
        return target

    def _key(self, request: web.Request, operation: str) -> InstanceKey:
        instance_id = request.match_info.get("instance", "")
        try:
            instance_id = validate.existing_instance_id(instance_id, "instanceID")
        except errors.InvalidArgument as err:
            raise _Refusal(400, "ERR_INSTANCE_ID_INVALID", str(err)) from None
        return InstanceKey(self._target(request, operation), instance_id)

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._max_body:
            raise errors.PayloadTooLarge(
                f"the request body is over {self._max_body} bytes (--max-payload-bytes)"
            )
        return await request.read()

    def _run(
        self, operation: str, work: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The handler: daprd's status and body for each way `work` can fail."""

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await work(request)
            except _Refusal as err:
                return error(err.status, err.code, str(err))
            except web.HTTPRequestEntityTooLarge:
                return error(413, "ERR_MALFORMED_REQUEST", f"the request body is over {self._max_body} bytes")
            except errors.SidecarError as err:
                status, code = _mapped(err, operation)
                return error(status, code, limits.clip(str(err)))
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.path)
                return error(500, _OP_CODES[operation], f"{operation} failed on the server; see its log")

        return handle

    # -- the operations ----------------------------------------------------------------------
    async def start(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not name:
            raise _Refusal(400, "ERR_WORKFLOW_NAME_MISSING", "workflow name is not configured")
        instance_id = request.query.get("instanceID", "")
        if instance_id:
            if len(instance_id.encode()) > _MAX_NEW_ID:
                raise _Refusal(
                    400,
                    "ERR_INSTANCE_ID_TOO_LONG",
                    f"workflow instance ID exceeds the max length of {_MAX_NEW_ID} characters",
                )
            if not all(c.isalnum() or c in "-_" for c in instance_id):  # daprd's rule, letters not only ASCII
                raise _Refusal(
                    400,
                    "ERR_INSTANCE_ID_INVALID",
                    f"workflow instance ID {limits.quote(instance_id)} is invalid: only alphanumeric and "
                    "underscore characters are allowed",
                )
        else:
            instance_id = new_id()
        caller = self._caller(request)
        key = InstanceKey(self._target(request, "start"), instance_id)
        body = _text(await self._body(request), "the workflow input")
        await self._instances.start(
            key,
            name=name,
            source_app=caller,
            input_=body,
            version=None,
            start_at=None,
            tags={},
            enforce_unique=False,
        )
        return web.json_response({"instanceID": instance_id}, status=202)

    async def get(self, request: web.Request) -> web.StreamResponse:
        key = self._key(request, "read")
        state = await self._instances.get(key)
        if state is None:
            raise _Refusal(
                404,
                "ERR_INSTANCE_ID_NOT_FOUND",
                f"unable to find workflow with the provided instance ID: {key.instance_id}",
            )
        return web.json_response(instance_body(state))

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        # daprd terminates child workflows too
        await self._instances.terminate(self._key(request, "terminate"), None, recursive=True)
        return web.Response(status=202)

    async def raise_event(self, request: web.Request) -> web.StreamResponse:
        key = self._key(request, "raise")
        name = request.match_info.get("event", "")
        if not name:
            raise _Refusal(400, "ERR_WORKFLOW_EVENT_NAME_MISSING", "missing workflow event name")
        data = _text(await self._body(request), "the event data")
        await self._instances.raise_event(key, name, data)
        return web.Response(status=202)

    async def pause(self, request: web.Request) -> web.StreamResponse:
        await self._instances.suspend(self._key(request, "suspend"), None)
        return web.Response(status=202)

    async def resume(self, request: web.Request) -> web.StreamResponse:
        await self._instances.resume(self._key(request, "resume"), None)
        return web.Response(status=202)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        # daprd purges child workflows too
        await self._instances.purge(self._key(request, "purge"), recursive=True, force=False)
        return web.Response(status=202)

    def routes(self) -> list[web.RouteDef]:
        out = []
        for version in VERSIONS:
            base = f"/{version}/workflows/{{component}}"
            out += [
                web.post(f"{base}/{{name}}/start", self._run("start", self.start)),
                web.get(f"{base}/{{instance}}", self._run("read", self.get)),
                web.post(f"{base}/{{instance}}/terminate", self._run("terminate", self.terminate)),
                web.post(f"{base}/{{instance}}/raiseEvent/{{event}}", self._run("raise", self.raise_event)),
                web.post(f"{base}/{{instance}}/pause", self._run("suspend", self.pause)),
                web.post(f"{base}/{{instance}}/resume", self._run("resume", self.resume)),
                web.post(f"{base}/{{instance}}/purge", self._run("purge", self.purge)),
            ]
        return out


def _mapped(err: errors.SidecarError, operation: str) -> tuple[int, str]:
    """An engine error as an HTTP status and daprd's error code."""
    op_code = _OP_CODES[operation]
    if isinstance(err, errors.NotFound):
        return 404, "ERR_INSTANCE_ID_NOT_FOUND"
    if isinstance(err, errors.PayloadTooLarge):
        return 413, op_code
    if isinstance(err, errors.InvalidArgument):
        return 400, op_code
    if isinstance(err, errors.AlreadyExists | errors.FailedPrecondition):
        return 409, op_code
    if isinstance(err, errors.PermissionDenied):
        return 403, "ERR_PERMISSION_DENIED"
    if isinstance(err, errors.Unauthenticated):
        return 401, "ERR_UNAUTHENTICATED"
    if isinstance(err, errors.ResourceExhausted):
        return 429, op_code
    if isinstance(err, errors.Unavailable):
        return 503, op_code
    if isinstance(err, errors.Unimplemented):
        return 501, op_code
    return 500, op_code
