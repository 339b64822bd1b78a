"""Plain values that cross the domain/store boundary: instance keys, inbox
messages, activity tasks, and the commit set of one workflow turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb


@dataclass(frozen=True, order=True)
class InstanceKey:
    """An instance is addressed by app ID and instance ID: the same ID may exist on two apps."""

    app_id: str
    instance_id: str

    def __str__(self) -> str:
        return f"{self.app_id}/{self.instance_id}"


class Gate(IntEnum):
    """When an inbox message may be handed to a turn (the store filters on it).

    EVENT waits until the instance has started and is neither suspended nor stalled;
    START is the ExecutionStarted message; CONTROL (suspend, resume, terminate)
    is always eligible.
    """

    EVENT = 0
    START = 1
    CONTROL = 2


@dataclass(frozen=True, kw_only=True)
class Message:
    """A history event on its way into an instance's inbox."""

    target: InstanceKey
    event: hpb.HistoryEvent
    gate: Gate = Gate.EVENT
    visible_at: datetime | None = None  # a durable timer or a scheduled start
    # Ahead of the target's pending messages, in the given order: continue-as-new's new start
    # and carried events come before events raised while the continuing turn ran.
    front: bool = False


@dataclass(frozen=True, kw_only=True)
class InboxItem:
    id: int | str
    event: hpb.HistoryEvent


@dataclass(frozen=True, kw_only=True)
class ActivityTask:
    """An activity to run on `app_id`; its result goes back to `parent`."""

    app_id: str
    parent: InstanceKey
    request: spb.ActivityRequest
    router: opb.TaskRouter  # copied onto the result event


@dataclass(frozen=True, kw_only=True)
class NewInstance:
    """An instance to create: its client-visible state and its ExecutionStarted message
    (None when the history is seeded whole, as for a rerun)."""

    key: InstanceKey
    state: opb.WorkflowState
    start: Message | None
    created_at: datetime
    # History its parent shared with it (Dapr history propagation); sent with each of its turns.
    propagated: hpb.PropagatedHistory | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowCommit:
    """Everything one workflow turn changes, persisted atomically by Store.commit_workflow."""

    key: InstanceKey
    consumed: list[int | str]
    reset_history: bool = False  # continue-as-new: the old generation is discarded
    new_history: list[hpb.HistoryEvent] = field(default_factory=list)
    state: opb.WorkflowState
    messages: list[Message] = field(default_factory=list)  # only to instances that exist
    new_instances: list[NewInstance] = field(default_factory=list)
    activities: list[ActivityTask] = field(default_factory=list)
    # The execution ended or restarted: drop its queued activities and timers.
    cancel_pending: bool = False
    # With reset_history: the propagated history the new generation receives (None: none).
    propagated: hpb.PropagatedHistory | None = None


TERMINAL_STATUSES = frozenset(
    {
        opb.ORCHESTRATION_STATUS_COMPLETED,
        opb.ORCHESTRATION_STATUS_FAILED,
        opb.ORCHESTRATION_STATUS_TERMINATED,
        opb.ORCHESTRATION_STATUS_CANCELED,
    }
)


def is_terminal(status: int) -> bool:
    return status in TERMINAL_STATUSES


def status_name(status: int) -> str:
    return opb.OrchestrationStatus.Name(status).removeprefix("ORCHESTRATION_STATUS_")
