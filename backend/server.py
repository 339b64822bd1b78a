"""The server: gRPC listeners (one per app ID, or one shared by apps that prove who they are),
all sharing one engine and store."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from backend import limits
from backend._proto import admin_pb2_grpc as agrpc
from backend.admin.access import operator_check
from backend.admin.service import AdminServicer
from backend.config import Config
from backend.engine.engine import Engine
from backend.http.health import Health
from backend.http.server import HttpListener
from backend.security import listeners
from backend.security.interceptor import IdentityInterceptor
from backend.security.tls import ReloadingCredentials
from backend.service import undecodable
from backend.service.admission import RequestBudget
from backend.service.registration import add_sidecar_service
from backend.service.servicer import SidecarServicer
from backend.store import open_store
from backend.telemetry import metrics, tracing
from backend.telemetry.metered_store import metered

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
        self.store = metered(open_store(config.store_url), config.store_url)  # latency and errors
        self.health = Health(self.store)
        self.engine = Engine(store=self.store, config=config, app_ids=[a.app_id for a in config.apps])
        self._servers: list[grpc.aio.Server] = []
        # One budget for every listener: the bound is on the process's memory. Never below one
        # request's receive limit, or the largest request allowed could never be admitted.
        self.budget = RequestBudget(
            max(config.max_request_bytes_in_flight, limits.grpc_receive_limit(config.max_payload_bytes))
        )
        self.ports: dict[str, int] = {}
        # HTTP listeners are planned now, so an unsafe one refuses to start before anything runs.
        self.http = [HttpListener.plan(self, endpoint) for endpoint in config.http]

    async def start(self) -> None:
        undecodable.install_log_filter()  # grpc's traceback per undecodable request -> one line
        tracing.start(self.config.otel)  # before any turn: spans of the first ones too
        await self.store.open()
        await self.engine.start()
        servicer = SidecarServicer(self.engine, self.config.security.policy)
        admin_token = self.config.security.admin_token
        for listener in self.listeners:
            server = grpc.aio.server(
                options=_grpc_options(self.config),
                interceptors=[
                    IdentityInterceptor(
                        listener.auth, listener.address, self.budget, operator=operator_check(admin_token)
                    )
                ],
            )
            add_sidecar_service(servicer, server)
            await self.health.add_to(server, listener.apps)  # grpc.health.v1 and reflection
            # The operator queries (backend/admin): everything is visible on an unsecured loopback listener.
            admin = AdminServicer(
                self.engine,
                self.config.security.policy,
                open_listener=listener.auth.mode == "none" and listeners.is_loopback(listener.host),
            )
            agrpc.add_AdminServicer_to_server(admin, server)  # type: ignore[no-untyped-call]
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
        for http in self.http:
            await http.start(self)
        if self.config.security.tls is not None and self.config.security.tls.namespace:
            metrics.NAMESPACE = self.config.security.tls.namespace
        metrics.watch(self.engine.hub)
        await self.health.serving()

    async def stop(self) -> None:
        """Graceful: no new work; in-flight work may complete within the grace period (the
        listeners keep serving its completions); then the rest is handed back."""
        grace = self.config.shutdown_grace_seconds
        await self.health.shutting_down()  # NOT_SERVING, /readyz 503: balancers drain us first
        left = await self.engine.quiesce(grace)
        if left:
            log.info("handing back %d work item(s) still running after %.0fs", left, grace)
        self.engine.hub.close_all()  # ends GetWorkItems streams so workers reconnect elsewhere
        await asyncio.gather(*(s.stop(1.0) for s in self._servers))
        for http in self.http:
            await http.stop()
        await self.engine.stop()
        await self.store.close()
        tracing.stop()  # flushes the spans of the last turns


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
