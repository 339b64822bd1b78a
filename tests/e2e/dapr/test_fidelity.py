"""Bugs that upstream SDK code exposed: each with the real Python SDK, failing on the old server."""

from __future__ import annotations

import threading

import pytest
from dapr.ext.workflow import WorkflowStatus

from tests.e2e.dapr.support import (
    Counter,
    assert_completed,
    history_types,
    running_runtime,
    uid,
    wait_status,
    workflow_client,
)
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)

RUNS = Counter()


def note(ctx, x):
    RUNS.incr("note")
    return f"noted {x}"


def pipeline(ctx, x):
    RUNS.incr("pipeline-body")  # counted on every replay too; only > 0 matters
    first = yield ctx.call_activity("note", input=x)
    return {"first": first, "input": x}


def test_suspend_before_any_worker_then_resume_runs_the_code_once() -> None:
    """No worker yet: start, suspend. The history starts with the start, the status is
    SUSPENDED, and once resumed the workflow's code runs and returns the right output."""
    with Server(["main"]) as server, workflow_client(server.port()) as client:
        iid = uid("early")
        client.schedule_new_workflow(pipeline, input=7, instance_id=iid)
        client.pause_workflow(iid)
        state = wait_status(client, iid, WorkflowStatus.SUSPENDED, timeout=15)
        assert state.runtime_status == WorkflowStatus.SUSPENDED
        kinds = history_types(client.get_workflow_history(iid))
        assert "EXECUTION_STARTED" in kinds and "EXECUTION_SUSPENDED" in kinds
        assert kinds.index("EXECUTION_STARTED") < kinds.index("EXECUTION_SUSPENDED")
        before = RUNS.get("note")
        with running_runtime(server.port(), workflows=[pipeline], activities=[note]):
            # Suspended: a worker is there but the code's first task must not run.
            assert not _ran_within(lambda: RUNS.get("note") > before, 2.0)
            client.resume_workflow(iid)
            result = assert_completed(client, iid)
        assert result == {"first": "noted 7", "input": 7}
        assert RUNS.get("note") == before + 1


def _ran_within(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    done = threading.Event()
    deadline = threading.Timer(seconds, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if condition():
                return True
            done.wait(0.05)
        return False
    finally:
        deadline.cancel()


def one_event_per_generation(ctx, seen):
    """Takes one event per generation; the others received meanwhile are carried over."""
    value = yield ctx.wait_for_external_event("e")
    seen = [*seen, value]
    if len(seen) == 12:
        return seen
    ctx.continue_as_new(seen, save_events=True)


@pytest.mark.parametrize("rounds", range(3))
def test_continue_as_new_keeps_events_in_raise_order(rounds: int) -> None:
    """Events raised while a continuing turn runs come after the carried-over ones."""
    with (
        Server(["main"]) as server,
        workflow_client(server.port()) as client,
        running_runtime(server.port(), workflows=[one_event_per_generation]),
    ):
        iid = uid("order")
        client.schedule_new_workflow(one_event_per_generation, input=[], instance_id=iid)
        client.wait_for_workflow_start(iid, timeout_in_seconds=30)
        for n in range(1, 13):  # the SDK sends no data for a falsy 0
            client.raise_workflow_event(iid, "e", data=n)
        assert assert_completed(client, iid) == list(range(1, 13))


def hello(ctx, name):
    return f"hello {name}"


def greet(ctx, name):
    out = yield ctx.call_activity("hello", input=name)
    return out


def test_with_no_flags_and_no_environment_both_kinds_of_sdk_connect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`serve` with no --app listens where the Dapr-level SDKs look (daprd's 50001) and where
    the durabletask SDKs look (4001)."""
    import os
    import subprocess
    import sys

    from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
    from dapr.ext.workflow._durabletask import client as dt_client

    from tests.e2e.harness import REPO_ROOT, wait_until

    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        wait_until(
            lambda: log.read_text().count("ready: app=default") == 2, timeout=30, message="ready lines"
        )
        assert "127.0.0.1:4001" in log.read_text() and "127.0.0.1:50001" in log.read_text()
        rt = WorkflowRuntime()  # no host, no port, no DAPR_* environment
        rt.register_workflow(greet, name="greet")
        rt.register_activity(hello, name="hello")
        rt.start()
        try:
            client = DaprWorkflowClient()
            iid = client.schedule_new_workflow("greet", input="dapr")
            state = client.wait_for_workflow_completion(iid, timeout_in_seconds=30)
            assert state is not None and state.serialized_output == '"hello dapr"'
            # The durabletask-level client finds the same app at 4001.
            plain = dt_client.TaskHubGrpcClient()
            seen = plain.get_orchestration_state(iid)
            assert seen is not None and seen.serialized_output == '"hello dapr"'
        finally:
            rt.shutdown()
        assert (tmp_path / "durabletask.db").exists()  # the embedded default store
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    "instance_id", ["order.2026-12-01", "tenant:42", "with space", "ümlaut-東京", "x" * 300]
)
def test_instance_ids_daprd_accepts_run_here(instance_id: str) -> None:
    """IDs users pick on daprd ('.', ':', spaces, any letters, 300 characters) work here too."""
    with (
        Server(["main"]) as server,
        workflow_client(server.port()) as client,
        running_runtime(server.port(), workflows=[greet], activities=[hello]),
    ):
        assert client.schedule_new_workflow(greet, input="ids", instance_id=instance_id) == instance_id
        assert assert_completed(client, instance_id) == "hello ids"
        client.purge_workflow(instance_id)
        assert client.get_workflow_state(instance_id) is None


def test_client_deadlines_on_waits_log_no_errors() -> None:
    """A client giving up on WaitForInstance* is normal: no ERROR and no traceback."""
    with Server(["main"]) as server, workflow_client(server.port()) as client:
        iid = uid("waiting")
        client.schedule_new_workflow(pipeline, input=1, instance_id=iid)  # no worker: never finishes
        errors: list[BaseException] = []

        def wait(n: int) -> None:
            # Short, staggered deadlines: the server's own wait ends as the client's does.
            seconds = 0.3 + (n % 6) * 0.05
            try:
                if n % 2:
                    client.wait_for_workflow_completion(iid, timeout_in_seconds=seconds)  # type: ignore[arg-type]
                else:
                    client.wait_for_workflow_start(iid, timeout_in_seconds=seconds)  # type: ignore[arg-type]
            except TimeoutError:
                pass
            except BaseException as err:  # anything but the client's own timeout is a failure
                errors.append(err)

        threads = [threading.Thread(target=wait, args=(n,)) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        log = server.log_text
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
