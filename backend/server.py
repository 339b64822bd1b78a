"""The server: gRPC listeners (one per app ID, or one shared by apps that prove who they are),
all sharing one engine and store."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from backend import limits
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config
from backend.engine.engine import Engine
from backend.security import listeners
from backend.security.interceptor import IdentityInterceptor
from backend.security.tls import ReloadingCredentials
from backend.service import undecodable
from backend.service.servicer import SidecarServicer
from backend.store import open_store

log = logging.getLogger("backend.server")


def _grpc_options(config: Config) -> list[tuple[str, int]]:
    return [
        # Received: what one request may hold (README, Limits); sent: a full history at its
        # budget (the engine never sends more, engine/turns.py).
        ("grpc.max_receive_message_length", limits.grpc_receive_limit(config.max_payload_bytes)),
        ("grpc.max_send_message_length", config.max_send_bytes),
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
        self.listeners = listeners.plan(config.apps, config.security)  # refuses unsafe set-ups first
        tls = config.security.tls
        self.tls = ReloadingCredentials(tls) if tls is not None else None
        self.store = open_store(config.store_url)
        self.engine = Engine(store=self.store, config=config, app_ids=[a.app_id for a in config.apps])
        self._servers: list[grpc.aio.Server] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        undecodable.install_log_filter()  # grpc's traceback per undecodable request -> one line
        await self.store.open()
        await self.engine.start()
        servicer = SidecarServicer(self.engine, self.config.security.policy)
        for listener in self.listeners:
            server = grpc.aio.server(
                options=_grpc_options(self.config),
                interceptors=[IdentityInterceptor(listener.auth, listener.address)],
            )
            sgrpc.add_TaskHubSidecarServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
            address = listener.address
            if self.tls is not None:
                port = server.add_secure_port(address, self.tls.credentials())
            else:
                port = server.add_insecure_port(address)
            if port == 0:
                raise OSError(f"cannot listen on {address} for app(s) {', '.join(listener.apps)}")
            await server.start()
            self._servers.append(server)
            for app in listener.apps:
                self.ports.setdefault(app, port)  # an app on several listeners: its first
                log.info(
                    "ready: app=%s address=%s:%d tls=%s auth=%s",
                    app,
                    listener.host,
                    port,
                    "on" if self.tls is not None else "off",
                    listener.auth.mode,
                )

    async def stop(self) -> None:
        """Graceful: no new work; in-flight work may complete within the grace period (the
        listeners keep serving its completions); then the rest is handed back."""
        grace = self.config.shutdown_grace_seconds
        left = await self.engine.quiesce(grace)
        if left:
            log.info("handing back %d work item(s) still running after %.0fs", left, grace)
        self.engine.hub.close_all()  # ends GetWorkItems streams so workers reconnect elsewhere
        await asyncio.gather(*(s.stop(1.0) for s in self._servers))
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
