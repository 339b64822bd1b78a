"""Multi-app routing: one server, one gRPC listener per app ID, a WorkflowRuntime per app.

Both runtimes register an activity and a child workflow with the same names but different
results, so a call routed to the wrong app is visible in the output.
"""

from __future__ import annotations

import pytest
from dapr.ext.workflow import TaskFailedError, WorkflowStatus

from tests.e2e.dapr.support import (
    assert_completed,
    describe,
    output_of,
    running_runtime,
    uid,
    wait_done,
    workflow_client,
)
from tests.e2e.harness import Server, durable_store, wait_until

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- app A


def a_whoami(ctx, s):
    return f"A:{s}"


def a_child(ctx, s):
    v = yield ctx.call_activity("whoami", input=s)
    return {"child_on": "A", "activity": v, "id": ctx.instance_id}


def cross_app_activity_wf(ctx, s):
    remote = yield ctx.call_activity("whoami", input=s, app_id="B")
    local = yield ctx.call_activity("whoami", input=s)
    return {"remote": remote, "local": local}


def cross_app_child_wf(ctx, s):
    r = yield ctx.call_child_workflow("child", input=s, app_id="B")
    return r


def missing_remote_activity_wf(ctx, s):
    try:
        yield ctx.call_activity("only_on_a", input=s, app_id="B")
    except TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


def missing_remote_child_wf(ctx, s):
    try:
        yield ctx.call_child_workflow("only_child_on_a", input=s, app_id="B")
    except TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


def a_only_child_on_a(ctx, s):
    return s


def a_only_on_a(ctx, s):
    return f"only-on-A:{s}"


def a_same_id(ctx, s):
    v = yield ctx.call_activity("whoami", input=s)
    return {"app": "A", "v": v}


# ---------------------------------------------------------------- app B


def b_whoami(ctx, s):
    return f"B:{s}"


def b_child(ctx, s):
    v = yield ctx.call_activity("whoami", input=s)
    return {"child_on": "B", "activity": v, "id": ctx.instance_id}


def b_same_id(ctx, s):
    v = yield ctx.call_activity("whoami", input=s)
    return {"app": "B", "v": v}


A_WORKFLOWS = [
    cross_app_activity_wf,
    cross_app_child_wf,
    missing_remote_activity_wf,
    missing_remote_child_wf,
    ("only_child_on_a", a_only_child_on_a),
    ("child", a_child),
    ("same_id", a_same_id),
]
A_ACTIVITIES = [("whoami", a_whoami), ("only_on_a", a_only_on_a)]
B_WORKFLOWS = [("child", b_child), ("same_id", b_same_id)]
B_ACTIVITIES = [("whoami", b_whoami)]


@pytest.fixture(scope="module")
def apps():
    with (
        Server(["A", "B"]) as srv,
        running_runtime(srv.port("A"), A_WORKFLOWS, A_ACTIVITIES),
        running_runtime(srv.port("B"), B_WORKFLOWS, B_ACTIVITIES),
        workflow_client(srv.port("A")) as ca,
        workflow_client(srv.port("B")) as cb,
    ):
        yield ca, cb


def test_cross_app_activity(apps):
    ca, _ = apps
    iid = ca.schedule_new_workflow(cross_app_activity_wf, input="x", instance_id=uid("xact"))
    assert assert_completed(ca, iid) == {"remote": "B:x", "local": "A:x"}


def test_cross_app_child_workflow(apps):
    ca, cb = apps
    iid = ca.schedule_new_workflow(cross_app_child_wf, input="y", instance_id=uid("xchild"))
    child_id = f"{iid}:0001"
    assert assert_completed(ca, iid) == {"child_on": "B", "activity": "B:y", "id": child_id}
    # The child lives in app B's namespace.
    st = cb.get_workflow_state(child_id)
    assert st is not None, "child not visible through app B"
    assert st.runtime_status == WorkflowStatus.COMPLETED, describe(st)
    assert st.name == "child"
    assert ca.get_workflow_state(child_id) is None, "child leaked into app A's namespace"


def test_cross_app_activity_missing_on_target(apps):
    ca, _ = apps
    iid = ca.schedule_new_workflow(missing_remote_activity_wf, input="z", instance_id=uid("xmiss"))
    out = assert_completed(ca, iid)
    assert out["type"] == "ActivityNotRegisteredError", out
    assert "only_on_a" in out["message"], out


def test_same_instance_id_on_two_apps(apps):
    ca, cb = apps
    iid = uid("same")
    ca.schedule_new_workflow("same_id", input="1", instance_id=iid)
    cb.schedule_new_workflow("same_id", input="2", instance_id=iid)
    assert assert_completed(ca, iid) == {"app": "A", "v": "A:1"}
    assert assert_completed(cb, iid) == {"app": "B", "v": "B:2"}
    sa, sb = ca.get_workflow_state(iid), cb.get_workflow_state(iid)
    assert output_of(sa) == {"app": "A", "v": "A:1"}
    assert output_of(sb) == {"app": "B", "v": "B:2"}
    # Purging on one app leaves the other app's instance alone.
    ca.purge_workflow(iid)
    assert ca.get_workflow_state(iid) is None
    assert cb.get_workflow_state(iid) is not None


def test_cross_app_child_workflow_missing_on_target(apps):
    ca, _ = apps
    iid = ca.schedule_new_workflow(missing_remote_child_wf, input="q", instance_id=uid("xmissc"))
    out = assert_completed(ca, iid)
    assert out["type"] == "OrchestratorNotRegisteredError", out
    assert "only_child_on_a" in out["message"], out


def test_instance_listing_is_scoped_per_app(apps):
    ca, cb = apps
    on_b = uid("listed-on-b")
    cb.schedule_new_workflow("same_id", input="l", instance_id=on_b)
    assert assert_completed(cb, on_b) == {"app": "B", "v": "B:l"}
    assert on_b in set(cb.iter_workflow_instance_ids(page_size=100))
    assert on_b not in set(ca.iter_workflow_instance_ids(page_size=100))
    assert ca.get_workflow_state(on_b) is None


def test_target_app_worker_connects_late():
    with (
        Server(["A", "B"]) as srv,
        running_runtime(srv.port("A"), A_WORKFLOWS, A_ACTIVITIES),
        workflow_client(srv.port("A")) as ca,
    ):
        iid = ca.schedule_new_workflow(cross_app_activity_wf, input="late", instance_id=uid("late"))
        ca.wait_for_workflow_start(iid, timeout_in_seconds=30)
        # Nothing serves app B yet: the remote activity must wait, not fail.
        with pytest.raises(TimeoutError):
            ca.wait_for_workflow_completion(iid, timeout_in_seconds=3)
        st = ca.get_workflow_state(iid)
        assert st.runtime_status == WorkflowStatus.RUNNING, describe(st)

        iid_child = ca.schedule_new_workflow(cross_app_child_wf, input="late-child", instance_id=uid("latec"))
        ca.wait_for_workflow_start(iid_child, timeout_in_seconds=30)

        with running_runtime(srv.port("B"), B_WORKFLOWS, B_ACTIVITIES):
            assert assert_completed(ca, iid) == {"remote": "B:late", "local": "A:late"}
            out = assert_completed(ca, iid_child)
            assert out == {"child_on": "B", "activity": "B:late-child", "id": f"{iid_child}:0001"}


def test_cross_app_work_waits_durably_across_a_server_crash(tmp_path):
    srv = Server(["A", "B"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port("A"), A_WORKFLOWS, A_ACTIVITIES):
        with workflow_client(srv.port("A")) as ca:
            iid = ca.schedule_new_workflow(cross_app_activity_wf, input="dur", instance_id=uid("xdur"))
            cid = ca.schedule_new_workflow(cross_app_child_wf, input="durc", instance_id=uid("xdurc"))
            ca.wait_for_workflow_start(iid, timeout_in_seconds=30)
            ca.wait_for_workflow_start(cid, timeout_in_seconds=30)
            # Let the parents run their first turn (and so create the cross-app work) before the crash.
            wait_until(
                lambda: (
                    any(e.event_type.name == "TASK_SCHEDULED" for e in ca.get_workflow_history(iid))
                    and any(
                        e.event_type.name == "CHILD_WORKFLOW_INSTANCE_CREATED"
                        for e in ca.get_workflow_history(cid)
                    )
                ),
                timeout=30,
                message="cross-app work to be scheduled",
            )
        srv.kill()
        srv.start()
        with running_runtime(srv.port("B"), B_WORKFLOWS, B_ACTIVITIES), workflow_client(srv.port("A")) as ca:
            assert assert_completed(ca, iid) == {"remote": "B:dur", "local": "A:dur"}
            assert assert_completed(ca, cid) == {"child_on": "B", "activity": "B:durc", "id": f"{cid}:0001"}


def test_cross_app_child_terminated_and_purged_recursively():
    """Recursive terminate and purge reach a child that runs on another app."""

    with (
        Server(["A", "B"]) as srv,
        running_runtime(srv.port("A"), [("waiting_parent", _waiting_parent)], []),
        running_runtime(srv.port("B"), [("waiting_child", _waiting_child)], []),
        workflow_client(srv.port("A")) as ca,
        workflow_client(srv.port("B")) as cb,
    ):
        iid = ca.schedule_new_workflow("waiting_parent", instance_id=uid("xterm"))
        cid = f"{iid}:0001"
        wait_until(
            lambda: (
                (s := cb.get_workflow_state(cid)) is not None and s.runtime_status == WorkflowStatus.RUNNING
            ),
            timeout=30,
            message="remote child running on B",
        )
        ca.terminate_workflow(iid, recursive=True)
        st = wait_done(ca, iid, timeout=30)
        assert st.runtime_status == WorkflowStatus.TERMINATED, describe(st)
        cst = wait_done(cb, cid, timeout=30)
        assert cst.runtime_status == WorkflowStatus.TERMINATED, describe(cst)

        # A recursive purge on A reaches the child that lives on B.
        ca.purge_workflow(iid, recursive=True)
        assert ca.get_workflow_state(iid) is None
        assert cb.get_workflow_state(cid) is None, "cross-app child survived a recursive purge"


def _waiting_parent(ctx, _):
    r = yield ctx.call_child_workflow("waiting_child", app_id="B")
    return r


def _waiting_child(ctx, _):
    v = yield ctx.wait_for_external_event("never")
    return v
