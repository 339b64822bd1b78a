"""The server's security features as unmodified Go SDKs see them, configured the way their users
configure them.

* github.com/dapr/go-sdk v1.15.0 (cmd/gosdk): `client.NewWorkflowClient()` reads
  DAPR_GRPC_ENDPOINT and DAPR_API_TOKEN from the environment; an https:// endpoint trusts the
  system roots, which SSL_CERT_FILE replaces. Each process gets only its own app's token.
* github.com/dapr/durabletask-go v0.12.1 (cmd/dtmtls, the version go-sdk v1.15.0 uses): grpc TLS
  credentials with a client certificate whose URI SAN is the app's SPIFFE ID.

The workflow `order` runs on app orders and calls activity `charge`, which only app payments
hosts, so it completes only when both apps got through. Stored state is read back with a plain
gRPC GetInstance call (get_instance.py, a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Server, free_port
from tests.e2e.security.support import Credentials, GoPrograms, GoRun, Worker, get_instance, run

# The first test also pays for the session's `go build` (a cold module cache downloads the SDKs).
pytestmark = pytest.mark.timeout(900)

RECEIPT = "charged 42 by payments"
LAYOUTS = ["own-ports", "one-shared-port"]


def _ports(layout: str) -> dict[str, int | None]:
    orders = free_port()
    return {"orders": orders, "payments": orders if layout == "one-shared-port" else free_port()}


def _instance() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


def _assert_completed(done: GoRun, instance_id: str) -> None:
    assert done.returncode == 0, done.describe()
    result = done.last
    assert result["event"] == "done", done.describe()
    assert result["instance_id"] == instance_id
    assert result["status"] == "COMPLETED", done.describe()
    assert json.loads(result["output"]) == RECEIPT


def _assert_refused(done: GoRun, *, stage: str, code: str) -> dict[str, object]:
    assert done.returncode == 1, done.describe()
    result = done.last
    assert result["event"] == "error", done.describe()
    assert result["stage"] == stage, done.describe()
    assert result["code"] == code, done.describe()
    return result


def _assert_stored_completed(state: dict[str, object]) -> None:
    assert state.get("exists") is True, state
    assert state["name"] == "order"
    assert state["status"] == "COMPLETED", state
    assert state["input"] == "42"
    assert json.loads(str(state["output"])) == RECEIPT


# ---------------------------------------------------------------------------
# go-sdk with API tokens
# ---------------------------------------------------------------------------


@pytest.fixture(params=LAYOUTS)
def token_server(request: pytest.FixtureRequest, creds: Credentials) -> Iterator[Server]:
    with Server(apps=_ports(request.param), extra_args=creds.token_args()) as server:
        yield server


def _sdk_env(server: Server, app: str, token: str | None, scheme: str = "http") -> dict[str, str | None]:
    return {"DAPR_GRPC_ENDPOINT": f"{scheme}://{server.address(app)}", "DAPR_API_TOKEN": token}


def test_go_sdk_multi_app_workflow_with_per_app_tokens(
    go_programs: GoPrograms, creds: Credentials, token_server: Server
) -> None:
    iid = _instance()
    payments_env = _sdk_env(token_server, "payments", creds.tokens["payments"])
    with Worker(go_programs.gosdk, ["-role", "payments"], payments_env, name="gosdk-payments"):
        done = run(
            go_programs.gosdk,
            ["-role", "orders", "-instance", iid, "-timeout", "45s"],
            _sdk_env(token_server, "orders", creds.tokens["orders"]),
        )
    _assert_completed(done, iid)
    # The go-sdk logs that it picked the token up from DAPR_API_TOKEN: proof it was the SDK's own
    # environment handling that authenticated, not something the program did.
    assert "API Token loaded from the environment variable" in done.output
    _assert_stored_completed(get_instance(iid, token_server.address("orders"), token=creds.tokens["orders"]))


def test_go_sdk_multi_app_workflow_with_the_server_wide_token(
    go_programs: GoPrograms, creds: Credentials
) -> None:
    """daprd's own set-up: one DAPR_API_TOKEN in the server's environment and in every app's."""
    iid = _instance()
    token = creds.tokens["orders"]
    with Server(apps=_ports("own-ports"), env={"DAPR_API_TOKEN": token}) as server:
        payments_env = _sdk_env(server, "payments", token)
        with Worker(go_programs.gosdk, ["-role", "payments"], payments_env, name="gosdk-payments"):
            done = run(
                go_programs.gosdk,
                ["-role", "orders", "-instance", iid, "-timeout", "45s"],
                _sdk_env(server, "orders", token),
            )
        _assert_completed(done, iid)
        _assert_stored_completed(get_instance(iid, server.address("orders"), token=token))
        # The same server refuses the SDK without that token: the token was what let it in.
        refused = run(
            go_programs.gosdk,
            ["-role", "schedule", "-instance", _instance()],
            _sdk_env(server, "orders", None),
        )
        _assert_refused(refused, stage="schedule", code="UNAUTHENTICATED")


@pytest.mark.parametrize("token", ["missing", "wrong"])
@pytest.mark.parametrize(
    ("role", "stage"),
    [("orders", "start-worker"), ("payments", "start-worker"), ("schedule", "schedule")],
)
def test_go_sdk_without_its_token_is_unauthenticated(
    go_programs: GoPrograms, creds: Credentials, token: str, role: str, stage: str
) -> None:
    iid = _instance()
    with Server(apps=_ports("own-ports"), extra_args=creds.token_args()) as server:
        app = "payments" if role == "payments" else "orders"
        presented = None if token == "missing" else "not-" + creds.tokens[app]
        done = run(go_programs.gosdk, ["-role", role, "-instance", iid], _sdk_env(server, app, presented))
        result = _assert_refused(done, stage=stage, code="UNAUTHENTICATED")
        assert "dapr-api-token" in str(result["message"]), done.describe()
        # The refused call started nothing: the right app does not know the instance.
        state = get_instance(iid, server.address("orders"), token=creds.tokens["orders"])
        assert state.get("exists") is False, state


@pytest.mark.parametrize(("role", "stage"), [("orders", "start-worker"), ("schedule", "schedule")])
def test_go_sdk_with_another_apps_token_is_permission_denied(
    go_programs: GoPrograms, creds: Credentials, role: str, stage: str
) -> None:
    iid = _instance()
    with Server(apps=_ports("own-ports"), extra_args=creds.token_args()) as server:
        # A valid token, but of app payments, on the listener that serves only orders.
        done = run(
            go_programs.gosdk,
            ["-role", role, "-instance", iid],
            _sdk_env(server, "orders", creds.tokens["payments"]),
        )
        _assert_refused(done, stage=stage, code="PERMISSION_DENIED")
        state = get_instance(iid, server.address("orders"), token=creds.tokens["orders"])
        assert state.get("exists") is False, state


# ---------------------------------------------------------------------------
# go-sdk over TLS (https:// endpoint, CA trusted through SSL_CERT_FILE)
# ---------------------------------------------------------------------------


def test_go_sdk_over_https_trusting_the_ca_through_ssl_cert_file(
    go_programs: GoPrograms, creds: Credentials
) -> None:
    iid = _instance()
    args = [*creds.tls_args(), *creds.token_args()]
    with Server(apps=_ports("own-ports"), extra_args=args) as server:
        trust = {"SSL_CERT_FILE": str(creds.ca.cert)}
        payments_env = {**_sdk_env(server, "payments", creds.tokens["payments"], "https"), **trust}
        with Worker(go_programs.gosdk, ["-role", "payments"], payments_env, name="gosdk-tls-payments"):
            done = run(
                go_programs.gosdk,
                ["-role", "orders", "-instance", iid, "-timeout", "45s"],
                {**_sdk_env(server, "orders", creds.tokens["orders"], "https"), **trust},
            )
        _assert_completed(done, iid)
        _assert_stored_completed(
            get_instance(iid, server.address("orders"), token=creds.tokens["orders"], ca=creds.ca.cert)
        )


def test_go_sdk_over_https_refuses_a_server_it_does_not_trust(
    go_programs: GoPrograms, creds: Credentials
) -> None:
    iid = _instance()
    args = [*creds.tls_args(), *creds.token_args()]
    with Server(apps=_ports("own-ports"), extra_args=args) as server:
        env = {
            **_sdk_env(server, "orders", creds.tokens["orders"], "https"),
            # Another CA: the server's certificate does not chain to anything the client trusts.
            "SSL_CERT_FILE": str(creds.stranger_ca.cert),
            # go-sdk's own dial timeout (it dials with WithBlock), shortened from 5 s.
            "DAPR_CLIENT_TIMEOUT_SECONDS": "2",
        }
        done = run(go_programs.gosdk, ["-role", "schedule", "-instance", iid], env)
        assert done.returncode == 1, done.describe()
        assert done.last["stage"] == "connect", done.describe()
        state = get_instance(iid, server.address("orders"), token=creds.tokens["orders"], ca=creds.ca.cert)
        assert state.get("exists") is False, state


# ---------------------------------------------------------------------------
# durabletask-go over mTLS with SPIFFE client certificates
# ---------------------------------------------------------------------------


def _mtls_args(server: Server, app: str, creds: Credentials, cert_of: str | None) -> list[str]:
    args = ["-address", server.address(app), "-ca", str(creds.ca.cert)]
    if cert_of is not None:
        pair = creds.clients[cert_of]
        args += ["-cert", str(pair.cert), "-key", str(pair.key)]
    return args


def _mtls_state(server: Server, iid: str, creds: Credentials) -> dict[str, object]:
    pair = creds.clients["orders"]
    return get_instance(iid, server.address("orders"), ca=creds.ca.cert, cert=pair.cert, key=pair.key)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_durabletask_go_multi_app_workflow_over_mtls(
    go_programs: GoPrograms, creds: Credentials, layout: str
) -> None:
    iid = _instance()
    with Server(apps=_ports(layout), extra_args=creds.tls_args(client_ca=True)) as server:
        payments = [*_mtls_args(server, "payments", creds, "payments"), "-role", "payments"]
        with Worker(go_programs.dtmtls, payments, {}, name="dtmtls-payments"):
            orders = [*_mtls_args(server, "orders", creds, "orders"), "-role", "orders", "-instance", iid]
            done = run(go_programs.dtmtls, [*orders, "-timeout", "45s"], {})
        _assert_completed(done, iid)
        _assert_stored_completed(_mtls_state(server, iid, creds))


@pytest.mark.parametrize(("role", "stage"), [("orders", "start-worker"), ("schedule", "schedule")])
def test_durabletask_go_with_another_apps_certificate_is_permission_denied(
    go_programs: GoPrograms, creds: Credentials, role: str, stage: str
) -> None:
    iid = _instance()
    with Server(apps=_ports("own-ports"), extra_args=creds.tls_args(client_ca=True)) as server:
        # A certificate from the trusted CA, but for spiffe://public/ns/default/payments.
        args = [*_mtls_args(server, "orders", creds, "payments"), "-role", role, "-instance", iid]
        done = run(go_programs.dtmtls, args, {})
        _assert_refused(done, stage=stage, code="PERMISSION_DENIED")
        state = _mtls_state(server, iid, creds)
        assert state.get("exists") is False, state


def test_durabletask_go_without_a_client_certificate_cannot_connect(
    go_programs: GoPrograms, creds: Credentials
) -> None:
    iid = _instance()
    with Server(apps=_ports("own-ports"), extra_args=creds.tls_args(client_ca=True)) as server:
        args = [*_mtls_args(server, "orders", creds, None), "-role", "schedule", "-instance", iid]
        done = run(go_programs.dtmtls, args, {})
        # The server refuses the handshake, so no RPC reaches it: the client sees the
        # connection fail (UNAVAILABLE), never an application-level status.
        _assert_refused(done, stage="schedule", code="UNAVAILABLE")
        state = _mtls_state(server, iid, creds)
        assert state.get("exists") is False, state


def test_the_programs_link_the_sdk_versions_under_test(go_programs: GoPrograms) -> None:
    """The suite claims go-sdk v1.15.0 and the durabletask-go it depends on: read what the built
    binaries actually link (`go version -m`), so a drift of go.mod cannot go unnoticed."""
    deps = {}
    for binary in (go_programs.gosdk, go_programs.dtmtls):
        info = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True
        )
        deps[binary.name] = {
            fields[1]: fields[2]
            for fields in (line.split() for line in info.stdout.splitlines())
            if len(fields) >= 3 and fields[0] == "dep"
        }
    assert deps["gosdk"]["github.com/dapr/go-sdk"] == "v1.15.0"
    assert deps["gosdk"]["github.com/dapr/durabletask-go"] == "v0.12.1"
    assert deps["dtmtls"]["github.com/dapr/durabletask-go"] == "v0.12.1"
