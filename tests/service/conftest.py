"""An in-process server on a free port and raw gRPC stubs built from our protos.

These tests speak the wire protocol directly (no SDK), so they can send what
no SDK would: malformed actions, stale tokens, oversized payloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import AppListener, Config
from backend.server import Server

BASE = Config(
    apps=(AppListener(app_id="default", host="127.0.0.1", port=0),),
    store_url="memory:",
    max_payload_bytes=1024,
    poll_seconds=0.2,
    retry_failed_turn_seconds=0.2,
    control_wait_seconds=2.0,
    shutdown_grace_seconds=0.5,
)


@pytest.fixture
def config() -> Config:
    return BASE


@pytest.fixture
async def server(config: Config) -> AsyncIterator[Server]:
    srv = Server(config)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def stub(server: Server) -> AsyncIterator[sgrpc.TaskHubSidecarServiceStub]:
    port = server.ports["default"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]


def with_apps(*names: str) -> Config:
    return replace(BASE, apps=tuple(AppListener(app_id=n, host="127.0.0.1", port=0) for n in names))


class RawWorker:
    """A worker that speaks the protocol by hand: it receives work items and
    lets the test decide every response."""

    def __init__(self, stub: sgrpc.TaskHubSidecarServiceStub, capabilities: list[int] | None = None) -> None:
        self.stub = stub
        self.items: asyncio.Queue[spb.WorkItem] = asyncio.Queue()
        self._call = stub.GetWorkItems(spb.GetWorkItemsRequest(capabilities=capabilities or []))
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for item in self._call:
                if not item.HasField("healthPing"):
                    await self.items.put(item)
        except grpc.aio.AioRpcError:
            pass

    async def next(self, timeout: float = 10.0) -> spb.WorkItem:
        return await asyncio.wait_for(self.items.get(), timeout)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
