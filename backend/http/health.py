"""Health: the standard gRPC health service on every gRPC listener, and /healthz (live) and
/readyz (store reachable, listeners up) over HTTP, as Kubernetes probes expect.

gRPC health answers, per listener, for "" (the server), "TaskHubSidecarService" and each app
ID the listener serves (`grpc_health_probe -service=orders`); all turn NOT_SERVING as the server
starts to stop, so a load balancer drains it before the listeners close. Health and reflection
need no credentials: kubelet's gRPC probe sends none, and they reveal only the serving status
and the public protocol schema (security/interceptor.py lets them through).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from backend.domain.model import InstanceKey
from backend.store.base import Store

log = logging.getLogger("backend.http")

SIDECAR_SERVICE = "TaskHubSidecarService"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_STORE_PROBE_SECONDS = 2.0
_PROBE_KEY = InstanceKey("__readyz__", "__readyz__")


class Health:
    """The serving state of one server process: its gRPC health servicers and its readiness."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._servicers: list[tuple[HealthServicer, tuple[str, ...]]] = []
        self.listening = False  # every listener is up
        self.stopping = False

    async def add_to(self, server: grpc.aio.Server, apps: tuple[str, ...]) -> None:
        """Health and reflection on one gRPC listener; NOT_SERVING until `serving()`."""
        servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        reflection.enable_server_reflection(
            (SIDECAR_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        for name in ("", SIDECAR_SERVICE, *apps):
            await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._servicers.append((servicer, apps))

    async def serving(self) -> None:
        self.listening = True
        for servicer, apps in self._servicers:
            for name in ("", SIDECAR_SERVICE, *apps):
                await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def shutting_down(self) -> None:
        self.stopping = True
        for servicer, _ in self._servicers:
            await servicer.enter_graceful_shutdown()  # every service NOT_SERVING, watchers told

    async def store_ok(self) -> str | None:
        """None when the store answers a read in time, else why not."""
        try:
            async with asyncio.timeout(_STORE_PROBE_SECONDS):
                await self._store.get_state(_PROBE_KEY)
        except TimeoutError:
            return f"the store did not answer within {_STORE_PROBE_SECONDS:.0f}s"
        except Exception as err:
            return f"the store is unreachable: {type(err).__name__}"
        return None

    # -- HTTP probes -------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """Live: the process serves requests (restart it if this fails)."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        """Ready: listeners up, not stopping, and the store answers (send traffic here)."""
        problems = []
        if self.stopping:
            problems.append("the server is shutting down")
        elif not self.listening:
            problems.append("the listeners are not up yet")
        why = await self.store_ok()
        if why is not None:
            problems.append(why)
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})
