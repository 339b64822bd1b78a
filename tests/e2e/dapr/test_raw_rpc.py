"""Contract points the high-level dapr client does not expose, checked with the raw stub
generated inside the dapr 1.19 wheel (same wire schema as the SDK)."""

from __future__ import annotations

import json

import dapr.ext.workflow._durabletask.internal.orchestrator_service_pb2_grpc as stubs
import dapr.ext.workflow._durabletask.internal.protos as pb
import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus, when_all

from tests.e2e.dapr.support import (
    HOST,
    assert_completed,
    running_runtime,
    uid,
    wait_custom_status,
    workflow_client,
)
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)


def ident(ctx, x):
    return x


def child_wf(ctx, x):
    v = yield ctx.call_activity(ident, input=x)
    return v


def parent_wf(ctx, n):
    r = yield when_all([ctx.call_child_workflow(child_wf, input=i) for i in range(n)])
    return r


def waiting_wf(ctx, _):
    ctx.set_custom_status(json.dumps("waiting"))
    v = yield ctx.wait_for_external_event("go")
    return v


@pytest.fixture(scope="module")
def env():
    with (
        Server(["raw"]) as srv,
        running_runtime(srv.port(), [child_wf, parent_wf, waiting_wf], [ident]),
        workflow_client(srv.port()) as client,
        grpc.insecure_channel(f"{HOST}:{srv.port()}") as channel,
    ):
        yield client, stubs.TaskHubSidecarServiceStub(channel)


def test_hello(env):
    _, stub = env
    stub.Hello(pb.empty_pb2.Empty(), timeout=10)


def test_recursive_purge_reports_deleted_count(env):
    client, stub = env
    iid = client.schedule_new_workflow(parent_wf, input=2, instance_id=uid("rawpurge"))
    assert assert_completed(client, iid) == [0, 1]
    res = stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=iid, recursive=True), timeout=30)
    assert res.deletedInstanceCount == 3, res
    assert client.get_workflow_state(iid) is None


def test_purge_running_instance_with_force(env):
    client, stub = env
    iid = client.schedule_new_workflow(waiting_wf, instance_id=uid("rawforce"))
    wait_custom_status(client, iid, "waiting")
    with pytest.raises(grpc.RpcError):
        stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=iid), timeout=30)
    st = client.get_workflow_state(iid)
    assert st is not None and st.runtime_status == WorkflowStatus.RUNNING
    res = stub.PurgeInstances(pb.PurgeInstancesRequest(instanceId=iid, force=True), timeout=30)
    assert res.deletedInstanceCount == 1, res
    assert client.get_workflow_state(iid) is None


def test_get_instance_unknown_is_exists_false_not_an_error(env):
    _, stub = env
    res = stub.GetInstance(pb.GetInstanceRequest(instanceId=uid("rawnone")), timeout=10)
    assert res.exists is False


def test_both_completion_rpcs_are_served(env):
    """Go >= v0.12 completes workflow turns with CompleteWorkflowTask, everyone else with
    CompleteOrchestratorTask: both must exist (a stale/unknown completion may be refused,
    but not as UNIMPLEMENTED)."""
    _, stub = env
    for rpc in (stub.CompleteWorkflowTask, stub.CompleteOrchestratorTask):
        try:
            rpc(
                pb.WorkflowResponse(instanceId=uid("rawnobody"), completionToken="stale"),
                timeout=10,
            )
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.UNIMPLEMENTED, e
