"""Dashboard: the HTTP routes (aiohttp) under /dashboard: the page, its static assets
(shipped in the package, no build step, no CDN) and the JSON endpoints of api.py.

Who is looking is decided by the HTTP listener's authentication (a `viewer` callback);
errors of the server's error tree become HTTP statuses with a short JSON message."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from backend.dashboard.api import DashboardApi, Viewer
from backend.dashboard.events import Json
from backend.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SidecarError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("backend.dashboard")

PREFIX = "/dashboard"
STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 5 * 1024 * 1024  # an action's body: a raised event's data at most (--max-payload-bytes)
_STATUS: list[tuple[type[SidecarError], int]] = [
    (InvalidArgument, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (FailedPrecondition, 409),
    (Unavailable, 503),
]
ViewerOf = Callable[[web.Request], Awaitable[Viewer]]
_API = ("info", "instances", "apps", "instance", "history", "event", "timeline", "action")
API_PATHS = frozenset(f"{PREFIX}/api/{name}" for name in _API)


def _error(err: SidecarError) -> web.Response:
    status = next((code for cls, code in _STATUS if isinstance(err, cls)), 500)
    if status == 500:
        log.error("dashboard request failed: %s", err)
    return web.json_response({"error": str(err)[:1024]}, status=status)


def _json(body: Json) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _seq(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidArgument("seq must be a whole number")
    return int(raw)


def route_table(api: DashboardApi, viewer_of: ViewerOf) -> list[web.AbstractRouteDef]:
    """The dashboard's routes, to add to the HTTP listener's application; `viewer_of` decides
    who is asking (access.py)."""

    def endpoint(
        fn: Callable[[web.Request, Viewer], Awaitable[Json]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return _json(await fn(request, await viewer_of(request)))
            except SidecarError as err:
                return _error(err)

        return handle

    def q(request: web.Request, name: str) -> str:
        return request.query.get(name, "")

    async def info(request: web.Request, v: Viewer) -> Json:
        return api.info(v)

    async def instances(request: web.Request, v: Viewer) -> Json:
        return await api.instances(request.query, v)

    async def apps(request: web.Request, v: Viewer) -> Json:
        return await api.apps(v)

    async def instance(request: web.Request, v: Viewer) -> Json:
        return await api.instance(q(request, "app"), q(request, "id"), v)

    async def history(request: web.Request, v: Viewer) -> Json:
        return await api.history(q(request, "app"), q(request, "id"), request.query, v)

    async def event(request: web.Request, v: Viewer) -> Json:
        return await api.event(q(request, "app"), q(request, "id"), _seq(q(request, "seq")), v)

    async def timeline(request: web.Request, v: Viewer) -> Json:
        return await api.timeline(q(request, "app"), q(request, "id"), v)

    async def action(request: web.Request, v: Viewer) -> Json:
        # Refused before the body is read when actions are off: a tampered page gets 403.
        if not api.actions_enabled:
            raise PermissionDenied(
                "dashboard actions are disabled; start the server with --dashboard-actions"
            )
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise InvalidArgument(f"the action's body is larger than {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise InvalidArgument(f"the action's body is larger than {MAX_BODY} bytes")
        try:
            body: Any = json.loads(raw or b"{}")
        except ValueError:
            raise InvalidArgument("the action's body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidArgument("the action's body must be a JSON object")
        return await api.act(q(request, "app"), q(request, "id"), q(request, "action"), body, v)

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX + "/")

    return [
        web.get(PREFIX, to_page),
        web.get(PREFIX + "/", page),
        web.static(PREFIX + "/static", STATIC, append_version=False),
        web.get(PREFIX + "/api/info", endpoint(info)),
        web.get(PREFIX + "/api/instances", endpoint(instances)),
        web.get(PREFIX + "/api/apps", endpoint(apps)),
        web.get(PREFIX + "/api/instance", endpoint(instance)),
        web.get(PREFIX + "/api/history", endpoint(history)),
        web.get(PREFIX + "/api/event", endpoint(event)),
        web.get(PREFIX + "/api/timeline", endpoint(timeline)),
        web.post(PREFIX + "/api/action", endpoint(action)),
    ]
