"""Encoding for the MongoDB store: times as integer microseconds, key filters,
the gate rules as query parts, write/read concerns, and the error boundary."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import ConnectionFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from backend._proto import orchestration_pb2 as opb
from backend.domain.model import Gate, InstanceKey
from backend.errors import Unavailable

T = TypeVar("T")
Doc = dict[str, Any]

DEFAULT_DATABASE = "durabletask"

STALLED = int(opb.ORCHESTRATION_STATUS_STALLED)
WAITING = [
    int(opb.ORCHESTRATION_STATUS_PENDING),
    int(opb.ORCHESTRATION_STATUS_SUSPENDED),
    STALLED,
]
CONTROL, START = int(Gate.CONTROL), int(Gate.START)

WRITE = WriteConcern(w="majority", j=True)
READ = ReadConcern("majority")
# The store URL's `durability=`: majority (the default) or the explicit opt-out.
DURABILITY = {
    "majority": (WRITE, READ),
    "local": (WriteConcern(w=1, j=True), ReadConcern("local")),
}
SNAPSHOT = ReadConcern("snapshot")
# A duplicate key inside a transaction means a concurrent insert committed after
# our snapshot: run the transaction again (it then sees the row) a few times.
DUPLICATE_RETRIES = 3

# -- times ---------------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)
# SDKs wait "forever" with timers at 9999-12-31.
LATEST = datetime.max.replace(tzinfo=UTC)


def micros(moment: datetime | None) -> int:
    """Microseconds since the epoch; None is 0, as in the SQLite store."""
    if moment is None:
        return 0
    if moment.tzinfo is None:  # naive means local time, as datetime.timestamp() has it
        moment = moment.astimezone(UTC)
    return (moment - EPOCH) // MICRO


LATEST_MICROS = micros(LATEST)


def from_micros(value: int) -> datetime:
    return LATEST if value >= LATEST_MICROS else EPOCH + value * MICRO


def unleased(now: int) -> Doc:
    """Filter: not leased at `now` (no lease, or it expired)."""
    return {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}


def gates_for(status: int, control_only: bool) -> list[int] | None:
    """The gates whose messages an instance with `status` may take (None: all)."""
    if status == STALLED:
        return [CONTROL]
    if control_only:  # the start comes along, so suspend/terminate never precede it in history
        return [START, CONTROL]
    if status in WAITING:
        return [START, CONTROL]
    return None


# Messages held in the instance document (`inline`, store/mongo/inbox.py) are told apart from
# those of the inbox collection by their InboxItem id: the ObjectId behind this prefix.
INLINE_PREFIX = "~"
# `inbox_n` (the instance's messages in the inbox collection) when it is not known exactly
# (written before schema version 3, or after a commit dropped timers): counts stay above 0.
UNKNOWN_COUNT = 1 << 40


# The lease tokens of activities held in their parent's document (store/mongo/held.py).
PENDING_PREFIX = "p."


def pending_token() -> str:
    return PENDING_PREFIX + uuid.uuid4().hex


def inline_id(oid: ObjectId) -> str:
    return INLINE_PREFIX + str(oid)


def split_consumed(ids: list[str]) -> tuple[list[ObjectId], list[ObjectId]]:
    """Consumed InboxItem ids as (inbox collection ObjectIds, inline ObjectIds)."""
    stored: list[ObjectId] = []
    inline: list[ObjectId] = []
    for i in ids:
        if i.startswith(INLINE_PREFIX):
            if (oid := object_id(i[len(INLINE_PREFIX) :])) is not None:
                inline.append(oid)
        elif (oid := object_id(i)) is not None:
            stored.append(oid)
    return stored, inline


def object_id(value: int | str) -> ObjectId | None:
    try:
        return ObjectId(value) if isinstance(value, str) else None
    except InvalidId:
        return None


def key_filter(key: InstanceKey) -> Doc:
    return {"app_id": key.app_id, "instance_id": key.instance_id}


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    try:
        yield
    except ConnectionFailure as e:  # includes server selection timeouts
        raise Unavailable(f"MongoDB is unreachable: {e}") from e
