"""Bounded and isolated, with the real Python SDK: one oversized workflow cannot block its app,
a poisoned activity result does not loop, and SIGTERM lets in-flight activities finish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dapr.ext.workflow import TaskFailedError, WorkflowStatus

from tests.e2e.dapr.support import (
    Counter,
    assert_completed,
    running_runtime,
    uid,
    wait_status,
    workflow_client,
)
from tests.e2e.harness import Server, durable_store, wait_until

pytestmark = pytest.mark.timeout(240)

RUNS = Counter()
BIG = 3_500_000  # under the 4 MiB payload limit: the history grows 3.5 MB a result


def big_result(ctx, n):
    RUNS.incr("big")
    return "x" * BIG


def grows(ctx, n):
    for i in range(n):
        yield ctx.call_activity(big_result, input=i)
    return "unreachable under the history budget"


def echo(ctx, x):
    return x


def ordinary(ctx, x):
    out = yield ctx.call_activity(echo, input=x)
    return out


def test_a_workflow_past_its_history_budget_fails_and_its_app_keeps_working() -> None:
    """Results of 3.5 MB, 20 times: the history passes the budget (20 MB here; 50 MB by
    default) and the workflow fails with a reason naming the limit, instead of growing until
    no stream can carry it. A worker restart then sends nothing that kills streams, and the
    app's other workflows complete."""
    extra = ["--max-history-bytes", str(20 * 1024 * 1024)]
    with Server(["main"], extra_args=extra) as server, workflow_client(server.port()) as client:
        heavy = uid("heavy")
        with running_runtime(server.port(), workflows=[grows, ordinary], activities=[big_result, echo]):
            client.schedule_new_workflow(grows, input=20, instance_id=heavy)
            failed = wait_status(client, heavy, WorkflowStatus.FAILED, timeout=120)
        details = failed.failure_details
        assert details is not None and details.error_type == "HistoryLimitExceeded", details
        assert str(20 * 1024 * 1024) in details.message and "continue as new" in details.message
        assert RUNS.get("big") < 20
        with running_runtime(server.port(), workflows=[grows, ordinary], activities=[big_result, echo]):
            ids = [client.schedule_new_workflow(ordinary, input=n, instance_id=uid("ok")) for n in range(10)]
            for n, iid in enumerate(ids):
                assert assert_completed(client, iid, timeout=60) == n
        assert "taken back" not in server.log_text  # no work item lost its stream


def poisoned(ctx, x):
    RUNS.incr("poisoned")
    raise RuntimeError("boom " + "y" * 17_000_000)  # more than MongoDB's 16 MB document limit


def calls_poisoned(ctx, x):
    try:
        yield ctx.call_activity(poisoned, input=x)
    except TaskFailedError as err:
        return {"type": err.details.error_type, "length": len(err.details.message or "")}
    return "unreachable"


def test_a_huge_activity_failure_fails_the_task_once() -> None:
    """The parent sees a failure (truncated or refused at the transport, never stored whole);
    the activity runs once, not in a hot loop (on MongoDB it once exceeded the document limit)."""
    with (
        Server(["main"]) as server,
        workflow_client(server.port()) as client,
        running_runtime(server.port(), workflows=[calls_poisoned], activities=[poisoned]),
    ):
        before = RUNS.get("poisoned")
        iid = client.schedule_new_workflow(calls_poisoned, input=1, instance_id=uid("poison"))
        out = assert_completed(client, iid, timeout=120)
        assert out["length"] < 17_000_000
        time.sleep(2)  # a hot loop would show as more runs
        assert RUNS.get("poisoned") == before + 1


def slow(ctx, x):
    RUNS.incr("slow-started")
    time.sleep(3)
    RUNS.incr("slow-finished")
    return f"done {x}"


def slow_wf(ctx, x):
    out = yield ctx.call_activity(slow, input=x)
    return out


def test_sigterm_lets_the_in_flight_activity_finish(tmp_path: Path) -> None:
    """SIGTERM stops new work but takes the running activity's result before exiting, so after
    a restart it does not run again."""
    server = Server(["main"], store=durable_store(tmp_path), extra_args=["--shutdown-grace", "20"])
    with (
        server,
        workflow_client(server.port()) as client,
        running_runtime(server.port(), workflows=[slow_wf], activities=[slow]),
    ):
        before = RUNS.get("slow-started")
        iid = client.schedule_new_workflow(slow_wf, input=1, instance_id=uid("drain"))
        wait_until(
            lambda: RUNS.get("slow-started") == before + 1, timeout=30, message="the activity to start"
        )
        assert server.stop(timeout=40) == 0
        assert RUNS.get("slow-finished") >= before + 1  # it finished while the server drained
        server.start()
        assert assert_completed(client, iid, timeout=90) == "done 1"
        assert RUNS.get("slow-started") == before + 1  # not run again after the restart
