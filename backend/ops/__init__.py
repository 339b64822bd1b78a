"""Operator commands of the `durabletask-sidecar` CLI: `workflow ...` (Dapr CLI's subcommands
and flags, against any durabletask sidecar over gRPC) and `status` (per-app status through our
Admin service). Imports stay light: gRPC is loaded only when a command runs."""

from backend.ops.commands import add_commands, run

__all__ = ["add_commands", "run"]
