"""turn.plan (which inbox events run and who runs them), turn_started and workflow_request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain import events as ev
from backend.domain.model import InboxItem
from backend.domain.state import RuntimeState
from backend.domain.turn import Mode, plan, turn_started, workflow_request

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FIRE_AT = T0 + timedelta(minutes=1)


def started(execution_id: str = "exec-1") -> hpb.HistoryEvent:
    return ev.event(
        T0,
        executionStarted=hpb.ExecutionStartedEvent(
            name="wf",
            workflowInstance=opb.WorkflowInstance(instanceId="i1", executionId=ev.sv(execution_id)),
        ),
    )


def raised(name: str = "go") -> hpb.HistoryEvent:
    return ev.event_raised(T0, name, ev.sv("x"))


def task_done(task_id: int) -> hpb.HistoryEvent:
    return ev.event(T0, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=task_id))


def task_failed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(T0, taskFailed=hpb.TaskFailedEvent(taskScheduledId=task_id))


def fired(timer_id: int) -> hpb.HistoryEvent:
    return ev.event(T0, timerFired=hpb.TimerFiredEvent(timerId=timer_id, fireAt=ev.ts(FIRE_AT)))


def child_done(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0, childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(taskScheduledId=task_id)
    )


def child_failed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0, childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(taskScheduledId=task_id)
    )


def suspend() -> hpb.HistoryEvent:
    return ev.execution_suspended(T0, None)


def resume() -> hpb.HistoryEvent:
    return ev.execution_resumed(T0, None)


def terminate() -> hpb.HistoryEvent:
    return ev.execution_terminated(T0, ev.sv("bye"), recurse=False)


NOT_STARTED: list[hpb.HistoryEvent] = []
RUNNING = [
    ev.workflow_started(T0),
    started(),
    ev.event(T0, event_id=0, taskScheduled=hpb.TaskScheduledEvent(name="a")),
    ev.event(T0, event_id=1, timerCreated=hpb.TimerCreatedEvent(fireAt=ev.ts(FIRE_AT))),
    ev.event(T0, event_id=2, childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(name="c")),
]
SUSPENDED = [*RUNNING, suspend()]
# A turn delivered an event to the worker while suspended: the worker buffered it.
SUSPENDED_BUFFERED = [*SUSPENDED, ev.workflow_started(T0 + timedelta(seconds=1)), raised()]
COMPLETED = [*RUNNING, ev.execution_completed(T0, opb.ORCHESTRATION_STATUS_COMPLETED, event_id=5)]


def inbox(*events: hpb.HistoryEvent) -> list[InboxItem]:
    return [InboxItem(id=100 + n, event=e) for n, e in enumerate(events)]


def kinds(items: list[InboxItem]) -> list[str]:
    return [ev.kind(i.event) for i in items]


@pytest.mark.parametrize(
    ("history", "events", "mode", "batch_kinds"),
    [
        # DROP: nothing new
        pytest.param(RUNNING, [task_done(9)], Mode.DROP, [], id="drop-unscheduled-task"),
        pytest.param(RUNNING, [started("again")], Mode.DROP, [], id="drop-second-start"),
        pytest.param(RUNNING, [fired(0), child_done(1)], Mode.DROP, [], id="drop-ids-of-other-kinds"),
        pytest.param(
            COMPLETED, [raised(), task_done(0), suspend()], Mode.DROP, [], id="drop-after-completion"
        ),
        pytest.param(COMPLETED, [terminate()], Mode.DROP, [], id="drop-terminate-after-completion"),
        # TERMINATE: the server ends the workflow itself
        pytest.param(RUNNING, [terminate()], Mode.TERMINATE, ["executionTerminated"], id="terminate"),
        pytest.param(
            RUNNING,
            [raised(), terminate(), task_done(0)],
            Mode.TERMINATE,
            ["eventRaised", "executionTerminated", "taskCompleted"],
            id="terminate-with-others",
        ),
        pytest.param(
            NOT_STARTED,
            [terminate(), started()],
            Mode.TERMINATE,
            ["executionStarted", "executionTerminated"],
            id="terminate-pending",
        ),
        pytest.param(
            SUSPENDED, [terminate()], Mode.TERMINATE, ["executionTerminated"], id="terminate-suspended"
        ),
        # RECORD: suspend / resume without a worker
        pytest.param(RUNNING, [suspend()], Mode.RECORD, ["executionSuspended"], id="record-suspend"),
        pytest.param(SUSPENDED, [resume()], Mode.RECORD, ["executionResumed"], id="record-resume"),
        pytest.param(
            RUNNING,
            [suspend(), resume()],
            Mode.RECORD,
            ["executionSuspended", "executionResumed"],
            id="record-suspend-resume",
        ),
        pytest.param(
            SUSPENDED,
            [resume(), task_done(9)],
            Mode.RECORD,
            ["executionResumed"],
            id="record-resume-plus-dup",
        ),
        # WORKER
        pytest.param(NOT_STARTED, [started()], Mode.WORKER, ["executionStarted"], id="worker-start"),
        pytest.param(RUNNING, [raised()], Mode.WORKER, ["eventRaised"], id="worker-event"),
        pytest.param(
            RUNNING,
            [task_done(0), fired(1), child_done(2)],
            Mode.WORKER,
            ["taskCompleted", "timerFired", "childWorkflowInstanceCompleted"],
            id="worker-results",
        ),
        pytest.param(RUNNING, [task_failed(0)], Mode.WORKER, ["taskFailed"], id="worker-task-failed"),
        pytest.param(
            RUNNING, [child_failed(2)], Mode.WORKER, ["childWorkflowInstanceFailed"], id="worker-child-failed"
        ),
        pytest.param(
            RUNNING,
            [suspend(), raised()],
            Mode.WORKER,
            ["executionSuspended", "eventRaised"],
            id="worker-suspend-with-event",
        ),
        pytest.param(
            SUSPENDED_BUFFERED, [resume()], Mode.WORKER, ["executionResumed"], id="worker-resume-after-buffer"
        ),
        pytest.param(
            NOT_STARTED,
            [raised("a"), started(), raised("b")],
            Mode.WORKER,
            ["executionStarted", "eventRaised", "eventRaised"],
            id="worker-start-moved-first",
        ),
        # WAIT: not started yet
        pytest.param(NOT_STARTED, [raised()], Mode.WAIT, [], id="wait-event-before-start"),
        pytest.param(NOT_STARTED, [raised(), suspend()], Mode.WAIT, [], id="wait-event-and-control"),
        # Control events never precede ExecutionStarted (the Java SDK then completed the
        # instance without running the user's code).
        pytest.param(NOT_STARTED, [suspend()], Mode.WAIT, [], id="wait-suspend-before-start"),
        pytest.param(
            NOT_STARTED,
            [suspend(), started()],
            Mode.RECORD,
            ["executionStarted", "executionSuspended"],
            id="record-start-suspended-before-its-first-turn",
        ),
        pytest.param(
            NOT_STARTED,
            [suspend(), started(), resume()],
            Mode.WORKER,
            ["executionStarted", "executionSuspended", "executionResumed"],
            id="worker-start-suspended-and-resumed",
        ),
        pytest.param(
            [ev.workflow_started(T0), started(), suspend()],
            [resume()],
            Mode.WORKER,
            ["executionResumed"],
            id="worker-resume-of-a-start-recorded-suspended",
        ),
    ],
)
def test_plan_modes(
    history: list[hpb.HistoryEvent], events: list[hpb.HistoryEvent], mode: Mode, batch_kinds: list[str]
) -> None:
    items = inbox(*events)
    result = plan(RuntimeState.of(history), items)
    assert result.mode is mode
    assert kinds(result.batch) == batch_kinds
    if mode is Mode.WAIT:
        assert result.consumed == []  # nothing leaves the inbox
    else:
        assert result.consumed == [i.id for i in items]  # dropped items are consumed too


def test_plan_empty_inbox_is_drop() -> None:
    result = plan(RuntimeState.of(RUNNING), [])
    assert result.mode is Mode.DROP
    assert result.batch == []
    assert result.consumed == []


def test_plan_keeps_inbox_order_and_ids() -> None:
    items = inbox(raised("a"), task_done(0), raised("b"), started("x"))
    result = plan(RuntimeState.of(RUNNING), items)
    assert result.mode is Mode.WORKER
    # the second start is dropped (already started); the rest keep their order
    assert [i.id for i in result.batch] == [100, 101, 102]
    assert [i.event.eventRaised.name for i in result.batch if i.event.HasField("eventRaised")] == ["a", "b"]


def test_plan_execution_started_first_is_stable() -> None:
    items = inbox(raised("a"), raised("b"), started(), raised("c"))
    result = plan(RuntimeState.of(NOT_STARTED), items)
    assert [i.id for i in result.batch] == [102, 100, 101, 103]


@pytest.mark.parametrize(
    ("events", "kept"),
    [
        pytest.param([task_done(0), task_done(0)], [100], id="task-twice"),
        pytest.param([task_done(0), task_failed(0)], [100], id="task-completed-then-failed"),
        pytest.param([fired(1), fired(1)], [100], id="timer-twice"),
        pytest.param([child_done(2), child_failed(2)], [100], id="child-twice"),
        pytest.param(
            [raised(), task_done(0), raised(), task_done(0)], [100, 101, 102], id="events-not-deduped"
        ),
        pytest.param([task_done(0), fired(0)], [100], id="same-id-other-kind-unknown"),
    ],
)
def test_plan_drops_duplicates_within_batch(events: list[hpb.HistoryEvent], kept: list[int]) -> None:
    items = inbox(*events)
    result = plan(RuntimeState.of(RUNNING), items)
    assert result.mode is Mode.WORKER
    assert [i.id for i in result.batch] == kept
    assert result.consumed == [i.id for i in items]


def test_plan_two_starts_in_one_batch() -> None:
    items = inbox(started("first"), started("second"))
    result = plan(RuntimeState.of(NOT_STARTED), items)
    assert result.mode is Mode.WORKER
    assert [i.id for i in result.batch] == [100]
    assert result.batch[0].event.executionStarted.workflowInstance.executionId.value == "first"
    assert result.consumed == [100, 101]


def test_plan_resume_without_buffered_events_is_record_even_after_turns() -> None:
    # A turn while suspended that delivered nothing but control events buffers nothing.
    history = [*SUSPENDED, ev.workflow_started(T0 + timedelta(seconds=1)), suspend()]
    assert plan(RuntimeState.of(history), inbox(resume())).mode is Mode.RECORD
    # ... and once a resume was recorded, the buffer flag is clear again.
    history = [*SUSPENDED_BUFFERED, ev.workflow_started(T0 + timedelta(seconds=2)), resume(), suspend()]
    assert plan(RuntimeState.of(history), inbox(resume())).mode is Mode.RECORD


# -- turn_started ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        pytest.param(None, T0, T0, id="first-turn-uses-now"),
        pytest.param(T0, T0 + timedelta(seconds=3), T0 + timedelta(seconds=3), id="clock-forward"),
        pytest.param(T0, T0, T0 + timedelta(microseconds=1), id="same-instant"),
        pytest.param(T0, T0 - timedelta(seconds=5), T0 + timedelta(microseconds=1), id="clock-went-back"),
    ],
)
def test_turn_started_is_monotonic(previous: datetime | None, now: datetime, expected: datetime) -> None:
    history = [] if previous is None else [ev.workflow_started(previous), started()]
    event = turn_started(RuntimeState.of(history), now)
    assert event.HasField("workflowStarted")
    assert event.eventId == -1
    assert ev.from_ts(event.timestamp) == expected
    if previous is not None:
        assert ev.from_ts(event.timestamp) > previous


def test_turn_started_uses_latest_turn_not_first() -> None:
    later = T0 + timedelta(minutes=10)
    state = RuntimeState.of([ev.workflow_started(T0), started(), ev.workflow_started(later)])
    assert ev.from_ts(turn_started(state, T0 + timedelta(minutes=1)).timestamp) > later


# -- workflow_request -------------------------------------------------------------


HISTORY = [ev.workflow_started(T0), started(), raised("a"), raised("b")]
NEW = [ev.workflow_started(T0 + timedelta(seconds=1)), raised("c")]


def test_workflow_request_full_history() -> None:
    req = workflow_request("i1", "exec-1", HISTORY, NEW)
    assert req.instanceId == "i1"
    assert req.executionId.value == "exec-1"
    assert list(req.pastEvents) == HISTORY
    assert list(req.newEvents) == NEW
    assert not req.HasField("cachedHistory")


@pytest.mark.parametrize("cached", [1, 2, 4])
def test_workflow_request_sends_only_delta_when_cached(cached: int) -> None:
    req = workflow_request("i1", "exec-1", HISTORY, NEW, cached=cached)
    assert list(req.pastEvents) == HISTORY[cached:]
    assert req.HasField("cachedHistory")
    assert req.cachedHistory.eventCount == cached
    assert list(req.newEvents) == NEW


def test_workflow_request_without_execution_id() -> None:
    req = workflow_request("i1", "", [], [started()])
    assert not req.HasField("executionId")
    assert list(req.pastEvents) == []
    assert len(req.newEvents) == 1
