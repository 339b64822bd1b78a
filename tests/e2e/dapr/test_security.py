"""The real Dapr Python SDK (dapr 1.19) against a secured server, configured only through the
environment its users set: DAPR_API_TOKEN, DAPR_GRPC_ENDPOINT (https:// for TLS), and
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH to trust a private CA. Each app runs in its own process with
its own token, as apps do."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pki
from tests.e2e.harness import REPO_ROOT, Server, free_port, run_worker_script

pytestmark = pytest.mark.timeout(180)

APP = Path(__file__).with_name("secure_app.py")


def _tokens(folder: Path) -> dict[str, str]:
    out = {}
    for app in ("orders", "payments"):
        out[app] = secrets.token_urlsafe(24)
        path = folder / f"{app}.token"
        path.write_text(out[app])
        path.chmod(0o600)
    return out


def _server(folder: Path, *, shared: bool, tls: pki.Pair | None = None) -> Server:
    port = free_port()
    apps = {"orders": port, "payments": port} if shared else {"orders": None, "payments": None}
    args = [f"--app-token-file={a}={folder / (a + '.token')}" for a in ("orders", "payments")]
    if tls is not None:
        args += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    return Server(apps, extra_args=args)


def _env(server: Server, app: str, token: str | None, ca: Path | None = None) -> dict[str, str]:
    scheme = "https" if ca is not None else "http"
    host = "localhost" if ca is not None else "127.0.0.1"  # TLS verifies the certificate's name
    env = {"DAPR_GRPC_ENDPOINT": f"{scheme}://{host}:{server.port(app)}"}
    if token is not None:
        env["DAPR_API_TOKEN"] = token
    if ca is not None:
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(ca)
    return env


def _run(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, str(APP), *args],
        cwd=REPO_ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result line (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(lines[-1])


def _multi_app(server: Server, tokens: dict[str, str], ca: Path | None = None) -> dict[str, object]:
    with run_worker_script(APP, ["payments"], env=_env(server, "payments", tokens["payments"], ca)):
        rc, result = _run(_env(server, "orders", tokens["orders"], ca), "orders", "42")
    assert rc == 0, result
    return result


def test_multi_app_workflow_with_per_app_tokens(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path)
    with _server(tmp_path, shared=False) as server:
        result = _multi_app(server, tokens)
        assert result["status"] == "COMPLETED"
        assert json.loads(str(result["output"])) == "charged 42 on payments"
        assert not any(t in server.log_text for t in tokens.values())  # secrets never reach the log


def test_missing_or_wrong_token_is_a_clear_unauthenticated(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path)
    with _server(tmp_path, shared=False) as server:
        for token in (None, "not-" + tokens["orders"]):
            rc, result = _run(_env(server, "orders", token), "client")
            assert rc == 3 and result["error"] == "UNAUTHENTICATED", result
            assert "dapr-api-token" in str(result["message"])
        # The other app's token on this app's listener: the app is not who it claims.
        rc, result = _run(_env(server, "orders", tokens["payments"]), "client")
        assert rc == 3 and result["error"] == "PERMISSION_DENIED", result
        assert tokens["payments"] not in str(result["message"])


def test_multi_app_over_tls_on_one_shared_listener(tmp_path: Path) -> None:
    """https:// endpoint, the CA trusted through gRPC's roots setting, both apps on one port."""
    tokens = _tokens(tmp_path)
    ca = pki.CA(tmp_path / "pki")
    with _server(tmp_path, shared=True, tls=ca.server()) as server:
        assert server.port("orders") == server.port("payments")
        assert "tls=on" in server.log_text
        result = _multi_app(server, tokens, ca=ca.cert)
        assert result["status"] == "COMPLETED"
        assert json.loads(str(result["output"])) == "charged 42 on payments"
        # A client that does not trust the server's CA never gets as far as its token.
        untrusted = pki.CA(tmp_path / "other", name="other-ca")
        rc, result = _run(_env(server, "orders", tokens["orders"], ca=untrusted.cert), "client")
        assert rc == 3 and result["error"] == "UNAVAILABLE", result


def test_a_network_listener_without_credentials_refuses_to_start() -> None:
    """Safe by default: off loopback, no credential, no --insecure -> the server will not start."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--store", "memory:", "--app", f"orders=0.0.0.0:{port}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if k != "DAPR_API_TOKEN"},
    )
    assert proc.returncode != 0
    assert "--insecure" in proc.stderr and "0.0.0.0" in proc.stderr and "without credentials" in proc.stderr
