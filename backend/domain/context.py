"""What the applier knows about the turn it applies (besides the runtime state)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey
from backend.security.policy import Policy

_OPEN = Policy()


@dataclass(frozen=True, kw_only=True)
class TurnContext:
    key: InstanceKey
    now: datetime
    stored: opb.WorkflowState  # the projection before this turn
    consumed: list[int | str]  # the inbox items this turn takes
    max_payload_bytes: int
    # The stall in force before this turn (the turn's own WorkflowStarted clears
    # RuntimeState.stalled, so the applier cannot read it from the state).
    stalled_before: hpb.ExecutionStalledEvent | None = None
    # Which apps this workflow's app may call (activities, children) and manage (events, terminate).
    policy: Policy = _OPEN
    # The committed history before this turn, and what the workflow's parent shared with it:
    # what history propagation hands on.
    past: Sequence[hpb.HistoryEvent] = ()
    received: hpb.PropagatedHistory | None = None
    # The history budget of one execution (0: none): a turn that would pass it fails the workflow.
    max_history_bytes: int = 0
    max_history_events: int = 0
