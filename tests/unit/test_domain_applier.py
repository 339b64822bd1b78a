"""applier.apply / terminate / record: a turn's response becomes history, messages, tasks and instances."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import applier
from backend.domain import events as ev
from backend.domain.model import Gate, InboxItem, InstanceKey, WorkflowCommit
from backend.domain.projection import initial_state
from backend.domain.state import RuntimeState
from backend.domain.turn import Mode, plan, turn_started
from backend.errors import InvalidArgument

APP = "app-a"
OTHER_APP = "app-b"
PARENT_APP = "app-p"
KEY = InstanceKey(APP, "wf1")
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=30)
LIMIT = 100
CONSUMED: list[int | str] = [11, 12]


# -- builders ---------------------------------------------------------------------


def start_event(
    *, parent: opb.ParentInstanceInfo | None = None, execution_id: str = "exec-1", input_: str | None = "in"
) -> hpb.HistoryEvent:
    started = ev.event(
        T0,
        executionStarted=hpb.ExecutionStartedEvent(
            name="wf",
            input=ev.sv(input_),
            workflowInstance=opb.WorkflowInstance(
                instanceId=KEY.instance_id, executionId=ev.sv(execution_id)
            ),
            parentInstance=parent,
        ),
    )
    started.router.CopyFrom(ev.router(APP))
    return started


PARENT_INFO = opb.ParentInstanceInfo(
    taskScheduledId=7,
    name=ev.sv("parent-wf"),
    workflowInstance=opb.WorkflowInstance(instanceId="parent-1", executionId=ev.sv("p-exec")),
    appID=PARENT_APP,
)

BASE = [ev.workflow_started(T0), start_event()]
CHILD_BASE = [ev.workflow_started(T0), start_event(parent=PARENT_INFO)]


def stored_state(history: list[hpb.HistoryEvent]) -> opb.WorkflowState:
    start = next((e.executionStarted for e in history if e.HasField("executionStarted")), None)
    if start is None:
        return initial_state(KEY, start_event().executionStarted, created_at=T0)
    st = initial_state(KEY, start, created_at=T0)
    st.workflowStatus = opb.ORCHESTRATION_STATUS_RUNNING
    return st


def ctx_for(history: list[hpb.HistoryEvent], *, limit: int = LIMIT) -> applier.TurnContext:
    return applier.TurnContext(
        key=KEY, now=NOW, stored=stored_state(history), consumed=list(CONSUMED), max_payload_bytes=limit
    )


def response(*actions: apb.WorkflowAction, **fields: object) -> spb.WorkflowResponse:
    return spb.WorkflowResponse(instanceId=KEY.instance_id, actions=list(actions), **fields)  # type: ignore[arg-type]


def action(action_id: int, *, target: str | None = None, **kind: object) -> apb.WorkflowAction:
    a = apb.WorkflowAction(id=action_id, **kind)  # type: ignore[arg-type]
    if target is not None:
        a.router.targetAppID = target
    return a


def schedule(
    action_id: int, name: str = "act", *, target: str | None = None, input_: str = "x"
) -> apb.WorkflowAction:
    return action(
        action_id,
        target=target,
        scheduleTask=apb.ScheduleTaskAction(
            name=name, input=ev.sv(input_), version=ev.sv("v2"), taskExecutionId=f"te-{action_id}"
        ),
    )


def complete(
    action_id: int,
    status: int,
    *,
    result: str | None = None,
    failure: opb.TaskFailureDetails | None = None,
    carryover: list[hpb.HistoryEvent] | None = None,
    new_version: str | None = None,
) -> apb.WorkflowAction:
    done = apb.CompleteWorkflowAction(
        workflowStatus=status,  # type: ignore[arg-type]
        result=ev.sv(result),
        failureDetails=failure,
        carryoverEvents=carryover or [],
        newVersion=ev.sv(new_version),
    )
    return action(action_id, completeWorkflow=done)


class Turn:
    """One worker turn shaped like engine/turns.py: state folds the new events before apply."""

    def __init__(
        self,
        history: list[hpb.HistoryEvent],
        inbox: list[hpb.HistoryEvent] | None = None,
        *,
        limit: int = LIMIT,
    ) -> None:
        self.history = history
        self.state = RuntimeState.of(history)
        stalled_before = self.state.stalled  # captured before the turn's events, as the engine does
        self.new_events = [turn_started(self.state, NOW), *(inbox or [])]
        for e in self.new_events:
            self.state.add(e)
        self.ctx = dataclasses.replace(
            ctx_for(history, limit=limit), stalled_before=stalled_before, past=history
        )

    def apply(
        self, resp: spb.WorkflowResponse, *, busy: frozenset[InstanceKey] = frozenset()
    ) -> WorkflowCommit:
        return applier.apply(self.ctx, self.state, self.new_events, resp, busy_children=busy)


def added(commit: WorkflowCommit, n_new: int) -> list[hpb.HistoryEvent]:
    """The history events the actions produced (after the turn's new events)."""
    return commit.new_history[n_new:]


def kinds(events: list[hpb.HistoryEvent]) -> list[str]:
    return [ev.kind(e) for e in events]


def assert_no_side_effects(commit: WorkflowCommit) -> None:
    assert commit.messages == []
    assert commit.activities == []
    assert commit.new_instances == []


# -- scheduleTask ---------------------------------------------------------------------


@pytest.mark.parametrize(("target", "runs_on"), [(None, APP), (APP, APP), (OTHER_APP, OTHER_APP)])
def test_schedule_task(target: str | None, runs_on: str) -> None:
    turn = Turn(BASE, [ev.event_raised(NOW, "go", None)])
    commit = turn.apply(response(schedule(3, "charge", target=target, input_="42")))

    assert commit.key == KEY
    assert commit.consumed == CONSUMED
    assert not commit.reset_history
    assert not commit.cancel_pending
    assert kinds(commit.new_history) == ["workflowStarted", "eventRaised", "taskScheduled"]
    scheduled = commit.new_history[-1]
    assert scheduled.eventId == 3
    assert ev.from_ts(scheduled.timestamp) == NOW
    assert scheduled.taskScheduled.name == "charge"
    assert scheduled.taskScheduled.input.value == "42"
    assert scheduled.taskScheduled.version.value == "v2"
    assert scheduled.taskScheduled.taskExecutionId == "te-3"
    assert scheduled.router.sourceAppID == APP
    assert scheduled.router.HasField("targetAppID") is (target is not None)
    if target is not None:
        assert scheduled.router.targetAppID == target

    assert commit.messages == []
    assert commit.new_instances == []
    [task] = commit.activities
    assert task.app_id == runs_on
    assert task.parent == KEY
    assert task.request.name == "charge"
    assert task.request.input.value == "42"
    assert task.request.version.value == "v2"
    assert task.request.taskId == 3
    assert task.request.taskExecutionId == "te-3"
    assert task.request.workflowInstance.instanceId == KEY.instance_id
    assert task.request.workflowInstance.executionId.value == "exec-1"
    assert task.router.sourceAppID == APP
    assert task.router == scheduled.router

    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING
    assert turn.state.tasks.keys() == {3}  # the state now knows the task


def test_schedule_task_without_input_or_version() -> None:
    bare = action(1, scheduleTask=apb.ScheduleTaskAction(name="act"))
    commit = Turn(BASE).apply(response(bare))
    scheduled = commit.new_history[-1].taskScheduled
    assert not scheduled.HasField("input")
    assert not scheduled.HasField("version")
    [task] = commit.activities
    assert not task.request.HasField("input")
    assert not task.request.HasField("version")


def test_first_turn_projects_running_and_started_at() -> None:
    history: list[hpb.HistoryEvent] = []
    turn = Turn(history, [start_event()])
    turn.ctx = applier.TurnContext(
        key=KEY,
        now=NOW,
        stored=initial_state(KEY, start_event().executionStarted, created_at=T0),
        consumed=[1],
        max_payload_bytes=LIMIT,
    )
    assert turn.ctx.stored.workflowStatus == opb.ORCHESTRATION_STATUS_PENDING
    commit = turn.apply(response(schedule(0)))
    assert kinds(commit.new_history) == ["workflowStarted", "executionStarted", "taskScheduled"]
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING
    assert ev.from_ts(commit.state.startedAt) == NOW
    assert ev.from_ts(commit.state.lastUpdatedTimestamp) == NOW
    assert commit.state.input.value == "in"
    assert commit.consumed == [1]


# -- createTimer ---------------------------------------------------------------------


def test_create_timer() -> None:
    fire_at = NOW + timedelta(minutes=5)
    timer = apb.CreateTimerAction(
        fireAt=ev.ts(fire_at), name="nap", externalEvent=hpb.TimerOriginExternalEvent(name="approval")
    )
    commit = Turn(BASE).apply(response(action(4, createTimer=timer)))

    [created] = added(commit, 1)
    assert created.eventId == 4
    assert ev.from_ts(created.timerCreated.fireAt) == fire_at
    assert created.timerCreated.name == "nap"
    assert created.timerCreated.externalEvent.name == "approval"

    [msg] = commit.messages
    assert msg.target == KEY
    assert msg.gate is Gate.EVENT
    assert msg.visible_at == fire_at
    assert msg.event.eventId == -1
    assert msg.event.timerFired.timerId == 4
    assert ev.from_ts(msg.event.timerFired.fireAt) == fire_at
    assert commit.activities == []
    assert commit.new_instances == []


def test_a_timer_that_never_fires_is_recorded_but_not_queued() -> None:
    commit = Turn(BASE).apply(response(action(3, createTimer=apb.CreateTimerAction(fireAt=FOREVER))))
    [created] = added(commit, 1)
    assert created.eventId == 3 and created.timerCreated.fireAt == FOREVER
    assert commit.messages == []  # a "wait forever" queues nothing that would have to be dropped
    near = timestamp_pb2.Timestamp(seconds=253370764799)  # 9998-12-31T23:59:59Z: an ordinary timer
    commit = Turn(BASE).apply(response(action(3, createTimer=apb.CreateTimerAction(fireAt=near))))
    [msg] = commit.messages
    assert msg.event.timerFired.timerId == 3


def test_timer_in_the_past_is_visible_now() -> None:
    past = NOW - timedelta(hours=1)
    commit = Turn(BASE).apply(response(action(1, createTimer=apb.CreateTimerAction(fireAt=ev.ts(past)))))
    [msg] = commit.messages
    assert msg.visible_at == NOW
    assert ev.from_ts(msg.event.timerFired.fireAt) == past  # the event still names the requested time


def test_fired_timer_matches_created_timer() -> None:
    """The TimerFired message the applier produces must be accepted by the next turn exactly once."""
    fire_at = NOW + timedelta(seconds=10)
    commit = Turn(BASE).apply(response(action(2, createTimer=apb.CreateTimerAction(fireAt=ev.ts(fire_at)))))
    state = RuntimeState.of([*BASE, *commit.new_history])
    fired = commit.messages[0].event
    assert state.accepts(fired)
    state.add(fired)
    assert not state.accepts(fired)


# -- createChildWorkflow ----------------------------------------------------------


def child_action(
    action_id: int, *, instance_id: str = "", target: str | None = None, input_: str | None = "cin"
) -> apb.WorkflowAction:
    return action(
        action_id,
        target=target,
        createChildWorkflow=apb.CreateChildWorkflowAction(
            instanceId=instance_id, name="child-wf", input=ev.sv(input_), version=ev.sv("cv")
        ),
    )


@pytest.mark.parametrize(
    ("action_id", "instance_id", "expected_id"),
    [
        (1, "", "wf1:0001"),
        (10, "", "wf1:000a"),
        (255, "", "wf1:00ff"),
        (4096, "", "wf1:1000"),
        (2, "mine", "mine"),
    ],
)
def test_child_instance_id(action_id: int, instance_id: str, expected_id: str) -> None:
    commit = Turn(BASE).apply(response(child_action(action_id, instance_id=instance_id)))
    [created] = added(commit, 1)
    assert created.childWorkflowInstanceCreated.instanceId == expected_id
    [new] = commit.new_instances
    assert new.key == InstanceKey(APP, expected_id)
    assert applier.child_keys(KEY, response(child_action(action_id, instance_id=instance_id))) == [new.key]


@pytest.mark.parametrize("target", [None, OTHER_APP])
def test_create_child_workflow(target: str | None) -> None:
    commit = Turn(BASE).apply(response(child_action(5, target=target)))
    child_app = target or APP
    child_key = InstanceKey(child_app, "wf1:0005")

    [created] = added(commit, 1)
    assert created.eventId == 5
    cw = created.childWorkflowInstanceCreated
    assert (cw.instanceId, cw.name, cw.input.value, cw.version.value) == ("wf1:0005", "child-wf", "cin", "cv")
    assert created.router.sourceAppID == APP
    assert created.router.targetAppID == (target or "")

    assert commit.messages == []
    assert commit.activities == []
    [new] = commit.new_instances
    assert new.key == child_key
    assert new.created_at == NOW
    assert new.start.target == child_key
    assert new.start.gate is Gate.START
    assert new.start.visible_at is None
    start = new.start.event.executionStarted
    assert start.name == "child-wf"
    assert start.input.value == "cin"
    assert start.version.value == "cv"
    assert start.workflowInstance.instanceId == "wf1:0005"
    child_exec = start.workflowInstance.executionId.value
    assert child_exec and child_exec != "exec-1"
    parent = start.parentInstance
    assert parent.taskScheduledId == 5
    assert parent.appID == APP
    assert parent.name.value == "wf"
    assert parent.workflowInstance.instanceId == KEY.instance_id
    assert parent.workflowInstance.executionId.value == "exec-1"
    assert new.start.event.router.sourceAppID == APP
    # client-visible state of the child
    assert new.state.instanceId == "wf1:0005"
    assert new.state.name == "child-wf"
    assert new.state.workflowStatus == opb.ORCHESTRATION_STATUS_PENDING
    assert new.state.parentInstanceId.value == KEY.instance_id
    assert new.state.parentAppId.value == APP
    assert new.state.executionId.value == child_exec


def test_busy_child_fails_the_child_task() -> None:
    busy = frozenset({InstanceKey(APP, "wf1:0001")})
    commit = Turn(BASE).apply(response(child_action(1), child_action(2)), busy=busy)

    assert kinds(added(commit, 1)) == ["childWorkflowInstanceCreated", "childWorkflowInstanceCreated"]
    assert [n.key for n in commit.new_instances] == [InstanceKey(APP, "wf1:0002")]
    [msg] = commit.messages
    assert msg.target == KEY
    assert msg.gate is Gate.EVENT
    failed = msg.event.childWorkflowInstanceFailed
    assert failed.taskScheduledId == 1
    assert failed.failureDetails.errorType == "WorkflowInstanceAlreadyExists"
    assert failed.failureDetails.isNonRetriable
    assert "wf1:0001" in failed.failureDetails.errorMessage
    # the failure is accepted by the next turn (the task was created in history)
    assert RuntimeState.of([*BASE, *commit.new_history]).accepts(msg.event)


def test_busy_child_on_another_app_does_not_block() -> None:
    busy = frozenset({InstanceKey(OTHER_APP, "wf1:0001")})
    commit = Turn(BASE).apply(response(child_action(1)), busy=busy)
    assert [n.key for n in commit.new_instances] == [InstanceKey(APP, "wf1:0001")]
    assert commit.messages == []


def test_create_detached_workflow() -> None:
    detached = apb.CreateDetachedWorkflowAction(
        instanceId="loose", name="other-wf", input=ev.sv("d"), tags={"k": "v"}
    )
    commit = Turn(BASE).apply(response(action(3, target=OTHER_APP, createDetachedWorkflow=detached)))
    [created] = added(commit, 1)
    assert created.eventId == 3
    assert created.detachedWorkflowInstanceCreated.instanceId == "loose"
    [new] = commit.new_instances
    assert new.key == InstanceKey(OTHER_APP, "loose")
    start = new.start.event.executionStarted
    assert not start.HasField("parentInstance")
    assert dict(start.tags) == {"k": "v"}
    assert not new.state.HasField("parentInstanceId")
    assert new.start.event.router.sourceAppID == OTHER_APP


# -- sendEvent / terminateWorkflow ------------------------------------------------------


@pytest.mark.parametrize(("target", "to_app"), [(None, APP), (OTHER_APP, OTHER_APP)])
def test_send_event(target: str | None, to_app: str) -> None:
    send = apb.SendEventAction(
        instance=opb.WorkflowInstance(instanceId="peer"), name="ping", data=ev.sv('{"n": 1}')
    )
    commit = Turn(BASE).apply(response(action(6, target=target, sendEvent=send)))

    [sent] = added(commit, 1)
    assert sent.eventId == 6
    assert (sent.eventSent.instanceId, sent.eventSent.name, sent.eventSent.input.value) == (
        "peer",
        "ping",
        '{"n": 1}',
    )
    assert sent.router.sourceAppID == APP
    [msg] = commit.messages
    assert msg.target == InstanceKey(to_app, "peer")
    assert msg.gate is Gate.EVENT
    assert msg.visible_at is None
    assert msg.event.eventId == -1
    assert msg.event.eventRaised.name == "ping"
    assert msg.event.eventRaised.input.value == '{"n": 1}'
    assert commit.activities == []
    assert commit.new_instances == []


@pytest.mark.parametrize(("target", "to_app"), [(None, APP), (OTHER_APP, OTHER_APP)])
@pytest.mark.parametrize("recurse", [True, False])
def test_terminate_workflow_action(target: str | None, to_app: str, recurse: bool) -> None:
    term = apb.TerminateWorkflowAction(instanceId="victim", reason=ev.sv("enough"), recurse=recurse)
    commit = Turn(BASE).apply(response(action(2, target=target, terminateWorkflow=term)))
    assert added(commit, 1) == []
    [msg] = commit.messages
    assert msg.target == InstanceKey(to_app, "victim")
    assert msg.gate is Gate.CONTROL
    assert msg.event.executionTerminated.input.value == "enough"
    assert msg.event.executionTerminated.recurse is recurse
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING


# -- completeWorkflow ---------------------------------------------------------------------


def test_complete_without_parent() -> None:
    commit = Turn(BASE).apply(response(complete(9, opb.ORCHESTRATION_STATUS_COMPLETED, result='"done"')))
    [done] = added(commit, 1)
    assert done.eventId == 9
    assert done.executionCompleted.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
    assert done.executionCompleted.result.value == '"done"'
    assert done.router.sourceAppID == APP
    assert_no_side_effects(commit)
    assert not commit.cancel_pending  # nothing was queued: the store has nothing to drop
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
    assert commit.state.output.value == '"done"'
    assert ev.from_ts(commit.state.completedTimestamp) == NOW


def test_completed_child_notifies_parent_on_parents_app() -> None:
    commit = Turn(CHILD_BASE).apply(response(complete(3, opb.ORCHESTRATION_STATUS_COMPLETED, result="42")))
    [msg] = commit.messages
    assert msg.target == InstanceKey(PARENT_APP, "parent-1")
    assert msg.gate is Gate.EVENT
    note = msg.event.childWorkflowInstanceCompleted
    assert note.taskScheduledId == 7
    assert note.result.value == "42"
    assert msg.event.router.sourceAppID == APP
    assert msg.event.router.targetAppID == PARENT_APP


def test_failed_child_notifies_parent_with_failure_details() -> None:
    details = opb.TaskFailureDetails(errorType="ValueError", errorMessage="bad", stackTrace=ev.sv("tb"))
    commit = Turn(CHILD_BASE).apply(response(complete(3, opb.ORCHESTRATION_STATUS_FAILED, failure=details)))
    [done] = added(commit, 1)
    assert done.executionCompleted.failureDetails == details
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_FAILED
    assert commit.state.failureDetails == details
    [msg] = commit.messages
    assert msg.target == InstanceKey(PARENT_APP, "parent-1")
    assert not msg.event.HasField("childWorkflowInstanceCompleted")
    failed = msg.event.childWorkflowInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails == details


def test_terminated_child_without_details_notifies_parent_as_failed() -> None:
    commit = Turn(CHILD_BASE).apply(response(complete(3, opb.ORCHESTRATION_STATUS_TERMINATED, result="r")))
    [msg] = commit.messages
    failed = msg.event.childWorkflowInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails.errorType  # something the parent's SDK can raise
    assert "TERMINATED" in failed.failureDetails.errorMessage


def test_parent_without_app_id_is_on_the_childs_app() -> None:
    parent = opb.ParentInstanceInfo()
    parent.CopyFrom(PARENT_INFO)
    parent.ClearField("appID")
    history = [ev.workflow_started(T0), start_event(parent=parent)]
    commit = Turn(history).apply(response(complete(1, opb.ORCHESTRATION_STATUS_COMPLETED)))
    [msg] = commit.messages
    assert msg.target == InstanceKey(APP, "parent-1")


def test_only_first_completion_is_applied() -> None:
    commit = Turn(CHILD_BASE).apply(
        response(
            schedule(1),
            complete(2, opb.ORCHESTRATION_STATUS_COMPLETED, result="first"),
            complete(3, opb.ORCHESTRATION_STATUS_FAILED, failure=ev.failure("E", "second")),
            schedule(4),
        )
    )
    assert kinds(added(commit, 1)) == ["taskScheduled", "executionCompleted"]
    completions = [e for e in commit.new_history if e.HasField("executionCompleted")]
    assert len(completions) == 1
    assert completions[0].eventId == 2
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_COMPLETED
    assert commit.state.output.value == "first"
    assert not commit.state.HasField("failureDetails")
    assert [a.request.taskId for a in commit.activities] == [1]
    assert len(commit.messages) == 1  # one parent notification
    assert commit.messages[0].event.HasField("childWorkflowInstanceCompleted")


# -- continue-as-new ------------------------------------------------------------------------


def test_continue_as_new() -> None:
    history = [
        *CHILD_BASE,
        ev.event(T0, event_id=0, taskScheduled=hpb.TaskScheduledEvent(name="a")),
    ]
    carried = [ev.event_raised(NOW, "e1", ev.sv("1")), ev.event_raised(NOW, "e2", ev.sv("2"))]
    turn = Turn(history, [ev.event_raised(NOW, "trigger", None)])
    turn.ctx.stored.customStatus.value = "old status"
    turn.ctx.stored.output.value = "stale"
    commit = turn.apply(
        response(
            schedule(1),
            complete(
                2,
                opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
                result="new-input",
                carryover=carried,
                new_version="v9",
            ),
            schedule(3),
        )
    )
    assert commit.reset_history
    assert commit.new_history == []
    assert commit.cancel_pending
    assert commit.consumed == CONSUMED
    assert commit.activities == []
    assert commit.new_instances == []

    start_msg, *rest = commit.messages
    assert start_msg.target == KEY
    assert start_msg.gate is Gate.START
    start = start_msg.event.executionStarted
    assert start.name == "wf"
    assert start.input.value == "new-input"
    assert start.version.value == "v9"
    new_exec = start.workflowInstance.executionId.value
    assert new_exec and new_exec != "exec-1"
    assert start.workflowInstance.instanceId == KEY.instance_id
    assert start.parentInstance == PARENT_INFO
    assert start_msg.event.router.sourceAppID == APP
    assert [m.event for m in rest] == carried
    assert all(m.target == KEY and m.gate is Gate.EVENT for m in rest)

    assert commit.state.executionId.value == new_exec
    assert commit.state.input.value == "new-input"
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING
    assert not commit.state.HasField("customStatus")
    assert not commit.state.HasField("output")


def test_continue_as_new_without_input_clears_it() -> None:
    commit = Turn(BASE).apply(response(complete(1, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW)))
    start = commit.messages[0].event.executionStarted
    assert not start.HasField("input")
    assert not commit.state.HasField("input")
    assert len(commit.messages) == 1


def test_new_generation_start_is_accepted_after_reset() -> None:
    commit = Turn(BASE).apply(response(complete(1, opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW, result="n")))
    fresh = RuntimeState.of([])  # the history was reset
    assert fresh.accepts(commit.messages[0].event)


# -- customStatus / version ---------------------------------------------------------------


def test_custom_status_projected() -> None:
    commit = Turn(BASE).apply(response(customStatus=ev.sv("halfway")))
    assert commit.state.customStatus.value == "halfway"
    assert kinds(commit.new_history) == ["workflowStarted"]


def test_custom_status_cleared_when_absent() -> None:
    turn = Turn(BASE)
    turn.ctx.stored.customStatus.value = "old"
    commit = turn.apply(response())
    assert not commit.state.HasField("customStatus")


def test_response_version_written_onto_workflow_started() -> None:
    version = opb.WorkflowVersion(patches=["p1", "p2"], name="v3")
    turn = Turn(BASE, [ev.event_raised(NOW, "x", None)])
    commit = turn.apply(response(version=version))
    first = commit.new_history[0]
    assert first.HasField("workflowStarted")
    assert first.workflowStarted.version == version
    assert not commit.new_history[1].HasField("workflowStarted")


def test_no_version_leaves_workflow_started_bare() -> None:
    commit = Turn(BASE).apply(response())
    assert not commit.new_history[0].workflowStarted.HasField("version")


# -- stalls ------------------------------------------------------------------------------


def test_version_not_available_stalls() -> None:
    turn = Turn(BASE, [ev.event_raised(NOW, "x", None)])
    commit = turn.apply(
        response(
            schedule(1),
            action(2, workflowVersionNotAvailable=apb.WorkflowVersionNotAvailableAction()),
            customStatus=ev.sv("ignored"),
        )
    )
    assert commit.consumed == []  # the inbox is kept for a later worker
    [stalled] = commit.new_history  # neither the turn's events nor the actions' events
    assert stalled.executionStalled.reason == opb.VERSION_NOT_AVAILABLE
    assert stalled.executionStalled.description
    assert_no_side_effects(commit)
    assert not commit.cancel_pending
    assert not commit.reset_history
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
    assert not commit.state.HasField("customStatus")


def test_stall_not_repeated_when_already_stalled() -> None:
    """ExecutionStalled is deduplicated: a workflow that stalls again adds no second event.

    Realistic path: the very first turn stalls (no worker has the version). The stall keeps
    the inbox, so the START message is leased again (START is always eligible) and planned
    as a WORKER turn; the engine folds the turn's WorkflowStarted into `state` before
    apply (apply's docstring requires `state` to include the new events).
    """
    version_missing = response(action(0, workflowVersionNotAvailable=apb.WorkflowVersionNotAvailableAction()))
    start_item = InboxItem(id=1, event=start_event())

    first = Turn([], [start_item.event]).apply(version_missing)
    assert first.consumed == []
    assert kinds(first.new_history) == ["executionStalled"]
    assert first.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
    history = list(first.new_history)

    again_plan = plan(RuntimeState.of(history), [start_item])
    assert again_plan.mode is Mode.WORKER  # the kept START message runs the turn again
    again = Turn(history, [start_item.event]).apply(version_missing)
    assert again.consumed == []
    assert again.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
    assert [e for e in again.new_history if e.HasField("executionStalled")] == []


def test_stall_dedup_on_folded_history() -> None:
    """The dedup rule itself, with a state whose last fact is the stall."""
    history = [
        *BASE,
        ev.event(T0, executionStalled=hpb.ExecutionStalledEvent(reason=opb.VERSION_NOT_AVAILABLE)),
    ]
    state = RuntimeState.of(history)
    commit = applier.apply(
        dataclasses.replace(ctx_for(history), stalled_before=state.stalled),
        state,
        [],
        response(action(1, workflowVersionNotAvailable=apb.WorkflowVersionNotAvailableAction())),
    )
    assert commit.new_history == []
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED
    # a different reason is recorded
    commit = applier.apply(
        dataclasses.replace(ctx_for(history, limit=1), stalled_before=state.stalled),
        state,
        [],
        response(schedule(1, input_="xx")),
    )
    assert [e.executionStalled.reason for e in commit.new_history] == [opb.PAYLOAD_SIZE_EXCEEDED]


@pytest.mark.parametrize(
    "resp",
    [
        pytest.param(response(schedule(1, input_="x" * (LIMIT + 1))), id="activity-input"),
        pytest.param(response(child_action(1, input_="x" * (LIMIT + 1))), id="child-input"),
        pytest.param(
            response(
                action(
                    1,
                    sendEvent=apb.SendEventAction(
                        instance=opb.WorkflowInstance(instanceId="p"), name="n", data=ev.sv("x" * (LIMIT + 1))
                    ),
                )
            ),
            id="event-data",
        ),
        pytest.param(
            response(complete(1, opb.ORCHESTRATION_STATUS_COMPLETED, result="x" * (LIMIT + 1))), id="result"
        ),
        pytest.param(response(customStatus=ev.sv("x" * (LIMIT + 1))), id="custom-status"),
        pytest.param(response(schedule(1, input_="é" * (LIMIT // 2 + 1))), id="counted-in-bytes"),
    ],
)
def test_oversized_payload_stalls(resp: spb.WorkflowResponse) -> None:
    commit = Turn(BASE, [ev.event_raised(NOW, "x", None)]).apply(resp)
    assert commit.consumed == []
    [stalled] = commit.new_history
    assert stalled.executionStalled.reason == opb.PAYLOAD_SIZE_EXCEEDED
    assert str(LIMIT) in stalled.executionStalled.description
    assert_no_side_effects(commit)
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_STALLED


def test_payload_at_limit_is_applied() -> None:
    commit = Turn(BASE).apply(response(schedule(1, input_="x" * LIMIT), customStatus=ev.sv("y" * LIMIT)))
    assert [e for e in commit.new_history if e.HasField("executionStalled")] == []
    assert len(commit.activities) == 1
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING


# -- malformed responses --------------------------------------------------------------------


HISTORY_WITH_IDS = [
    *BASE,
    ev.event(T0, event_id=0, taskScheduled=hpb.TaskScheduledEvent(name="a")),
    ev.event(T0, event_id=1, timerCreated=hpb.TimerCreatedEvent(fireAt=ev.ts(NOW))),
]


@pytest.mark.parametrize(
    ("resp", "match"),
    [
        pytest.param(response(apb.WorkflowAction(id=5)), "no known type", id="no-type"),
        pytest.param(response(schedule(5), schedule(5)), "duplicate action id", id="duplicate-ids"),
        pytest.param(response(schedule(5), child_action(5)), "duplicate action id", id="duplicate-ids-kinds"),
        pytest.param(response(schedule(0)), "already used", id="task-id-in-history"),
        pytest.param(response(schedule(1)), "already used", id="task-id-of-timer"),
        pytest.param(
            response(action(0, createTimer=apb.CreateTimerAction(fireAt=ev.ts(NOW)))),
            "already used",
            id="timer-id-in-history",
        ),
        pytest.param(response(child_action(1)), "already used", id="child-id-in-history"),
        pytest.param(response(schedule(5, name="")), "activity name", id="empty-activity-name"),
        pytest.param(
            response(action(5, createChildWorkflow=apb.CreateChildWorkflowAction(name=""))),
            "workflow name",
            id="empty-child-name",
        ),
        pytest.param(
            response(action(5, createDetachedWorkflow=apb.CreateDetachedWorkflowAction(name="d"))),
            "instanceId",
            id="detached-without-id",
        ),
        pytest.param(
            response(action(5, sendEvent=apb.SendEventAction(name="n"))),
            "target instance",
            id="send-no-target",
        ),
        pytest.param(
            response(action(5, sendEvent=apb.SendEventAction(instance=opb.WorkflowInstance(instanceId="p")))),
            "target instance",
            id="send-no-name",
        ),
        pytest.param(
            response(action(5, terminateWorkflow=apb.TerminateWorkflowAction())),
            "instanceId",
            id="terminate-no-id",
        ),
        pytest.param(
            response(complete(5, opb.ORCHESTRATION_STATUS_RUNNING)),
            "not a completion status",
            id="status-running",
        ),
        pytest.param(
            response(complete(5, opb.ORCHESTRATION_STATUS_PENDING)),
            "not a completion status",
            id="status-pending",
        ),
        pytest.param(
            response(complete(5, opb.ORCHESTRATION_STATUS_SUSPENDED)),
            "not a completion status",
            id="status-suspended",
        ),
        # a valid action before the bad one must not be half-applied
        pytest.param(response(schedule(5), schedule(6, name="")), "activity name", id="good-then-bad"),
        # validation comes before the oversize stall and the version stall
        pytest.param(
            response(schedule(5, input_="x" * (LIMIT + 1)), apb.WorkflowAction(id=6)),
            "no known type",
            id="bad-beats-stall",
        ),
    ],
)
def test_malformed_response_raises_and_produces_nothing(resp: spb.WorkflowResponse, match: str) -> None:
    resp.version.name = "v-should-not-be-written"
    turn = Turn(HISTORY_WITH_IDS, [ev.event_raised(NOW, "x", None)])
    length_before = turn.state.length
    ids_before = set(turn.state.action_ids)
    with pytest.raises(InvalidArgument, match=match):
        turn.apply(resp)
    assert turn.state.length == length_before
    assert turn.state.action_ids == ids_before
    assert not turn.new_events[0].workflowStarted.HasField("version")
    assert len(turn.new_events) == 2


@pytest.mark.parametrize(
    "status",
    [
        opb.ORCHESTRATION_STATUS_COMPLETED,
        opb.ORCHESTRATION_STATUS_FAILED,
        opb.ORCHESTRATION_STATUS_TERMINATED,
        opb.ORCHESTRATION_STATUS_CANCELED,
    ],
)
def test_every_completion_status_is_accepted(status: int) -> None:
    commit = Turn(BASE).apply(response(complete(5, status)))
    assert commit.state.workflowStatus == status


fire = ev.event(T0, event_id=1, timerCreated=hpb.TimerCreatedEvent())
# durabletask-go's WaitForSingleEvent with no timeout: a timer at the end of time.
FOREVER = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999999999)  # 9999-12-31T23:59:59.999999999Z
forever = ev.event(T0, event_id=2, timerCreated=hpb.TimerCreatedEvent(fireAt=FOREVER))


@pytest.mark.parametrize(
    ("past", "pending"),
    [
        ([], False),
        ([ev.event(T0, event_id=0, taskScheduled=hpb.TaskScheduledEvent(name="a"))], True),
        ([fire], True),
        ([forever], False),  # it never fires: nothing of it is queued
        ([forever, fire], True),
        (
            [
                ev.event(T0, event_id=0, taskScheduled=hpb.TaskScheduledEvent(name="a")),
                ev.event(T0, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0)),
                fire,
                ev.event(T0, timerFired=hpb.TimerFiredEvent(timerId=1)),
            ],
            False,
        ),
    ],
    ids=["nothing", "activity-running", "timer-waiting", "forever-timer", "forever-and-timer", "all-done"],
)
def test_completion_drops_queued_work_only_when_some_is_left(
    past: list[hpb.HistoryEvent], pending: bool
) -> None:
    commit = Turn([*BASE, *past]).apply(response(complete(5, opb.ORCHESTRATION_STATUS_COMPLETED)))
    assert commit.cancel_pending is pending


def test_ids_used_only_by_send_event_may_be_reused() -> None:
    """Only task/timer/child ids must be fresh; the check must not reject an unused id."""
    commit = Turn(HISTORY_WITH_IDS).apply(response(schedule(2)))
    assert [e.eventId for e in added(commit, 1)] == [2]


# -- terminate -------------------------------------------------------------------------------


def child_created(task_id: int, instance_id: str, target: str | None = None) -> hpb.HistoryEvent:
    created = ev.event(
        T0,
        event_id=task_id,
        childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(instanceId=instance_id, name="c"),
    )
    created.router.CopyFrom(ev.router(APP, target))
    return created


FAMILY = [
    *CHILD_BASE,
    child_created(1, "kid-local"),
    child_created(2, "kid-remote", OTHER_APP),
    child_created(3, "kid-done"),
    ev.event(T0, childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(taskScheduledId=3)),
    child_created(4, "kid-failed", OTHER_APP),
    ev.event(T0, childWorkflowInstanceFailed=hpb.ChildWorkflowInstanceFailedEvent(taskScheduledId=4)),
]


def terminate_turn(
    history: list[hpb.HistoryEvent], *, recurse: bool, output: str | None = "stop"
) -> WorkflowCommit:
    item = InboxItem(id=11, event=ev.execution_terminated(NOW, ev.sv(output), recurse=recurse))
    state = RuntimeState.of(history)
    return applier.terminate(ctx_for(history), state, [item])


def test_terminate_completes_with_terminate_input() -> None:
    commit = terminate_turn(BASE, recurse=False)
    assert kinds(commit.new_history) == ["executionTerminated", "executionCompleted"]
    done = commit.new_history[-1].executionCompleted
    assert done.workflowStatus == opb.ORCHESTRATION_STATUS_TERMINATED
    assert done.result.value == "stop"
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_TERMINATED
    assert commit.state.output.value == "stop"
    assert commit.cancel_pending
    assert commit.consumed == CONSUMED
    assert commit.messages == []
    assert commit.activities == []


def test_terminate_without_output() -> None:
    commit = terminate_turn(BASE, recurse=False, output=None)
    assert not commit.new_history[-1].executionCompleted.HasField("result")
    assert not commit.state.HasField("output")


def test_terminate_recurse_reaches_unfinished_children() -> None:
    commit = terminate_turn(FAMILY, recurse=True)
    to_children = [m for m in commit.messages if m.event.HasField("executionTerminated")]
    assert sorted(m.target for m in to_children) == sorted(
        [InstanceKey(APP, "kid-local"), InstanceKey(OTHER_APP, "kid-remote")]
    )
    for m in to_children:
        assert m.gate is Gate.CONTROL
        assert m.event.executionTerminated.recurse
        assert m.event.executionTerminated.input.value == "stop"


def test_terminate_without_recurse_leaves_children() -> None:
    commit = terminate_turn(FAMILY, recurse=False)
    assert [m for m in commit.messages if m.event.HasField("executionTerminated")] == []


@pytest.mark.parametrize("recurse", [True, False])
def test_terminated_child_notifies_parent(recurse: bool) -> None:
    commit = terminate_turn(FAMILY, recurse=recurse)
    [note] = [m for m in commit.messages if m.target.instance_id == "parent-1"]
    assert note.target == InstanceKey(PARENT_APP, "parent-1")
    assert note.gate is Gate.EVENT
    failed = note.event.childWorkflowInstanceFailed
    assert failed.taskScheduledId == 7
    assert failed.failureDetails.errorType
    assert note.event.router.sourceAppID == APP
    assert note.event.router.targetAppID == PARENT_APP


def test_terminate_keeps_batch_events_in_history() -> None:
    items = [
        InboxItem(id=1, event=ev.event_raised(NOW, "e", None)),
        InboxItem(id=2, event=ev.execution_terminated(NOW, None, recurse=False)),
    ]
    state = RuntimeState.of(BASE)
    commit = applier.terminate(ctx_for(BASE), state, items)
    assert kinds(commit.new_history) == ["eventRaised", "executionTerminated", "executionCompleted"]
    assert state.status == opb.ORCHESTRATION_STATUS_TERMINATED


# -- record ---------------------------------------------------------------------------------


def test_record_suspend_and_resume() -> None:
    state = RuntimeState.of(BASE)
    commit = applier.record(
        ctx_for(BASE), state, [InboxItem(id=1, event=ev.execution_suspended(NOW, ev.sv("r")))]
    )
    assert kinds(commit.new_history) == ["executionSuspended"]
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_SUSPENDED
    assert commit.consumed == CONSUMED
    assert_no_side_effects(commit)

    history = [*BASE, *commit.new_history]
    commit = applier.record(
        ctx_for(history), RuntimeState.of(history), [InboxItem(id=2, event=ev.execution_resumed(NOW, None))]
    )
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING


def test_record_of_a_start_suspended_before_its_first_turn() -> None:
    """The start comes first, opened by a WorkflowStarted (the SDKs' clock on replay)."""
    start = BASE[1]
    assert start.HasField("executionStarted")
    batch = [InboxItem(id=1, event=start), InboxItem(id=2, event=ev.execution_suspended(NOW, None))]
    commit = applier.record(ctx_for([]), RuntimeState(), batch)
    assert kinds(commit.new_history) == ["workflowStarted", "executionStarted", "executionSuspended"]
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_SUSPENDED
    assert_no_side_effects(commit)


def test_record_of_dropped_batch_writes_nothing() -> None:
    commit = applier.record(ctx_for(BASE), RuntimeState.of(BASE), [])
    assert commit.new_history == []
    assert commit.consumed == CONSUMED
    assert commit.state.workflowStatus == opb.ORCHESTRATION_STATUS_RUNNING
