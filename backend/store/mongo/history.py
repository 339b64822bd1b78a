"""History on the MongoDB store: a turn's events are one chunk holding positions [seq, end).

A small turn near the start of an instance's history is held in the instance document itself
(`hist`, a list of chunks), pushed by the commit's own instance update: most workflows never
write to the history collection at all, saving one insert per turn. Every other chunk goes
to the `history` collection, and `hist_stored` says the instance has some there. The rule
depends only on the turn (its positions and size), and bounds the inline part to
INLINE_EVENTS chunks of at most INLINE_TURN_BYTES (512 KB) next to the instance's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from backend._proto import history_events_pb2 as hpb
from backend.domain.model import InstanceKey
from backend.store.mongo.codec import Doc, key_filter

# A turn's events go into one history document unless they are this large together
# (a document is at most 16 MB; a turn may carry many large payloads).
CHUNK_BYTES = 4 * 1024 * 1024
INLINE_EVENTS = 64  # only positions below this may be held inline
INLINE_TURN_BYTES = 8 * 1024  # and only turns this small


def history_docs(key: InstanceKey, start: int, events: Sequence[hpb.HistoryEvent]) -> list[Doc]:
    """A turn's events as few documents as fit: each holds positions [seq, end)."""
    docs: list[Doc] = []
    chunk: list[bytes] = []
    size = 0
    for event in events:
        data = event.SerializeToString()
        if chunk and size + len(data) > CHUNK_BYTES:
            docs.append(_chunk(key, start, chunk))
            start += len(chunk)
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        docs.append(_chunk(key, start, chunk))
    return docs


def _chunk(key: InstanceKey, start: int, events: list[bytes]) -> Doc:
    return {**key_filter(key), "seq": start, "end": start + len(events), "events": events}


def inline_chunk(docs: list[Doc]) -> Doc | None:
    """The turn's history as an inline chunk, if the rule lets it be held in the instance."""
    if len(docs) != 1 or docs[0]["end"] > INLINE_EVENTS:
        return None
    d = docs[0]
    if sum(len(e) for e in d["events"]) > INLINE_TURN_BYTES:
        return None
    return {"seq": d["seq"], "end": d["end"], "events": d["events"]}


async def read(db: AsyncDatabase[Doc], key: InstanceKey, start: int) -> list[hpb.HistoryEvent]:
    """Events from position `start` on: the inline chunks and, if it has any, the stored ones,
    with the store's own read concern (majority, or local under `durability=local`). A commit
    landing between the two reads can leave a gap; the history is cut at the first gap, so a
    read returns a prefix of the history, as an earlier read would have."""
    k = key_filter(key)
    doc = await db.instances.find_one(k, projection={"_id": 0, "hist": 1, "hist_stored": 1})
    if doc is None:
        return []
    chunks: list[Doc] = [c for c in doc.get("hist") or () if int(c["end"]) > start]
    if doc.get("hist_stored", True):  # written before schema 3: all in the collection
        cursor = db.history.find(
            {**k, "end": {"$gt": start}}, projection={"_id": 0, "seq": 1, "end": 1, "events": 1}
        ).sort("end", ASCENDING)
        chunks.extend([d async for d in cursor])
        chunks.sort(key=lambda c: int(c["seq"]))
    events: list[hpb.HistoryEvent] = []
    at = start
    for c in chunks:
        if int(c["seq"]) > at:
            break  # a gap: what follows was committed after the instance document was read
        skip = at - int(c["seq"])
        events.extend(hpb.HistoryEvent.FromString(e) for e in c["events"][skip:])
        at = max(at, int(c["end"]))
    return events
