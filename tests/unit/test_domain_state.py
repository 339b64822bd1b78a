"""RuntimeState: status derivation and inbox deduplication (`accepts`), plus validate.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain import events as ev
from backend.domain import validate
from backend.domain.state import RuntimeState, is_control
from backend.errors import InvalidArgument, PayloadTooLarge

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FIRE_AT = T0 + timedelta(minutes=5)


# -- event builders ----------------------------------------------------------


def started(execution_id: str = "exec-1") -> hpb.HistoryEvent:
    return ev.event(
        T0,
        executionStarted=hpb.ExecutionStartedEvent(
            name="wf",
            workflowInstance=opb.WorkflowInstance(instanceId="i1", executionId=ev.sv(execution_id)),
        ),
    )


def turn(moment: datetime = T0) -> hpb.HistoryEvent:
    return ev.workflow_started(moment)


def task_scheduled(task_id: int) -> hpb.HistoryEvent:
    return ev.event(T0, event_id=task_id, taskScheduled=hpb.TaskScheduledEvent(name="act"))


def task_completed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(T0, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=task_id, result=ev.sv("r")))


def task_failed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0, taskFailed=hpb.TaskFailedEvent(taskScheduledId=task_id, failureDetails=ev.failure("E", "boom"))
    )


def timer_created(timer_id: int, fire_at: datetime = FIRE_AT) -> hpb.HistoryEvent:
    return ev.event(T0, event_id=timer_id, timerCreated=hpb.TimerCreatedEvent(fireAt=ev.ts(fire_at)))


def timer_fired(timer_id: int, fire_at: datetime = FIRE_AT) -> hpb.HistoryEvent:
    return ev.event(T0, timerFired=hpb.TimerFiredEvent(timerId=timer_id, fireAt=ev.ts(fire_at)))


def child_created(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0,
        event_id=task_id,
        childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(instanceId="c", name="child"),
    )


def child_completed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0, childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(taskScheduledId=task_id)
    )


def child_failed(task_id: int) -> hpb.HistoryEvent:
    return ev.event(
        T0,
        childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(
            taskScheduledId=task_id, failureDetails=ev.failure("E", "boom")
        ),
    )


def raised(name: str = "go") -> hpb.HistoryEvent:
    return ev.event_raised(T0, name, ev.sv("payload"))


def suspended() -> hpb.HistoryEvent:
    return ev.execution_suspended(T0, ev.sv("why"))


def resumed() -> hpb.HistoryEvent:
    return ev.execution_resumed(T0, None)


def stalled(reason: int = opb.VERSION_NOT_AVAILABLE) -> hpb.HistoryEvent:
    return ev.event(T0, executionStalled=hpb.ExecutionStalledEvent(reason=reason))  # type: ignore[arg-type]


def completed(status: int) -> hpb.HistoryEvent:
    return ev.execution_completed(T0, status, event_id=9, result=ev.sv("out"))


RUNNING_BASE = [turn(), started()]


# -- status ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "status"),
    [
        pytest.param([], opb.ORCHESTRATION_STATUS_PENDING, id="empty-pending"),
        pytest.param([raised()], opb.ORCHESTRATION_STATUS_PENDING, id="no-start-pending"),
        # PROTOCOL 5.D (runtimestate.RuntimeStatus): no ExecutionStarted -> PENDING, or STALLED if stalled.
        pytest.param([stalled()], opb.ORCHESTRATION_STATUS_STALLED, id="stalled-before-start"),
        pytest.param(RUNNING_BASE, opb.ORCHESTRATION_STATUS_RUNNING, id="running"),
        pytest.param([*RUNNING_BASE, suspended()], opb.ORCHESTRATION_STATUS_SUSPENDED, id="suspended"),
        pytest.param(
            [*RUNNING_BASE, suspended(), resumed()], opb.ORCHESTRATION_STATUS_RUNNING, id="resumed-running"
        ),
        pytest.param([*RUNNING_BASE, stalled()], opb.ORCHESTRATION_STATUS_STALLED, id="stalled"),
        pytest.param(
            [*RUNNING_BASE, suspended(), stalled()],
            opb.ORCHESTRATION_STATUS_STALLED,
            id="stalled-beats-suspended",
        ),
        pytest.param(
            [*RUNNING_BASE, stalled(), turn(T0 + timedelta(seconds=1))],
            opb.ORCHESTRATION_STATUS_RUNNING,
            id="next-turn-clears-stall",
        ),
        pytest.param(
            [*RUNNING_BASE, completed(opb.ORCHESTRATION_STATUS_COMPLETED)],
            opb.ORCHESTRATION_STATUS_COMPLETED,
            id="completed",
        ),
        pytest.param(
            [*RUNNING_BASE, completed(opb.ORCHESTRATION_STATUS_FAILED)],
            opb.ORCHESTRATION_STATUS_FAILED,
            id="failed",
        ),
        pytest.param(
            [*RUNNING_BASE, completed(opb.ORCHESTRATION_STATUS_TERMINATED)],
            opb.ORCHESTRATION_STATUS_TERMINATED,
            id="terminated",
        ),
        pytest.param(
            [*RUNNING_BASE, suspended(), completed(opb.ORCHESTRATION_STATUS_TERMINATED)],
            opb.ORCHESTRATION_STATUS_TERMINATED,
            id="completion-beats-suspended",
        ),
    ],
)
def test_status(history: list[hpb.HistoryEvent], status: int) -> None:
    state = RuntimeState.of(history)
    assert opb.OrchestrationStatus.Name(state.status) == opb.OrchestrationStatus.Name(status)


def test_fold_tracks_ids_length_and_turn_times() -> None:
    later = T0 + timedelta(seconds=7)
    history = [turn(), started("abc"), task_scheduled(0), timer_created(1), turn(later), task_completed(0)]
    state = RuntimeState.of(history)
    assert state.length == 6
    assert state.execution_id == "abc"
    assert state.action_ids == {0, 1}
    assert state.started_at == T0
    assert state.last_turn_at == later
    assert set(state.tasks) == {0}
    assert state.tasks_done == {0}
    assert set(state.timers) == {1}
    assert RuntimeState().execution_id == ""


def test_suspended_right_after_its_start_needs_a_worker_on_resume() -> None:
    """The server records a start that was suspended before its first turn: the code has
    not run, so the resume must reach a worker."""
    assert RuntimeState.of([*RUNNING_BASE, suspended()]).buffered_while_suspended
    assert not RuntimeState.of([*RUNNING_BASE, task_scheduled(0), suspended()]).buffered_while_suspended


def test_buffered_while_suspended() -> None:
    state = RuntimeState.of([*RUNNING_BASE, task_scheduled(0), suspended()])
    assert not state.buffered_while_suspended
    state.add(turn(T0 + timedelta(seconds=1)))  # a turn opening is not a buffered event
    assert not state.buffered_while_suspended
    state.add(raised())
    assert state.buffered_while_suspended
    state.add(resumed())
    assert not state.buffered_while_suspended
    assert state.status == opb.ORCHESTRATION_STATUS_RUNNING


@pytest.mark.parametrize(
    ("event", "control"),
    [
        (suspended(), True),
        (resumed(), True),
        (ev.execution_terminated(T0, None, recurse=False), True),
        (raised(), False),
        (started(), False),
        (turn(), False),
    ],
)
def test_is_control(event: hpb.HistoryEvent, control: bool) -> None:
    assert is_control(event) is control


# -- accepts (dedup) -----------------------------------------------------------

HISTORY_WITH_WORK = [
    turn(),
    started(),
    task_scheduled(0),
    task_scheduled(1),
    task_completed(1),
    timer_created(2),
    timer_created(3),
    timer_fired(3),
    child_created(4),
    child_created(5),
    child_completed(5),
]


@pytest.mark.parametrize(
    ("history", "event", "accepted"),
    [
        # starts
        pytest.param([], started(), True, id="first-start"),
        pytest.param(RUNNING_BASE, started("exec-2"), False, id="second-start-dropped"),
        pytest.param(
            RUNNING_BASE, completed(opb.ORCHESTRATION_STATUS_COMPLETED), False, id="inbox-completion"
        ),
        # tasks
        pytest.param(HISTORY_WITH_WORK, task_completed(0), True, id="task-completed"),
        pytest.param(HISTORY_WITH_WORK, task_failed(0), True, id="task-failed"),
        pytest.param(HISTORY_WITH_WORK, task_completed(7), False, id="task-unscheduled"),
        pytest.param(HISTORY_WITH_WORK, task_failed(7), False, id="task-failed-unscheduled"),
        pytest.param(HISTORY_WITH_WORK, task_completed(1), False, id="task-duplicate-completion"),
        pytest.param(HISTORY_WITH_WORK, task_failed(1), False, id="task-failed-after-completed"),
        pytest.param(HISTORY_WITH_WORK, task_completed(2), False, id="task-result-for-timer-id"),
        # timers
        pytest.param(HISTORY_WITH_WORK, timer_fired(2), True, id="timer-fired"),
        pytest.param(HISTORY_WITH_WORK, timer_fired(9), False, id="timer-unknown"),
        pytest.param(HISTORY_WITH_WORK, timer_fired(3), False, id="timer-duplicate"),
        pytest.param(
            HISTORY_WITH_WORK,
            timer_fired(2, FIRE_AT + timedelta(seconds=1)),
            False,
            id="timer-other-fire-at",
        ),
        pytest.param(HISTORY_WITH_WORK, timer_fired(0), False, id="timer-fired-for-task-id"),
        # children
        pytest.param(HISTORY_WITH_WORK, child_completed(4), True, id="child-completed"),
        pytest.param(HISTORY_WITH_WORK, child_failed(4), True, id="child-failed"),
        pytest.param(HISTORY_WITH_WORK, child_completed(5), False, id="child-duplicate"),
        pytest.param(HISTORY_WITH_WORK, child_failed(5), False, id="child-failed-after-completed"),
        pytest.param(HISTORY_WITH_WORK, child_completed(8), False, id="child-unknown"),
        pytest.param(HISTORY_WITH_WORK, child_completed(0), False, id="child-result-for-task-id"),
        # plain events
        pytest.param(HISTORY_WITH_WORK, raised(), True, id="event-raised"),
        pytest.param([], raised(), True, id="event-raised-before-start"),
        pytest.param(RUNNING_BASE, suspended(), True, id="suspend"),
        pytest.param(RUNNING_BASE, resumed(), True, id="resume"),
        pytest.param(RUNNING_BASE, ev.execution_terminated(T0, None, recurse=True), True, id="terminate"),
        pytest.param(RUNNING_BASE, hpb.HistoryEvent(eventId=-1), False, id="no-event-type"),
    ],
)
def test_accepts(history: list[hpb.HistoryEvent], event: hpb.HistoryEvent, accepted: bool) -> None:
    assert RuntimeState.of(history).accepts(event) is accepted


@pytest.mark.parametrize(
    "event",
    [
        raised(),
        task_completed(0),
        timer_fired(2),
        child_completed(4),
        suspended(),
        resumed(),
        ev.execution_terminated(T0, None, recurse=True),
        started("exec-2"),
    ],
    ids=lambda e: ev.kind(e),
)
@pytest.mark.parametrize(
    "status",
    [
        opb.ORCHESTRATION_STATUS_COMPLETED,
        opb.ORCHESTRATION_STATUS_FAILED,
        opb.ORCHESTRATION_STATUS_TERMINATED,
    ],
)
def test_everything_dropped_after_completion(event: hpb.HistoryEvent, status: int) -> None:
    open_state = RuntimeState.of(HISTORY_WITH_WORK)
    if not event.HasField("executionStarted"):
        assert open_state.accepts(event)  # the same event is accepted while the workflow runs
    done = RuntimeState.of([*HISTORY_WITH_WORK, completed(status)])
    assert not done.accepts(event)


def test_timer_of_previous_generation_is_dropped() -> None:
    """A TimerFired carries fireAt so a timer from before continue-as-new cannot fire a new one."""
    state = RuntimeState.of([turn(), started("gen-2"), timer_created(1, FIRE_AT + timedelta(hours=1))])
    assert not state.accepts(timer_fired(1, FIRE_AT))
    assert state.accepts(timer_fired(1, FIRE_AT + timedelta(hours=1)))


# -- validate.py ---------------------------------------------------------------


@pytest.mark.parametrize(
    "iid",
    [
        "a",
        "abc-123_XYZ",
        "0",
        "_",
        "-",
        "x" * 1024,
        "550e8400e29b41d4a716446655440000",
        # What daprd 1.18.1 accepts (a Java user's IDs): '.', ':', spaces, any letters.
        "order.2026-12-01",
        "tenant:42",
        "a b",
        "é",
        "a@b",
    ],
)
def test_new_instance_id_valid(iid: str) -> None:
    assert validate.new_instance_id(iid) == iid


@pytest.mark.parametrize("iid", ["", "x" * 1025, "a/b", "a\n", "tab\tid", "nul\x00", "\x7f"])
def test_new_instance_id_invalid(iid: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.new_instance_id(iid)


@pytest.mark.parametrize("iid", ["parent:0001", "a.b", "x" * 1024, "a b", "abc-123_XYZ", "é"])
def test_existing_instance_id_valid(iid: str) -> None:
    assert validate.existing_instance_id(iid) == iid


@pytest.mark.parametrize("iid", ["", "x" * 1025, "a\nb", "nul\x00"])
def test_existing_instance_id_invalid(iid: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.existing_instance_id(iid)


@pytest.mark.parametrize("value", ["", " ", "\t\n", "x" * 1025])
def test_name_invalid(value: str) -> None:
    with pytest.raises(InvalidArgument, match="workflow name"):
        validate.name(value, "workflow name")


@pytest.mark.parametrize("value", ["wf", "x" * 1024, "My Workflow"])
def test_name_valid(value: str) -> None:
    assert validate.name(value, "workflow name") == value


@pytest.mark.parametrize("value", ["", "app-1", "x" * 256])
def test_app_id_valid(value: str) -> None:
    assert validate.app_id(value) == value


@pytest.mark.parametrize("value", ["x" * 257, "a\x01"])
def test_app_id_invalid(value: str) -> None:
    with pytest.raises(InvalidArgument):
        validate.app_id(value)


def test_payload_limit() -> None:
    validate.payload(None, "input", 0)
    validate.payload(ev.sv("abcd"), "input", 4)  # exactly at the limit
    validate.payload(ev.sv("éé"), "input", 4)  # 4 bytes in UTF-8
    with pytest.raises(PayloadTooLarge) as info:
        validate.payload(ev.sv("abcde"), "input", 4)
    assert isinstance(info.value, InvalidArgument)
    assert "4 bytes" in str(info.value)
    assert "5 bytes" in str(info.value)
    with pytest.raises(PayloadTooLarge, match="up to 3 bytes"):
        validate.payload(ev.sv("éé"), "input", 3)  # counted in bytes, not characters
