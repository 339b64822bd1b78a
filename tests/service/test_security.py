"""Who may connect, as which app: tokens, mTLS, completions bound to their dispatch, and the
authorization policy, over real gRPC with real certificates (tests/pki.py).

Each attack the security issue lists has a test here that fails on a server without these checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import empty_pb2, wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import AppListener, Config, Security
from backend.security.policy import AppRules, Policy
from backend.security.secrets import Secret
from backend.security.tls import TlsFiles
from backend.server import Server
from tests import pki
from tests.service import secure
from tests.service.conftest import BASE, RawWorker
from tests.service.test_worker_protocol import _answer_activity, _done, _schedule

TOKENS = {"orders": "orders-token-3f9c2a", "payments": "payments-token-77b1e0"}
APPS = ("orders", "payments")


def _listeners(shared: bool, ports: dict[str, int] | None = None) -> tuple[AppListener, ...]:
    if shared:
        assert ports is not None
        return tuple(AppListener(app_id=a, host="127.0.0.1", port=ports["shared"]) for a in APPS)
    return tuple(AppListener(app_id=a, host="127.0.0.1", port=0) for a in APPS)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_config(
    *, shared: bool = False, policy: Policy | None = None, tls: TlsFiles | None = None
) -> Config:
    return replace(
        BASE,
        apps=_listeners(shared, {"shared": _free_port()} if shared else None),
        max_payload_bytes=1 << 20,
        security=Security(
            app_tokens={a: Secret.literal(t, f"test token of {a}") for a, t in TOKENS.items()},
            policy=policy or Policy(),
            tls=tls,
        ),
    )


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Server]:
    srv = Server(config)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
        while _CHANNELS:
            await _CHANNELS.pop().close()


_CHANNELS: list[grpc.aio.Channel] = []  # a channel nobody references is closed under its stub


def _stub(server: Server, app: str, token: str | None = None, **tls: Any) -> Any:
    ch = secure.channel(f"127.0.0.1:{server.ports[app]}", token=token, **tls)
    _CHANNELS.append(ch)
    return secure.stub(ch)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        if hasattr(call, "read"):  # a server stream: its status comes with the first read
            await call.read()
        else:
            await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call succeeded")


async def digest(server: Server) -> str:
    """Every instance's state and history on every app, as the apps themselves see them."""
    h = hashlib.sha256()
    for app in APPS:
        stub = _stub(server, app, TOKENS[app])
        ids = sorted((await stub.ListInstanceIDs(spb.ListInstanceIDsRequest(pageSize=1000))).instanceIds)
        for iid in ids:
            state = await stub.GetInstance(spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True))
            history = await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId=iid))
            h.update(f"{app}/{iid}".encode())
            h.update(state.SerializeToString(deterministic=True))
            h.update(history.SerializeToString(deterministic=True))
    return h.hexdigest()


async def _seed(server: Server) -> None:
    for app in APPS:
        stub = _stub(server, app, TOKENS[app])
        await stub.StartInstance(spb.CreateInstanceRequest(instanceId=f"{app}-seed", name="wf"))


# -- every RPC refuses callers without the right credentials ------------------------------------

_COMPLETE = apb.WorkflowAction(
    id=0,
    completeWorkflow=apb.CompleteWorkflowAction(workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED),
)
RPCS: dict[str, Callable[[], Any]] = {
    "Hello": lambda: empty_pb2.Empty(),
    "StartInstance": lambda: spb.CreateInstanceRequest(instanceId="intruder", name="wf"),
    "GetInstance": lambda: spb.GetInstanceRequest(instanceId="orders-seed"),
    "WaitForInstanceStart": lambda: spb.GetInstanceRequest(instanceId="orders-seed"),
    "WaitForInstanceCompletion": lambda: spb.GetInstanceRequest(instanceId="orders-seed"),
    "RaiseEvent": lambda: spb.RaiseEventRequest(instanceId="orders-seed", name="go"),
    "TerminateInstance": lambda: spb.TerminateRequest(instanceId="orders-seed"),
    "SuspendInstance": lambda: spb.SuspendRequest(instanceId="orders-seed"),
    "ResumeInstance": lambda: spb.ResumeRequest(instanceId="orders-seed"),
    "PurgeInstances": lambda: spb.PurgeInstancesRequest(instanceId="orders-seed", force=True),
    "GetWorkItems": lambda: spb.GetWorkItemsRequest(),
    "CompleteActivityTask": lambda: spb.ActivityResponse(
        instanceId="orders-seed", taskId=0, completionToken="t"
    ),
    "CompleteOrchestratorTask": lambda: spb.WorkflowResponse(
        instanceId="orders-seed", completionToken="t", actions=[_COMPLETE]
    ),
    "CompleteWorkflowTask": lambda: spb.WorkflowResponse(
        instanceId="orders-seed", completionToken="t", actions=[_COMPLETE]
    ),
    "RerunWorkflowFromEvent": lambda: spb.RerunWorkflowFromEventRequest(
        sourceInstanceID="orders-seed", eventID=0
    ),
    "ListInstanceIDs": lambda: spb.ListInstanceIDsRequest(),
    "GetInstanceHistory": lambda: spb.GetInstanceHistoryRequest(instanceId="orders-seed"),
}


def test_the_table_covers_every_rpc_of_the_service() -> None:
    service = spb.DESCRIPTOR.services_by_name["TaskHubSidecarService"]
    assert set(RPCS) == {m.name for m in service.methods}
    assert len(RPCS) == 17


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.CA(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def token_server() -> AsyncIterator[Server]:
    async with running(token_config()) as srv:
        await _seed(srv)
        yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mtls_server(ca: pki.CA) -> AsyncIterator[Server]:
    pair = ca.server()
    config = replace(
        BASE,
        apps=_listeners(False),
        security=Security(tls=TlsFiles(cert=pair.cert, key=pair.key, client_ca=ca.cert)),
    )
    async with running(config) as srv:
        for app in APPS:
            stub = _stub(srv, app, ca=ca.cert, client=ca.client(app))
            await stub.StartInstance(spb.CreateInstanceRequest(instanceId=f"{app}-seed", name="wf"))
        yield srv


async def _mtls_digest(server: Server, ca: pki.CA) -> str:
    h = hashlib.sha256()
    for app in APPS:
        stub = _stub(server, app, ca=ca.cert, client=ca.client(app))
        for iid in sorted((await stub.ListInstanceIDs(spb.ListInstanceIDsRequest())).instanceIds):
            state = await stub.GetInstance(spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True))
            history = await stub.GetInstanceHistory(spb.GetInstanceHistoryRequest(instanceId=iid))
            h.update(
                state.SerializeToString(deterministic=True) + history.SerializeToString(deterministic=True)
            )
    return h.hexdigest()


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        ("none", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("other-app", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
@pytest.mark.asyncio(loop_scope="session")
async def test_every_rpc_refuses_without_the_apps_token(token_server, rpc, credential, expected) -> None:  # type: ignore[no-untyped-def]
    token = {"none": None, "wrong": "not-a-token", "other-app": TOKENS["payments"]}[credential]
    before = await digest(token_server)
    stub = _stub(token_server, "orders", token)
    code, message = await _code(getattr(stub, rpc)(RPCS[rpc](), timeout=5))
    assert code == expected, message
    assert "dapr-api-token" in message
    assert TOKENS["payments"] not in message  # a secret is never echoed
    assert await digest(token_server) == before


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.asyncio(loop_scope="session")
async def test_every_rpc_refuses_another_apps_certificate(mtls_server, ca, rpc) -> None:  # type: ignore[no-untyped-def]
    before = await _mtls_digest(mtls_server, ca)
    stub = _stub(mtls_server, "orders", ca=ca.cert, client=ca.client("payments"))
    code, message = await _code(getattr(stub, rpc)(RPCS[rpc](), timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED, message
    assert "'payments'" in message and "'orders'" in message
    assert await _mtls_digest(mtls_server, ca) == before


@pytest.mark.asyncio(loop_scope="session")
async def test_mtls_without_a_client_certificate_is_refused_at_the_handshake(mtls_server, ca) -> None:  # type: ignore[no-untyped-def]
    stub = _stub(mtls_server, "orders", ca=ca.cert)
    code, _ = await _code(stub.Hello(empty_pb2.Empty(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio(loop_scope="session")
async def test_mtls_certificate_names_the_app(mtls_server, ca) -> None:  # type: ignore[no-untyped-def]
    orders = _stub(mtls_server, "orders", ca=ca.cert, client=ca.client("orders"))
    ids = (await orders.ListInstanceIDs(spb.ListInstanceIDsRequest())).instanceIds
    assert "orders-seed" in ids and "payments-seed" not in ids
    # A certificate without a SPIFFE ID of Dapr's form proves no app.
    odd = ca.client("odd", uri="https://example.invalid/orders")
    code, message = await _code(
        _stub(mtls_server, "orders", ca=ca.cert, client=odd).Hello(empty_pb2.Empty(), timeout=5)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "SPIFFE" in message
    # A certificate from another CA does not get through the handshake.
    other = pki.CA(ca.folder / "other", name="other-ca")
    code, _ = await _code(
        _stub(mtls_server, "orders", ca=ca.cert, client=other.client("orders")).Hello(
            empty_pb2.Empty(), timeout=5
        )
    )
    assert code == grpc.StatusCode.UNAVAILABLE


# -- attacks: a stranger's stream, forged completions -----------------------------------------


async def test_a_stream_gets_only_the_work_of_the_app_its_token_proves() -> None:
    async with running(token_config(shared=True)) as srv:
        assert srv.ports["orders"] == srv.ports["payments"]  # one listener, two apps
        code, _ = await _code(_stub(srv, "orders").GetWorkItems(spb.GetWorkItemsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # a stranger's stream is refused
        orders, payments = _stub(srv, "orders", TOKENS["orders"]), _stub(srv, "payments", TOKENS["payments"])
        intruder = RawWorker(payments)  # payments' credentials on the shared port
        worker = RawWorker(orders)
        try:
            await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
            item = await worker.next()
            assert item.workflowRequest.instanceId == "o1"
            with pytest.raises(TimeoutError):
                await intruder.next(timeout=1.0)
        finally:
            await worker.close()
            await intruder.close()


async def test_forged_completions_are_refused_and_the_history_is_unchanged() -> None:
    async with running(token_config()) as srv:
        orders = _stub(srv, "orders", TOKENS["orders"])
        forger = _stub(srv, "payments", TOKENS["payments"])
        worker = RawWorker(orders)
        try:
            await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
            item = await worker.next()
            before = await digest(srv)
            forged = spb.WorkflowResponse(instanceId="o1", actions=[_done(0, '"forged"')])
            # By instance ID alone, from another app: that app has no such work in flight.
            code, message = await _code(forger.CompleteOrchestratorTask(forged))
            assert code == grpc.StatusCode.NOT_FOUND and "'payments'" in message
            # Another app holding the token it observed: refused.
            forged.completionToken = item.completionToken
            code, message = await _code(forger.CompleteOrchestratorTask(forged))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "'orders'" in message
            # The right app with the token but another instance ID: refused.
            wrong = spb.WorkflowResponse(instanceId="o2", completionToken=item.completionToken)
            code, _ = await _code(orders.CompleteOrchestratorTask(wrong))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert await digest(srv) == before
            # The worker's own completion still lands.
            await orders.CompleteOrchestratorTask(
                spb.WorkflowResponse(
                    instanceId="o1", completionToken=item.completionToken, actions=[_schedule(0, "charge")]
                )
            )
            act = await worker.next()
            mistaken = spb.ActivityResponse(
                instanceId="o1",
                taskId=act.activityRequest.taskId + 5,
                completionToken=act.completionToken,
                result=wrappers_pb2.StringValue(value='"x"'),
            )
            code, message = await _code(orders.CompleteActivityTask(mistaken))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "task" in message
            await _answer_activity(orders, act, '"ok"')
            turn = await worker.next()
            assert turn.workflowRequest.newEvents[1].taskCompleted.result.value == '"ok"'
        finally:
            await worker.close()


async def test_an_sdk_that_never_echoes_the_token_completes_its_own_apps_work() -> None:
    """durabletask-go before v0.14 (go-sdk v1.15) sends no completionToken: such completions are
    matched by instance and task, among the work dispatched to the caller's own app only."""
    async with running(token_config()) as srv:
        orders = _stub(srv, "orders", TOKENS["orders"])
        worker = RawWorker(orders)
        try:
            await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
            await worker.next()
            await orders.CompleteOrchestratorTask(
                spb.WorkflowResponse(instanceId="o1", actions=[_schedule(0, "charge")])
            )
            act = await worker.next()
            code, _ = await _code(
                _stub(srv, "payments", TOKENS["payments"]).CompleteActivityTask(
                    spb.ActivityResponse(instanceId="o1", taskId=act.activityRequest.taskId)
                )
            )
            assert code == grpc.StatusCode.NOT_FOUND  # not payments' work
            await orders.CompleteActivityTask(
                spb.ActivityResponse(
                    instanceId="o1",
                    taskId=act.activityRequest.taskId,
                    result=wrappers_pb2.StringValue(value='"ok"'),
                )
            )
            turn = await worker.next()
            assert turn.workflowRequest.newEvents[1].taskCompleted.result.value == '"ok"'
        finally:
            await worker.close()


# -- the authorization policy -------------------------------------------------------------------


def _policy(**apps: AppRules) -> Policy:
    return Policy(apps=apps)


async def test_cross_app_management_follows_the_policy() -> None:
    policy = _policy(payments=AppRules(manage={"orders": frozenset({"read"})}))
    async with running(token_config(policy=policy)) as srv:
        await _seed(srv)
        orders = _stub(srv, "orders", TOKENS["orders"])
        there = opb.TaskRouter(targetAppID="payments")
        # Read is granted.
        state = await orders.GetInstance(spb.GetInstanceRequest(instanceId="payments-seed", router=there))
        assert state.exists
        before = await digest(srv)
        denied = {
            "TerminateInstance": spb.TerminateRequest(instanceId="payments-seed", router=there),
            "SuspendInstance": spb.SuspendRequest(instanceId="payments-seed", router=there),
            "ResumeInstance": spb.ResumeRequest(instanceId="payments-seed", router=there),
            "RaiseEvent": spb.RaiseEventRequest(instanceId="payments-seed", name="e", router=there),
            "PurgeInstances": spb.PurgeInstancesRequest(instanceId="payments-seed", force=True, router=there),
            "StartInstance": spb.CreateInstanceRequest(instanceId="planted", name="wf", router=there),
            "RerunWorkflowFromEvent": spb.RerunWorkflowFromEventRequest(
                sourceInstanceID="payments-seed", eventID=0, router=there
            ),
        }
        for rpc, request in denied.items():
            code, message = await _code(getattr(orders, rpc)(request, timeout=5))
            assert code == grpc.StatusCode.PERMISSION_DENIED, (rpc, message)
            assert "'orders'" in message and "'payments'" in message
        by_filter = spb.PurgeInstancesRequest(
            purgeInstanceFilter=spb.PurgeInstanceFilter(runtimeStatus=[opb.ORCHESTRATION_STATUS_PENDING]),
            force=True,
            router=there,
        )
        code, _ = await _code(orders.PurgeInstances(by_filter))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert await digest(srv) == before
        # Without a router the filter sees the caller's own instances only.
        mine = spb.PurgeInstancesRequest(
            purgeInstanceFilter=spb.PurgeInstanceFilter(runtimeStatus=[opb.ORCHESTRATION_STATUS_PENDING]),
            force=True,
        )
        assert (await orders.PurgeInstances(mine)).deletedInstanceCount == 1
        payments = _stub(srv, "payments", TOKENS["payments"])
        assert (await payments.GetInstance(spb.GetInstanceRequest(instanceId="payments-seed"))).exists


async def test_without_a_policy_apps_manage_each_other_as_before() -> None:
    async with running(token_config()) as srv:
        await _seed(srv)
        orders = _stub(srv, "orders", TOKENS["orders"])
        there = opb.TaskRouter(targetAppID="payments")
        await orders.TerminateInstance(spb.TerminateRequest(instanceId="payments-seed", router=there))
        state = await orders.GetInstance(spb.GetInstanceRequest(instanceId="payments-seed", router=there))
        assert state.workflowState.workflowStatus == opb.ORCHESTRATION_STATUS_TERMINATED


@pytest.mark.parametrize("kind", ["activity", "child"])
async def test_a_denied_cross_app_call_fails_the_parents_task(kind: str) -> None:
    policy = _policy(payments=AppRules(callers=frozenset({"shipping"})))
    async with running(token_config(policy=policy)) as srv:
        orders = _stub(srv, "orders", TOKENS["orders"])
        payments = _stub(srv, "payments", TOKENS["payments"])
        worker, pay_worker = RawWorker(orders), RawWorker(payments)
        try:
            await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
            item = await worker.next()
            if kind == "activity":
                action = _schedule(0, "charge", target="payments")
            else:
                action = apb.WorkflowAction(
                    id=0, createChildWorkflow=apb.CreateChildWorkflowAction(name="settle", instanceId="c1")
                )
                action.router.targetAppID = "payments"
            await orders.CompleteOrchestratorTask(
                spb.WorkflowResponse(instanceId="o1", completionToken=item.completionToken, actions=[action])
            )
            turn = (await worker.next()).workflowRequest
            event = turn.newEvents[1]
            failed = event.taskFailed if kind == "activity" else event.childWorkflowInstanceFailed
            assert failed.taskScheduledId == 0
            details = failed.failureDetails
            assert details.errorType == "CrossAppCallDenied" and details.isNonRetriable
            assert "'orders'" in details.errorMessage and "'payments'" in details.errorMessage
            with pytest.raises(TimeoutError):  # nothing reached the payments app
                await pay_worker.next(timeout=1.0)
            if kind == "child":
                child = await payments.GetInstance(spb.GetInstanceRequest(instanceId="c1"))
                assert not child.exists
        finally:
            await worker.close()
            await pay_worker.close()


async def test_one_shared_listener_serves_two_apps_by_token() -> None:
    async with running(token_config(shared=True)) as srv:
        orders = _stub(srv, "orders", TOKENS["orders"])
        payments = _stub(srv, "payments", TOKENS["payments"])
        worker, pay_worker = RawWorker(orders), RawWorker(payments)
        try:
            await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
            item = await worker.next()
            started = item.workflowRequest.newEvents[1]
            assert started.router.sourceAppID == "orders"
            await orders.CompleteOrchestratorTask(
                spb.WorkflowResponse(
                    instanceId="o1",
                    completionToken=item.completionToken,
                    actions=[_schedule(0, "charge", target="payments")],
                )
            )
            act = await pay_worker.next()
            assert act.activityRequest.name == "charge"
            await _answer_activity(payments, act, '"paid"')
            back = (await worker.next()).workflowRequest
            assert back.newEvents[1].taskCompleted.result.value == '"paid"'
            # Each app lists only its own instances although both use one port.
            assert list((await payments.ListInstanceIDs(spb.ListInstanceIDsRequest())).instanceIds) == []
            assert list((await orders.ListInstanceIDs(spb.ListInstanceIDsRequest())).instanceIds) == ["o1"]
        finally:
            await worker.close()
            await pay_worker.close()


# -- TLS: the certificate is picked up again when its files change ------------------------------


async def test_tls_certificate_rotation_needs_no_restart(tmp_path: Path) -> None:
    first = pki.CA(tmp_path / "one", name="first-ca")
    live = tmp_path / "live"
    live.mkdir()
    pair = first.server()
    cert, key = live / "server.crt", live / "server.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    config = replace(
        token_config(), security=replace(token_config().security, tls=TlsFiles(cert=cert, key=key))
    )
    async with running(config) as srv:
        await _stub(srv, "orders", TOKENS["orders"], ca=first.cert).Hello(empty_pb2.Empty(), timeout=5)
        second = pki.CA(tmp_path / "two", name="second-ca")
        rotated = second.server()
        key.write_bytes(rotated.key_pem)
        cert.write_bytes(rotated.cert_pem)

        async def new_cert_served() -> bool:
            try:
                stub = _stub(srv, "orders", TOKENS["orders"], ca=second.cert)
                await stub.Hello(empty_pb2.Empty(), timeout=2)
                return True
            except grpc.aio.AioRpcError:
                return False

        for _ in range(50):
            if await new_cert_served():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the rotated certificate was never served")
        assert srv.tls is not None and srv.tls.reloads == 1
        code, _ = await _code(
            _stub(srv, "orders", TOKENS["orders"], ca=first.cert).Hello(empty_pb2.Empty(), timeout=3)
        )
        assert code == grpc.StatusCode.UNAVAILABLE  # the old CA no longer verifies the server
