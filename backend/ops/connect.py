"""Reaching a sidecar from the CLI: the channel (plain or TLS, with a client certificate for
mTLS), the token metadata, and the exit code and message for each way a call can fail."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

TOKEN_HEADER = "dapr-api-token"
API_TOKEN_ENV = "DAPR_API_TOKEN"

# Exit codes a script can rely on (README: Operating).
OK = 0
FAILED = 1  # the server refused or failed the operation (message on stderr)
USAGE = 2  # bad flags or arguments (argparse uses 2 too)
NOT_FOUND = 3  # no such instance
DENIED = 4  # credentials missing, wrong, or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
UNREACHABLE = 5  # no server at the address, or it did not answer in time
NO_ADMIN = 6  # the server does not have the Admin service (not durabletask-sidecar, or older)

T = TypeVar("T")


class CommandError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Connection:
    channel: grpc.Channel
    metadata: list[tuple[str, str]]
    timeout: float
    address: str

    def call(self, method: Callable[..., T], request: Any, *, what: str, admin: bool = False) -> T:
        """One RPC; a failure becomes a CommandError with a script-stable exit code."""
        try:
            return method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise _failure(err, what=what, address=self.address, admin=admin) from None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CommandError(USAGE, f"cannot read {what} {path}: {err.strerror}") from None


def _token(args: argparse.Namespace) -> str | None:
    for path in (args.admin_token_file, args.api_token_file):
        if path:
            value = _read(path, "token file").decode().strip()
            if not value:
                raise CommandError(USAGE, f"token file {path} is empty")
            return value
    return os.environ.get(API_TOKEN_ENV) or None


def connect(args: argparse.Namespace) -> Connection:
    address: str = args.address
    tls = bool(args.tls or args.tls_ca or args.tls_cert)
    for scheme in ("https://", "grpcs://"):
        if address.startswith(scheme):
            address, tls = address[len(scheme) :], True
    for scheme in ("http://", "grpc://", "dns:///"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
    address = address.rstrip("/")
    if ":" not in address:
        raise CommandError(USAGE, f"--address {args.address!r}: expected HOST:PORT")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError(USAGE, "mTLS needs both --tls-cert and --tls-key")
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    if tls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(args.tls_ca, "--tls-ca") if args.tls_ca else None,
            private_key=_read(args.tls_key, "--tls-key") if args.tls_key else None,
            certificate_chain=_read(args.tls_cert, "--tls-cert") if args.tls_cert else None,
        )
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        channel = grpc.secure_channel(address, creds, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    token = _token(args)
    return Connection(
        channel=channel,
        metadata=[(TOKEN_HEADER, token)] if token else [],
        timeout=args.timeout,
        address=address,
    )


def _failure(err: grpc.RpcError, *, what: str, address: str, admin: bool) -> CommandError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    detail = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CommandError(UNREACHABLE, f"cannot reach a sidecar at {address}: {detail}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CommandError(UNREACHABLE, f"the sidecar at {address} did not answer {what} in time")
    if code == grpc.StatusCode.UNIMPLEMENTED and admin:
        return CommandError(
            NO_ADMIN,
            f"the sidecar at {address} has no durabletask-sidecar Admin service, which {what} needs "
            "(the lifecycle commands work against any sidecar)",
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return CommandError(NOT_FOUND, f"{what}: {detail}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CommandError(DENIED, f"{what}: {code.name}: {detail}")
    return CommandError(FAILED, f"{what}: {code.name}: {detail}")
