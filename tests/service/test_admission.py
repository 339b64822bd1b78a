"""The server-wide budget on large requests in flight (service/admission.py), over real gRPC.


instance, so a large termination output holds its bytes for that long: a handful of them fill
the budget, the next large request is refused without being decoded, small requests still pass,
and everything held is given back when the calls end (also refused and cancelled ones).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from google.protobuf import wrappers_pb2

from backend import limits
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config
from backend.security.secrets import Secret
from backend.server import Server
from tests.service.conftest import BASE

PAYLOAD = 1 << 20  # --max-payload-bytes of these tests: the receive limit is 3 MiB
BIG = 900 * 1024  # three fit the 3 MiB budget, a fourth does not


@pytest.fixture
def config() -> Config:
    return replace(
        BASE,
        max_payload_bytes=PAYLOAD,
        max_request_bytes_in_flight=0,  # raised to one receive limit: 3 MiB
    )


def output(size: int) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value="x" * size)


async def code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def wait_released(server: Server) -> None:
    # A call's bytes are given back when its handler returns, just after the client has its answer.
    for _ in range(100):
        if server.budget.held == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{server.budget.held} bytes still held")


async def exists(stub: sgrpc.TaskHubSidecarServiceStub, instance_id: str) -> bool:
    got = await stub.GetInstance(spb.GetInstanceRequest(instanceId=instance_id))
    return bool(got.exists)


def big_start(instance_id: str) -> spb.CreateInstanceRequest:
    return spb.CreateInstanceRequest(instanceId=instance_id, name="wf", input=output(BIG))


async def test_budget_is_the_receive_limit_at_least(server: Server) -> None:
    assert server.budget.limit == limits.grpc_receive_limit(PAYLOAD)


async def test_a_large_request_past_the_budget_is_refused_small_ones_pass(
    server: Server, stub: sgrpc.TaskHubSidecarServiceStub
) -> None:
    # Other large requests hold all but half of one request's worth.
    others = server.budget.take(server.budget.limit - BIG // 2)
    assert others is not None
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StartInstance(big_start("big"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry" in (refused.value.details() or "")
        assert len(refused.value.details() or "") < 200
        assert not await exists(stub, "big")  # refused undecoded: nothing written
        # Small requests are not counted: lifecycle calls go on while the budget is full.
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId="small", name="wf", input=output(1000)))
        assert await exists(stub, "small")
    finally:
        others.release()
    await stub.StartInstance(big_start("big"))
    assert await exists(stub, "big")
    await wait_released(server)


async def test_concurrent_large_requests_are_admitted_or_refused_and_all_bytes_come_back(
    server: Server, stub: sgrpc.TaskHubSidecarServiceStub
) -> None:
    ids = [f"c{n}" for n in range(20)]
    codes = await asyncio.gather(*(code(stub.StartInstance(big_start(i))) for i in ids))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    await wait_released(server)
    for i, c in zip(ids, codes, strict=True):
        assert await exists(stub, i) == (c == grpc.StatusCode.OK)


@pytest.mark.parametrize(
    "config",
    [
        replace(
            BASE,
            max_payload_bytes=PAYLOAD,
            security=replace(BASE.security, api_token=Secret.literal("s3cret", "test")),
        )
    ],
)
async def test_credentials_are_checked_before_the_budget(
    server: Server, stub: sgrpc.TaskHubSidecarServiceStub
) -> None:
    others = server.budget.take(server.budget.limit)
    assert others is not None
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StartInstance(big_start("anon"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # learns nothing of the budget
    finally:
        others.release()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartInstance(big_start("anon"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await wait_released(server)
