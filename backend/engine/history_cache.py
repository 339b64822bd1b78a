"""Recently used histories, so a turn reads only the events it has not seen.

An entry is trusted only for the same execution and a length no greater than
the store's: any other replica's commit shows up as a longer history_len.
"""

from __future__ import annotations

from collections import OrderedDict

from backend._proto import history_events_pb2 as hpb
from backend.domain.model import InstanceKey


class HistoryCache:
    def __init__(self, max_instances: int) -> None:
        self._max = max_instances
        self._entries: OrderedDict[InstanceKey, tuple[str, list[hpb.HistoryEvent]]] = OrderedDict()

    def get(self, key: InstanceKey, execution_id: str, length: int) -> list[hpb.HistoryEvent] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != execution_id or len(entry[1]) > length:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: InstanceKey, execution_id: str, events: list[hpb.HistoryEvent]) -> None:
        if self._max <= 0:
            return
        self._entries[key] = (execution_id, events)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key: InstanceKey) -> None:
        self._entries.pop(key, None)
