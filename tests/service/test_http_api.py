"""The Dapr workflow HTTP API over plain HTTP (httpx), mirroring the Dapr docs' curl examples;
a raw gRPC worker plays the app, so the instance moves through its states for real."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import AppListener, Config, HttpEndpoint, Security
from backend.errors import ConfigError
from backend.security.secrets import Secret
from backend.security.tls import TlsFiles
from backend.server import Server
from tests import pki
from tests.service import secure
from tests.service.conftest import BASE, RawWorker
from tests.service.test_bad_input import _complete, _finish

WF = "/v1.0/workflows/dapr"


def _http(host: str = "127.0.0.1", app_id: str | None = None) -> tuple[HttpEndpoint, ...]:
    return (HttpEndpoint(host=host, port=0, app_id=app_id),)


@pytest.fixture
def config() -> Config:
    return replace(BASE, http=_http())


def _base(server: Server, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.http[0].port}"


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=_base(server), timeout=20) as client:
        yield client


async def _state(http: httpx.AsyncClient, iid: str) -> dict[str, object]:
    r = await http.get(f"{WF}/{iid}")
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def test_the_docs_walkthrough(server: Server, stub: sgrpc.TaskHubSidecarServiceStub, http) -> None:  # type: ignore[no-untyped-def]
    """start, get, raiseEvent, pause, resume, terminate, purge, as the docs' curl examples."""
    worker = RawWorker(stub)
    try:
        r = await http.post(f"{WF}/order/start?instanceID=order-1", content=b'{"item": "paperclips"}')
        assert r.status_code == 202 and r.json() == {"instanceID": "order-1"}
        item = await worker.next()
        started = item.workflowRequest.newEvents[1].executionStarted
        assert started.name == "order" and started.input.value == '{"item": "paperclips"}'
        await stub.CompleteOrchestratorTask(_complete(item.completionToken, "order-1"))  # waits on

        body = await _state(http, "order-1")
        assert body["instanceID"] == "order-1" and body["workflowName"] == "order"
        assert body["runtimeStatus"] == "RUNNING"
        assert body["properties"] == {"dapr.workflow.input": '{"item": "paperclips"}'}
        created = datetime.fromisoformat(str(body["createdAt"]))
        assert datetime.fromisoformat(str(body["lastUpdatedAt"])) >= created

        r = await http.post(f"{WF}/order-1/raiseEvent/approval", content=b"true")
        assert r.status_code == 202 and r.content == b""
        item = await worker.next()
        raised = [e.eventRaised for e in item.workflowRequest.newEvents if e.HasField("eventRaised")]
        assert [(e.name, e.input.value) for e in raised] == [("approval", "true")]
        await stub.CompleteOrchestratorTask(_complete(item.completionToken, "order-1"))

        assert (await http.post(f"{WF}/order-1/pause")).status_code == 202
        assert (await _state(http, "order-1"))["runtimeStatus"] == "SUSPENDED"
        assert (await http.post(f"{WF}/order-1/resume")).status_code == 202
        assert (await _state(http, "order-1"))["runtimeStatus"] == "RUNNING"
        # Purging a running instance is refused (daprd answers 500; it is the client's mistake).
        r = await http.post(f"{WF}/order-1/purge")
        assert r.status_code == 409 and r.json()["errorCode"] == "ERR_PURGE_WORKFLOW"
        assert (await http.post(f"{WF}/order-1/terminate")).status_code == 202
        assert (await _state(http, "order-1"))["runtimeStatus"] == "TERMINATED"
        assert (await http.post(f"{WF}/order-1/purge")).status_code == 202
        r = await http.get(f"{WF}/order-1")
        assert r.status_code == 404
        assert r.json() == {
            "errorCode": "ERR_INSTANCE_ID_NOT_FOUND",
            "message": "unable to find workflow with the provided instance ID: order-1",
        }
    finally:
        await worker.close()


@pytest.mark.parametrize("version", ["v1.0-beta1", "v1.0-alpha1"])
async def test_older_api_versions_and_generated_ids(server: Server, stub, http, version: str) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(stub)
    try:
        r = await http.post(f"/{version}/workflows/dapr/hello/start")
        assert r.status_code == 202
        iid = r.json()["instanceID"]
        assert iid
        item = await worker.next()
        assert item.workflowRequest.instanceId == iid
        assert not item.workflowRequest.newEvents[1].executionStarted.HasField("input")  # empty body: none
        await stub.CompleteOrchestratorTask(_complete(item.completionToken, iid, _finish(0, '"hi"')))
        r = await http.get(f"/{version}/workflows/dapr/{iid}")
        assert r.status_code == 200
        assert r.json()["runtimeStatus"] == "COMPLETED"
        assert r.json()["properties"] == {"dapr.workflow.output": '"hi"'}
    finally:
        await worker.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/v1.0/workflows/any-component/x", 404, "ERR_INSTANCE_ID_NOT_FOUND"),  # as daprd 1.18
        ("post", f"{WF}/wf/start?instanceID=bad.id", 400, "ERR_INSTANCE_ID_INVALID"),
        ("post", f"{WF}/wf/start?instanceID=a%20b", 400, "ERR_INSTANCE_ID_INVALID"),
        ("post", f"{WF}/wf/start?instanceID={'x' * 65}", 400, "ERR_INSTANCE_ID_TOO_LONG"),
        ("post", f"{WF}/wf/start?instanceID={'é' * 33}", 400, "ERR_INSTANCE_ID_TOO_LONG"),  # 66 bytes
        ("post", f"{WF}/missing/terminate", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("post", f"{WF}/missing/pause", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("post", f"{WF}/missing/resume", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("post", f"{WF}/missing/purge", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("post", f"{WF}/missing/raiseEvent/e", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
        ("get", f"{WF}/missing", 404, "ERR_INSTANCE_ID_NOT_FOUND"),
    ],
)
async def test_errors_have_daprds_shape(http, method: str, path: str, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    r = await getattr(http, method)(path)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["errorCode"] == code and body["message"]


async def test_daprds_exact_messages(http) -> None:  # type: ignore[no-untyped-def]
    """As daprd 1.18.1 answered the same requests (run here against it)."""
    r = await http.post(f"{WF}/wf/start?instanceID=a%20b")
    assert r.json()["message"] == (
        "workflow instance ID 'a b' is invalid: only alphanumeric and underscore characters are allowed"
    )
    r = await http.post(f"{WF}/wf/start?instanceID={'x' * 65}")
    assert r.json()["message"] == "workflow instance ID exceeds the max length of 64 characters"
    # dashes and non-ASCII letters are accepted, as daprd accepts them
    for iid in ("a-b_c", "caf%C3%A9"):
        assert (await http.post(f"{WF}/wf/start?instanceID={iid}")).status_code == 202


async def test_duplicate_start_and_bad_bodies_are_the_clients_mistake(http) -> None:  # type: ignore[no-untyped-def]
    assert (await http.post(f"{WF}/wf/start?instanceID=dup")).status_code == 202
    r = await http.post(f"{WF}/wf/start?instanceID=dup")
    assert r.status_code == 409 and r.json()["errorCode"] == "ERR_START_WORKFLOW"
    assert "already exists" in r.json()["message"]
    r = await http.post(f"{WF}/wf/start?instanceID=big", content=b"x" * 2048)  # over the 1 KiB limit
    assert r.status_code == 413 and r.json()["errorCode"] == "ERR_START_WORKFLOW"
    r = await http.post(f"{WF}/wf/start?instanceID=bin", content=b"\xff\xfe")
    assert r.status_code == 400 and r.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert (await http.get(f"{WF}/big")).status_code == 404  # nothing was created


# -- credentials ---------------------------------------------------------------------------------

TOKENS = {"orders": "orders-token-0123456789", "payments": "payments-token-0123456789"}


def _two_apps_with_tokens(http: tuple[HttpEndpoint, ...] = _http()) -> Config:
    return replace(
        BASE,
        apps=(
            AppListener(app_id="orders", host="127.0.0.1", port=0),
            AppListener(app_id="payments", host="127.0.0.1", port=0),
        ),
        security=Security(app_tokens={a: Secret.literal(t, f"test token of {a}") for a, t in TOKENS.items()}),
        http=http,
    )


@pytest.mark.parametrize("config", [_two_apps_with_tokens()])
async def test_the_token_says_which_app_calls(server: Server, http) -> None:  # type: ignore[no-untyped-def]
    r = await http.post(f"{WF}/wf/start?instanceID=t1")
    assert r.status_code == 401 and r.json()["errorCode"] == "ERR_UNAUTHENTICATED"
    assert "dapr-api-token" in r.json()["message"]
    r = await http.post(f"{WF}/wf/start?instanceID=t1", headers={"dapr-api-token": "wrong"})
    assert r.status_code == 401
    assert (await http.get("/metrics")).status_code == 401  # it names apps and workflows
    assert (await http.get("/healthz")).status_code == 200  # probes carry no token
    pay = {"dapr-api-token": TOKENS["payments"]}
    r = await http.post(f"{WF}/wf/start?instanceID=t1", headers=pay)
    assert r.status_code == 202
    # It is payments' instance: payments' gRPC listener sees it, orders' does not.
    async with secure.channel(f"127.0.0.1:{server.ports['payments']}", token=TOKENS["payments"]) as ch:
        got = await secure.stub(ch).GetInstance(spb.GetInstanceRequest(instanceId="t1"))
        assert got.exists and got.workflowState.name == "wf"
    orders = {"dapr-api-token": TOKENS["orders"]}
    assert (await http.get(f"{WF}/t1", headers=orders)).status_code == 404
    # ?appID= reaches another app's instance (the default policy lets apps manage each other)
    r = await http.get(f"{WF}/t1?appID=payments", headers=orders)
    assert r.status_code == 200 and r.json()["workflowName"] == "wf"
    assert (await http.get("/metrics", headers=orders)).status_code == 200


@pytest.mark.parametrize("config", [_two_apps_with_tokens(_http(app_id="orders"))])
async def test_a_listener_bound_to_an_app_refuses_another_apps_token(http) -> None:  # type: ignore[no-untyped-def]
    r = await http.post(f"{WF}/wf/start", headers={"dapr-api-token": TOKENS["payments"]})
    assert r.status_code == 403 and r.json()["errorCode"] == "ERR_PERMISSION_DENIED"
    r = await http.post(f"{WF}/wf/start", headers={"dapr-api-token": TOKENS["orders"]})
    assert r.status_code == 202


def test_off_loopback_needs_credentials_and_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without credentials"):
        Server(replace(BASE, http=_http("0.0.0.0")))
    tokened = replace(
        BASE, security=Security(api_token=Secret.literal("t" * 24, "test")), http=_http("0.0.0.0")
    )
    with pytest.raises(ConfigError, match="without TLS"):
        Server(tokened)
    ca = pki.CA(tmp_path)
    pair = ca.server()
    Server(replace(tokened, security=replace(tokened.security, tls=TlsFiles(cert=pair.cert, key=pair.key))))


async def test_https_with_the_servers_certificate(tmp_path: Path) -> None:
    ca = pki.CA(tmp_path)
    pair = ca.server()
    srv = Server(replace(BASE, security=Security(tls=TlsFiles(cert=pair.cert, key=pair.key)), http=_http()))
    await srv.start()
    try:
        async with httpx.AsyncClient(
            base_url=_base(srv, "https"), verify=ssl.create_default_context(cafile=ca.cert), timeout=20
        ) as client:
            r = await client.post(f"{WF}/wf/start?instanceID=tls-1")
            assert r.status_code == 202
            assert (await client.get(f"{WF}/tls-1")).json()["runtimeStatus"] == "PENDING"
        async with httpx.AsyncClient(base_url=_base(srv, "http"), timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/healthz")  # plain HTTP to a TLS listener gets no answer
    finally:
        await srv.stop()


OPERATOR = "operator-token-0123456789"


@pytest.mark.parametrize(
    "config",
    [
        replace(
            _two_apps_with_tokens(),
            security=replace(
                _two_apps_with_tokens().security, admin_token=Secret.literal(OPERATOR, "test operator token")
            ),
        )
    ],
)
async def test_the_operators_token_acts_on_any_app(server: Server, http) -> None:  # type: ignore[no-untyped-def]
    op = {"dapr-api-token": OPERATOR}
    assert (await http.post(f"{WF}/wf/start?instanceID=op-1&appID=payments", headers=op)).status_code == 202
    r = await http.get(f"{WF}/op-1?appID=payments", headers={"dapr-api-token": TOKENS["payments"]})
    assert r.status_code == 200 and r.json()["workflowName"] == "wf"
    assert (await http.get(f"{WF}/op-1?appID=payments", headers=op)).status_code == 200
    assert (await http.get(f"{WF}/op-1", headers=op)).status_code == 404  # orders, the first app: not there


async def test_a_rotated_certificate_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.http import auth

    monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)  # check the files at every handshake
    first, second = pki.CA(tmp_path / "one", name="first-ca"), pki.CA(tmp_path / "two", name="second-ca")
    pair = first.server()
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    srv = Server(replace(BASE, security=Security(tls=TlsFiles(cert=cert, key=key)), http=_http()))
    await srv.start()
    try:

        async def status(ca: pki.CA) -> int:
            verify = ssl.create_default_context(cafile=ca.cert)
            async with httpx.AsyncClient(base_url=_base(srv, "https"), verify=verify, timeout=20) as client:
                return (await client.get("/healthz")).status_code

        assert await status(first) == 200
        rotated = second.server()
        key.write_bytes(rotated.key_pem)
        cert.write_bytes(rotated.cert_pem)
        assert await status(second) == 200
        with pytest.raises(httpx.ConnectError):
            await status(first)  # the old CA no longer vouches for what the listener presents
    finally:
        await srv.stop()
