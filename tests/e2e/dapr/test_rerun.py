"""RerunWorkflowFromEvent with the dapr 1.19 client: fork a finished workflow at
an activity, optionally with new input; the source stays as it was."""

from __future__ import annotations

import threading
from collections import Counter

import grpc
import pytest
from dapr.ext.workflow import WorkflowHistoryEventType as E
from dapr.ext.workflow import WorkflowStatus

from tests.e2e.dapr.support import assert_completed, running_runtime, uid, workflow_client
from tests.e2e.harness import Server

CALLS: Counter[str] = Counter()
_LOCK = threading.Lock()


def step(ctx, x):
    with _LOCK:
        CALLS[str(x)] += 1
    return f"s{x}"


def two_steps_wf(ctx, _):
    a = yield ctx.call_activity("step", input="one")
    b = yield ctx.call_activity("step", input="two")
    return [a, b]


def parent_wf(ctx, _):
    r = yield ctx.call_child_workflow("two_steps_wf")
    return r


@pytest.fixture(scope="module")
def client():
    with (
        Server(["rerun"]) as srv,
        running_runtime(srv.port(), [two_steps_wf, parent_wf], [step]),
        workflow_client(srv.port()) as c,
    ):
        yield c


def _scheduled_ids(client, iid: str) -> list[int]:
    return [e.event_id for e in client.get_workflow_history(iid) if e.event_type == E.TASK_SCHEDULED]


def test_rerun_from_the_second_activity_keeps_the_first_result(client):
    src = client.schedule_new_workflow(two_steps_wf, instance_id=uid("src"))
    assert assert_completed(client, src) == ["sone", "stwo"]
    before = CALLS.copy()
    second = _scheduled_ids(client, src)[1]
    new = client.rerun_workflow_from_event(src, second, new_instance_id=uid("fork"))
    assert assert_completed(client, new) == ["sone", "stwo"]
    # Only the second activity ran again; the first one's result was kept.
    assert CALLS["one"] == before["one"] and CALLS["two"] == before["two"] + 1
    assert client.get_workflow_state(src).runtime_status == WorkflowStatus.COMPLETED


def test_rerun_with_new_input_for_the_target_activity(client):
    src = client.schedule_new_workflow(two_steps_wf, instance_id=uid("src"))
    assert_completed(client, src)
    first = _scheduled_ids(client, src)[0]
    new = client.rerun_workflow_from_event(src, first, new_instance_id=uid("fork"), input="uno")
    assert assert_completed(client, new) == ["suno", "stwo"]


def test_rerun_refuses_running_unknown_and_non_task_events(client):
    with pytest.raises(grpc.RpcError) as info:
        client.rerun_workflow_from_event(uid("ghost"), 1, new_instance_id=uid("x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    src = client.schedule_new_workflow(two_steps_wf, instance_id=uid("src"))
    assert_completed(client, src)
    with pytest.raises(grpc.RpcError) as info:  # event 999 does not exist
        client.rerun_workflow_from_event(src, 999, new_instance_id=uid("x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:  # the same ID as the source
        client.rerun_workflow_from_event(src, 1, new_instance_id=src)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerun_from_a_child_workflow_event_runs_a_new_child(client):
    src = client.schedule_new_workflow(parent_wf, instance_id=uid("par"))
    assert assert_completed(client, src) == ["sone", "stwo"]
    created = [
        e for e in client.get_workflow_history(src) if e.event_type == E.CHILD_WORKFLOW_INSTANCE_CREATED
    ]
    new_id = uid("forkp")
    new = client.rerun_workflow_from_event(src, created[0].event_id, new_instance_id=new_id)
    assert assert_completed(client, new) == ["sone", "stwo"]
    child = client.get_workflow_state(f"{new_id}:{created[0].event_id:04x}")
    assert child is not None and child.runtime_status == WorkflowStatus.COMPLETED
