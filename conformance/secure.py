"""The runner against a secured sidecar: TLS to trust, and the token each app role sends.

Two sources:
- `from_files`: what the user gives for `--endpoint` (a CA, a server-wide token file, per-app
  token files);
- `generate` (`--secure`): a throwaway CA and server certificate (tests/pki.py) and one random
  token per app role, which the runner's servers are started with.

Tokens travel as file paths only (`--secure`: 0600 files in a private temp dir): never on a
command line, never printed. The harnesses read the files themselves (`--app-token APP=PATH`).
"""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import shutil
import tempfile
from collections import namedtuple
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

TOKEN_HEADER = "dapr-api-token"


@dataclass(frozen=True)
class Security:
    tls_ca: Path | None = None  # the endpoints are TLS, signed by this CA
    tokens: dict[str, Path] = field(default_factory=dict)  # app role -> file holding its token
    # --secure only: what the runner's own servers are started with.
    server_cert: Path | None = None
    server_key: Path | None = None

    @property
    def on(self) -> bool:
        return self.tls_ca is not None or bool(self.tokens)

    def harness_args(self) -> list[str]:
        """What every harness is given: the CA to trust and every role's token file."""
        args = ["--tls-ca", str(self.tls_ca)] if self.tls_ca else []
        for app, path in self.tokens.items():
            args += ["--app-token", f"{app}={path}"]
        return args

    def server_args(self, apps: Iterable[str]) -> list[str]:
        """Flags for a server the runner starts to serve `apps` (only their tokens: a server
        process of --server-per-app knows nothing of the other apps)."""
        args = []
        if self.server_cert and self.server_key:
            args += ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
        for app in apps:
            if app in self.tokens:
                args += ["--app-token-file", f"{app}={self.tokens[app]}"]
        return args

    def channel(self, address: str, app: str) -> grpc.Channel:
        """The runner's own channel to `app` (judging reads state and history as that app)."""
        if self.tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=self.tls_ca.read_bytes())
            channel = grpc.secure_channel(address, creds)
        else:
            channel = grpc.insecure_channel(address)
        if app not in self.tokens:
            return channel
        return grpc.intercept_channel(channel, TokenInterceptor(read_token(self.tokens[app])))


def read_token(path: Path) -> str:
    return path.read_text().strip()


class _CallDetails(
    namedtuple("_CallDetails", "method timeout metadata credentials wait_for_ready compression"),
    grpc.ClientCallDetails,
):
    """grpc.ClientCallDetails is an interface without a constructor: the usual namedtuple."""


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds `dapr-api-token` to every call (the runner makes only unary calls; the
    unary-stream half keeps it honest should it ever stream)."""

    def __init__(self, token: str) -> None:
        self._metadata = ((TOKEN_HEADER, token),)

    def _details(self, d: Any) -> Any:
        metadata = (*(d.metadata or ()), *self._metadata)
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def from_files(
    apps: Iterable[str], tls_ca: Path | None, api_token_file: Path | None, app_token_files: list[str]
) -> Security:
    """`--endpoint` mode. The server-wide token stands for every app role in `apps` without a
    token of its own, so each request still carries exactly one `dapr-api-token`."""
    tokens: dict[str, Path] = {}
    for spec in app_token_files:
        app, sep, path = spec.partition("=")
        if not sep or not app or not path:
            raise SystemExit(f"--app-token-file expects APP=PATH, got {spec!r}")
        tokens[app] = Path(path).resolve()  # the harnesses run in the repository root
    if api_token_file is not None:
        tokens = {app: tokens.get(app, api_token_file.resolve()) for app in (*apps, *tokens)}
    tls_ca = tls_ca.resolve() if tls_ca else None
    for path in [p for p in (tls_ca, *tokens.values()) if p is not None]:
        if not path.is_file():
            raise SystemExit(f"no such file: {path}")
    return Security(tls_ca, tokens)


def generate(apps: Iterable[str]) -> Security:
    """`--secure`: a fresh CA, a server certificate for localhost/127.0.0.1 and a random token
    per app role, in a private temp dir that is removed when the runner exits."""
    from tests.pki import CA  # only here: it needs `cryptography`, a test extra

    folder = Path(tempfile.mkdtemp(prefix="conformance-secure-"))  # mode 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ca = CA(folder / "pki")
    pair = ca.server()
    tokens = {}
    for app in apps:
        path = folder / f"{app}.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        tokens[app] = path
    return Security(ca.cert, tokens, pair.cert, pair.key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, metavar="PATH", help="the endpoints are TLS: trust this CA")
    parser.add_argument(
        "--api-token-file", type=Path, metavar="PATH", help="a server-wide token every harness sends"
    )
    parser.add_argument(
        "--app-token-file",
        action="append",
        default=[],
        metavar="APP=PATH",
        help="the token of app role APP (main, remote, app1..app4); repeatable",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="start the servers with TLS and a random token per app, every app on one shared listener",
    )


def from_args(args: argparse.Namespace, apps: Iterable[str]) -> Security:
    given = args.tls_ca or args.api_token_file or args.app_token_file
    if args.secure and (given or args.endpoint):
        raise SystemExit("--secure makes its own CA and tokens: not with --endpoint, --tls-ca or token files")
    if args.secure:
        return generate(apps)
    if given and not args.endpoint:
        raise SystemExit("--tls-ca and the token files are for --endpoint (or use --secure)")
    return from_files(apps, args.tls_ca, args.api_token_file, args.app_token_file)
