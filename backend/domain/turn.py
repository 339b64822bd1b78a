"""Planning one workflow turn: which inbox events are new, and who handles them.

DROP       nothing new (duplicates, or the instance already finished)
TERMINATE  the server ends the workflow itself (works with no worker connected)
RECORD     suspend/resume only: appended to history without a worker turn (also a start
           that is suspended before its first turn: the server records both)
WORKER     a WorkflowRequest goes to a connected worker
WAIT       events that cannot run yet (not started): left in the inbox
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import events as ev
from backend.domain.model import InboxItem
from backend.domain.state import RuntimeState, is_control

_TURN_TICK = timedelta(microseconds=1)


class Mode(enum.Enum):
    DROP = "drop"
    TERMINATE = "terminate"
    RECORD = "record"
    WORKER = "worker"
    WAIT = "wait"


@dataclass(frozen=True, kw_only=True)
class TurnPlan:
    mode: Mode
    batch: list[InboxItem]  # accepted events, ExecutionStarted first
    consumed: list[int | str]  # every inbox id the turn removes (accepted + dropped)


def _identity(event: hpb.HistoryEvent) -> tuple[str, int] | None:
    k = ev.kind(event)
    if k in ("taskCompleted", "taskFailed"):
        return ("task", getattr(event, k).taskScheduledId)
    if k in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
        return ("child", getattr(event, k).taskScheduledId)
    if k == "timerFired":
        return ("timer", event.timerFired.timerId)
    if k == "executionStarted":
        return ("start", 0)
    return None


def plan(state: RuntimeState, inbox: list[InboxItem]) -> TurnPlan:
    accepted: list[InboxItem] = []
    seen: set[tuple[str, int]] = set()
    for item in inbox:
        ident = _identity(item.event)
        if not state.accepts(item.event) or (ident is not None and ident in seen):
            continue
        if ident is not None:
            seen.add(ident)
        accepted.append(item)
    accepted.sort(key=lambda i: 0 if i.event.HasField("executionStarted") else 1)  # stable
    everything = [i.id for i in inbox]
    if not accepted:
        return TurnPlan(mode=Mode.DROP, batch=[], consumed=everything)
    if any(i.event.HasField("executionTerminated") for i in accepted):
        return TurnPlan(mode=Mode.TERMINATE, batch=accepted, consumed=everything)
    starting = accepted[0].event.HasField("executionStarted")
    if state.start is None and not starting:
        # Nothing may precede ExecutionStarted in a history (the SDKs replay it first).
        return TurnPlan(mode=Mode.WAIT, batch=[], consumed=[])
    rest = [i.event for i in (accepted[1:] if starting else accepted)]
    if rest and all(is_control(e) for e in rest):
        if starting:
            if _ends_suspended(rest):
                # Suspended before its first turn: the server records the start and the
                # suspension; the code runs on a worker once the workflow is resumed.
                return TurnPlan(mode=Mode.RECORD, batch=accepted, consumed=everything)
        elif not (any(e.HasField("executionResumed") for e in rest) and state.buffered_while_suspended):
            return TurnPlan(mode=Mode.RECORD, batch=accepted, consumed=everything)
    return TurnPlan(mode=Mode.WORKER, batch=accepted, consumed=everything)


def _ends_suspended(controls: list[hpb.HistoryEvent]) -> bool:
    flags = [e.HasField("executionSuspended") for e in controls if not e.HasField("executionTerminated")]
    return bool(flags) and flags[-1]


def turn_started(state: RuntimeState, now: datetime) -> hpb.HistoryEvent:
    """The WorkflowStarted event that opens a turn; strictly after the previous one."""
    moment = now
    if state.last_turn_at is not None and moment <= state.last_turn_at:
        moment = state.last_turn_at + _TURN_TICK
    return ev.workflow_started(moment)


def workflow_request(
    instance_id: str,
    execution_id: str,
    history: list[hpb.HistoryEvent],
    new_events: list[hpb.HistoryEvent],
    *,
    cached: int = 0,
) -> spb.WorkflowRequest:
    """The request a worker receives. `cached` > 0: it already holds that many leading events."""
    req = spb.WorkflowRequest(instanceId=instance_id, newEvents=new_events)
    if execution_id:
        req.executionId.value = execution_id
    if cached > 0:
        req.pastEvents.extend(history[cached:])
        req.cachedHistory.eventCount = cached
    else:
        req.pastEvents.extend(history)
    return req
