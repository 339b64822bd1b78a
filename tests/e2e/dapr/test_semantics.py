"""Finer server semantics: instance ID reuse, scheduled start, history reset on
continue-as-new, absent payloads, deep recursive terminate, unregistered children."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from dapr.ext.workflow import TaskFailedError, WorkflowHistoryEventType, WorkflowStatus, when_any

from tests.e2e.dapr.support import (
    Gates,
    assert_completed,
    describe,
    output_of,
    running_runtime,
    uid,
    wait_custom_status,
    wait_done,
    wait_status,
    workflow_client,
)
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)

GATES = Gates()


def ident(ctx, x):
    return x


def first_turn_time_wf(ctx, tag):
    started = ctx.current_utc_datetime.replace(tzinfo=UTC).isoformat()
    v = yield ctx.call_activity(ident, input=tag)
    return {"tag": v, "started": started}


def wait_go_wf(ctx, _):
    ctx.set_custom_status(json.dumps("waiting"))
    v = yield ctx.wait_for_external_event("go")
    return v


def no_payload_wf(ctx):
    yield ctx.call_activity(ident, input=None)
    return None


def can_history_wf(ctx, n):
    yield ctx.call_activity(ident, input=n)
    if n < 3:
        ctx.continue_as_new(n + 1)
        return None
    return n


def grandchild_wf(ctx, _):
    ctx.set_custom_status(json.dumps("leaf-waiting"))
    v = yield ctx.wait_for_external_event("never")
    return v


def middle_wf(ctx, _):
    v = yield ctx.call_child_workflow(grandchild_wf)
    return v


def root_wf(ctx, _):
    v = yield ctx.call_child_workflow(middle_wf)
    return v


def calls_unregistered_child_wf(ctx, _):
    try:
        yield ctx.call_child_workflow("no_such_workflow", input=1)
    except TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


def race_wf(ctx, seconds):
    ev = ctx.wait_for_external_event("winner")
    timer = ctx.create_timer(timedelta(seconds=seconds))
    done = yield when_any([ev, timer])
    return "event" if done is ev else "timer"


def gated(ctx, key):
    assert GATES.wait(key), f"gate {key} never opened"
    return key


def gated_wf(ctx, key):
    v = yield ctx.call_activity(gated, input=key)
    return v


WORKFLOWS = [
    gated_wf,
    first_turn_time_wf,
    wait_go_wf,
    no_payload_wf,
    can_history_wf,
    grandchild_wf,
    middle_wf,
    root_wf,
    calls_unregistered_child_wf,
    race_wf,
]
ACTIVITIES = [ident, gated]


@pytest.fixture(scope="module")
def client():
    with (
        Server(["semantics"]) as srv,
        running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
        workflow_client(srv.port()) as c,
    ):
        yield c


def test_duplicate_start_of_running_instance_is_rejected(client):
    iid = client.schedule_new_workflow(wait_go_wf, instance_id=uid("dup"))
    wait_custom_status(client, iid, "waiting")
    with pytest.raises(grpc.RpcError) as ei:
        client.schedule_new_workflow(wait_go_wf, instance_id=iid)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS, ei.value
    client.raise_workflow_event(iid, "go", data="one")
    assert assert_completed(client, iid) == "one"


def test_instance_id_reused_after_completion(client):
    iid = uid("reuse")
    client.schedule_new_workflow(first_turn_time_wf, input="first", instance_id=iid)
    assert assert_completed(client, iid)["tag"] == "first"
    # Dapr semantics: a terminal instance ID can always be reused.
    client.schedule_new_workflow(first_turn_time_wf, input="second", instance_id=iid)
    assert assert_completed(client, iid)["tag"] == "second"
    events = client.get_workflow_history(iid)
    starts = [e for e in events if e.event_type == WorkflowHistoryEventType.EXECUTION_STARTED]
    assert len(starts) == 1, "history of the previous run leaked into the new run"


def test_scheduled_start_time(client):
    start_at = datetime.now(UTC) + timedelta(seconds=3)
    iid = client.schedule_new_workflow(
        first_turn_time_wf, input="later", instance_id=uid("sched"), start_at=start_at
    )
    st = client.get_workflow_state(iid)
    assert st is not None and st.runtime_status == WorkflowStatus.PENDING, describe(st)
    out = assert_completed(client, iid)
    assert out["tag"] == "later"
    # The first turn must not run before the scheduled start time.
    assert datetime.fromisoformat(out["started"]) >= start_at - timedelta(milliseconds=1), out


def test_terminate_suspended_workflow(client):
    iid = client.schedule_new_workflow(wait_go_wf, instance_id=uid("term-susp"))
    wait_custom_status(client, iid, "waiting")
    client.pause_workflow(iid)
    wait_status(client, iid, WorkflowStatus.SUSPENDED)
    client.terminate_workflow(iid, output="killed while suspended")
    st = wait_done(client, iid, timeout=30)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)


def test_absent_input_output_and_custom_status_stay_unset(client):
    iid = client.schedule_new_workflow(no_payload_wf, instance_id=uid("nopayload"))
    st = wait_done(client, iid)
    assert st.runtime_status == WorkflowStatus.COMPLETED, describe(st)
    assert st.serialized_input is None, repr(st.serialized_input)
    assert st.serialized_output is None, repr(st.serialized_output)
    assert st.serialized_custom_status is None, repr(st.serialized_custom_status)
    assert st.failure_details is None


def test_continue_as_new_resets_history(client):
    iid = client.schedule_new_workflow(can_history_wf, input=0, instance_id=uid("canhist"))
    assert assert_completed(client, iid) == 3
    events = client.get_workflow_history(iid)
    E = WorkflowHistoryEventType
    types = [e.event_type for e in events]
    assert types.count(E.EXECUTION_STARTED) == 1, [t.name for t in types]
    assert types.count(E.TASK_SCHEDULED) == 1, [t.name for t in types]
    assert types.count(E.EXECUTION_COMPLETED) == 1, [t.name for t in types]
    st = client.get_workflow_state(iid)
    assert json.loads(st.serialized_input) == 3


def test_recursive_terminate_reaches_grandchildren(client):
    iid = client.schedule_new_workflow(root_wf, instance_id=uid("deep"))
    middle = f"{iid}:0001"
    leaf = f"{middle}:0001"
    wait_custom_status(client, leaf, "leaf-waiting")
    client.terminate_workflow(iid, recursive=True)
    for i in (iid, middle, leaf):
        st = wait_done(client, i, timeout=30)
        assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)


def test_recursive_purge_reaches_grandchildren(client):
    iid = client.schedule_new_workflow(root_wf, instance_id=uid("deeppurge"))
    middle = f"{iid}:0001"
    leaf = f"{middle}:0001"
    wait_custom_status(client, leaf, "leaf-waiting")
    client.terminate_workflow(iid, recursive=True)
    for i in (iid, middle, leaf):
        wait_done(client, i, timeout=30)
    client.purge_workflow(iid, recursive=True)
    for i in (iid, middle, leaf):
        assert client.get_workflow_state(i) is None, f"{i} survived a recursive purge"


def test_child_workflow_not_registered_fails_the_child_task(client):
    iid = client.schedule_new_workflow(calls_unregistered_child_wf, instance_id=uid("nochild"))
    out = assert_completed(client, iid)
    assert out["type"] == "OrchestratorNotRegisteredError", out
    assert "no_such_workflow" in out["message"], out


def test_when_any_event_beats_timer(client):
    iid = client.schedule_new_workflow(race_wf, input=60, instance_id=uid("race-ev"))
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.raise_workflow_event(iid, "winner", data=1)
    assert assert_completed(client, iid) == "event"


def test_when_any_timer_beats_event(client):
    iid = client.schedule_new_workflow(race_wf, input=1, instance_id=uid("race-timer"))
    assert assert_completed(client, iid) == "timer"


def test_terminate_while_activity_runs_then_late_result_is_ignored(client):
    key = uid("term-act")
    client.schedule_new_workflow(gated_wf, input=key, instance_id=key)
    assert GATES.entered(key)
    client.terminate_workflow(key, output="early")
    st = wait_done(client, key, timeout=30)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)
    GATES.open(key)
    # The worker still reports the activity result; the server must drop it and stay healthy.
    probe = client.schedule_new_workflow(first_turn_time_wf, input="probe", instance_id=uid("probe"))
    assert assert_completed(client, probe)["tag"] == "probe"
    st = client.get_workflow_state(key)
    assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)
    assert json.loads(st.serialized_output) == "early"


def test_get_instance_without_payloads(client):
    iid = client.schedule_new_workflow(first_turn_time_wf, input="payload", instance_id=uid("nofetch"))
    assert assert_completed(client, iid)["tag"] == "payload"
    full = client.get_workflow_state(iid, fetch_payloads=True)
    assert json.loads(full.serialized_input) == "payload"
    assert output_of(full)["tag"] == "payload"
    bare = client.get_workflow_state(iid, fetch_payloads=False)
    assert bare is not None and bare.runtime_status == WorkflowStatus.COMPLETED
    assert bare.serialized_input is None and bare.serialized_output is None
    assert bare.name == "first_turn_time_wf"


def test_instance_timestamps(client):
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
    iid = client.schedule_new_workflow(first_turn_time_wf, input="ts", instance_id=uid("ts"))
    assert_completed(client, iid)
    st = client.get_workflow_state(iid)
    assert st.created_at >= before, st.created_at
    assert st.last_updated_at >= st.created_at, (st.created_at, st.last_updated_at)
