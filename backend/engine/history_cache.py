"""Recently used histories and their folded runtime state, so a turn reads and
folds only the events it has not seen: per-turn cost stays flat as history grows.

An entry is trusted only for the same execution and a length no greater than
the store's: any other replica's commit shows up as a longer history_len.
One turn per instance is in flight at a time (the lease), so an entry's list
is extended in place after each commit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from backend._proto import history_events_pb2 as hpb
from backend.domain.model import InstanceKey
from backend.domain.state import RuntimeState
from backend.engine.encoded import EventEncodings


@dataclass
class Entry:
    execution_id: str
    events: list[hpb.HistoryEvent]
    state: RuntimeState  # folded over exactly `events`
    # Their wire encodings (engine/encoded.py): brought up to `events` when a turn loads.
    encoded: EventEncodings = field(default_factory=EventEncodings)


class HistoryCache:
    """Bounded by instances and by bytes (a few huge histories must not hold the memory)."""

    def __init__(self, max_instances: int, max_bytes: int = 128 * 1024 * 1024) -> None:
        self._max = max_instances
        self._max_bytes = max_bytes
        self._entries: OrderedDict[InstanceKey, Entry] = OrderedDict()
        self._sizes: dict[InstanceKey, int] = {}
        self.bytes = 0

    def get(self, key: InstanceKey, execution_id: str, length: int) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.execution_id != execution_id or len(entry.events) > length:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: InstanceKey, entry: Entry) -> None:
        # The events and their encodings: about twice the history's encoded size.
        cost = 2 * entry.state.size
        if self._max <= 0 or cost > self._max_bytes:
            self.drop(key)
            return
        self.drop(key)
        self._entries[key] = entry
        self._sizes[key] = cost
        self.bytes += cost
        while len(self._entries) > self._max or self.bytes > self._max_bytes:
            oldest, _ = self._entries.popitem(last=False)
            self.bytes -= self._sizes.pop(oldest, 0)

    def drop(self, key: InstanceKey) -> None:
        if self._entries.pop(key, None) is not None:
            self.bytes -= self._sizes.pop(key, 0)
