"""Store contract: a client's message delivered with a claim leases its target in the same write
(store.base.Store.deliver), on every store in conftest.py."""

from __future__ import annotations

import pytest

from backend.domain.model import InstanceKey, Message
from backend.errors import LeaseLost
from backend.store import Store
from backend.store.base import Claim
from tests.store.test_contract import (
    APP,
    KEY,
    OTHER_APP,
    SUSPENDED,
    at,
    commit_for,
    control,
    drive,
    inbox_names,
    lease_one,
    not_leased,
    raised,
    started,
)


def claim(*, now: float, app: str = APP) -> Claim:
    return Claim(owner="w1", until=at(now + 30), slots={app: 1}, now=at(now))


async def test_a_message_leases_its_free_target(store: Store) -> None:
    await started(store)
    await store.send(Message(target=KEY, event=raised("earlier")))
    delivered, lease = await store.deliver(Message(target=KEY, event=raised("go")), claim=claim(now=1))
    assert delivered and lease is not None and lease.key == KEY
    assert inbox_names(lease) == ["earlier", "go"]  # the whole eligible inbox, in order
    assert await not_leased(store, KEY, now=at(29))  # leased to the claimant until its end
    # A lease like any other: its commit consumes what it took, once.
    await store.commit_workflow(lease, commit_for(lease, history=[raised("took")]), now=at(2))
    with pytest.raises(LeaseLost):
        await store.commit_workflow(lease, commit_for(lease), now=at(2))
    delivered, nxt = await store.deliver(Message(target=KEY, event=raised("later")), claim=claim(now=3))
    assert delivered and nxt is not None and inbox_names(nxt) == ["later"]


async def test_a_message_to_a_busy_or_waiting_target_is_only_delivered(store: Store) -> None:
    await started(store)
    await store.send(Message(target=KEY, event=raised("wake")))
    other = await lease_one(store, owner="other", now=at(1), until=at(60))
    delivered, lease = await store.deliver(Message(target=KEY, event=raised("busy")), claim=claim(now=2))
    assert delivered and lease is None
    await store.commit_workflow(other, commit_for(other), now=at(3))
    await store.send(control(KEY, "suspend"))
    await drive(store, KEY, SUSPENDED, now=at(4), history=[raised("suspended")])
    delivered, lease = await store.deliver(Message(target=KEY, event=raised("asleep")), claim=claim(now=5))
    assert delivered and lease is None
    assert await not_leased(store, KEY, now=at(6))  # suspended: the events wait
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == SUSPENDED


async def test_no_claim_for_a_missing_target_a_later_message_or_another_app(store: Store) -> None:
    assert await store.deliver(
        Message(target=InstanceKey(APP, "gone"), event=raised("x")), claim=claim(now=1)
    ) == (
        False,
        None,
    )
    await started(store)
    timer = Message(target=KEY, event=raised("timer"), visible_at=at(50))
    assert await store.deliver(timer, claim=claim(now=1)) == (True, None)
    assert await store.deliver(Message(target=KEY, event=raised("e")), claim=claim(now=1, app=OTHER_APP)) == (
        True,
        None,
    )
    lease = await lease_one(store, owner="w2", now=at(2))
    assert inbox_names(lease) == ["e"]  # the timer is not due yet
