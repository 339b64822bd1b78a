"""Command line: `durabletask-sidecar serve` (also `python -m backend serve`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from backend.config import DEFAULT_APP_ID, DEFAULT_PORT, AppListener, Config
from backend.errors import SidecarError


def _app(value: str) -> tuple[str, str | None, int]:
    """APP=PORT or APP=HOST:PORT."""
    name, sep, where = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--app takes APP_ID=PORT or APP_ID=HOST:PORT, not {value!r}")
    host, _, port = where.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--app {value!r}: {port!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"--app {value!r}: port out of range")
    return name, host or None, number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durabletask-sidecar", description="A durabletask sidecar for Dapr Workflow SDKs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--app",
        action="append",
        type=_app,
        default=[],
        metavar="APP_ID=[HOST:]PORT",
        help=f"serve an app ID on its own port (repeatable); default: {DEFAULT_APP_ID}={DEFAULT_PORT}",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--store",
        default="sqlite:///durabletask.db",
        help="memory:, sqlite:///relative.db, sqlite:////absolute.db (default sqlite:///durabletask.db)",
    )
    serve.add_argument(
        "--max-payload-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="largest input/output/event payload (default 4 MiB)",
    )
    serve.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="work-item lease; a dead server's work moves on after it",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def config_from(args: argparse.Namespace) -> Config:
    apps = [AppListener(app_id=name, host=host or args.host, port=port) for name, host, port in args.app] or [
        AppListener(app_id=DEFAULT_APP_ID, host=args.host, port=DEFAULT_PORT)
    ]
    seen = set()
    for app in apps:
        if app.app_id in seen:
            raise SystemExit(f"durabletask-sidecar: app ID {app.app_id!r} is given twice")
        seen.add(app.app_id)
    return Config(
        apps=tuple(apps),
        store_url=args.store,
        max_payload_bytes=args.max_payload_bytes,
        lease_seconds=args.lease_seconds,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("backend.server").setLevel(logging.INFO)  # the `ready:` lines always show
    logging.getLogger("grpc").setLevel(max(logging.WARNING, logging.getLogger().level))
    # PyMongo logs every command at DEBUG (~150 KB per workflow): our debug is not theirs.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, logging.getLogger().level))
    from backend.server import serve  # late: keeps `--help` fast

    try:
        asyncio.run(serve(config_from(args)))
    except SidecarError as err:
        raise SystemExit(f"durabletask-sidecar: {err}") from None
    except OSError as err:
        raise SystemExit(f"durabletask-sidecar: {err}") from None
    except KeyboardInterrupt:
        pass
