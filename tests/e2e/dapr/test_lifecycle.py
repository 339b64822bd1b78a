"""Instance management: continue-as-new, suspend/resume, terminate, purge (dapr 1.19)."""

from __future__ import annotations

import json

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus, when_all

from tests.e2e.dapr.support import (
    Gates,
    assert_completed,
    describe,
    running_runtime,
    uid,
    wait_custom_status,
    wait_done,
    wait_status,
    workflow_client,
)
from tests.e2e.harness import Server, wait_until

pytestmark = pytest.mark.timeout(120)

GATES = Gates()


# ---------------------------------------------------------------- activities


def gate(ctx, key):
    assert GATES.wait(key), f"gate {key} never opened"
    return key


def shout(ctx, s):
    return s.upper()


# ---------------------------------------------------------------- workflows


def counter_can_wf(ctx, inp):
    """Generation n consumes one 'tick' event and continues as new, carrying unprocessed events."""
    n, seen = inp["n"], inp["seen"]
    if n == 0 and inp.get("gate"):
        yield ctx.call_activity(gate, input=inp["gate"])
    if n < inp["target"]:
        v = yield ctx.wait_for_external_event("tick")
        ctx.continue_as_new(
            {"n": n + 1, "seen": [*seen, v], "target": inp["target"], "gate": None},
            save_events=True,
        )
        return None
    return {"generations": n, "seen": seen, "instance": ctx.instance_id}


def simple_can_wf(ctx, n):
    if n < 5:
        v = yield ctx.call_activity(shout, input=f"gen{n}")
        ctx.continue_as_new(n + 1)
        return v
    return {"final": n}


def suspendable_wf(ctx, _):
    ctx.set_custom_status(json.dumps("waiting"))
    v = yield ctx.wait_for_external_event("go")
    r = yield ctx.call_activity(shout, input=v)
    return r


def waiting_child_wf(ctx, tag):
    ctx.set_custom_status(json.dumps("child-waiting"))
    v = yield ctx.wait_for_external_event("go")
    return {"tag": tag, "got": v}


def parent_of_waiters_wf(ctx, n):
    tasks = [ctx.call_child_workflow(waiting_child_wf, input=i) for i in range(n)]
    results = yield when_all(tasks)
    return results


def quick_child_wf(ctx, x):
    r = yield ctx.call_activity(shout, input=f"c{x}")
    return r


def parent_of_quick_wf(ctx, n):
    results = yield when_all([ctx.call_child_workflow(quick_child_wf, input=i) for i in range(n)])
    return results


WORKFLOWS = [
    counter_can_wf,
    simple_can_wf,
    suspendable_wf,
    waiting_child_wf,
    parent_of_waiters_wf,
    quick_child_wf,
    parent_of_quick_wf,
]
ACTIVITIES = [gate, shout]


@pytest.fixture(scope="module")
def client():
    with (
        Server(["lifecycle"]) as srv,
        running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
        workflow_client(srv.port()) as c,
    ):
        yield c


# ---------------------------------------------------------------- continue-as-new


def test_continue_as_new(client):
    iid = client.schedule_new_workflow(simple_can_wf, input=0, instance_id=uid("can"))
    assert assert_completed(client, iid) == {"final": 5}
    st = client.get_workflow_state(iid)
    assert json.loads(st.serialized_input) == 5, "state shows the latest generation's input"


def test_continue_as_new_carries_unprocessed_events(client):
    key = uid("can-ev")
    iid = client.schedule_new_workflow(
        counter_can_wf,
        input={"n": 0, "seen": [], "target": 3, "gate": key},
        instance_id=key,
    )
    assert GATES.entered(key), "gate activity never started"
    # All three events arrive while generation 0 is busy in an activity. Generation 0
    # consumes one and must carry the other two (save_events=True) into generation 1, ...
    for i in (1, 2, 3):
        client.raise_workflow_event(iid, "tick", data=i)
    GATES.open(key)
    out = assert_completed(client, iid)
    assert out == {"generations": 3, "seen": [1, 2, 3], "instance": iid}


def test_continue_as_new_events_raised_between_generations(client):
    iid = client.schedule_new_workflow(
        counter_can_wf,
        input={"n": 0, "seen": [], "target": 2, "gate": None},
        instance_id=uid("can2"),
    )
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.raise_workflow_event(iid, "tick", data="a")
    client.raise_workflow_event(iid, "tick", data="b")
    assert assert_completed(client, iid) == {"generations": 2, "seen": ["a", "b"], "instance": iid}


# ---------------------------------------------------------------- suspend / resume


def test_suspend_and_resume(client):
    iid = client.schedule_new_workflow(suspendable_wf, instance_id=uid("susp"))
    wait_custom_status(client, iid, "waiting")
    client.pause_workflow(iid)
    wait_status(client, iid, WorkflowStatus.SUSPENDED)
    # An event raised while suspended must not let the workflow progress.
    client.raise_workflow_event(iid, "go", data="resumed")
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_completion(iid, timeout_in_seconds=2)
    st = client.get_workflow_state(iid)
    assert st.runtime_status == WorkflowStatus.SUSPENDED, describe(st)
    client.resume_workflow(iid)
    assert assert_completed(client, iid) == "RESUMED"


# ---------------------------------------------------------------- terminate


def _start_parent_with_waiting_children(client, n):
    iid = client.schedule_new_workflow(parent_of_waiters_wf, input=n, instance_id=uid("term"))
    # SDK action IDs start at 1; default child ID is f"{parent}:{action_id:04x}".
    child_ids = [f"{iid}:{i + 1:04x}" for i in range(n)]
    for cid in child_ids:
        wait_custom_status(client, cid, "child-waiting")
    return iid, child_ids


def test_terminate_recursive_terminates_children(client):
    iid, child_ids = _start_parent_with_waiting_children(client, 3)
    client.terminate_workflow(iid, output="stopped", recursive=True)
    st = wait_done(client, iid, timeout=30)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)
    assert json.loads(st.serialized_output) == "stopped"
    for cid in child_ids:
        cst = wait_done(client, cid, timeout=30)
        assert cst.runtime_status == WorkflowStatus.TERMINATED, describe(cst)


def test_terminate_non_recursive_leaves_children_running(client):
    iid, child_ids = _start_parent_with_waiting_children(client, 2)
    client.terminate_workflow(iid, recursive=False)
    st = wait_done(client, iid, timeout=30)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)
    for cid in child_ids:
        cst = client.get_workflow_state(cid)
        assert cst.runtime_status == WorkflowStatus.RUNNING, describe(cst)
    for n, cid in enumerate(child_ids):
        client.raise_workflow_event(cid, "go", data=f"late-{n}")
    for n, cid in enumerate(child_ids):
        assert assert_completed(client, cid) == {"tag": n, "got": f"late-{n}"}
    # The parent stays terminated even though its children completed afterwards.
    st = client.get_workflow_state(iid)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)


def test_terminate_plain_workflow(client):
    iid = client.schedule_new_workflow(suspendable_wf, instance_id=uid("term1"))
    wait_custom_status(client, iid, "waiting")
    client.terminate_workflow(iid)
    st = wait_done(client, iid, timeout=30)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)


# ---------------------------------------------------------------- purge


def test_purge_recursive_removes_parent_and_children(client):
    iid = client.schedule_new_workflow(parent_of_quick_wf, input=3, instance_id=uid("purge"))
    assert assert_completed(client, iid) == ["C0", "C1", "C2"]
    child_ids = [f"{iid}:{i + 1:04x}" for i in range(3)]
    for cid in child_ids:
        assert client.get_workflow_state(cid) is not None
    client.purge_workflow(iid, recursive=True)
    assert client.get_workflow_state(iid) is None
    for cid in child_ids:
        assert client.get_workflow_state(cid) is None, f"child {cid} survived a recursive purge"
    with pytest.raises(grpc.RpcError):
        client.get_workflow_history(iid)


def test_purge_non_recursive_keeps_children(client):
    iid = client.schedule_new_workflow(parent_of_quick_wf, input=2, instance_id=uid("purge-nr"))
    assert assert_completed(client, iid) == ["C0", "C1"]
    client.purge_workflow(iid, recursive=False)
    assert client.get_workflow_state(iid) is None
    for i in range(2):
        assert client.get_workflow_state(f"{iid}:{i + 1:04x}") is not None


def test_purge_of_running_instance_fails(client):
    iid = client.schedule_new_workflow(suspendable_wf, instance_id=uid("purge-run"))
    wait_custom_status(client, iid, "waiting")
    with pytest.raises(grpc.RpcError):
        client.purge_workflow(iid)
    st = client.get_workflow_state(iid)
    assert st is not None and st.runtime_status == WorkflowStatus.RUNNING, describe(st)
    client.raise_workflow_event(iid, "go", data="x")
    assert assert_completed(client, iid) == "X"
    client.purge_workflow(iid)
    assert client.get_workflow_state(iid) is None


def test_instance_id_reusable_after_purge(client):
    iid = uid("reuse")
    client.schedule_new_workflow(simple_can_wf, input=5, instance_id=iid)
    assert assert_completed(client, iid) == {"final": 5}
    client.purge_workflow(iid)
    wait_until(lambda: client.get_workflow_state(iid) is None, timeout=10, message="purged")
    client.schedule_new_workflow(simple_can_wf, input=4, instance_id=iid)
    assert assert_completed(client, iid) == {"final": 5}
