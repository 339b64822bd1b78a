"""The Admin service (protos/admin.proto) over real gRPC: listing filters and keyset paging,
per-app status (workers, work waiting with no worker), authorization and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from backend._proto import admin_pb2 as apb
from backend._proto import admin_pb2_grpc as agrpc
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import AppListener, Config, Security
from backend.security.policy import AppRules, Policy
from backend.security.secrets import Secret
from backend.server import Server
from tests.service import secure
from tests.service.conftest import BASE, RawWorker
from tests.service.test_worker_protocol import _schedule

TOKENS = {"orders": "orders-token-admin-1", "payments": "payments-token-admin-2"}
OPERATOR_TOKEN = "operator-token-admin-3"


@pytest.fixture
def config() -> Config:
    return replace(
        BASE, apps=tuple(AppListener(app_id=a, host="127.0.0.1", port=0) for a in ("orders", "payments"))
    )


@pytest.fixture
async def channels(server: Server) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    chans = {app: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for app, port in server.ports.items()}
    try:
        yield chans
    finally:
        for ch in chans.values():
            await ch.close()


def admin(ch: grpc.aio.Channel) -> agrpc.AdminStub:
    return agrpc.AdminStub(ch)  # type: ignore[no-untyped-call]


def sidecar(ch: grpc.aio.Channel) -> sgrpc.TaskHubSidecarServiceStub:
    return sgrpc.TaskHubSidecarServiceStub(ch)  # type: ignore[no-untyped-call]


async def _start(stub: Any, iid: str, name: str) -> None:
    await stub.StartInstance(
        spb.CreateInstanceRequest(instanceId=iid, name=name, input=wrappers_pb2.StringValue(value='"x"'))
    )


async def _all(stub: agrpc.AdminStub, **filters: Any) -> list[apb.InstanceSummary]:
    out: list[apb.InstanceSummary] = []
    request = apb.ListInstancesRequest(**filters)
    while True:
        page = await stub.ListInstances(request)
        out.extend(page.instances)
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


async def test_listing_filters_and_keyset_paging(channels) -> None:  # type: ignore[no-untyped-def]
    orders, payments = sidecar(channels["orders"]), sidecar(channels["payments"])
    for n in range(5):
        await _start(orders, f"o-{n}", "checkout" if n % 2 else "refund")
    await _start(payments, "p-0", "charge")
    await orders.TerminateInstance(spb.TerminateRequest(instanceId="o-1", recursive=True))
    stub = admin(channels["orders"])  # an unsecured loopback listener: every app is visible

    everything = await _all(stub)
    assert {(s.app_id, s.instance_id) for s in everything} == {("orders", f"o-{n}") for n in range(5)} | {
        ("payments", "p-0")
    }
    keys = [(s.created_at.ToDatetime(), s.app_id, s.instance_id) for s in everything]
    assert keys == sorted(keys, reverse=True)  # newest first
    assert everything[0].instance_id == "p-0" and everything[0].name == "charge"

    # Pages of 2 walk the same rows, none twice, none skipped.
    paged: list[str] = []
    request = apb.ListInstancesRequest(page_size=2)
    pages = 0
    while True:
        page = await stub.ListInstances(request)
        assert len(page.instances) <= 2
        paged.extend(s.instance_id for s in page.instances)
        pages += 1
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert paged == [s.instance_id for s in everything] and pages == 3

    assert {s.instance_id for s in await _all(stub, app_ids=["payments"])} == {"p-0"}
    assert {s.instance_id for s in await _all(stub, name="checkout")} == {"o-1", "o-3"}
    terminated = await _all(stub, statuses=[apb.TERMINATED])
    assert [s.instance_id for s in terminated] == ["o-1"]
    assert terminated[0].status == apb.TERMINATED
    pending = await _all(stub, statuses=[apb.PENDING], app_ids=["orders"], name="refund")
    assert {s.instance_id for s in pending} == {"o-0", "o-2", "o-4"}
    assert {s.instance_id for s in await _all(stub, instance_id_prefix="o-")} == {f"o-{n}" for n in range(5)}
    assert await _all(stub, instance_id_prefix="zzz") == []

    middle = next(s for s in everything if s.instance_id == "o-2").created_at.ToDatetime(tzinfo=UTC)
    request_after = apb.ListInstancesRequest(app_ids=["orders"])
    request_after.created_after.FromDatetime(middle)
    after = await stub.ListInstances(request_after)
    assert {s.instance_id for s in after.instances} == {"o-2", "o-3", "o-4"}  # inclusive
    request_before = apb.ListInstancesRequest(app_ids=["orders"])
    request_before.created_before.FromDatetime(middle)
    before = await stub.ListInstances(request_before)
    assert {s.instance_id for s in before.instances} == {"o-0", "o-1"}  # exclusive

    counts = await stub.CountInstances(apb.CountInstancesRequest())
    by_app = {c.app_id: dict(c.counts) for c in counts.apps}
    assert by_app == {"orders": {"PENDING": 4, "TERMINATED": 1}, "payments": {"PENDING": 1}}


async def test_bad_filters_and_page_tokens_are_invalid_argument(channels) -> None:  # type: ignore[no-untyped-def]
    orders = sidecar(channels["orders"])
    for n in range(3):
        await _start(orders, f"b-{n}", "wf")
    stub = admin(channels["orders"])
    first = await stub.ListInstances(apb.ListInstancesRequest(page_size=1))
    assert first.next_page_token
    bad: list[apb.ListInstancesRequest] = [
        apb.ListInstancesRequest(page_token="not-a-token"),
        apb.ListInstancesRequest(page_token="eyJ2IjoxfQ"),  # base64 JSON of the wrong shape
        apb.ListInstancesRequest(page_token=first.next_page_token, name="other"),  # other filters
        apb.ListInstancesRequest(page_size=1001),
        apb.ListInstancesRequest(page_size=-1),
        apb.ListInstancesRequest(statuses=[42]),  # type: ignore[list-item]
        apb.ListInstancesRequest(name="n" * 2000),
        apb.ListInstancesRequest(app_ids=[""]),
    ]
    later = apb.ListInstancesRequest()
    later.created_after.FromDatetime(datetime.now(UTC))
    later.created_before.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    bad.append(later)
    for request in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListInstances(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert len(info.value.details() or "") < 200
    # The token still works with its own filters.
    second = await stub.ListInstances(apb.ListInstancesRequest(page_size=1, page_token=first.next_page_token))
    assert second.instances[0].instance_id != first.instances[0].instance_id


async def test_status_counts_waiting_work_with_and_without_workers(channels) -> None:  # type: ignore[no-untyped-def]
    orders = sidecar(channels["orders"])
    stub = admin(channels["orders"])
    await _start(orders, "s-0", "wf")
    status = {a.app_id: a for a in (await stub.GetAppsStatus(apb.GetAppsStatusRequest())).apps}
    assert set(status) == {"orders", "payments"}
    o = status["orders"]
    assert o.served and o.workers == 0 and o.waiting == 1 and o.waiting_without_worker == 1
    assert o.HasField("oldest_waiting_since") and o.oldest_waiting_seconds >= 0
    assert dict(o.instances) == {"PENDING": 1}
    assert status["payments"].waiting == 0 and not status["payments"].HasField("oldest_waiting_since")

    # A worker of orders takes the workflow and schedules an activity on payments, which has
    # no worker: the activity waits with no worker, and the orders stream is counted.
    worker = RawWorker(orders)
    try:
        item = await worker.next()
        await orders.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="s-0",
                completionToken=item.completionToken,
                actions=[_schedule(0, "charge", target="payments")],
            )
        )
        for _ in range(100):
            status = {a.app_id: a for a in (await stub.GetAppsStatus(apb.GetAppsStatusRequest())).apps}
            if status["payments"].waiting == 1 and status["orders"].workers == 1:
                break
            await asyncio.sleep(0.05)
        p = status["payments"]
        assert p.waiting == 1 and p.waiting_without_worker == 1 and p.workers == 0
        assert p.HasField("oldest_waiting_since")
        assert status["orders"].workers == 1 and status["orders"].waiting == 0
        assert dict(status["orders"].instances) == {"RUNNING": 1}
        only = await stub.GetAppsStatus(apb.GetAppsStatusRequest(app_ids=["payments"]))
        assert [a.app_id for a in only.apps] == ["payments"]
    finally:
        await worker.close()


def _secured(policy: Policy | None = None) -> Config:
    return replace(
        BASE,
        apps=tuple(AppListener(app_id=a, host="127.0.0.1", port=0) for a in ("orders", "payments")),
        security=Security(
            app_tokens={a: Secret.literal(t, f"test:{a}") for a, t in TOKENS.items()},
            admin_token=Secret.literal(OPERATOR_TOKEN, "test:admin"),
            policy=policy or Policy(),
        ),
    )


@pytest.fixture
async def secured(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    srv = Server(_secured(getattr(request, "param", None)))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _address(server: Server, app: str) -> str:
    return f"127.0.0.1:{server.ports[app]}"


async def _seed(server: Server) -> None:
    for app in ("orders", "payments"):
        async with secure.channel(_address(server, app), token=TOKENS[app]) as ch:
            await _start(sidecar(ch), f"{app}-1", "wf")


async def test_an_app_sees_only_its_own_and_the_operator_sees_all(secured: Server) -> None:
    await _seed(secured)
    address = _address(secured, "orders")
    async with secure.channel(address, token=TOKENS["orders"]) as ch:
        stub = admin(ch)
        assert {s.app_id for s in await _all(stub)} == {"orders"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListInstances(apb.ListInstancesRequest(app_ids=["payments"]))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "payments" in (info.value.details() or "")
        apps = (await stub.GetAppsStatus(apb.GetAppsStatusRequest())).apps
        assert [a.app_id for a in apps] == ["orders"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetAppsStatus(apb.GetAppsStatusRequest(app_ids=["payments"]))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        counts = await stub.CountInstances(apb.CountInstancesRequest())
        assert [c.app_id for c in counts.apps] == ["orders"]
    async with secure.channel(address, token=OPERATOR_TOKEN) as ch:
        assert {s.app_id for s in await _all(admin(ch))} == {"orders", "payments"}
        apps = (await admin(ch).GetAppsStatus(apb.GetAppsStatusRequest())).apps
        assert [a.app_id for a in apps] == ["orders", "payments"]
        # The operator token is for the Admin service only: it is nobody on the sidecar service.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await sidecar(ch).GetInstance(spb.GetInstanceRequest(instanceId="orders-1"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with secure.channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin(ch).ListInstances(apb.ListInstancesRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with secure.channel(address, token="wrong-token-xyz") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin(ch).GetAppsStatus(apb.GetAppsStatusRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "secured",
    # Deny by default: only the grant lets orders see payments; payments may not see orders.
    [Policy(default_allow=False, apps={"payments": AppRules(manage={"orders": frozenset({"read"})})})],
    indirect=True,
)
async def test_a_policy_grant_to_read_widens_the_listing(secured: Server) -> None:
    await _seed(secured)
    async with secure.channel(_address(secured, "orders"), token=TOKENS["orders"]) as ch:
        assert {s.app_id for s in await _all(admin(ch))} == {"orders", "payments"}
    async with secure.channel(_address(secured, "payments"), token=TOKENS["payments"]) as ch:
        assert {s.app_id for s in await _all(admin(ch))} == {"payments"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin(ch).ListInstances(apb.ListInstancesRequest(app_ids=["orders"]))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
