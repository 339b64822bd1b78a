"""Build and run the Go programs of tests/e2e/security/go; read stored state through get_instance.py.

Imports no SDK and not `backend` (see get_instance.py for why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import pki
from tests.e2e import gobuild, harness
from tests.e2e.gobuild import GoRun

HERE = Path(__file__).resolve().parent
GO_MODULE = HERE / "go"
GET_INSTANCE = HERE / "get_instance.py"


@dataclass(frozen=True)
class Credentials:
    """One CA with a server certificate and a SPIFFE client certificate per app, a CA nobody
    trusts with its own server certificate, and one token per app (also written to files)."""

    ca: pki.CA
    server: pki.Pair
    clients: dict[str, pki.Pair]
    stranger_ca: pki.CA
    tokens: dict[str, str]
    token_files: dict[str, Path]

    def token_args(self) -> list[str]:
        args: list[str] = []
        for app, path in self.token_files.items():
            args += ["--app-token-file", f"{app}={path}"]
        return args

    def tls_args(self, *, client_ca: bool = False) -> list[str]:
        args = ["--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key)]
        if client_ca:
            args += ["--tls-client-ca", str(self.ca.cert)]
        return args


BuildError = gobuild.BuildError


@dataclass(frozen=True)
class GoPrograms:
    gosdk: Path  # github.com/dapr/go-sdk v1.15.0, configured from the environment
    dtmtls: Path  # github.com/dapr/durabletask-go with a grpc TLS client certificate


def build(out: Path) -> GoPrograms:
    built = gobuild.build(GO_MODULE, ["./cmd/gosdk", "./cmd/dtmtls"], out)
    return GoPrograms(gosdk=built["gosdk"], dtmtls=built["dtmtls"])


def go_env(extra: Mapping[str, str | None]) -> dict[str, str]:
    """The outer environment without anything that configures a Dapr SDK or TLS trust, plus `extra`
    (a None value leaves the variable unset): each run gets exactly what the test gives it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAPR_") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run(binary: Path, args: Sequence[str], env: Mapping[str, str | None], *, timeout: float = 90) -> GoRun:
    """Run a program to its end; stdout and stderr together (the SDKs log to both)."""
    done = subprocess.run(
        [str(binary), *args],
        env=go_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return GoRun(done.returncode, done.stdout, gobuild.results(done.stdout))


_workers: list[Worker] = []


def live_workers() -> list[Worker]:
    return [w for w in _workers if w.proc is not None]


class Worker:
    """A long-running worker program (role payments): started, waited for, stopped with SIGTERM."""

    def __init__(self, binary: Path, args: Sequence[str], env: Mapping[str, str | None], name: str) -> None:
        self.argv = [str(binary), *args]
        self.env = go_env(env)
        self.name = name
        self.log_path = harness.log_dir() / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        _workers.append(self)
        try:
            harness.wait_until(self._ready, timeout=30, message=f"{self.name} to print worker-ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        results = gobuild.results(self.log_text)
        if any(r.get("event") == "worker-ready" for r in results):
            return True
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.proc.returncode} before it was ready:\n{self.log_text}"
            )
        return False

    @property
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        _workers.remove(self)


def get_instance(
    instance_id: str,
    address: str,
    *,
    token: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> dict[str, Any]:
    """GetInstance over plain gRPC (our protos, in a subprocess): the state the server stored."""
    cmd = [sys.executable, str(GET_INSTANCE), instance_id, "--address", address]
    for flag, value in (("--token", token), ("--ca", ca), ("--cert", cert), ("--key", key)):
        if value is not None:
            cmd.append(f"{flag}={value}")  # one argument: a token may start with "-"
    done = subprocess.run(
        cmd, cwd=harness.REPO_ROOT, env=go_env({}), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"get_instance.py failed ({done.returncode}):\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result
