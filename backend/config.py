"""Server configuration: one frozen value built by the CLI (flags over the TOML file) or by tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from backend.security.policy import Policy
from backend.security.secrets import Secret
from backend.security.tls import TlsFiles

DEFAULT_APP_ID = "default"
# Where SDKs look with no address configured: the durabletask SDKs at 4001, the Dapr-level
# SDKs (dapr.ext.workflow, the Dapr Go and Java SDKs) at daprd's gRPC port 50001.
DEFAULT_PORTS = (4001, 50001)


@dataclass(frozen=True, kw_only=True)
class AppListener:
    app_id: str
    host: str
    port: int  # several apps on one host:port share a listener; credentials tell them apart


@dataclass(frozen=True, kw_only=True)
class HttpEndpoint:
    """An HTTP listener (Dapr workflow HTTP API, probes, metrics): for one app, or every app."""

    host: str
    port: int
    app_id: str | None = None  # None: every app served here (credentials or ?appID= choose)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class Security:
    api_token: Secret | None = None  # server-wide (DAPR_API_TOKEN or --api-token-file)
    app_tokens: Mapping[str, Secret] = field(default_factory=dict)  # app ID -> its own token
    tls: TlsFiles | None = None
    policy: Policy = field(default_factory=Policy)
    insecure: bool = False  # accept a network listener without credentials
    admin_token: Secret | None = None  # the operator's: the Admin service sees every app with it


@dataclass(frozen=True, kw_only=True)
class Config:
    apps: tuple[AppListener, ...] = field(
        default_factory=lambda: tuple(
            AppListener(app_id=DEFAULT_APP_ID, host="127.0.0.1", port=port) for port in DEFAULT_PORTS
        )
    )
    store_url: str = "sqlite:///durabletask.db"
    security: Security = field(default_factory=Security)
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line (telemetry/logs.py)
    http: tuple[HttpEndpoint, ...] = ()  # --http listeners
    max_payload_bytes: int = 4 * 1024 * 1024
    # Work-item leases: how long a crashed server's work stays invisible to others.
    lease_seconds: float = 60.0
    # Fallback poll for work that another process made due (timers are exact in-process).
    poll_seconds: float = 1.0
    max_workflows_per_stream: int = 256
    max_activities_per_stream: int = 512
    history_cache_instances: int = 10_000
    history_cache_bytes: int = 128 * 1024 * 1024
    # How long Terminate/Suspend/Resume wait for the status change before answering.
    control_wait_seconds: float = 10.0
    # On SIGTERM: no new work is handed out; in-flight work may complete within this, the
    # rest is handed back (its leases released for another server or the next start).
    shutdown_grace_seconds: float = 10.0
    # A turn or activity result that failed to apply is retried after this, doubling (with
    # jitter) up to retry_max_seconds; after max_turn_failures the instance is parked (STALLED,
    # or FAILED when the store itself refuses what it was given).
    retry_failed_turn_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    max_turn_failures: int = 5
    # History budget per execution (Temporal's anchors: warn at 10 MB / 10,240 events, fail
    # the workflow at 50 MB / 51,200 events, suggesting continue-as-new).
    max_history_bytes: int = 50 * 1024 * 1024
    max_history_events: int = 51_200
    warn_history_bytes: int = 10 * 1024 * 1024
    warn_history_events: int = 10_240
    # A workflow work item not completed within this is taken back and offered again
    # (Temporal's workflow-task timeout). Activities rely on stream liveness instead.
    workflow_task_timeout_seconds: float = 10.0
    # A stream that does not take what the server sends for this long is closed (its work
    # goes to other streams); at most this many streams per app, and bytes in flight per stream.
    stream_stuck_seconds: float = 30.0
    max_streams_per_app: int = 64
    max_stream_bytes_in_flight: int = 32 * 1024 * 1024
    # Server-wide: bytes of large requests held at once (service/admission.py).
    max_request_bytes_in_flight: int = 256 * 1024 * 1024
    # The dashboard's actions (terminate, suspend, ... on /dashboard/): off unless asked for.
    dashboard_actions: bool = False
    # Export traces (telemetry/tracing.py); OTEL_* in the environment also turn them on.
    otel: bool = False

    @property
    def max_send_bytes(self) -> int:
        """The largest message the server sends: a full history at its budget, plus room."""
        return self.max_history_bytes + 4 * self.max_payload_bytes + 1024 * 1024
