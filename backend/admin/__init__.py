"""The admin query layer: filtered, paged instance listings and per-app status, shared by the
Admin gRPC service, the `durabletask-sidecar status`/`workflow list` CLI and the dashboard."""

from backend.admin.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AppStatus,
    InstancePage,
    InstanceQuery,
    InstanceSummary,
    Visibility,
    apps_status,
    count_instances,
    list_instances,
    visible_apps,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AppStatus",
    "InstancePage",
    "InstanceQuery",
    "InstanceSummary",
    "Visibility",
    "apps_status",
    "count_instances",
    "list_instances",
    "visible_apps",
]
