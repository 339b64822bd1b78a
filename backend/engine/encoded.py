"""Workflow work items sent as bytes assembled from each history event's cached encoding.

A worker without stateful history gets the whole history with every turn. Building that
request as protobuf objects copies every event twice (into the request, into the work item)
and encodes it again: per-turn CPU grows with the history. The wire form of a repeated
message field is each element's bytes behind a tag and a length, and a parser takes fields
in any order, so the request can be its other fields, encoded as usual, followed by the
cached `pastEvents` entries: per turn, only the new events are encoded.

The GetWorkItems stream sends an EncodedItem's bytes as they are (service/registration.py
gives that RPC a serializer for both kinds of item).
"""

from __future__ import annotations

from collections.abc import Iterable

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb

# Field numbers (orchestrator_service.proto): WorkItem.workflowRequest = 1,
# WorkItem.completionToken = 10, WorkflowRequest.pastEvents = 3.
_WORK_ITEM_REQUEST, _WORK_ITEM_TOKEN, _PAST_EVENTS = 1, 10, 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


class EventEncodings:
    """The `pastEvents` entries of a history's events, appended as the history grows."""

    def __init__(self, events: Iterable[hpb.HistoryEvent] = ()) -> None:
        self._data = bytearray()
        self._ends = [0]  # _ends[i]: where event i's entry starts; _ends[-1]: the end
        self.extend(events)

    def __len__(self) -> int:
        return len(self._ends) - 1

    def extend(self, events: Iterable[hpb.HistoryEvent]) -> None:
        for event in events:
            self._data += _field(_PAST_EVENTS, event.SerializeToString())
            self._ends.append(len(self._data))

    def sync(self, events: list[hpb.HistoryEvent]) -> None:
        """Make these the encodings of `events`, which extend the ones encoded (or else
        start over: a cached history is only ever extended)."""
        if len(self) > len(events):
            self._data.clear()
            self._ends = [0]
        self.extend(events[len(self) :])

    def between(self, start: int, end: int) -> bytes:
        """The entries of events [start, end)."""
        return bytes(self._data[self._ends[start] : self._ends[end]])


class EncodedItem:
    """A WorkItem holding a workflow request, as bytes; `completionToken` is set by the hub."""

    __slots__ = ("_body", "completionToken")

    def __init__(self, request: spb.WorkflowRequest, past: bytes) -> None:
        """`request` without its pastEvents; `past`, their entries (EventEncodings.between)."""
        self._body = _field(_WORK_ITEM_REQUEST, request.SerializeToString() + past)
        self.completionToken = ""

    def _token(self) -> bytes:
        token = self.completionToken.encode()
        return _field(_WORK_ITEM_TOKEN, token) if token else b""

    def SerializeToString(self) -> bytes:  # the protobuf message's method names
        return self._body + self._token()

    def ByteSize(self) -> int:  # without copying the body
        return len(self._body) + len(self._token())

    def decoded(self) -> spb.WorkItem:
        """The work item as a message (for logs and tests; never on the hot path)."""
        return spb.WorkItem.FromString(self.SerializeToString())


def serialize_work_item(item: spb.WorkItem | EncodedItem) -> bytes:
    """GetWorkItems' response serializer, for both kinds of item."""
    return item.SerializeToString()
