"""Server behaviours as the real Go SDK github.com/dapr/durabletask-go v0.14.0 sees them, through
its public API only (task.TaskRegistry, client.NewTaskHubGrpcClient and its work-item listener).

* History propagation (Dapr 1.18+): task.WithHistoryPropagation(api.PropagateOwnHistory() /
  api.PropagateLineage()) on CallActivity and CallChildWorkflow across app IDs, read back on the
  receiving side with GetPropagatedHistory() and the SDK's own chunk queries (cmd/propagation).
* Continue-as-new with task.WithKeepUnprocessedEvents() keeps external events in raise order
  (cmd/carryover).

The Go programs print what the SDK received as one RESULT line; the assertions are all here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.fidelity.support import GoPrograms, GoRun, run
from tests.e2e.harness import Server

# The first test also pays for the session's `go build` (a cold module cache downloads the SDK).
pytestmark = pytest.mark.timeout(900)


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _completed_output(done: GoRun, instance_id: str) -> Any:
    assert done.returncode == 0, done.describe()
    result = done.last
    assert result["event"] == "done", done.describe()
    assert result["instance_id"] == instance_id
    assert result["status"] == "COMPLETED", done.describe()
    return json.loads(result["output"])


# ---------------------------------------------------------------------------
# History propagation
# ---------------------------------------------------------------------------


def _chunks(saw: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["app"], c["instance"], c["workflow"]) for c in saw["chunks"]]


def _inspects(chunk: dict[str, Any]) -> list[tuple[str, bool]]:
    """The chunk's inspect calls as the SDK resolved them: (tag, completed)."""
    return [(json.loads(i["input"]), i["completed"]) for i in chunk["inspects"]]


def _assert_starts_like_a_workflow(chunk: dict[str, Any]) -> None:
    assert chunk["events"][:2] == ["workflowStarted", "executionStarted"], chunk
    # Every event decoded to a kind the SDK knows: the server's events use the SDK's field numbers.
    assert "unknown" not in chunk["events"], chunk


@pytest.mark.parametrize(
    ("apps", "leaf"),
    [(["A", "B", "C"], "C"), (["A", "B"], "A")],
    ids=["three-apps", "two-apps-back-to-A"],
)
def test_history_propagation_across_apps(fidelity_programs: GoPrograms, apps: list[str], leaf: str) -> None:
    """root (A) -> inspect on B with OWN_HISTORY, inspect on B without, child middle on B with
    LINEAGE; middle -> inspect on the leaf app (C, or back on A) with LINEAGE and OWN_HISTORY."""
    iid = _uid("prop")
    middle_id = f"{iid}-middle"
    with Server(apps) as server:
        args = [a for app in apps for a in ("-app", f"{app}={server.address(app)}")]
        done = run(fidelity_programs.propagation, [*args, "-leaf", leaf, "-instance", iid])
    out = _completed_output(done, iid)
    # The client started root without propagation: root itself received nothing.
    assert out["received"] is None, done.describe()

    # OWN_HISTORY to an activity on B: one chunk, A's root, ending with this very call.
    own = out["own"]
    assert (own["tag"], own["ran_on"]) == ("own", "B")
    saw = own["saw"]
    assert saw is not None, done.describe()
    assert saw["scope"] == "OWN_HISTORY"
    assert _chunks(saw) == [("A", iid, "root")]
    root_at_own = saw["chunks"][0]
    _assert_starts_like_a_workflow(root_at_own)
    assert root_at_own["events"][-1] == "taskScheduled"
    assert root_at_own["last_scheduled"] == 'inspect("own")'
    assert _inspects(root_at_own) == [("own", False)]

    # No propagation asked for: nothing at all, not even an empty history.
    assert out["plain"] == {"tag": "plain", "ran_on": "B", "saw": None}

    inner = out["middle"]
    # The child received A's lineage: A's chunk only, ending with this child's creation.
    received = inner["received"]
    assert received is not None, done.describe()
    assert received["scope"] == "LINEAGE"
    assert _chunks(received) == [("A", iid, "root")]
    root_at_child = received["chunks"][0]
    _assert_starts_like_a_workflow(root_at_child)
    assert root_at_child["events"][-1] == "childWorkflowInstanceCreated"
    assert root_at_child["last_scheduled"] == f"middle@{middle_id}"
    # Both earlier calls and their completions are in it, matched by the SDK.
    assert _inspects(root_at_child) == [("own", True), ("plain", True)]
    # A's history up to each call: it grew between the first activity and the child.
    assert len(root_at_child["events"]) > len(root_at_own["events"])

    # LINEAGE from B to the leaf: A's chunk first (as B received it), then B's own.
    lineage = inner["lineage"]
    assert (lineage["tag"], lineage["ran_on"]) == ("lineage", leaf)
    assert lineage["saw"]["scope"] == "LINEAGE"
    assert _chunks(lineage["saw"]) == [("A", iid, "root"), ("B", middle_id, "middle")]
    assert lineage["saw"]["chunks"][0] == root_at_child
    middle_at_lineage = lineage["saw"]["chunks"][1]
    _assert_starts_like_a_workflow(middle_at_lineage)
    assert middle_at_lineage["events"][-1] == "taskScheduled"
    assert middle_at_lineage["last_scheduled"] == 'inspect("lineage")'

    # OWN_HISTORY from B to the leaf: B's chunk only, A's dropped.
    own_b = inner["own"]
    assert (own_b["tag"], own_b["ran_on"]) == ("own", leaf)
    assert own_b["saw"]["scope"] == "OWN_HISTORY"
    assert _chunks(own_b["saw"]) == [("B", middle_id, "middle")]
    middle_at_own = own_b["saw"]["chunks"][0]
    _assert_starts_like_a_workflow(middle_at_own)
    assert middle_at_own["events"][-1] == "taskScheduled"
    assert middle_at_own["last_scheduled"] == 'inspect("own")'
    assert _inspects(middle_at_own) == [("lineage", True), ("own", False)]


# ---------------------------------------------------------------------------
# Continue-as-new keeps events in raise order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("wait_start", [False, True], ids=["right-after-schedule", "once-running"])
@pytest.mark.parametrize("attempt", range(3))  # the old bug depended on timing: a few tries
def test_continue_as_new_keeps_events_in_raise_order(
    fidelity_programs: GoPrograms, attempt: int, wait_start: bool
) -> None:
    """One event per generation, the rest carried over: raised 1..12 in a row, taken 1..12.

    Most events arrive while a generation's turn runs; before the fix they were queued ahead of
    the events that turn carried over, and came out shuffled (e.g. [1, 5, 8, 11, 12, 9, ...])."""
    iid = _uid("carry")
    with Server(["main"]) as server:
        args = ["-app", f"main={server.address('main')}", "-instance", iid, "-count", "12"]
        done = run(fidelity_programs.carryover, [*args, *(["-wait-start"] if wait_start else [])])
    assert _completed_output(done, iid) == list(range(1, 13)), done.describe()
