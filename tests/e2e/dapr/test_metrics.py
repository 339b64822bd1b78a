"""Prometheus metrics and JSON logs, end to end: the real dapr 1.19 SDK runs workflows against
`python -m backend serve --http ... --log-format json`, and a scrape of /metrics counts them."""

from __future__ import annotations

import json

import httpx
import pytest
from dapr.ext.workflow import WorkflowStatus
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.dapr.support import (
    assert_completed,
    running_runtime,
    uid,
    wait_done,
    wait_status,
    workflow_client,
)
from tests.e2e.harness import Server, free_port, wait_until

pytestmark = pytest.mark.timeout(180)

APP = "metrics"
CHAINS = 3


def hello(ctx, name):
    return f"Hello {name}!"


def boom(ctx, msg):
    raise ValueError(msg)


def chain_wf(ctx, names):
    out = []
    for n in names:
        out.append((yield ctx.call_activity(hello, input=n)))
    return out


def failing_wf(ctx, _):
    yield ctx.call_activity(boom, input="no")


def waiting_wf(ctx, _):
    return (yield ctx.wait_for_external_event("never"))


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    """The sum over the series of `name` whose labels include `labels` (0 when there is none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_a_scrape_counts_what_the_sdk_ran() -> None:
    http_port = free_port()
    server = Server(
        [APP],
        log_level="debug",
        extra_args=["--http", f"127.0.0.1:{http_port}", "--log-format", "json"],
    )
    with server, workflow_client(server.port()) as client:
        with running_runtime(server.port(), [chain_wf, failing_wf, waiting_wf], [hello, boom]):
            ids = [
                client.schedule_new_workflow(chain_wf, input=["a", "b"], instance_id=uid("chain"))
                for _ in range(CHAINS)
            ]
            for iid in ids:
                assert assert_completed(client, iid) == ["Hello a!", "Hello b!"]
            failed = client.schedule_new_workflow(failing_wf, input=None, instance_id=uid("fail"))
            assert wait_done(client, failed).runtime_status == WorkflowStatus.FAILED
            waiting = client.schedule_new_workflow(waiting_wf, input=None, instance_id=uid("wait"))
            wait_status(client, waiting, WorkflowStatus.RUNNING)
            client.terminate_workflow(waiting)
            assert wait_done(client, waiting).runtime_status == WorkflowStatus.TERMINATED

            def connected():  # type: ignore[no-untyped-def]
                m = _scrape(http_port)
                return m if _value(m, "durabletask_sidecar_worker_streams", app_id=APP) == 1 else None

            s = wait_until(connected, timeout=30, message="the SDK's stream on the gauge")

        executions = "dapr_runtime_workflow_execution_count_total"
        assert _value(s, executions, app_id=APP, workflow_name="chain_wf", status="success") == CHAINS
        assert _value(s, executions, app_id=APP, workflow_name="failing_wf", status="failed") == 1
        assert _value(s, executions, app_id=APP, workflow_name="waiting_wf", status="terminated") == 1
        latency = "dapr_runtime_workflow_execution_latency_count"
        assert _value(s, latency, workflow_name="chain_wf", status="success") == CHAINS
        assert _value(s, "dapr_runtime_workflow_scheduling_latency_count", workflow_name="chain_wf") == CHAINS
        started = "durabletask_sidecar_workflows_started_total"
        assert _value(s, started, app_id=APP, workflow_name="chain_wf") == CHAINS
        assert _value(s, started, app_id=APP) == CHAINS + 2
        ended = "durabletask_sidecar_workflows_ended_total"
        assert _value(s, ended, app_id=APP, status="completed") == CHAINS
        assert _value(s, ended, app_id=APP, status="failed") == 1
        assert _value(s, ended, app_id=APP, status="terminated") == 1

        acts = "dapr_runtime_workflow_activity_execution_count_total"
        assert _value(s, acts, app_id=APP, activity_name="hello", status="success") == 2 * CHAINS
        assert _value(s, acts, app_id=APP, activity_name="boom", status="failed") == 1
        act_latency = "dapr_runtime_workflow_activity_execution_latency_count"
        assert _value(s, act_latency, activity_name="hello", status="success") == 2 * CHAINS

        ops = "dapr_runtime_workflow_operation_count_total"
        assert _value(s, ops, app_id=APP, operation="create_workflow", status="success") == CHAINS + 2
        assert _value(s, ops, app_id=APP, operation="terminate_workflow", status="success") == 1
        # Each chain: a first turn, one per activity result; each turn is one work item and
        # waited in the queue once.
        turns = _value(s, "durabletask_sidecar_work_item_seconds_count", app_id=APP, kind="workflow")
        assert turns >= 3 * CHAINS
        assert (
            _value(s, "durabletask_sidecar_work_item_seconds_count", app_id=APP, kind="activity")
            == 2 * CHAINS + 1
        )
        assert _value(s, "durabletask_sidecar_schedule_to_start_seconds_count", app_id=APP) >= 3 * CHAINS
        assert _value(s, "durabletask_sidecar_history_events_count", app_id=APP) == CHAINS + 2
        # chain: started, 2x (scheduled, completed), completed + WorkflowStarted per turn: over 6 events
        assert _value(s, "durabletask_sidecar_history_events_sum", app_id=APP) > 6 * CHAINS
        assert (
            _value(s, "durabletask_sidecar_store_operation_seconds_count", operation="commit_workflow")
            >= turns
        )
        waiting = [
            v for (n, ls), v in s.items() if n == "durabletask_sidecar_work_waiting" and ("app_id", APP) in ls
        ]
        assert waiting == [0]  # the series is there (read from the store at the scrape), and nothing waits

    # Every line is one JSON object; a turn's lines carry its instance, app, kind and a token prefix.
    lines = [json.loads(line) for line in server.log_text.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "msg"} <= set(line) for line in lines)
    dispatched = [line for line in lines if line["msg"].startswith("dispatch workflow")]
    assert {line["instance_id"] for line in dispatched} >= set(ids)
    for line in dispatched:
        assert line["app_id"] == APP and line["work_item"] == "workflow"
        assert len(line["token"]) == 8  # a prefix, never the whole token
