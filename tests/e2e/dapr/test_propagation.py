"""Dapr history propagation (dapr 1.19: `propagation=` on call_activity / call_child_workflow,
`ctx.get_propagated_history()` on the receiving side) across three app IDs."""

from __future__ import annotations

import pytest
from dapr.ext.workflow import PropagationScope

from tests.e2e.dapr.support import assert_completed, running_runtime, uid, workflow_client
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(120)


def _summary(history):  # type: ignore[no-untyped-def]
    """What a receiver saw: None, or per chunk (app, instance, workflow, event kinds)."""
    if history is None:
        return None
    return {
        "scope": history.scope.name,
        "chunks": [
            {
                "app": w.app_id,
                "instance": w.instance_id,
                "workflow": w.name,
                "events": [
                    e.WhichOneof("eventType") for e in history.get_events_by_instance_id(w.instance_id)
                ],
            }
            for w in history.get_workflows()
        ],
    }


def inspect(ctx, tag):  # type: ignore[no-untyped-def]
    return {"tag": tag, "saw": _summary(ctx.get_propagated_history())}


def root(ctx, _):  # type: ignore[no-untyped-def]
    """On app A: shares its own history with an activity on B, and its lineage with a child on B."""
    own = yield ctx.call_activity(
        "inspect", input="own", app_id="B", propagation=PropagationScope.OWN_HISTORY
    )
    plain = yield ctx.call_activity("inspect", input="plain", app_id="B")
    middle = yield ctx.call_child_workflow(
        "middle",
        input=None,
        instance_id=f"{ctx.instance_id}-middle",
        app_id="B",
        propagation=PropagationScope.LINEAGE,
    )
    return {"own": own, "plain": plain, "middle": middle}


def middle(ctx, _):  # type: ignore[no-untyped-def]
    """On app B: what it received, then its lineage (A's chunk and its own) to an activity on C,
    and only its own history to another."""
    received = _summary(ctx.get_propagated_history())
    lineage = yield ctx.call_activity(
        "inspect", input="lineage", app_id="C", propagation=PropagationScope.LINEAGE
    )
    own = yield ctx.call_activity(
        "inspect", input="own", app_id="C", propagation=PropagationScope.OWN_HISTORY
    )
    return {"received": received, "lineage": lineage, "own": own}


def test_propagation_across_three_apps() -> None:
    with (
        Server(["A", "B", "C"]) as srv,
        running_runtime(srv.port("A"), [("root", root)]),
        running_runtime(srv.port("B"), [("middle", middle)], [("inspect", inspect)]),
        running_runtime(srv.port("C"), [], [("inspect", inspect)]),
        workflow_client(srv.port("A")) as client,
    ):
        iid = client.schedule_new_workflow("root", input=None, instance_id=uid("prop"))
        out = assert_completed(client, iid)
    middle_id = f"{iid}-middle"

    # OWN_HISTORY to an activity on B: one chunk, app A's root, ending with its scheduling.
    own = out["own"]["saw"]
    assert own["scope"] == "OWN_HISTORY"
    assert [(c["app"], c["instance"], c["workflow"]) for c in own["chunks"]] == [("A", iid, "root")]
    assert own["chunks"][0]["events"][:2] == ["workflowStarted", "executionStarted"]
    assert own["chunks"][0]["events"][-1] == "taskScheduled"
    # No scope, nothing received.
    assert out["plain"]["saw"] is None

    inner = out["middle"]
    # The child received A's lineage: A's chunk only, ending with its own creation.
    assert inner["received"]["scope"] == "LINEAGE"
    assert [(c["app"], c["workflow"]) for c in inner["received"]["chunks"]] == [("A", "root")]
    assert inner["received"]["chunks"][0]["events"][-1] == "childWorkflowInstanceCreated"
    # LINEAGE from B to C: A's chunk first, then B's.
    lineage = inner["lineage"]["saw"]
    assert [(c["app"], c["instance"], c["workflow"]) for c in lineage["chunks"]] == [
        ("A", iid, "root"),
        ("B", middle_id, "middle"),
    ]
    # OWN_HISTORY from B to C drops A.
    assert [(c["app"], c["workflow"]) for c in inner["own"]["saw"]["chunks"]] == [("B", "middle")]
    # A's chunk grew between the first activity and the child: history up to each call.
    assert len(lineage["chunks"][0]["events"]) > len(own["chunks"][0]["events"])
