"""Runtime state of one workflow execution, folded from its history.

The turn uses it to drop duplicate inbox events (a second start, a result for
a task that was never scheduled or already finished), to validate a worker's
actions, and to derive the runtime status.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.events import from_ts, kind, never_fires


@dataclass
class RuntimeState:
    start: hpb.ExecutionStartedEvent | None = None
    start_router: opb.TaskRouter | None = None
    started_at: datetime | None = None  # first turn's WorkflowStarted
    completed: hpb.ExecutionCompletedEvent | None = None
    suspended: bool = False
    # Events handed to the worker while it was suspended: it buffers them, so a
    # resume must reach the worker (not just the history) for them to run.
    buffered_while_suspended: bool = False
    stalled: hpb.ExecutionStalledEvent | None = None
    tasks: dict[int, hpb.HistoryEvent] = field(default_factory=dict)  # TaskScheduled by id
    tasks_done: set[int] = field(default_factory=set)
    timers: dict[int, hpb.TimerCreatedEvent] = field(default_factory=dict)
    timers_fired: set[int] = field(default_factory=set)
    children: dict[int, hpb.HistoryEvent] = field(default_factory=dict)  # ChildWorkflowInstanceCreated
    children_done: set[int] = field(default_factory=set)
    action_ids: set[int] = field(default_factory=set)
    last_turn_at: datetime | None = None
    length: int = 0
    size: int = 0  # encoded bytes of the history folded so far (the history budget)
    # What the last large-history warning reported (the engine warns once per threshold).
    warned_events: int = 0
    warned_bytes: int = 0

    @classmethod
    def of(cls, history: list[hpb.HistoryEvent]) -> RuntimeState:
        state = cls()
        for ev in history:
            state.add(ev)
        return state

    def clone(self) -> RuntimeState:
        """An independent copy (containers copied; events are never mutated)."""
        return replace(
            self,
            tasks=dict(self.tasks),
            tasks_done=set(self.tasks_done),
            timers=dict(self.timers),
            timers_fired=set(self.timers_fired),
            children=dict(self.children),
            children_done=set(self.children_done),
            action_ids=set(self.action_ids),
        )

    # -- folding ------------------------------------------------------------

    def add(self, ev: hpb.HistoryEvent) -> None:
        """Fold one event that is (now) part of the history."""
        self.length += 1
        self.size += ev.ByteSize()
        k = kind(ev)
        if ev.eventId >= 0:
            self.action_ids.add(ev.eventId)
        if k == "workflowStarted":
            moment = from_ts(ev.timestamp)
            self.last_turn_at = moment
            if self.started_at is None:
                self.started_at = moment
            self.stalled = None  # any applied turn clears a stall
        elif k == "executionStarted":
            self.start = ev.executionStarted
            self.start_router = ev.router if ev.HasField("router") else None
        elif k == "executionCompleted":
            self.completed = ev.executionCompleted
        elif k == "executionSuspended":
            self.suspended = True
            if self.length == 3 and self.start is not None:
                # Suspended right after its start: the code may never have run (the server
                # records a start suspended before its first turn), so the resume must reach
                # a worker. After a first turn that made no actions this costs one empty turn.
                self.buffered_while_suspended = True
        elif k == "executionResumed":
            self.suspended = False
            self.buffered_while_suspended = False
        elif k == "executionStalled":
            self.stalled = ev.executionStalled
        elif k == "taskScheduled":
            self.tasks[ev.eventId] = ev
        elif k in ("taskCompleted", "taskFailed"):
            self.tasks_done.add(getattr(ev, k).taskScheduledId)
        elif k == "timerCreated":
            self.timers[ev.eventId] = ev.timerCreated
        elif k == "timerFired":
            self.timers_fired.add(ev.timerFired.timerId)
        elif k == "childWorkflowInstanceCreated":
            self.children[ev.eventId] = ev
        elif k in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
            self.children_done.add(getattr(ev, k).taskScheduledId)
        if self.suspended and k not in _CONTROL_KINDS and k != "workflowStarted":
            self.buffered_while_suspended = True

    # -- questions ----------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        """An activity without its result, or a timer that has not fired: queued work in the
        store that an ending execution must drop."""
        timers = {t for t, created in self.timers.items() if not never_fires(created)}
        return not (self.tasks.keys() <= self.tasks_done and timers <= self.timers_fired)

    def accepts(self, ev: hpb.HistoryEvent) -> bool:
        """Whether an inbox event is new: duplicates and orphans are dropped."""
        if self.completed is not None:
            return False
        k = kind(ev)
        if k == "executionStarted":
            return self.start is None
        if k == "executionCompleted":
            return False
        if k in ("taskCompleted", "taskFailed"):
            task_id = getattr(ev, k).taskScheduledId
            return task_id in self.tasks and task_id not in self.tasks_done
        if k == "timerFired":
            fired = ev.timerFired
            created = self.timers.get(fired.timerId)
            return (
                created is not None
                and fired.timerId not in self.timers_fired
                and created.fireAt == fired.fireAt  # not a timer of a previous generation
            )
        if k in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
            task_id = getattr(ev, k).taskScheduledId
            return task_id in self.children and task_id not in self.children_done
        return k != ""

    @property
    def status(self) -> int:
        if self.completed is not None:
            return self.completed.workflowStatus
        if self.stalled is not None:
            return opb.ORCHESTRATION_STATUS_STALLED
        if self.start is None:
            return opb.ORCHESTRATION_STATUS_PENDING
        if self.suspended:
            return opb.ORCHESTRATION_STATUS_SUSPENDED
        return opb.ORCHESTRATION_STATUS_RUNNING

    @property
    def execution_id(self) -> str:
        if self.start is None:
            return ""
        return self.start.workflowInstance.executionId.value


_CONTROL_KINDS = frozenset({"executionSuspended", "executionResumed", "executionTerminated"})


def is_control(ev: hpb.HistoryEvent) -> bool:
    return kind(ev) in _CONTROL_KINDS
