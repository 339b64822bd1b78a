"""The Store: the one interface every backend (SQLite, MongoDB) implements.

A store persists what it is given and never interprets workflow actions. Its
only rules are about who may take which work when:

* A workflow instance is leased whole (one turn in flight per instance). An
  inbox message is *eligible* when it is visible (visible_at <= now) and its
  gate allows it: CONTROL always; START unless the instance is STALLED; EVENT
  only once the instance has left PENDING and is not SUSPENDED or STALLED.
  Terminal instances take every message (the turn drops them).
* A STALLED instance waits for a worker that has its version:
  retry_stalled() makes the app's stalled instances eligible once more.
* Activities are leased one by one. Leases expire; a live owner renews the ones
  it is working on (by token).
* Every commit is atomic and fenced by the lease token: a commit on a lease
  that expired and moved on raises LeaseLost and changes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import (
    ActivityTask,
    InboxItem,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
)


@dataclass(frozen=True, kw_only=True)
class WorkflowLease:
    key: InstanceKey
    token: str
    state: opb.WorkflowState
    history_len: int
    inbox: list[InboxItem]
    propagated: hpb.PropagatedHistory | None = None  # what the instance's parent shared with it


@dataclass(frozen=True, kw_only=True)
class ActivityLease:
    id: int | str
    token: str
    task: ActivityTask


@dataclass(frozen=True, kw_only=True)
class Claim:
    """Store new work leased to the server writing it, saving the lease round trip: up to
    `slots[app_id]` items of each app (a commit's new activities, a new instance), to
    `owner` until `until`."""

    owner: str
    until: datetime
    slots: Mapping[str, int]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the claim is made

    def takes(self, new: NewInstance) -> bool:
        """Whether a new instance may be stored leased under this claim: the claim has a slot
        for its app and its start message is due now (a delayed start waits for its time)."""
        start = new.start
        if start is None or self.slots.get(new.key.app_id, 0) <= 0:
            return False
        return start.visible_at is None or start.visible_at <= self.now


@dataclass(frozen=True, kw_only=True)
class Change:
    """Something another process wrote: new work for `app_id`; with `instance_id`, a change
    to that instance's state, or (with `message`) a message queued for it, visible from
    `visible_at` (None: now)."""

    app_id: str
    instance_id: str | None = None
    message: bool = False
    visible_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceFilter:
    app_id: str
    created_from: datetime | None = None
    created_to: datetime | None = None
    statuses: frozenset[int] = frozenset()


@dataclass(frozen=True, kw_only=True)
class ListingFilter:
    """Which instances an operator listing wants (store.list_instances); filters AND together."""

    app_ids: frozenset[str] | None = None  # None: every app
    name: str | None = None  # exact workflow name
    statuses: frozenset[int] = frozenset()  # empty: any
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    id_prefix: str = ""


@dataclass(frozen=True, kw_only=True)
class ListingCursor:
    """A position in a listing: the store's own created_at value (float seconds on SQLite,
    integer microseconds on MongoDB, kept exact so that keyset paging never skips a row)."""

    created: float | int
    app_id: str
    instance_id: str


@dataclass(frozen=True, kw_only=True)
class ListedInstance:
    key: InstanceKey
    created_at: datetime
    state: opb.WorkflowState
    cursor: ListingCursor  # where the next page starts after this row


@dataclass(frozen=True, kw_only=True)
class WaitingWork:
    """An app's work that is due and not leased by anyone: inbox messages of instances that
    may take them, and activities."""

    app_id: str
    items: int
    oldest: datetime | None  # since when the longest-waiting item has been due


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema (idempotently) and get ready to serve."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; pending writes are already durable."""

    # -- client side ---------------------------------------------------------

    @abc.abstractmethod
    async def create_instance(
        self,
        new: NewInstance,
        *,
        replace_terminal: bool,
        seed: WorkflowCommit | None = None,
        claim: Claim | None = None,
    ) -> WorkflowLease | None:
        """Store a new instance and its start message, atomically with `seed`
        (history, messages, child instances and activities of its first state).

        An existing instance with the key raises AlreadyExists, unless it is
        terminal and `replace_terminal` is set: then it is replaced whole.
        With `claim` (a slot for the instance's app) a new instance whose start is due now
        may be stored leased to the claimant: its lease is returned (None: not leased).
        """

    @abc.abstractmethod
    async def get_state(self, key: InstanceKey) -> opb.WorkflowState | None: ...

    @abc.abstractmethod
    async def get_history(self, key: InstanceKey, start: int = 0) -> list[hpb.HistoryEvent]:
        """Committed history events from position `start` on, in order."""

    @abc.abstractmethod
    async def list_instance_ids(self, app_id: str, *, after: str | None, limit: int) -> list[str]:
        """Instance IDs of an app in ID order, strictly after `after`."""

    @abc.abstractmethod
    async def find_instances(self, where: InstanceFilter) -> list[InstanceKey]: ...

    @abc.abstractmethod
    async def send(self, message: Message) -> bool:
        """Add a message to an existing instance's inbox; False if there is no such instance."""

    async def deliver(
        self, message: Message, *, claim: Claim | None = None
    ) -> tuple[bool, WorkflowLease | None]:
        """send(), and with `claim` (a slot for the target's app) the target may be leased to
        the claimant in the same atomic write, as complete_activity does: (delivered, the
        lease won, with every eligible message of the target's inbox). A store without that
        write just sends."""
        return await self.send(message), None

    @abc.abstractmethod
    async def purge(self, key: InstanceKey, *, only_terminal: bool) -> bool:
        """Delete an instance with its history, inbox and activities.

        False if it does not exist, or (with only_terminal) is not terminal.
        """

    # -- worker side ---------------------------------------------------------

    @abc.abstractmethod
    async def lease_workflows(
        self,
        app_id: str,
        *,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        control_only: bool = False,
        instance_ids: Collection[str] | None = None,
    ) -> list[WorkflowLease]:
        """Lease up to `limit` unleased instances of the app that have eligible messages
        (only among `instance_ids` when given: the engine knows which it just sent messages to).

        With control_only, only CONTROL messages count: the server handles those without
        a worker (terminate, suspend, resume). They are returned with the eligible START
        message, if any, so a control event is never recorded before the start.
        """

    @abc.abstractmethod
    async def commit_workflow(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        *,
        now: datetime,
        claim: Claim | None = None,
    ) -> list[ActivityLease]:
        """Apply a turn atomically and release the lease (LeaseLost if it is gone). With
        `claim`, the new activities it allows are stored leased: their leases are returned."""

    @abc.abstractmethod
    async def abandon_workflow(self, lease: WorkflowLease, *, retry_at: datetime | None) -> None:
        """Release the lease without changes; nobody may lease it before retry_at."""

    @abc.abstractmethod
    async def lease_activities(
        self, app_id: str, *, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[ActivityLease]: ...

    @abc.abstractmethod
    async def complete_activity(
        self, lease: ActivityLease, result: Message, *, claim: Claim | None = None
    ) -> WorkflowLease | None:
        """Delete the activity and deliver its result to the parent (LeaseLost if gone).

        With `claim` (a slot for the parent's app), the parent is leased to the claimant in
        the same atomic write if it is unleased and may take the result now (it is not
        waiting: PENDING, SUSPENDED, STALLED); that lease, with every eligible message of
        the parent's inbox, is returned, saving the lease round trip of its next turn."""

    @abc.abstractmethod
    async def abandon_activity(self, lease: ActivityLease, *, retry_at: datetime | None) -> None: ...

    @abc.abstractmethod
    async def renew_leases(self, tokens: Collection[str], *, until: datetime) -> None:
        """Extend the leases with these tokens: the ones the engine knows it holds.

        By token, not by owner: a claim whose acknowledgement was lost (the
        database failed over as it applied it) is held under our owner name but
        by no task of ours, and must expire so that the work is dispatched again.
        """

    # -- operator queries (backend/admin) ---------------------------------------
    # Not abstract: a store without them still serves the sidecar protocol.

    async def list_instances(
        self, where: ListingFilter, *, after: ListingCursor | None, limit: int
    ) -> list[ListedInstance]:
        """Up to `limit` instances matching `where`, newest first: ordered by (created_at,
        app_id, instance_id) descending, strictly after `after`. Keyset paging over an index."""
        raise NotImplementedError("this store has no instance listing")

    async def count_instances(self, app_ids: frozenset[str] | None) -> dict[tuple[str, int], int]:
        """Instances per (app ID, status) among `app_ids` (None: every app)."""
        raise NotImplementedError("this store has no instance counts")

    async def waiting_work(self, app_ids: frozenset[str] | None, *, now: datetime) -> list[WaitingWork]:
        """Per app (None: every app) with any, the work due at `now` that nobody has leased."""
        raise NotImplementedError("this store has no work queue report")

    def changes(self) -> AsyncIterator[Change] | None:
        """A feed of writes made by any server sharing the store, for low-latency
        wake-ups across processes; None when the store has no such feed (the
        engine then relies on in-process wake-ups and polling)."""
        return None

    @abc.abstractmethod
    async def retry_stalled(self, app_id: str) -> int:
        """Let the app's STALLED instances take their held messages again (a new
        worker may have the missing version); their next turn re-stalls or runs."""

    @abc.abstractmethod
    async def next_due(self, app_id: str, *, now: datetime) -> datetime | None:
        """The earliest future moment at which work of the app becomes eligible."""
