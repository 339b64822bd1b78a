"""Server configuration: one frozen value built by the CLI (or by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_APP_ID = "default"
DEFAULT_PORT = 4001  # where every durabletask SDK looks by default


@dataclass(frozen=True, kw_only=True)
class AppListener:
    app_id: str
    host: str
    port: int


@dataclass(frozen=True, kw_only=True)
class Config:
    apps: tuple[AppListener, ...] = field(
        default_factory=lambda: (AppListener(app_id=DEFAULT_APP_ID, host="127.0.0.1", port=DEFAULT_PORT),)
    )
    store_url: str = "sqlite:///durabletask.db"
    max_payload_bytes: int = 4 * 1024 * 1024
    # Work-item leases: how long a crashed server's work stays invisible to others.
    lease_seconds: float = 60.0
    # Fallback poll for work that another process made due (timers are exact in-process).
    poll_seconds: float = 1.0
    max_workflows_per_stream: int = 256
    max_activities_per_stream: int = 512
    history_cache_instances: int = 10_000
    # How long Terminate/Suspend/Resume wait for the status change before answering.
    control_wait_seconds: float = 10.0
    shutdown_grace_seconds: float = 5.0
    # A turn that failed (malformed worker response, store error) is retried after this.
    retry_failed_turn_seconds: float = 5.0
