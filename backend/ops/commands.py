"""The argparse side of `workflow ...` and `status`: names and flags follow the Dapr CLI's
`dapr workflow` commands (`--app-id/-a`, `--filter-name/-w`, `--filter-status/-s`,
`--filter-max-age/-m`, `--output/-o short|wide|yaml|json`), plus how to reach the server."""

from __future__ import annotations

import argparse
import os
from typing import Any

FORMATS = ("short", "wide", "yaml", "json")
STATUSES = (
    "RUNNING",
    "COMPLETED",
    "CONTINUED_AS_NEW",
    "FAILED",
    "CANCELED",
    "TERMINATED",
    "PENDING",
    "SUSPENDED",
    "STALLED",
)
DEFAULT_ADDRESS = "127.0.0.1:50001"  # daprd's gRPC port, which `serve` listens on by default


def _connection(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection")
    g.add_argument(
        "--address",
        default=os.environ.get("DAPR_GRPC_ENDPOINT") or DEFAULT_ADDRESS,
        help="the sidecar's gRPC address, HOST:PORT or https://HOST:PORT for TLS "
        f"(default: $DAPR_GRPC_ENDPOINT or {DEFAULT_ADDRESS})",
    )
    g.add_argument(
        "--api-token-file",
        metavar="PATH",
        help="send this token as dapr-api-token (default: $DAPR_API_TOKEN if set)",
    )
    g.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help="the operator token (serve --admin-token-file): list and status see every app",
    )
    g.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system CAs")
    g.add_argument("--tls-ca", metavar="PATH", help="connect with TLS, trusting this CA (PEM); implies --tls")
    g.add_argument("--tls-cert", metavar="PATH", help="client certificate (PEM) for mTLS")
    g.add_argument("--tls-key", metavar="PATH", help="client private key (PEM) for mTLS")
    g.add_argument("--tls-server-name", metavar="NAME", help="expect this name in the server certificate")
    g.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per call (default 30)")


def _app_id(parser: argparse.ArgumentParser, what: str, *, repeat: bool = False) -> None:
    if repeat:
        parser.add_argument(
            "--app-id",
            "-a",
            action="append",
            default=[],
            help=f"only {what} (repeatable; default: every app you may see)",
        )
        return
    parser.add_argument(
        "--app-id", "-a", help=f"the app ID owning {what} (default: the app the address serves)"
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", choices=FORMATS, default="short", help="output format (default short)"
    )


def _input(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--input", "-x", help=f"{what} as a JSON string")


def add_commands(sub: Any) -> None:
    """Register `workflow` and `status` on the CLI's subparsers."""
    wf = sub.add_parser("workflow", aliases=["work"], help="manage workflow instances (as `dapr workflow`)")
    cmds = wf.add_subparsers(dest="workflow_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("run", help="start a workflow instance by workflow name")
    p.add_argument("name", help="the workflow name")
    p.add_argument("--instance-id", "-i", help="the new instance's ID (default: generated)")
    _input(p, "the workflow input")
    p.add_argument(
        "--start-time", "-s", help="start later: an RFC 3339 time or a duration from now (e.g. 90s)"
    )
    _app_id(p, "the workflow")
    _connection(p)

    p = cmds.add_parser("list", aliases=["ls"], help="list workflow instances (needs the Admin service)")
    _app_id(p, "the workflows of this app", repeat=True)
    p.add_argument("--filter-name", "-w", help="only workflows of this name")
    p.add_argument("--filter-status", "-s", choices=STATUSES, help="only workflows in this status")
    p.add_argument(
        "--filter-max-age",
        "-m",
        help="only workflows created within this duration (300ms, 1.5h, 2h45m) or since this time "
        "(2023-01-02T15:04:05, 2023-01-02)",
    )
    p.add_argument("--filter-id-prefix", help="only instance IDs starting with this")
    p.add_argument("--limit", type=int, default=0, help="show at most this many (default: all)")
    p.add_argument("--page-token", default="", help="continue a listing cut by --limit (printed to stderr)")
    _output(p)
    _connection(p)

    p = cmds.add_parser("history", help="the history of a workflow instance")
    p.add_argument("instance_id")
    p.add_argument("--full", action="store_true", help="do not truncate inputs, outputs and messages")
    _app_id(p, "the workflow (must be the app the address serves: the protocol routes no history)")
    _output(p)
    _connection(p)

    p = cmds.add_parser("purge", help="purge finished workflow instances")
    p.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID")
    p.add_argument("--all", action="store_true", help="purge every finished instance; use with caution")
    p.add_argument(
        "--all-older-than", help="purge finished instances created before this duration ago or time"
    )
    p.add_argument("--all-filter-status", choices=STATUSES, help="with --all-older-than: only this status")
    p.add_argument("--force", action="store_true", help="purge even when not finished")
    _app_id(p, "the workflows")
    _connection(p)

    for name, verb in (("suspend", "suspend"), ("resume", "resume")):
        p = cmds.add_parser(name, help=f"{verb} a workflow instance")
        p.add_argument("instance_id")
        p.add_argument("--reason", "-r", default="", help="recorded in the history")
        _app_id(p, "the workflow")
        _connection(p)

    p = cmds.add_parser("terminate", help="terminate a workflow instance (and its child workflows)")
    p.add_argument("instance_id")
    p.add_argument("--output", "-o", dest="terminate_output", help="the workflow's output, as a JSON string")
    _app_id(p, "the workflow")
    _connection(p)

    p = cmds.add_parser("raise-event", help="raise an event: INSTANCE_ID/EVENT_NAME")
    p.add_argument("target", metavar="INSTANCE_ID/EVENT_NAME")
    _input(p, "the event payload")
    _app_id(p, "the workflow")
    _connection(p)

    p = cmds.add_parser("rerun", help="run a finished workflow instance again, from the start or an event")
    p.add_argument("instance_id")
    p.add_argument(
        "--event-id", "-e", type=int, default=0, help="re-run from this event ID (default 0: the start)"
    )
    p.add_argument("--new-instance-id", help="the new instance's ID (default: generated)")
    _input(p, "a new input for the start")
    _app_id(p, "the workflow")
    _connection(p)

    st = sub.add_parser("status", help="per app: workers, waiting work, instances (needs the Admin service)")
    _app_id(st, "this app", repeat=True)
    _output(st)
    _connection(st)


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; the process exit code (README: Operating, exit codes)."""
    from backend.ops import workflow

    return workflow.main(args)
