"""The optional HTTP listener (`--http [APP=]HOST:PORT`): the Dapr workflow HTTP API, /healthz,
/readyz and /metrics, and whatever routes other modules add.

aiohttp's server runs on the event loop grpc.aio already uses: one process, one loop, the same
engine. The app ID a request acts as comes from its credentials, as on the gRPC listeners; a
listener given as APP=HOST:PORT serves that app alone, one given as HOST:PORT every app of the
server (without tokens: the first app, and `?appID=` for another, as daprd's `appID` parameter).

Other routes: `build_app(server, endpoint, extra_routes=[provider, ...])`, each provider a
function of the server returning aiohttp route definitions, optionally with an `open_paths`
attribute (paths served without credentials); `backend.dashboard.routes`, when that module has
it, is the default. They sit behind the same credential check: a handler reads the caller's app
ID as `request[CALLER_KEY]`, or finds `request[OPERATOR_KEY]` set for the operator's token.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from backend.config import HttpEndpoint
from backend.http.auth import OPEN_PATHS, listener_auth, middleware, ssl_context
from backend.http.dapr_api import DaprWorkflowApi
from backend.telemetry import metrics

if TYPE_CHECKING:
    from backend.server import Server

log = logging.getLogger("backend.http")

RouteProvider = Callable[["Server"], Iterable[web.AbstractRouteDef]]
_BODY_ROOM = 64 * 1024  # a payload at the limit, plus room for nothing else: bodies are raw payloads


def default_route_providers() -> list[RouteProvider]:
    """Route providers of optional modules that are present (today: backend.dashboard.routes)."""
    out: list[RouteProvider] = []
    try:
        dashboard = importlib.import_module("backend.dashboard")
    except ImportError:
        return out
    provider = getattr(dashboard, "routes", None)
    if callable(provider):
        out.append(provider)
    return out


def build_app(
    server: Server,
    endpoint: HttpEndpoint,
    *,
    extra_routes: Sequence[RouteProvider] | None = None,
) -> web.Application:
    config = server.config
    apps = (endpoint.app_id,) if endpoint.app_id else tuple(dict.fromkeys(a.app_id for a in config.apps))
    auth = listener_auth(apps, config.security, endpoint.host)
    providers = default_route_providers() if extra_routes is None else list(extra_routes)
    # A provider may name paths that need no credentials (the dashboard's page and its static
    # assets: a browser cannot add a header to them; its JSON calls carry the token).
    open_paths = OPEN_PATHS.union(*(getattr(p, "open_paths", frozenset()) for p in providers))
    app = web.Application(
        middlewares=[middleware(auth, endpoint.address, open_paths, config.security.admin_token)],
        client_max_size=config.max_payload_bytes + _BODY_ROOM,
    )

    async def scrape(request: web.Request) -> web.StreamResponse:
        await metrics.refresh(server.store, apps)
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    app.add_routes(
        [
            web.get("/healthz", server.health.healthz),
            web.get("/readyz", server.health.readyz),
            web.get("/metrics", scrape),
        ]
    )
    api = DaprWorkflowApi(server.engine.instances, config.security.policy, config.max_payload_bytes, apps)
    app.add_routes(api.routes())
    for provider in providers:
        app.add_routes(list(provider(server)))
    return app


@dataclass
class HttpListener:
    endpoint: HttpEndpoint
    app: web.Application
    runner: web.AppRunner | None = None
    port: int = 0

    @classmethod
    def plan(cls, server: Server, endpoint: HttpEndpoint) -> HttpListener:
        """Built at server construction, so an unsafe set-up refuses to start before anything runs."""
        return cls(endpoint=endpoint, app=build_app(server, endpoint))

    async def start(self, server: Server) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner,
            self.endpoint.host,
            self.endpoint.port,
            ssl_context=ssl_context(server.config.security),
            reuse_address=True,
        )
        await site.start()
        addresses = self.runner.addresses  # the bound port, also for port 0
        self.port = int(addresses[0][1]) if addresses else self.endpoint.port
        log.info(
            "ready: http=%s:%d apps=%s tls=%s",
            self.endpoint.host,
            self.port,
            self.endpoint.app_id or "all",
            "on" if server.config.security.tls is not None else "off",
        )

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
