"""The server: one gRPC listener per app ID, all sharing one engine and store."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config
from backend.engine.engine import Engine
from backend.service.servicer import SidecarServicer
from backend.store import open_store

log = logging.getLogger("backend.server")


def _grpc_options(config: Config) -> list[tuple[str, int]]:
    # Room above the payload limit so oversized payloads get our clear error, not gRPC's.
    max_message = max(64 * 1024 * 1024, config.max_payload_bytes * 4)
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        # The SDKs ping every 30 s, also without calls in flight: accept that
        # instead of answering with GOAWAY (too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = open_store(config.store_url)
        self.engine = Engine(store=self.store, config=config, app_ids=[a.app_id for a in config.apps])
        self._servers: list[grpc.aio.Server] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        await self.store.open()
        await self.engine.start()
        for app in self.config.apps:
            server = grpc.aio.server(options=_grpc_options(self.config))
            sgrpc.add_TaskHubSidecarServiceServicer_to_server(  # type: ignore[no-untyped-call]
                SidecarServicer(app.app_id, self.engine), server
            )
            port = server.add_insecure_port(f"{app.host}:{app.port}")
            if port == 0:
                raise OSError(f"cannot listen on {app.host}:{app.port} for app '{app.app_id}'")
            await server.start()
            self._servers.append(server)
            self.ports[app.app_id] = port
            log.info("ready: app=%s address=%s:%d", app.app_id, app.host, port)

    async def stop(self) -> None:
        self.engine.hub.close_all()  # ends GetWorkItems streams so workers reconnect elsewhere
        await asyncio.gather(*(s.stop(self.config.shutdown_grace_seconds) for s in self._servers))
        await self.engine.stop()
        await self.store.close()


async def serve(config: Config) -> None:
    server = Server(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await server.stop()
