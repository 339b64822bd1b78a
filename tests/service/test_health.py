"""Health and reflection on the gRPC listeners, checked with grpcio's own clients, and the HTTP
probes /healthz and /readyz."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import httpx
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from backend._proto import orchestrator_service_pb2 as spb
from backend.config import AppListener, Config, HttpEndpoint, Security
from backend.security.secrets import Secret
from backend.server import Server
from tests.service import secure
from tests.service.conftest import BASE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TOKEN = "server-wide-token-0123456789"


@pytest.fixture
def config() -> Config:
    # A token on every call: health and reflection must still answer without one (kubelet sends none).
    return replace(
        BASE,
        apps=(AppListener(app_id="orders", host="127.0.0.1", port=0),),
        security=Security(api_token=Secret.literal(TOKEN, "test")),
        http=(HttpEndpoint(host="127.0.0.1", port=0),),
    )


async def _check(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        return int(response.status)


async def test_health_per_service_and_app_without_a_token(server: Server) -> None:
    port = server.ports["orders"]
    for service in ("", "TaskHubSidecarService", "orders"):
        assert await _check(port, service) == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(port, "payments")  # not served here
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The sidecar service itself still wants the token.
    async with secure.channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await secure.stub(ch).GetInstance(spb.GetInstanceRequest(instanceId="x"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _reflect(port: int) -> tuple[list[str], list[str]]:
    """grpcio-reflection's own client (synchronous: run off the event loop the server is on)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = list(db.get_services())
        pool = DescriptorPool(db)
        methods = [m.name for m in pool.FindServiceByName("TaskHubSidecarService").methods]
        return services, methods


async def test_reflection_lists_the_protocol_without_a_token(server: Server) -> None:
    services, methods = await asyncio.to_thread(_reflect, server.ports["orders"])
    assert "TaskHubSidecarService" in services and "grpc.health.v1.Health" in services
    assert {"StartInstance", "GetWorkItems", "CompleteOrchestratorTask"} <= set(methods)


async def test_probes_and_shutdown(config: Config) -> None:
    srv = Server(config)
    await srv.start()
    port = srv.ports["orders"]
    base = f"http://127.0.0.1:{srv.http[0].port}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="orders"))
            assert (await watch.read()).status == SERVING
            await srv.health.shutting_down()  # the first step of Server.stop
            assert (await watch.read()).status == NOT_SERVING
            watch.cancel()
        assert await _check(port, "") == NOT_SERVING
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["problems"] == ["the server is shutting down"]
        assert (await http.get("/healthz")).status_code == 200  # alive while it drains
    await srv.stop()


async def test_readyz_says_when_the_store_is_gone(config: Config) -> None:
    srv = Server(config)
    await srv.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.http[0].port}", timeout=20) as http:
            await srv.store.close()
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert any("store" in p for p in r.json()["problems"])
    finally:
        await srv.stop()
