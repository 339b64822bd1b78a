"""Crash tolerance: a worker SIGKILLed mid-activity, the server SIGKILLed mid-workflow on sqlite."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from dapr.ext.workflow import WorkflowHistoryEventType, WorkflowStatus

from tests.e2e.dapr.support import (
    Counter,
    Gates,
    assert_completed,
    custom_status_of,
    describe,
    output_of,
    running_runtime,
    uid,
    wait_custom_status,
    workflow_client,
)
from tests.e2e.harness import Server, durable_store, run_worker_script, wait_until

pytestmark = pytest.mark.timeout(150)

WORKER_APP = Path(__file__).with_name("worker_app.py")
RUNS = Counter()
GATES = Gates()


def record(ctx, tag):
    RUNS.incr(tag)
    return tag


def event_wf(ctx, key):
    yield ctx.call_activity(record, input=f"{key}:before")
    ctx.set_custom_status(json.dumps("waiting"))
    v = yield ctx.wait_for_external_event("go")
    yield ctx.call_activity(record, input=f"{key}:after")
    return v


def timer_wf(ctx, inp):
    key = inp["key"]
    yield ctx.call_activity(record, input=f"{key}:before")
    ctx.set_custom_status(json.dumps("timer"))
    yield ctx.create_timer(timedelta(seconds=inp["seconds"]))
    yield ctx.call_activity(record, input=f"{key}:after")
    return "timer-done"


def done_wf(ctx, x):
    v = yield ctx.call_activity(record, input=x)
    return {"done": v}


def gated(ctx, key):
    RUNS.incr(key)
    assert GATES.wait(key), f"gate {key} never opened"
    return f"gated:{key}"


def gated_wf(ctx, key):
    v = yield ctx.call_activity(gated, input=key)
    return v


def slow(ctx, inp):
    RUNS.incr(inp["key"])
    time.sleep(inp["seconds"])
    return f"slow:{inp['key']}"


def slow_wf(ctx, inp):
    v = yield ctx.call_activity(slow, input=inp)
    return v


WORKFLOWS = [event_wf, timer_wf, done_wf, gated_wf, slow_wf]
ACTIVITIES = [record, gated, slow]


# ---------------------------------------------------------------- lease renewal


def test_activity_longer_than_the_lease_runs_once():
    """The server renews the leases it is working on: an activity that takes 3x
    --lease-seconds is not taken back and dispatched a second time."""
    key = uid("long-activity")
    with (
        Server(["renew"], extra_args=["--lease-seconds", "2"]) as srv,
        running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
        workflow_client(srv.port()) as client,
    ):
        client.schedule_new_workflow(slow_wf, input={"key": key, "seconds": 6}, instance_id=key)
        assert assert_completed(client, key) == f"slow:{key}"
    assert RUNS.get(key) == 1, "the activity's lease expired while it ran and it was dispatched again"


# ---------------------------------------------------------------- worker crash


def test_worker_killed_mid_activity_work_is_redispatched(tmp_path):
    marker = tmp_path / "markers"
    with Server(["wkill"]) as srv, workflow_client(srv.port()) as client:
        args = ["--port", str(srv.port()), "--marker-dir", str(marker)]
        slow = run_worker_script(WORKER_APP, [*args, "--mode", "slow"])
        try:
            iid = client.schedule_new_workflow("kill_wf", input=1, instance_id=uid("wkill"))
            wait_until(
                lambda: (marker / "slow-started-slow").exists(),
                timeout=60,
                message="slow activity to start on the first worker",
            )
        finally:
            slow.kill()
        st = client.get_workflow_state(iid)
        assert st.runtime_status == WorkflowStatus.RUNNING, describe(st)

        fast = run_worker_script(WORKER_APP, [*args, "--mode", "fast"])
        try:
            assert assert_completed(client, iid) == "done-by-fast:2"
        finally:
            fast.terminate()
    # step1 completed before the crash; its result is durable and must not run again.
    assert (marker / "step1.log").read_text().splitlines() == ["slow"]


# ---------------------------------------------------------------- server crash


def test_server_sigkill_while_waiting_for_event(tmp_path):
    key = uid("srvkill-ev")
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port(), WORKFLOWS, ACTIVITIES):
        with workflow_client(srv.port()) as client:
            client.schedule_new_workflow(event_wf, input=key, instance_id=key)
            wait_custom_status(client, key, "waiting")

        srv.kill()
        srv.start()

        with workflow_client(srv.port()) as client:
            st = client.get_workflow_state(key)
            assert st is not None, "instance lost across a SIGKILL of the server"
            assert st.runtime_status == WorkflowStatus.RUNNING, describe(st)
            assert custom_status_of(st) == "waiting"
            client.raise_workflow_event(key, "go", data="after-restart")
            assert assert_completed(client, key) == "after-restart"
    assert RUNS.get(f"{key}:before") == 1, "a committed activity result was lost and re-run"
    assert RUNS.get(f"{key}:after") == 1


def test_server_sigkill_while_timer_pending(tmp_path):
    key = uid("srvkill-timer")
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port(), WORKFLOWS, ACTIVITIES):
        with workflow_client(srv.port()) as client:
            client.schedule_new_workflow(timer_wf, input={"key": key, "seconds": 6}, instance_id=key)
            wait_custom_status(client, key, "timer")

        srv.kill()
        srv.start()

        with workflow_client(srv.port()) as client:
            assert assert_completed(client, key, timeout=90) == "timer-done"
            types = [e.event_type for e in client.get_workflow_history(key)]
            assert types.count(WorkflowHistoryEventType.TIMER_FIRED) == 1, types
    assert RUNS.get(f"{key}:before") == 1
    assert RUNS.get(f"{key}:after") == 1


def test_timer_that_came_due_while_server_was_down(tmp_path):
    key = uid("srvdown-timer")
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port(), WORKFLOWS, ACTIVITIES):
        with workflow_client(srv.port()) as client:
            client.schedule_new_workflow(timer_wf, input={"key": key, "seconds": 2}, instance_id=key)
            wait_custom_status(client, key, "timer")
            seen_at = time.monotonic()

        srv.kill()
        # Stay down until the timer is certainly due (scenario setup, not an assertion).
        wait_until(lambda: time.monotonic() > seen_at + 3, timeout=10, message="timer due")
        srv.start()

        with workflow_client(srv.port()) as client:
            assert assert_completed(client, key, timeout=60) == "timer-done"
    assert RUNS.get(f"{key}:before") == 1


def test_server_sigkill_with_many_instances_in_flight(tmp_path):
    keys = [uid(f"srvkill-many{i}") for i in range(10)]
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port(), WORKFLOWS, ACTIVITIES):
        with workflow_client(srv.port()) as client:
            for k in keys:
                client.schedule_new_workflow(event_wf, input=k, instance_id=k)
            for k in keys:
                wait_custom_status(client, k, "waiting")
        srv.kill()
        srv.start()
        with workflow_client(srv.port()) as client:
            for k in keys:
                client.raise_workflow_event(k, "go", data=k)
            for k in keys:
                assert assert_completed(client, k) == k
    for k in keys:
        assert RUNS.get(f"{k}:before") == 1, k


def test_server_sigkill_while_activity_in_flight(tmp_path):
    key = uid("srvkill-act")
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv, running_runtime(srv.port(), WORKFLOWS, ACTIVITIES):
        with workflow_client(srv.port()) as client:
            client.schedule_new_workflow(gated_wf, input=key, instance_id=key)
            assert GATES.entered(key), "activity never started"
        srv.kill()
        srv.start()
        # The in-flight activity finishes now; its result was dispatched by the old
        # server process, so the new one must either accept it or re-dispatch the
        # activity (at-least-once). Either way the workflow completes.
        GATES.open(key)
        with workflow_client(srv.port()) as client:
            assert assert_completed(client, key, timeout=90) == f"gated:{key}"
    assert RUNS.get(key) >= 1


def test_start_survives_sigkill_before_any_worker_connected(tmp_path):
    key = uid("srvkill-start")
    srv = Server(["durable"], store=durable_store(tmp_path))
    with srv:
        with workflow_client(srv.port()) as client:
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
        srv.kill()
        srv.start()
        with running_runtime(srv.port(), WORKFLOWS, ACTIVITIES), workflow_client(srv.port()) as client:
            assert assert_completed(client, key) == {"done": key}
    assert RUNS.get(key) == 1


def test_graceful_stop_with_connected_worker_and_blocked_waiter(tmp_path):
    """SIGTERM must not hang on open GetWorkItems streams or long-poll waits."""
    srv = Server(["durable"], store=durable_store(tmp_path))
    srv.start()
    try:
        with running_runtime(srv.port(), WORKFLOWS, ACTIVITIES), workflow_client(srv.port()) as client:
            key = uid("graceful-busy")
            client.schedule_new_workflow(event_wf, input=key, instance_id=key)
            wait_custom_status(client, key, "waiting")
            errors: list[BaseException] = []

            def waiter() -> None:
                try:
                    client.wait_for_workflow_completion(key, timeout_in_seconds=60)
                except BaseException as e:  # expected: the server goes away
                    errors.append(e)

            # Park a long-poll on the server, then stop it.
            t = threading.Thread(target=waiter, daemon=True)
            t.start()
            code = srv.stop(timeout=30)
            assert code == 0, f"server did not stop cleanly on SIGTERM (exit code {code})"
    finally:
        srv.stop()


def test_graceful_stop_and_restart_keeps_state(tmp_path):
    key = uid("graceful")
    srv = Server(["durable"], store=durable_store(tmp_path))
    srv.start()
    try:
        with (
            running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
            workflow_client(srv.port()) as client,
        ):
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
            assert assert_completed(client, key) == {"done": key}
            pending = uid("graceful-pending")
            client.schedule_new_workflow(event_wf, input=pending, instance_id=pending)
            wait_custom_status(client, pending, "waiting")
        code = srv.stop(timeout=30)
        assert code == 0, f"SIGTERM should stop the server gracefully, exit code {code}"

        srv.start()
        with (
            running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
            workflow_client(srv.port()) as client,
        ):
            st = client.get_workflow_state(key)
            assert st is not None and st.runtime_status == WorkflowStatus.COMPLETED, describe(st)
            assert output_of(st) == {"done": key}
            client.raise_workflow_event(pending, "go", data="later")
            assert assert_completed(client, pending) == "later"
    finally:
        srv.stop()


def test_memory_store_forgets_on_restart():
    """Sanity check of the harness/CLI contract: `memory:` is lost on exit."""
    key = uid("mem")
    srv = Server(["mem"], store="memory:")
    with srv:
        with (
            running_runtime(srv.port(), WORKFLOWS, ACTIVITIES),
            workflow_client(srv.port()) as client,
        ):
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
            assert assert_completed(client, key) == {"done": key}
        srv.restart()
        with workflow_client(srv.port()) as client:
            assert client.get_workflow_state(key) is None


def test_sigint_is_a_graceful_stop_too(tmp_path):
    key = uid("sigint")
    srv = Server(["durable"], store=durable_store(tmp_path))
    srv.start()
    try:
        with running_runtime(srv.port(), WORKFLOWS, ACTIVITIES), workflow_client(srv.port()) as client:
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
            assert assert_completed(client, key) == {"done": key}
        code = srv.stop(timeout=30, sig=signal.SIGINT)
        assert code == 0, f"SIGINT should stop the server gracefully, exit code {code}"
        srv.start()
        with workflow_client(srv.port()) as client:
            assert output_of(client.get_workflow_state(key)) == {"done": key}
    finally:
        srv.stop()


def test_relative_sqlite_url_is_relative_to_cwd(tmp_path):
    key = uid("relsqlite")
    srv = Server(["durable"], store="sqlite:///state-rel.db", cwd=tmp_path)
    with srv:
        with running_runtime(srv.port(), WORKFLOWS, ACTIVITIES), workflow_client(srv.port()) as client:
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
            assert assert_completed(client, key) == {"done": key}
        assert (tmp_path / "state-rel.db").exists(), sorted(p.name for p in tmp_path.iterdir())
        srv.kill()
        srv.start()
        with workflow_client(srv.port()) as client:
            assert output_of(client.get_workflow_state(key)) == {"done": key}


def test_default_store_is_a_sqlite_file_in_the_cwd(tmp_path):
    key = uid("defstore")
    srv = Server(["durable"], store=None, cwd=tmp_path)
    with srv:
        with running_runtime(srv.port(), WORKFLOWS, ACTIVITIES), workflow_client(srv.port()) as client:
            client.schedule_new_workflow(done_wf, input=key, instance_id=key)
            assert assert_completed(client, key) == {"done": key}
        assert any(tmp_path.iterdir()), "no store file was created in the server's cwd"
        srv.kill()
        srv.start()
        with workflow_client(srv.port()) as client:
            st = client.get_workflow_state(key)
            assert st is not None, "default store lost state across a SIGKILL"
            assert output_of(st) == {"done": key}
