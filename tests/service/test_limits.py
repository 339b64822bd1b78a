"""Every bound of backend/limits.py over raw gRPC: oversized or invalid client fields per RPC,
worker actions, bad timestamps, long IDs in errors, undecodable requests, oversized failures.

Each case answers INVALID_ARGUMENT (or NOT_FOUND) with a short message naming the field and
its limit, and changes nothing; never UNKNOWN, INTERNAL or RESOURCE_EXHAUSTED on metadata.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, message, timestamp_pb2, wrappers_pb2

from backend import limits
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config, Security
from backend.domain.model import InstanceKey
from backend.security.secrets import Secret
from backend.server import Server
from backend.service import undecodable
from tests.service.conftest import BASE, RawWorker
from tests.store.conftest import STORE_PARAMS, _concrete_url, mongod_url  # noqa: F401 (a fixture)

APP = "default"
MIB = 1024 * 1024
# A payload limit whose gRPC receive limit (2 x 8 MiB + 1 MiB) lets a 17 MB failure or a 10 MB
# ID through to our own checks.
BIG_PAYLOAD = 8 * MIB
TEN_MB = "x" * (10 * MIB)
EMOJI_ID = "\U0001f600" * limits.MAX_INSTANCE_ID_CHARS  # valid, 4 KB of UTF-8, 12 KB percent-encoded
LONG_NAME = "n" * (limits.MAX_NAME_CHARS + 1)
NUL_APP = "pay\x00ments"


async def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


YEAR_0 = _ts(limits.MIN_TIMESTAMP_SECONDS - 1)
YEAR_10000 = _ts(limits.MAX_TIMESTAMP_SECONDS + 1)
INT64_MAX = _ts(2**63 - 1)
INT64_MIN = _ts(-(2**63))
BAD_NANOS = _ts(0, -1)
NANOS_1E9 = _ts(0, 1_000_000_000)


@pytest.fixture
async def big_stub() -> AsyncIterator[sgrpc.TaskHubSidecarServiceStub]:
    srv = Server(replace(BASE, max_payload_bytes=BIG_PAYLOAD))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.ports[APP]}") as channel:
            yield sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await srv.stop()


# -- client RPCs: every bounded field, table-driven --------------------------------------------------


def _start(**fields: Any) -> spb.CreateInstanceRequest:
    request = spb.CreateInstanceRequest(instanceId="new", name="wf")
    for name, value in fields.items():
        if name == "tags":
            request.tags.update(value)
        elif isinstance(value, message.Message):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def _bad_router() -> opb.TaskRouter:
    return opb.TaskRouter(targetAppID=NUL_APP)


def _purge_filter(**stamps: timestamp_pb2.Timestamp) -> spb.PurgeInstancesRequest:
    return spb.PurgeInstancesRequest(purgeInstanceFilter=spb.PurgeInstanceFilter(**stamps))


CLIENT_CASES: list[tuple[str, Callable[[], message.Message], str]] = [
    ("StartInstance", lambda: _start(tags={f"k{i}": "v" for i in range(101)}), "tags has 101 entries"),
    ("StartInstance", lambda: _start(tags={"k" * 300: "v"}), "at most 256"),
    ("StartInstance", lambda: _start(tags={"k": "v" * 3000}), "tags['k'] is 3000 bytes"),
    ("StartInstance", lambda: _start(tags={f"k{i}": "v" * 2000 for i in range(30)}), "at most 40960"),
    (
        "StartInstance",
        lambda: _start(version=wrappers_pb2.StringValue(value="v" * 2000)),
        "version is 2000 characters",
    ),
    (
        "StartInstance",
        lambda: _start(executionId=wrappers_pb2.StringValue(value="e" * 300)),
        "executionId is 300",
    ),
    ("StartInstance", lambda: _start(executionId=wrappers_pb2.StringValue(value="e\x00")), "executionId"),
    (
        "StartInstance",
        lambda: _start(parentTraceContext=opb.TraceContext(traceParent="t" * 1000)),
        "parentTraceContext.traceParent is 1000 characters",
    ),
    (
        "StartInstance",
        lambda: _start(parentTraceContext=opb.TraceContext(spanID="s" * 300)),
        "parentTraceContext.spanID",
    ),
    (
        "StartInstance",
        lambda: _start(
            parentTraceContext=opb.TraceContext(traceState=wrappers_pb2.StringValue(value="k=v," * 9000))
        ),
        "parentTraceContext.traceState",
    ),
    ("StartInstance", lambda: _start(router=_bad_router()), "router.targetAppID"),
    (
        "StartInstance",
        lambda: _start(router=opb.TaskRouter(targetAppID="a" * 300)),
        "router.targetAppID is 300",
    ),
    ("StartInstance", lambda: _start(name="w\x00f"), "workflow name"),
    ("StartInstance", lambda: _start(name=LONG_NAME), "workflow name"),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=YEAR_0),
        "scheduledStartTimestamp is out of range",
    ),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=YEAR_10000),
        "scheduledStartTimestamp is out of range",
    ),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=INT64_MAX),
        "scheduledStartTimestamp is out of range",
    ),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=INT64_MIN),
        "scheduledStartTimestamp is out of range",
    ),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=BAD_NANOS),
        "scheduledStartTimestamp is out of range",
    ),
    (
        "StartInstance",
        lambda: _start(scheduledStartTimestamp=NANOS_1E9),
        "scheduledStartTimestamp is out of range",
    ),
    ("GetInstance", lambda: spb.GetInstanceRequest(instanceId="there\x00"), "instanceId"),
    (
        "GetInstance",
        lambda: spb.GetInstanceRequest(instanceId="there", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "WaitForInstanceStart",
        lambda: spb.GetInstanceRequest(instanceId="there", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "WaitForInstanceCompletion",
        lambda: spb.GetInstanceRequest(instanceId="x" * 1025),
        "instanceId is 1025 characters",
    ),
    ("RaiseEvent", lambda: spb.RaiseEventRequest(instanceId="there", name=LONG_NAME), "event name"),
    ("RaiseEvent", lambda: spb.RaiseEventRequest(instanceId="there", name="e\x00"), "event name"),
    (
        "RaiseEvent",
        lambda: spb.RaiseEventRequest(instanceId="there", name="e", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "TerminateInstance",
        lambda: spb.TerminateRequest(instanceId="there", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "SuspendInstance",
        lambda: spb.SuspendRequest(instanceId="there", reason=wrappers_pb2.StringValue(value="r" * 2000)),
        "reason is 2000 bytes",
    ),
    (
        "SuspendInstance",
        lambda: spb.SuspendRequest(instanceId="there", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "ResumeInstance",
        lambda: spb.ResumeRequest(instanceId="there", reason=wrappers_pb2.StringValue(value="r" * 2000)),
        "reason is 2000 bytes",
    ),
    ("PurgeInstances", lambda: _purge_filter(createdTimeFrom=YEAR_0), "createdTimeFrom is out of range"),
    ("PurgeInstances", lambda: _purge_filter(createdTimeTo=INT64_MAX), "createdTimeTo is out of range"),
    ("PurgeInstances", lambda: _purge_filter(createdTimeTo=NANOS_1E9), "createdTimeTo is out of range"),
    (
        "PurgeInstances",
        lambda: spb.PurgeInstancesRequest(
            purgeInstanceFilter=spb.PurgeInstanceFilter(runtimeStatus=[1, 999])
        ),
        "not workflow statuses",
    ),
    (
        "PurgeInstances",
        lambda: spb.PurgeInstancesRequest(instanceId="there", router=_bad_router()),
        "targetAppID",
    ),
    (
        "RerunWorkflowFromEvent",
        lambda: spb.RerunWorkflowFromEventRequest(sourceInstanceID="there", newInstanceID="a/b"),
        "invalid newInstanceID",
    ),
    (
        "RerunWorkflowFromEvent",
        lambda: spb.RerunWorkflowFromEventRequest(
            sourceInstanceID="there", newChildWorkflowInstanceID="c\x00"
        ),
        "invalid newChildWorkflowInstanceID",
    ),
    (
        "RerunWorkflowFromEvent",
        lambda: spb.RerunWorkflowFromEventRequest(sourceInstanceID="there", router=_bad_router()),
        "router.targetAppID",
    ),
    (
        "ListInstanceIDs",
        lambda: spb.ListInstanceIDsRequest(continuationToken="t" * 2000),
        "continuationToken",
    ),
    ("ListInstanceIDs", lambda: spb.ListInstanceIDsRequest(continuationToken="t\x00"), "continuationToken"),
    ("GetInstanceHistory", lambda: spb.GetInstanceHistoryRequest(instanceId="there\x01"), "instanceId"),
]


@pytest.mark.parametrize(
    ("rpc", "build", "needle"), CLIENT_CASES, ids=[f"{rpc}-{i}" for i, (rpc, _, _) in enumerate(CLIENT_CASES)]
)
async def test_oversized_or_invalid_client_field_is_invalid_argument_and_changes_nothing(
    stub: sgrpc.TaskHubSidecarServiceStub, rpc: str, build: Callable[[], message.Message], needle: str
) -> None:
    await stub.StartInstance(spb.CreateInstanceRequest(instanceId="there", name="wf"))
    before = await stub.GetInstance(spb.GetInstanceRequest(instanceId="there", getInputsAndOutputs=True))
    code, msg = await _status(getattr(stub, rpc)(build()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert needle in msg
    assert len(msg.encode()) <= limits.MAX_STATUS_MESSAGE_BYTES
    ids = await stub.ListInstanceIDs(spb.ListInstanceIDsRequest(pageSize=100))
    assert list(ids.instanceIds) == ["there"]
    after = await stub.GetInstance(spb.GetInstanceRequest(instanceId="there", getInputsAndOutputs=True))
    assert after == before


async def test_values_at_the_bounds_are_accepted(stub: sgrpc.TaskHubSidecarServiceStub) -> None:
    request = _start(
        tags={f"k{i}": "v" * 300 for i in range(limits.MAX_TAGS)},
        version=wrappers_pb2.StringValue(value="v" * limits.MAX_VERSION_CHARS),
        executionId=wrappers_pb2.StringValue(value="e" * limits.MAX_EXECUTION_ID_CHARS),
        parentTraceContext=opb.TraceContext(
            traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", spanID="b7ad6b7169203331"
        ),
        scheduledStartTimestamp=_ts(limits.MAX_TIMESTAMP_SECONDS, 999_999_999),
    )
    await stub.StartInstance(request)
    state = (await stub.GetInstance(spb.GetInstanceRequest(instanceId="new"))).workflowState
    assert len(state.tags) == limits.MAX_TAGS and state.workflowStatus == opb.ORCHESTRATION_STATUS_PENDING
    await stub.PurgeInstances(
        spb.PurgeInstancesRequest(
            purgeInstanceFilter=spb.PurgeInstanceFilter(
                createdTimeFrom=_ts(limits.MIN_TIMESTAMP_SECONDS),
                createdTimeTo=_ts(limits.MAX_TIMESTAMP_SECONDS),
            ),
            force=True,
        )
    )
    assert not (await stub.GetInstance(spb.GetInstanceRequest(instanceId="new"))).exists


async def test_a_request_past_the_receive_limit_is_refused_by_grpc(
    stub: sgrpc.TaskHubSidecarServiceStub,
) -> None:
    """BASE's payload limit is 1 KiB: gRPC reads at most 2 KiB + 1 MiB, not 64 MiB."""
    over = wrappers_pb2.StringValue(value="x" * (limits.grpc_receive_limit(BASE.max_payload_bytes) + 1))
    code, _ = await _status(
        stub.StartInstance(spb.CreateInstanceRequest(instanceId="big", name="wf", input=over))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    under = wrappers_pb2.StringValue(value="x" * 4096)  # over the payload limit, under the receive limit
    code, msg = await _status(
        stub.StartInstance(spb.CreateInstanceRequest(instanceId="big", name="wf", input=under))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "--max-payload-bytes" in msg


# -- worker actions -----------------------------------------------------------------------------------


def _action(**kind: Any) -> apb.WorkflowAction:
    router = kind.pop("router", None)
    out = apb.WorkflowAction(id=0, **kind)
    if router is not None:
        out.router.CopyFrom(router)
    return out


def _detached(**fields: Any) -> apb.WorkflowAction:
    body = apb.CreateDetachedWorkflowAction(instanceId="det", name="wf")
    for name, value in fields.items():
        if isinstance(value, message.Message):
            getattr(body, name).CopyFrom(value)
        else:
            setattr(body, name, value)
    return _action(createDetachedWorkflow=body)


HUGE_ID = "c" * 100_000  # within BASE's receive limit, far over the ID bound

# (action, the field the error names, instances that must not exist afterwards)
WORKER_CASES: list[tuple[apb.WorkflowAction, str, list[InstanceKey]]] = [
    (
        _action(scheduleTask=apb.ScheduleTaskAction(name=LONG_NAME)),
        "scheduleTask.name is 1025 characters",
        [],
    ),
    (
        _action(scheduleTask=apb.ScheduleTaskAction(name="a"), router=opb.TaskRouter(targetAppID=NUL_APP)),
        "router.targetAppID",
        [],
    ),
    (
        _action(createChildWorkflow=apb.CreateChildWorkflowAction(instanceId=HUGE_ID, name="child")),
        "createChildWorkflow.instanceId",
        [InstanceKey(APP, HUGE_ID)],
    ),
    (
        _action(createChildWorkflow=apb.CreateChildWorkflowAction(instanceId="c\x00hild", name="child")),
        "createChildWorkflow.instanceId",
        [InstanceKey(APP, "c\x00hild")],
    ),
    (
        _action(
            createChildWorkflow=apb.CreateChildWorkflowAction(instanceId="kid", name="child"),
            router=opb.TaskRouter(targetAppID=NUL_APP),
        ),
        "router.targetAppID",
        [InstanceKey(NUL_APP, "kid")],
    ),
    (
        _action(createChildWorkflow=apb.CreateChildWorkflowAction(instanceId="kid", name=LONG_NAME)),
        "createChildWorkflow.name",
        [InstanceKey(APP, "kid")],
    ),
    (_detached(instanceId=HUGE_ID), "createDetachedWorkflow.instanceId", [InstanceKey(APP, HUGE_ID)]),
    (_detached(instanceId="d\x00et"), "createDetachedWorkflow.instanceId", [InstanceKey(APP, "d\x00et")]),
    (
        _detached(scheduledStartTimestamp=YEAR_10000),
        "scheduledStartTimestamp is out of range",
        [InstanceKey(APP, "det")],
    ),
    (
        _detached(scheduledStartTimestamp=INT64_MIN),
        "scheduledStartTimestamp is out of range",
        [InstanceKey(APP, "det")],
    ),
    (_action(createTimer=apb.CreateTimerAction(fireAt=INT64_MAX)), "createTimer.fireAt is out of range", []),
    (_action(createTimer=apb.CreateTimerAction(fireAt=YEAR_0)), "createTimer.fireAt is out of range", []),
    (_action(createTimer=apb.CreateTimerAction(fireAt=NANOS_1E9)), "createTimer.fireAt is out of range", []),
    (
        _action(sendEvent=apb.SendEventAction(instance=opb.WorkflowInstance(instanceId=HUGE_ID), name="e")),
        "sendEvent.instance.instanceId",
        [],
    ),
    (
        _action(terminateWorkflow=apb.TerminateWorkflowAction(instanceId="t\x00")),
        "terminateWorkflow.instanceId",
        [],
    ),
]


@pytest.mark.parametrize(
    ("bad", "needle", "absent"),
    WORKER_CASES,
    ids=[c[1].split()[0] + f"-{i}" for i, c in enumerate(WORKER_CASES)],
)
async def test_malformed_or_oversized_worker_action_is_invalid_argument_and_nothing_is_stored(
    server: Server,
    stub: sgrpc.TaskHubSidecarServiceStub,
    bad: apb.WorkflowAction,
    needle: str,
    absent: list[InstanceKey],
) -> None:
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="w", name="wf"))
        item = await worker.next()
        code, msg = await _status(
            stub.CompleteOrchestratorTask(
                spb.WorkflowResponse(instanceId="w", completionToken=item.completionToken, actions=[bad])
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
        assert needle in msg and len(msg.encode()) <= limits.MAX_STATUS_MESSAGE_BYTES
    finally:
        await worker.close()
    history = await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="w"))
    assert list(history.events) == []
    for key in absent:
        assert await server.store.get_state(key) is None
    assert await server.store.list_instance_ids(APP, after=None, limit=10) == ["w"]


# -- long IDs in errors -------------------------------------------------------------------------------


async def test_a_10_mb_instance_id_in_not_found_stays_short(
    big_stub: sgrpc.TaskHubSidecarServiceStub,
) -> None:
    for call in (
        big_stub.CompleteActivityTask(spb.ActivityResponse(instanceId=TEN_MB, taskId=1)),
        big_stub.CompleteOrchestratorTask(spb.WorkflowResponse(instanceId=TEN_MB)),
        big_stub.CompleteWorkflowTask(
            spb.WorkflowResponse(instanceId=TEN_MB, completionToken="no-such-token")
        ),
    ):
        code, msg = await _status(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert len(msg.encode()) <= limits.MAX_STATUS_MESSAGE_BYTES
    code, msg = await _status(big_stub.RaiseEvent(spb.RaiseEventRequest(instanceId=TEN_MB, name="e")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(msg) < 300


@pytest.mark.parametrize(
    "build",
    [
        lambda: ("RaiseEvent", spb.RaiseEventRequest(instanceId=EMOJI_ID, name="e")),
        lambda: ("TerminateInstance", spb.TerminateRequest(instanceId=EMOJI_ID)),
        lambda: ("SuspendInstance", spb.SuspendRequest(instanceId=EMOJI_ID)),
        lambda: ("ResumeInstance", spb.ResumeRequest(instanceId=EMOJI_ID)),
        lambda: ("PurgeInstances", spb.PurgeInstancesRequest(instanceId=EMOJI_ID)),
        lambda: ("GetInstanceHistory", spb.GetInstanceHistoryRequest(instanceId=EMOJI_ID)),
        lambda: ("WaitForInstanceCompletion", spb.GetInstanceRequest(instanceId=EMOJI_ID)),
        lambda: ("RerunWorkflowFromEvent", spb.RerunWorkflowFromEventRequest(sourceInstanceID=EMOJI_ID)),
    ],
    ids=["raise", "terminate", "suspend", "resume", "purge", "history", "wait", "rerun"],
)
async def test_a_valid_long_id_in_not_found_is_not_resource_exhausted(
    stub: sgrpc.TaskHubSidecarServiceStub, build: Callable[[], tuple[str, message.Message]]
) -> None:
    """1,024 emoji are a valid ID, 12 KB once percent-encoded in grpc-message (clients take 8 KB)."""
    rpc, request = build()
    code, msg = await _status(getattr(stub, rpc)(request))
    assert code == grpc.StatusCode.NOT_FOUND, msg
    assert len(msg.encode()) <= limits.MAX_STATUS_MESSAGE_BYTES


# -- undecodable requests -----------------------------------------------------------------------------

_SERVICE = spb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
GARBAGE = b"\xff\xff\xff\xff\xff"


async def test_garbage_bytes_on_every_rpc_are_invalid_argument_with_one_log_line(
    server: Server,
    stub: sgrpc.TaskHubSidecarServiceStub,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(undecodable, "_THROTTLED", undecodable._Throttled())
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.ports[APP]}") as channel:
        for method in _SERVICE.methods:
            path = f"/{_SERVICE.full_name}/{method.name}"
            if method.server_streaming:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in channel.unary_stream(path)(GARBAGE):
                        pass
                code, msg = info.value.code(), info.value.details() or ""
            else:
                code, msg = await _status(channel.unary_unary(path)(GARBAGE))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, code, msg)
            assert "does not decode" in msg
    assert len(_SERVICE.methods) == 17
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "undecodable" in lines[0].getMessage() and lines[0].exc_info is None
    await stub.Hello(empty_pb2.Empty())  # the server still answers


async def test_garbage_from_a_caller_without_credentials_is_unauthenticated() -> None:
    """Credentials come first: a caller without them learns nothing about decoding."""
    config = replace(BASE, security=Security(api_token=Secret.literal("server-token-1", "test")))
    srv = Server(config)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.ports[APP]}") as channel:
            code, _ = await _status(channel.unary_unary("/TaskHubSidecarService/StartInstance")(GARBAGE))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("dapr-api-token", "server-token-1"),)
            call = channel.unary_unary("/TaskHubSidecarService/StartInstance")(GARBAGE, metadata=metadata)
            code, _ = await _status(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await srv.stop()


def test_the_grpc_log_filter_condenses_decode_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(undecodable, "_THROTTLED", undecodable._Throttled())
    try:
        raise message.DecodeError("Error parsing message with type 'X'")
    except message.DecodeError:
        record = logging.LogRecord(
            undecodable.GRPC_LOGGER,
            logging.ERROR,
            __file__,
            1,
            "Unexpected [DecodeError] raised",
            (),
            sys.exc_info(),
        )
    assert undecodable.LogFilter().filter(record) is False
    other = logging.LogRecord(undecodable.GRPC_LOGGER, logging.ERROR, __file__, 1, "something else", (), None)
    assert undecodable.LogFilter().filter(other) is True


# -- oversized failures, on every store -------------------------------------------------------------


@pytest.fixture(params=STORE_PARAMS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    return replace(
        BASE, store_url=_concrete_url(request.param, tmp_path, request), max_payload_bytes=BIG_PAYLOAD
    )


@pytest.fixture
async def store_stub(store_config: Config) -> AsyncIterator[sgrpc.TaskHubSidecarServiceStub]:
    srv = Server(store_config)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.ports[APP]}") as channel:
            yield sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await srv.stop()


def _huge_failure(error_type: str) -> opb.TaskFailureDetails:
    """17 MB: past MongoDB's 16 MB document limit, which re-ran such an activity forever."""
    return opb.TaskFailureDetails(
        errorType=error_type,
        errorMessage="m" * 17_000_000,
        stackTrace=wrappers_pb2.StringValue(value="at charge()\n" * 1000),
        isNonRetriable=True,
    )


def _assert_truncated(details: opb.TaskFailureDetails, error_type: str) -> None:
    assert details.errorType == error_type and details.isNonRetriable
    assert len(details.errorMessage.encode()) <= limits.MAX_ERROR_MESSAGE_BYTES
    assert details.errorMessage.startswith("mmmm")
    assert "truncated by the server: 17000000 bytes" in details.errorMessage
    assert details.stackTrace.value.startswith("at charge()")


async def test_an_oversized_activity_failure_is_truncated_and_the_parent_sees_it(
    store_stub: sgrpc.TaskHubSidecarServiceStub,
) -> None:
    stub = store_stub
    worker = RawWorker(stub)
    try:
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="pay", name="wf"))
        turn = await worker.next()
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="pay",
                completionToken=turn.completionToken,
                actions=[_action(scheduleTask=apb.ScheduleTaskAction(name="charge"))],
            )
        )
        activity = await worker.next()
        await stub.CompleteActivityTask(
            spb.ActivityResponse(
                instanceId="pay",
                taskId=activity.activityRequest.taskId,
                completionToken=activity.completionToken,
                failureDetails=_huge_failure("PaymentDeclined"),
            )
        )
        turn = await worker.next()
        failed = turn.workflowRequest.newEvents[-1]
        assert failed.HasField("taskFailed") and failed.taskFailed.taskScheduledId == 0
        _assert_truncated(failed.taskFailed.failureDetails, "PaymentDeclined")
        # The workflow fails in turn with an oversized failure of its own: truncated likewise.
        finish = apb.CompleteWorkflowAction(
            workflowStatus=opb.ORCHESTRATION_STATUS_FAILED, failureDetails=_huge_failure("OrderFailed")
        )
        await stub.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="pay",
                completionToken=turn.completionToken,
                actions=[_action(completeWorkflow=finish)],
            )
        )
    finally:
        await worker.close()
    done = await stub.WaitForInstanceCompletion(
        spb.GetInstanceRequest(instanceId="pay", getInputsAndOutputs=True), timeout=10
    )
    assert done.workflowState.workflowStatus == opb.ORCHESTRATION_STATUS_FAILED
    _assert_truncated(done.workflowState.failureDetails, "OrderFailed")
    history = (await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId="pay"))).events
    kinds = [e.WhichOneof("eventType") for e in history]
    assert kinds.count("taskFailed") == 1 and kinds[-1] == "executionCompleted"
    assert all(e.ByteSize() < limits.MAX_FAILURE_BYTES + 4096 for e in history)
