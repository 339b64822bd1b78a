"""Slots: how a writer of new work hands it straight to its app's dispatcher.

A turn committing new activities, or a client starting an instance, asks the dispatcher of the
work's app (on this server) for free slots first; the store then writes the work already
leased to this server (store.base.Claim), and the dispatcher runs it without a lease query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from backend.store.base import ActivityLease, WorkflowLease


class Slots(Protocol):
    def reserve(self, kind: str, wanted: int) -> int:
        """Up to `wanted` slots for `kind` ("workflow" or "activity") work; 0 if no worker of
        the app is connected here. Every reservation ends in `adopt`."""
        ...

    def adopt(self, kind: str, leases: Sequence[WorkflowLease | ActivityLease], reserved: int) -> None:
        """Run what the store leased on the `reserved` slots (fewer leases: the rest come free)."""
        ...
