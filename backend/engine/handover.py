"""HandOver: new work written on this server starts on this server, without a lease query.

A turn's new activities, a client's new instance, the parent that an activity result is
delivered to and the instance a client's message is sent to are stored already leased to this
server when a worker of their app has free slots here (engine/slots.py reserves them, the store
takes a store.base.Claim); their dispatcher runs them at once. Everything else the write queued (a
message to another instance, work with no slot) is announced: the target instance's dispatcher
claims it by key, or looks when it becomes due (engine/notify.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from backend.domain.events import utcnow
from backend.domain.model import Message, NewInstance, WorkflowCommit
from backend.engine.notify import Notifier
from backend.engine.slots import Slots
from backend.store.base import ActivityLease, Claim, Store, WorkflowLease


class HandOver:
    def __init__(self, *, store: Store, notifier: Notifier, lease_seconds: float) -> None:
        self._store = store
        self._notifier = notifier
        self._lease_seconds = lease_seconds
        # Set by the engine: this server's name, and per app served here its dispatcher.
        self.owner = ""
        self.slots: Mapping[str, Slots] = {}

    def _claim(self, slots: dict[str, int]) -> Claim:
        return Claim(owner=self.owner, until=utcnow() + timedelta(seconds=self._lease_seconds), slots=slots)

    async def commit(self, lease: WorkflowLease, commit: WorkflowCommit, *, now: datetime) -> None:
        """Store a workflow turn; its new activities start here if their apps have free slots."""
        reserved: dict[str, int] = {}
        for app, wanted in Counter(a.app_id for a in commit.activities).items():
            slots = self.slots.get(app)
            granted = slots.reserve("activity", wanted) if slots is not None else 0
            if granted:
                reserved[app] = granted
        leases: list[ActivityLease] = []
        try:
            leases = await self._store.commit_workflow(
                lease, commit, now=now, claim=self._claim(reserved) if reserved else None
            )
        finally:
            for app, n in reserved.items():
                self.slots[app].adopt("activity", [a for a in leases if a.task.app_id == app], n)
        self._announce(commit, leases)

    def _announce(self, commit: WorkflowCommit, leases: list[ActivityLease]) -> None:
        now = utcnow()
        for m in commit.messages:
            self._notifier.delivered(m.target, m.visible_at, now)
        for new in commit.new_instances:
            if new.start is not None:
                self._notifier.delivered(new.key, new.start.visible_at, now)
        started = Counter(a.task.app_id for a in leases)
        for app, n in Counter(a.app_id for a in commit.activities).items():
            if n > started[app]:
                self._notifier.wake(app)  # queued, not started here: a lease round takes them

    async def create(self, new: NewInstance, *, replace_terminal: bool) -> None:
        """Store a new instance; its first turn starts here if its app has a free slot.
        Raises what store.create_instance raises (AlreadyExists)."""
        lease = await self._with_workflow_slot(
            new.key.app_id,
            lambda claim: self._store.create_instance(new, replace_terminal=replace_terminal, claim=claim),
        )
        if lease is None and new.start is not None:
            self._notifier.delivered(new.key, new.start.visible_at, utcnow())

    async def deliver_result(self, lease: ActivityLease, result: Message) -> None:
        """Store an activity's result. If the parent's app has a free slot here, the store
        leases the parent to this server in the same write (when it is free to take the
        result) and its next turn starts at once; otherwise its dispatcher is told.
        Raises what store.complete_activity raises (LeaseLost)."""
        won = await self._with_workflow_slot(
            result.target.app_id, lambda claim: self._store.complete_activity(lease, result, claim=claim)
        )
        if won is None:
            self._notifier.hint(result.target)

    async def send(self, message: Message) -> bool:
        """Deliver a client's message; False if its target does not exist. If the target's app
        has a free slot here, the store may lease the target to this server in the same write
        (when it is free to take the message) and its turn starts at once; otherwise its
        dispatcher is told."""
        delivered = True

        async def write(claim: Claim | None) -> WorkflowLease | None:
            nonlocal delivered
            delivered, won = await self._store.deliver(message, claim=claim)
            return won

        won = await self._with_workflow_slot(message.target.app_id, write)
        if won is None and delivered:
            self._notifier.delivered(message.target, message.visible_at, utcnow())
        return delivered

    async def _with_workflow_slot(
        self, app_id: str, write: Callable[[Claim | None], Awaitable[WorkflowLease | None]]
    ) -> WorkflowLease | None:
        """Run a store write that may lease one instance of `app_id` to this server: with a
        claim if a slot is free here; the lease it won goes to the app's dispatcher."""
        slots = self.slots.get(app_id)
        reserved = slots.reserve("workflow", 1) if slots is not None else 0
        won = None
        try:
            won = await write(self._claim({app_id: 1}) if reserved else None)
        finally:
            if slots is not None and reserved:
                slots.adopt("workflow", [] if won is None else [won], reserved)
        return won
