"""The web dashboard (issue #14): instances across apps, one instance's history and timeline,
apps and their waiting work; actions behind --dashboard-actions. Served on the HTTP listener
(--http) under /dashboard/: backend/http includes `routes(server)`, behind its credential check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from backend.dashboard.api import DashboardApi, Viewer
from backend.dashboard.routes import API_PATHS, PREFIX, STATIC, route_table

if TYPE_CHECKING:
    from backend.server import Server

__all__ = ["PREFIX", "DashboardApi", "Viewer", "route_table", "routes"]


class _Provider:
    """The HTTP listener's route provider (backend/http/server.py): `routes(server)`."""

    # The listener's own check is skipped here: the page and its assets hold no data (and a
    # browser cannot add a header to them); the JSON endpoints check the credentials
    # themselves (access.py), so that the operator's token works too.
    open_paths = frozenset(
        {PREFIX, PREFIX + "/", *API_PATHS}
        | {f"{PREFIX}/static/{f.name}" for f in STATIC.iterdir() if f.is_file()}
    )

    def __call__(self, server: Server) -> list[web.AbstractRouteDef]:
        from backend.dashboard.access import viewer_of

        api = DashboardApi(server.engine, actions_enabled=server.config.dashboard_actions)
        return route_table(api, viewer_of(server.config.security, server.engine.served_apps))


routes = _Provider()
