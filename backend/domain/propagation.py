"""Dapr history propagation: a workflow shares its history with the activities and child
workflows it calls (scope OWN_HISTORY), or that and what it received itself (LINEAGE).

Shaped as the Dapr runtime does it (durabletask-go v0.14.0): one chunk per workflow, tagged
with its app ID, instance ID and workflow name, holding the workflow's events (those committed
and those of the turn so far, so the scheduling event itself is the last), each serialized
deterministically. LINEAGE puts the chunks the caller received first. A generation that
continues as new hands the next one what it received, in the scope it received it.
"""

from __future__ import annotations

from collections.abc import Iterable

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey

NONE = opb.HISTORY_PROPAGATION_SCOPE_NONE
LINEAGE = opb.HISTORY_PROPAGATION_SCOPE_LINEAGE


def assemble(
    key: InstanceKey,
    workflow_name: str,
    events: Iterable[hpb.HistoryEvent],
    scope: int,
    received: hpb.PropagatedHistory | None,
) -> hpb.PropagatedHistory | None:
    if scope == NONE:
        return None
    out = hpb.PropagatedHistory(scope=scope)  # type: ignore[arg-type]
    if scope == LINEAGE and received is not None:
        out.chunks.extend(received.chunks)
    raw = [e.SerializeToString(deterministic=True) for e in events]
    if raw:
        out.chunks.append(
            hpb.PropagatedHistoryChunk(
                rawEvents=raw, appId=key.app_id, instanceId=key.instance_id, workflowName=workflow_name
            )
        )
    return out


def scope_of(message: object) -> int:
    """The scope an action asks for (absent: none)."""
    if message.HasField("historyPropagationScope"):  # type: ignore[attr-defined]
        return int(message.historyPropagationScope)  # type: ignore[attr-defined]
    return NONE
