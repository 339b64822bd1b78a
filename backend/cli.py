"""Command line: `durabletask-sidecar serve` (also `python -m backend serve`).

Settings come from flags, over the TOML file of `--config`, over the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

# gRPC core logs each failed TLS handshake at INFO: one line per hostile connection. Set
# before gRPC is first imported; GRPC_VERBOSITY given by the operator still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from backend import config_file, ops
from backend.config import DEFAULT_APP_ID, DEFAULT_PORTS, AppListener, Config, HttpEndpoint, Security
from backend.errors import ConfigError, SidecarError
from backend.security.secrets import Secret
from backend.security.tls import TlsFiles
from backend.telemetry import logs

API_TOKEN_ENV = "DAPR_API_TOKEN"  # what daprd reads, and what the Dapr SDKs send from


def _where(value: str, what: str) -> tuple[str | None, int]:
    """[HOST:]PORT."""
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {value!r}: {port!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{what} {value!r}: port out of range")
    return host.strip("[]") or None, number


def _app(value: str) -> tuple[str, str | None, int]:
    """APP=PORT or APP=HOST:PORT."""
    name, sep, where = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--app takes APP_ID=PORT or APP_ID=HOST:PORT, not {value!r}")
    host, port = _where(where, "--app")
    return name, host, port


def _app_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--app-token-file takes APP_ID=PATH, not {value!r}")
    return name, path


def _http(value: str) -> tuple[str | None, str | None, int]:
    """[APP=][HOST:]PORT."""
    name, sep, where = value.rpartition("=")
    if sep and not name:
        raise argparse.ArgumentTypeError(f"--http takes [APP_ID=][HOST:]PORT, not {value!r}")
    host, port = _where(where, "--http")
    return name or None, host, port


def _http_endpoints(
    flags: list[tuple[str | None, str | None, int]], file_value: object, host: str
) -> tuple[HttpEndpoint, ...]:
    """--http flags replace the file's `http` (a string or a list of them)."""
    entries = flags
    if not entries and file_value is not None:
        raw = [file_value] if isinstance(file_value, str) else file_value
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise ConfigError('http in --config must be "[APP_ID=][HOST:]PORT" or a list of them')
        try:
            entries = [_http(v) for v in raw]
        except argparse.ArgumentTypeError as err:
            raise ConfigError(f"http in --config: {err}") from None
    return tuple(HttpEndpoint(host=h or host, port=p, app_id=a) for a, h, p in entries)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durabletask-sidecar", description="A durabletask sidecar for Dapr Workflow SDKs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", metavar="PATH", help="TOML file; flags override it (README: Security)")
    serve.add_argument(
        "--app",
        action="append",
        type=_app,
        default=[],
        metavar="APP_ID=[HOST:]PORT",
        help=f"serve an app ID on a port (repeatable; apps on one port share it and need tokens or mTLS); "
        f"default: {DEFAULT_APP_ID} on {' and '.join(map(str, DEFAULT_PORTS))}",
    )
    serve.add_argument(
        "--host", help="address to listen on for --app entries without one (default 127.0.0.1)"
    )
    serve.add_argument(
        "--store",
        help="memory:, sqlite:///relative.db, sqlite:////absolute.db, mongodb://... (default sqlite:///durabletask.db)",
    )
    serve.add_argument(
        "--max-payload-bytes", type=int, help="largest input/output/event payload (default 4 MiB)"
    )
    serve.add_argument(
        "--lease-seconds",
        type=float,
        help="work-item lease; a dead server's work moves on after it (default 60)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="json: one object per line with instance_id, app_id, work_item, token prefix (default text)",
    )
    serve.add_argument(
        "--http",
        action="append",
        type=_http,
        default=[],
        metavar="[APP_ID=][HOST:]PORT",
        help="serve the Dapr workflow HTTP API, /healthz, /readyz and /metrics (repeatable; "
        "APP_ID= binds the listener to one app)",
    )
    serve.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces as OTEL_* configure them (the otel extra; README: Traces)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight work may take to complete before it is handed back (default 10)",
    )
    lim = serve.add_argument_group("limits (README: Limits)")
    lim.add_argument(
        "--max-history-bytes",
        type=int,
        help="a workflow whose history would pass this fails (default 50 MiB)",
    )
    lim.add_argument(
        "--max-history-events",
        type=int,
        help="a workflow whose history would pass this fails (default 51200)",
    )
    lim.add_argument(
        "--workflow-task-timeout",
        type=float,
        metavar="SECONDS",
        help="a workflow work item not completed within this is offered again (default 10)",
    )
    lim.add_argument(
        "--max-request-bytes-in-flight",
        type=int,
        metavar="BYTES",
        help="server-wide budget on the bytes of large requests (over 64 KiB) held at once; one past it "
        "gets RESOURCE_EXHAUSTED (default 256 MiB; never below one request's receive limit)",
    )
    sec = serve.add_argument_group("security (README: Security)")
    sec.add_argument(
        "--api-token-file",
        metavar="PATH",
        help=f"server-wide API token (metadata dapr-api-token); default: ${API_TOKEN_ENV} if set",
    )
    sec.add_argument(
        "--app-token-file",
        action="append",
        type=_app_path,
        default=[],
        metavar="APP_ID=PATH",
        help="an app's own token: a caller presenting it acts as that app (repeatable)",
    )
    sec.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help="the operator's token: Admin service calls carrying it see every app (README: Operating)",
    )
    sec.add_argument(
        "--dashboard-actions",
        action="store_true",
        default=None,
        help="let the dashboard (/dashboard/ on --http) terminate, suspend, resume, raise, purge and rerun; "
        "read-only without it (README: Dashboard)",
    )
    sec.add_argument("--tls-cert", metavar="PATH", help="server certificate (PEM; reloaded when it changes)")
    sec.add_argument("--tls-key", metavar="PATH", help="server private key (PEM)")
    sec.add_argument(
        "--tls-client-ca",
        metavar="PATH",
        help="mTLS: CA of client certificates; the app ID is the SPIFFE ID's last segment",
    )
    sec.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback listener without any credential",
    )
    ops.add_commands(sub)  # workflow ..., status (backend/ops)
    return parser


def _api_token(
    args: argparse.Namespace, file: config_file.FileSettings, env: Mapping[str, str]
) -> Secret | None:
    chosen = Secret.from_file(args.api_token_file) if args.api_token_file else file.api_token
    from_env = Secret.from_env(API_TOKEN_ENV, dict(env))
    if chosen is None:
        return from_env
    if from_env is not None and chosen.origin != from_env.origin:
        raise ConfigError(f"{API_TOKEN_ENV} is set and a token is also given by {chosen.origin}; use one")
    return chosen


def _log_format(value: object) -> str:
    if value not in ("text", "json"):
        raise ConfigError(f'log_format must be "text" or "json", not {value!r}')
    return str(value)


def config_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    file = config_file.load(args.config, env) if args.config else config_file.FileSettings()
    values = file.values

    def pick(flag: object, key: str, default: object) -> object:
        return flag if flag is not None else values.get(key, default)

    host = str(pick(args.host, "host", "127.0.0.1"))
    # An app may listen on several addresses; --app flags for an app replace the file's.
    where: dict[str, list[tuple[str, int]]] = {}
    for name, app in file.apps.items():
        if app.listen is not None:
            h, p = _where(app.listen, f"[apps.{name}] listen")
            where[name] = [(h or host, p)]
    flagged: dict[str, list[tuple[str, int]]] = {}
    for name, h, p in args.app:
        address = (h or host, p)
        if address in flagged.get(name, []):
            raise ConfigError(f"app ID {name!r} is given twice for {address[0]}:{address[1]}")
        flagged.setdefault(name, []).append(address)
    where.update(flagged)
    missing = sorted(set(file.apps) - set(where))
    if missing:
        raise ConfigError(
            f'app(s) {missing} in --config have no listen address (listen = "HOST:PORT" or --app)'
        )
    apps = tuple(
        AppListener(app_id=n, host=h, port=p) for n, places in where.items() for h, p in places
    ) or tuple(AppListener(app_id=DEFAULT_APP_ID, host=host, port=port) for port in DEFAULT_PORTS)

    app_tokens = {n: a.token for n, a in file.apps.items() if a.token is not None}
    for name, path in args.app_token_file:
        app_tokens[name] = Secret.from_file(path)

    tls_values = dict(file.tls)
    for key, flag in (("cert", args.tls_cert), ("key", args.tls_key), ("client_ca", args.tls_client_ca)):
        if flag is not None:
            tls_values[key] = flag
    tls = None
    if tls_values:
        if "cert" not in tls_values or "key" not in tls_values:
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        tls = TlsFiles(
            cert=Path(tls_values["cert"]),
            key=Path(tls_values["key"]),
            client_ca=Path(tls_values["client_ca"]) if "client_ca" in tls_values else None,
            trust_domain=tls_values.get("trust_domain"),
            namespace=tls_values.get("namespace"),
        )

    return Config(
        apps=apps,
        store_url=str(pick(args.store, "store", "sqlite:///durabletask.db")),
        security=Security(
            api_token=_api_token(args, file, env),
            app_tokens=app_tokens,
            tls=tls,
            policy=file.policy,
            insecure=bool(pick(args.insecure, "insecure", False)),
            admin_token=Secret.from_file(args.admin_token_file)
            if args.admin_token_file
            else file.admin_token,
        ),
        max_payload_bytes=int(pick(args.max_payload_bytes, "max_payload_bytes", 4 * 1024 * 1024)),  # type: ignore[call-overload]
        lease_seconds=float(pick(args.lease_seconds, "lease_seconds", 60.0)),  # type: ignore[arg-type]
        log_level=str(pick(args.log_level, "log_level", "info")),
        log_format=_log_format(pick(args.log_format, "log_format", "text")),
        http=_http_endpoints(args.http, values.get("http"), host),
        shutdown_grace_seconds=float(pick(args.shutdown_grace, "shutdown_grace", 10.0)),  # type: ignore[arg-type]
        max_history_bytes=int(pick(args.max_history_bytes, "max_history_bytes", 50 * 1024 * 1024)),  # type: ignore[call-overload]
        max_history_events=int(pick(args.max_history_events, "max_history_events", 51_200)),  # type: ignore[call-overload]
        workflow_task_timeout_seconds=float(pick(args.workflow_task_timeout, "workflow_task_timeout", 10.0)),  # type: ignore[arg-type]
        otel=bool(getattr(args, "otel", False)),
        dashboard_actions=bool(pick(args.dashboard_actions, "dashboard_actions", False)),
        max_request_bytes_in_flight=int(
            pick(args.max_request_bytes_in_flight, "max_request_bytes_in_flight", 256 * 1024 * 1024)
        ),  # type: ignore[call-overload]
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        raise SystemExit(ops.run(args))
    try:
        config = config_from(args)
    except SidecarError as err:
        raise SystemExit(f"durabletask-sidecar: {err}") from None
    logs.configure(config.log_level, config.log_format)
    logging.getLogger("backend.server").setLevel(logging.INFO)  # the `ready:` lines always show
    logging.getLogger("grpc").setLevel(max(logging.WARNING, logging.getLogger().level))
    # PyMongo logs every command at DEBUG (~150 KB per workflow): our debug is not theirs.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, logging.getLogger().level))
    from backend.server import serve  # late: keeps `--help` fast

    try:
        asyncio.run(serve(config))
    except SidecarError as err:
        raise SystemExit(f"durabletask-sidecar: {err}") from None
    except OSError as err:
        raise SystemExit(f"durabletask-sidecar: {err}") from None
    except KeyboardInterrupt:
        pass
