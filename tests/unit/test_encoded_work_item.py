"""Workflow work items assembled from cached event encodings (engine/encoded.py) are, on the
wire, the work items the protobuf library would build: a worker cannot tell them apart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import events as ev
from backend.domain.turn import workflow_request
from backend.engine.encoded import EncodedItem, EventEncodings, serialize_work_item

T = datetime(2026, 1, 1, tzinfo=UTC)
PROPAGATED = hpb.PropagatedHistory(
    chunks=[hpb.PropagatedHistoryChunk(appId="parent-app", instanceId="p-1", rawEvents=[b"\x01\x02"])]
)


def history(n: int) -> list[hpb.HistoryEvent]:
    out = [ev.workflow_started(T)]
    for i in range(n):
        out.append(
            ev.event(
                T, taskScheduled=hpb.TaskScheduledEvent(name=f"act-{i}", input=ev.sv('"é' + "x" * i + '"'))
            )
        )
        out.append(ev.event(T, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=i, result=ev.sv(str(i)))))
    return out


@pytest.mark.parametrize("cached", [0, 1, 7, 41])
@pytest.mark.parametrize("token", ["", "3f2a" * 8])
def test_an_encoded_item_is_the_protobuf_work_item(cached: int, token: str) -> None:
    past = history(20)  # 41 events, some of them more than 127 bytes (two-byte lengths)
    new = [ev.workflow_started(T), ev.event_raised(T, "go", ev.sv('"now"'))]
    expected = spb.WorkItem(workflowRequest=workflow_request("wf-1", "exec-1", past, new, cached=cached))
    expected.workflowRequest.propagatedHistory.CopyFrom(PROPAGATED)
    expected.completionToken = token

    request = workflow_request("wf-1", "exec-1", [], new, cached=cached)
    request.propagatedHistory.CopyFrom(PROPAGATED)
    item = EncodedItem(request, EventEncodings(past).between(cached, len(past)))
    item.completionToken = token

    data = serialize_work_item(item)
    assert spb.WorkItem.FromString(data) == expected
    assert item.decoded() == expected
    assert item.ByteSize() == len(data) == expected.ByteSize()


def test_encodings_follow_a_history_that_grows_and_start_over_when_it_does_not() -> None:
    events = history(3)
    enc = EventEncodings(events[:2])
    enc.sync(events)  # extended: only the new ones are encoded
    assert len(enc) == len(events)
    whole = spb.WorkflowRequest.FromString(enc.between(0, len(events)))
    assert list(whole.pastEvents) == events
    assert list(spb.WorkflowRequest.FromString(enc.between(2, 5)).pastEvents) == events[2:5]
    other = history(1)  # shorter than what is encoded: not a prefix, so encoded anew
    enc.sync(other)
    assert list(spb.WorkflowRequest.FromString(enc.between(0, len(other))).pastEvents) == other
    assert (
        spb.WorkItem.FromString(serialize_work_item(spb.WorkItem(completionToken="t"))).completionToken == "t"
    )
