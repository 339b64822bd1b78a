"""Multi-app routing on the wire: app IDs bound to listeners, routers stamped."""

from __future__ import annotations

import grpc
import pytest

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import Config
from tests.service.conftest import RawWorker, with_apps
from tests.service.test_worker_protocol import _answer_activity, _schedule


@pytest.fixture
def config() -> Config:
    return with_apps("orders", "payments")


async def test_cross_app_activity_runs_on_target_and_returns(server) -> None:  # type: ignore[no-untyped-def]
    orders_ch = grpc.aio.insecure_channel(f"127.0.0.1:{server.ports['orders']}")
    payments_ch = grpc.aio.insecure_channel(f"127.0.0.1:{server.ports['payments']}")
    orders = sgrpc.TaskHubSidecarServiceStub(orders_ch)  # type: ignore[no-untyped-call]
    payments = sgrpc.TaskHubSidecarServiceStub(payments_ch)  # type: ignore[no-untyped-call]
    order_worker = RawWorker(orders)
    try:
        await orders.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="order"))
        first = await order_worker.next()
        started = first.workflowRequest.newEvents[1]
        assert started.router.sourceAppID == "orders"  # stamped: Java needs it
        await orders.CompleteOrchestratorTask(
            spb.WorkflowResponse(
                instanceId="o1",
                completionToken=first.completionToken,
                actions=[_schedule(0, "charge", target="payments")],
            )
        )
        # No payments worker yet: the activity waits, nothing fails.
        with pytest.raises(TimeoutError):
            await order_worker.next(timeout=1.0)
        pay_worker = RawWorker(payments)
        try:
            act = await pay_worker.next()
            assert act.activityRequest.name == "charge"
            assert act.activityRequest.workflowInstance.instanceId == "o1"
            await _answer_activity(payments, act, '"paid"')
            back = (await order_worker.next()).workflowRequest
            done = back.newEvents[1]
            assert done.taskCompleted.result.value == '"paid"'
            assert done.router.sourceAppID == "orders" and done.router.targetAppID == "payments"
            scheduled = back.pastEvents[-1]
            assert scheduled.router.sourceAppID == "orders" and scheduled.router.targetAppID == "payments"
        finally:
            await pay_worker.close()
        # The same instance ID on the other app is a different instance.
        assert not (await payments.GetInstance(spb.GetInstanceRequest(instanceId="o1"))).exists
        await payments.StartInstance(spb.CreateInstanceRequest(instanceId="o1", name="other"))
        mine = (await orders.GetInstance(spb.GetInstanceRequest(instanceId="o1"))).workflowState
        theirs = (await payments.GetInstance(spb.GetInstanceRequest(instanceId="o1"))).workflowState
        assert (mine.name, theirs.name) == ("order", "other")
        # A client request with a router acts on the target app's instance.
        routed = spb.GetInstanceRequest(instanceId="o1", router=opb.TaskRouter(targetAppID="payments"))
        assert (await orders.GetInstance(routed)).workflowState.name == "other"
    finally:
        await order_worker.close()
        await orders_ch.close()
        await payments_ch.close()
