"""Retry policies and child workflows (dapr.ext.workflow 1.19)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dapr.ext.workflow import RetryPolicy, TaskFailedError, WorkflowStatus, when_all

from tests.e2e.dapr.support import (
    Counter,
    assert_completed,
    describe,
    output_of,
    running_runtime,
    uid,
    wait_done,
    workflow_client,
)
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)

ATTEMPTS = Counter()


class FlakyError(Exception):
    pass


# ---------------------------------------------------------------- activities


def flaky(ctx, inp):
    """Fails until it has been called inp['succeed_on'] times for inp['key']."""
    n = ATTEMPTS.incr(inp["key"])
    if n < inp["succeed_on"]:
        raise FlakyError(f"attempt {n} failed")
    return n


def double(ctx, x):
    return 2 * x


# ---------------------------------------------------------------- workflows


def retry_activity_wf(ctx, inp):
    policy = RetryPolicy(
        first_retry_interval=timedelta(milliseconds=200),
        max_number_of_attempts=inp["max_attempts"],
        backoff_coefficient=1.0,
    )
    try:
        n = yield ctx.call_activity(flaky, input=inp, retry_policy=policy)
        return {"ok": n}
    except TaskFailedError as e:
        return {"failed": e.details.error_type, "message": e.details.message}


def child_wf(ctx, x):
    y = yield ctx.call_activity(double, input=x)
    return {"child": ctx.instance_id, "value": y}


def parent_wf(ctx, xs):
    tasks = [ctx.call_child_workflow(child_wf, input=x) for x in xs]
    results = yield when_all(tasks)
    return results


def parent_explicit_id_wf(ctx, inp):
    r = yield ctx.call_child_workflow(child_wf, input=inp["x"], instance_id=inp["child_id"])
    return r


def flaky_child_wf(ctx, inp):
    # The child itself fails (its activity has no retry) until the activity succeeds.
    n = yield ctx.call_activity(flaky, input=inp)
    return {"attempt": n, "child": ctx.instance_id}


def parent_child_retry_wf(ctx, inp):
    policy = RetryPolicy(
        first_retry_interval=timedelta(milliseconds=200),
        max_number_of_attempts=inp["max_attempts"],
    )
    try:
        r = yield ctx.call_child_workflow(flaky_child_wf, input=inp, retry_policy=policy)
        return {"ok": r}
    except TaskFailedError as e:
        return {"failed": e.details.error_type, "message": e.details.message}


def failing_child_wf(ctx, msg):
    yield ctx.call_activity(double, input=1)
    raise FlakyError(msg)


def parent_of_failing_child_wf(ctx, msg):
    try:
        yield ctx.call_child_workflow(failing_child_wf, input=msg)
    except TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


WORKFLOWS = [
    retry_activity_wf,
    child_wf,
    parent_wf,
    parent_explicit_id_wf,
    flaky_child_wf,
    parent_child_retry_wf,
    failing_child_wf,
    parent_of_failing_child_wf,
]
ACTIVITIES = [flaky, double]


@pytest.fixture(scope="module")
def client():
    with (
        Server(["retries"]) as srv,
        running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
        workflow_client(srv.port()) as c,
    ):
        yield c


def test_activity_retry_succeeds_on_third_attempt(client):
    key = uid("retry")
    iid = client.schedule_new_workflow(
        retry_activity_wf, input={"key": key, "succeed_on": 3, "max_attempts": 5}, instance_id=key
    )
    assert assert_completed(client, iid) == {"ok": 3}
    assert ATTEMPTS.get(key) == 3


def test_activity_retry_exhausted(client):
    key = uid("retry-x")
    iid = client.schedule_new_workflow(
        retry_activity_wf, input={"key": key, "succeed_on": 99, "max_attempts": 2}, instance_id=key
    )
    out = assert_completed(client, iid)
    assert out["failed"] == "FlakyError", out
    assert "attempt 2 failed" in out["message"], out
    assert ATTEMPTS.get(key) == 2


def test_child_workflows_with_default_instance_ids(client):
    iid = uid("parent")
    client.schedule_new_workflow(parent_wf, input=[1, 2, 3], instance_id=iid)
    out = assert_completed(client, iid)
    # SDK action IDs start at 1; default child ID is f"{parent}:{action_id:04x}".
    expected_ids = [f"{iid}:0001", f"{iid}:0002", f"{iid}:0003"]
    assert out == [
        {"child": expected_ids[0], "value": 2},
        {"child": expected_ids[1], "value": 4},
        {"child": expected_ids[2], "value": 6},
    ]
    for cid, x in zip(expected_ids, [1, 2, 3], strict=False):
        st = client.get_workflow_state(cid)
        assert st is not None, f"child {cid} not found"
        assert st.runtime_status == WorkflowStatus.COMPLETED, describe(st)
        assert st.name == "child_wf"
        assert output_of(st) == {"child": cid, "value": 2 * x}


def test_child_workflow_with_explicit_instance_id(client):
    iid = uid("parent-x")
    child_id = uid("explicit-child")
    client.schedule_new_workflow(
        parent_explicit_id_wf, input={"x": 21, "child_id": child_id}, instance_id=iid
    )
    assert assert_completed(client, iid) == {"child": child_id, "value": 42}
    st = client.get_workflow_state(child_id)
    assert st is not None and st.runtime_status == WorkflowStatus.COMPLETED


def test_child_workflow_failure_propagates(client):
    msg = uid("child-fails")
    iid = client.schedule_new_workflow(parent_of_failing_child_wf, input=msg, instance_id=uid("pfc"))
    out = assert_completed(client, iid)
    assert out["type"] == "FlakyError", out
    assert msg in out["message"], out
    child = wait_done(client, f"{iid}:0001")
    assert child.runtime_status == WorkflowStatus.FAILED, describe(child)


def test_child_workflow_retry(client):
    key = uid("child-retry")
    iid = client.schedule_new_workflow(
        parent_child_retry_wf,
        input={"key": key, "succeed_on": 3, "max_attempts": 4},
        instance_id=key,
    )
    out = assert_completed(client, iid)
    assert out == {"ok": {"attempt": 3, "child": f"{iid}:0001"}}, out
    assert ATTEMPTS.get(key) == 3


def test_child_workflow_retry_exhausted(client):
    key = uid("child-retry-x")
    iid = client.schedule_new_workflow(
        parent_child_retry_wf,
        input={"key": key, "succeed_on": 99, "max_attempts": 2},
        instance_id=key,
    )
    out = assert_completed(client, iid)
    assert "failed" in out, out
    assert ATTEMPTS.get(key) == 2
