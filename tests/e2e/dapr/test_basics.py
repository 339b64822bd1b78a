"""Core workflow patterns over real gRPC: dapr.ext.workflow 1.19 vs `python -m backend serve`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from dapr.ext.workflow import TaskFailedError, WorkflowHistoryEventType, WorkflowStatus, when_all

from tests.e2e.dapr.support import (
    Gates,
    assert_completed,
    custom_status_of,
    describe,
    running_runtime,
    uid,
    wait_custom_status,
    wait_done,
    workflow_client,
)
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)

GATES = Gates()


# ---------------------------------------------------------------- activities


def hello(ctx, name):
    return f"Hello {name}!"


def square(ctx, x):
    return x * x


def gate(ctx, key):
    assert GATES.wait(key), f"gate {key} never opened"
    return key


class BoomError(Exception):
    pass


def boom(ctx, msg):
    raise BoomError(msg)


# ---------------------------------------------------------------- workflows


def chain_wf(ctx, names):
    out = []
    for n in names:
        out.append((yield ctx.call_activity(hello, input=n)))
    return out


def fan_out_wf(ctx, n):
    tasks = [ctx.call_activity(square, input=i) for i in range(n)]
    results = yield when_all(tasks)
    return {"results": results, "sum": sum(results)}


def timer_wf(ctx, seconds):
    t0 = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    t1 = ctx.current_utc_datetime
    return {"elapsed": (t1 - t0).total_seconds()}


def events_after_gate_wf(ctx, inp):
    yield ctx.call_activity(gate, input=inp["key"])
    got = []
    for _ in range(inp["count"]):
        got.append((yield ctx.wait_for_external_event("item")))
    return got


def wait_one_event_wf(ctx, name):
    v = yield ctx.wait_for_external_event(name)
    return v


def event_timeout_wf(ctx, seconds):
    try:
        v = yield ctx.wait_for_external_event("never", timeout=timedelta(seconds=seconds))
        return {"got": v}
    except TimeoutError:
        return {"timed_out": True}


def custom_status_wf(ctx, _):
    ctx.set_custom_status(json.dumps({"stage": 1}))
    v = yield ctx.wait_for_external_event("next")
    ctx.set_custom_status(json.dumps({"stage": 2, "got": v}))
    return "done"


def failing_activity_wf(ctx, msg):
    yield ctx.call_activity(boom, input=msg)
    return "unreachable"


def catching_wf(ctx, msg):
    try:
        yield ctx.call_activity(boom, input=msg)
    except TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


class WorkflowBoom(Exception):
    pass


def raising_wf(ctx, msg):
    yield ctx.call_activity(hello, input="before-raise")
    raise WorkflowBoom(msg)


def echo_wf(ctx, x):
    return x


def history_wf(ctx, _):
    a = yield ctx.call_activity(hello, input="h1")
    yield ctx.create_timer(timedelta(milliseconds=300))
    b = yield ctx.call_activity(hello, input="h2")
    return [a, b]


WORKFLOWS = [
    chain_wf,
    fan_out_wf,
    timer_wf,
    events_after_gate_wf,
    wait_one_event_wf,
    event_timeout_wf,
    custom_status_wf,
    failing_activity_wf,
    catching_wf,
    raising_wf,
    echo_wf,
    history_wf,
]
ACTIVITIES = [hello, square, gate, boom]


@pytest.fixture(scope="module")
def server():
    with Server(["basics"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with running_runtime(server.port(), WORKFLOWS, ACTIVITIES), workflow_client(server.port()) as c:
        yield c


# ---------------------------------------------------------------- tests


def test_activity_chaining(client):
    iid = client.schedule_new_workflow(
        chain_wf, input=["Tokyo", "Seattle", "London"], instance_id=uid("chain")
    )
    assert assert_completed(client, iid) == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    st = client.get_workflow_state(iid)
    assert st is not None and st.name == "chain_wf"
    assert json.loads(st.serialized_input) == ["Tokyo", "Seattle", "London"]


def test_schedule_without_instance_id_generates_one(client):
    iid = client.schedule_new_workflow(echo_wf, input={"x": 1})
    assert iid
    assert assert_completed(client, iid) == {"x": 1}


def test_fan_out_fan_in_100_activities(client):
    iid = client.schedule_new_workflow(fan_out_wf, input=100, instance_id=uid("fan"))
    out = assert_completed(client, iid, timeout=90)
    assert out["results"] == [i * i for i in range(100)]
    assert out["sum"] == sum(i * i for i in range(100))


def test_durable_timer(client):
    iid = client.schedule_new_workflow(timer_wf, input=2, instance_id=uid("timer"))
    out = assert_completed(client, iid)
    # The turn after the timer fired must not be stamped before the timer's fire time.
    assert out["elapsed"] >= 2.0, out
    types = [e.event_type for e in client.get_workflow_history(iid)]
    assert WorkflowHistoryEventType.TIMER_CREATED in types
    assert WorkflowHistoryEventType.TIMER_FIRED in types


def test_external_events_raised_before_the_workflow_waits(client):
    key = uid("evgate")
    iid = client.schedule_new_workflow(events_after_gate_wf, input={"key": key, "count": 3}, instance_id=key)
    assert GATES.entered(key), "gate activity never started"
    # The workflow is busy in an activity: these events must be buffered, in order.
    for i in (1, 2, 3):
        client.raise_workflow_event(iid, "item", data={"n": i})
    GATES.open(key)
    assert assert_completed(client, iid) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_external_event_raised_before_start(client):
    # The instance exists but has not run yet (scheduled start): the event is kept
    # and delivered once the workflow starts and waits for it.
    start_at = datetime.now(UTC) + timedelta(seconds=2)
    iid = client.schedule_new_workflow(
        wait_one_event_wf, input="early-bird", instance_id=uid("early"), start_at=start_at
    )
    client.raise_workflow_event(iid, "early-bird", data="worm")
    assert client.get_workflow_state(iid).runtime_status == WorkflowStatus.PENDING
    assert assert_completed(client, iid) == "worm"


def test_external_event_for_an_unknown_instance_is_not_found(client):
    # Like the Dapr runtime: an event for an instance that does not exist is an
    # error the caller can act on, not a silent drop.
    with pytest.raises(grpc.RpcError) as info:
        client.raise_workflow_event(uid("nobody"), "e", data=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_external_event_raised_while_waiting(client):
    iid = client.schedule_new_workflow(wait_one_event_wf, input="approval", instance_id=uid("wait"))
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.raise_workflow_event(iid, "approval", data={"approved": True})
    assert assert_completed(client, iid) == {"approved": True}


def test_wait_for_external_event_timeout_expires(client):
    iid = client.schedule_new_workflow(event_timeout_wf, input=1, instance_id=uid("evto"))
    assert assert_completed(client, iid) == {"timed_out": True}


def test_custom_status(client):
    iid = client.schedule_new_workflow(custom_status_wf, instance_id=uid("cs"))
    st = wait_custom_status(client, iid, {"stage": 1})
    assert st.runtime_status == WorkflowStatus.RUNNING
    client.raise_workflow_event(iid, "next", data="go")
    final = wait_done(client, iid)
    assert final.runtime_status == WorkflowStatus.COMPLETED, describe(final)
    assert custom_status_of(final) == {"stage": 2, "got": "go"}


def test_activity_failure_fails_workflow_with_details(client):
    msg = uid("boom")
    iid = client.schedule_new_workflow(failing_activity_wf, input=msg, instance_id=uid("fail"))
    st = wait_done(client, iid)
    assert st.runtime_status == WorkflowStatus.FAILED, describe(st)
    fd = st.failure_details
    assert fd is not None, describe(st)
    assert fd.error_type == "TaskFailedError", describe(st)
    assert msg in fd.message, describe(st)


def test_activity_failure_details_reach_the_workflow(client):
    msg = uid("caught")
    iid = client.schedule_new_workflow(catching_wf, input=msg, instance_id=uid("catch"))
    assert assert_completed(client, iid) == {"type": "BoomError", "message": msg}


def test_workflow_exception_sets_failure_details(client):
    msg = uid("wfboom")
    iid = client.schedule_new_workflow(raising_wf, input=msg, instance_id=uid("raise"))
    st = wait_done(client, iid)
    assert st.runtime_status == WorkflowStatus.FAILED, describe(st)
    assert st.failure_details is not None
    assert st.failure_details.error_type == "WorkflowBoom"
    assert st.failure_details.message == msg
    assert st.failure_details.stack_trace, "stack trace should be carried through"


def test_get_unknown_instance_returns_none(client):
    assert client.get_workflow_state(uid("nope")) is None


def test_list_instance_ids_paging(client):
    prefix = uid("list")
    ids = [f"{prefix}-{i}" for i in range(7)]
    for iid in ids:
        client.schedule_new_workflow(echo_wf, input=iid, instance_id=iid)
    for iid in ids:
        assert assert_completed(client, iid) == iid

    seen: list[str] = []
    pages = 0
    token = None
    while True:
        page = client.list_workflow_instance_ids(page_size=3, continuation_token=token)
        pages += 1
        assert len(page.instance_ids) <= 3, page
        seen.extend(page.instance_ids)
        token = page.continuation_token
        if not token:
            break
        assert pages < 1000, "paging never ends"
    assert len(seen) == len(set(seen)), "an instance ID was listed twice"
    assert set(ids) <= set(seen), set(ids) - set(seen)
    assert pages >= 3, f"{len(seen)} ids in {pages} page(s) of size 3"

    via_iter = list(client.iter_workflow_instance_ids(page_size=2))
    assert set(ids) <= set(via_iter)
    assert len(via_iter) == len(set(via_iter))


def test_get_instance_history(client):
    iid = client.schedule_new_workflow(history_wf, instance_id=uid("hist"))
    assert assert_completed(client, iid) == ["Hello h1!", "Hello h2!"]
    events = client.get_workflow_history(iid)
    E = WorkflowHistoryEventType
    core = [e for e in events if e.event_type not in (E.WORKFLOW_STARTED, E.WORKFLOW_COMPLETED)]
    assert [e.event_type for e in core] == [
        E.EXECUTION_STARTED,
        E.TASK_SCHEDULED,
        E.TASK_COMPLETED,
        E.TIMER_CREATED,
        E.TIMER_FIRED,
        E.TASK_SCHEDULED,
        E.TASK_COMPLETED,
        E.EXECUTION_COMPLETED,
    ], [e.event_type.name for e in events]
    assert core[0].name == "history_wf"
    scheduled = [e for e in core if e.event_type == E.TASK_SCHEDULED]
    completed = [e for e in core if e.event_type == E.TASK_COMPLETED]
    assert [e.name for e in scheduled] == ["hello", "hello"]
    assert [c.task_scheduled_id for c in completed] == [s.event_id for s in scheduled]
    assert events[-1].event_type == E.EXECUTION_COMPLETED


def test_get_instance_history_unknown_instance(client):
    with pytest.raises(grpc.RpcError) as ei:
        client.get_workflow_history(uid("no-such"))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value
