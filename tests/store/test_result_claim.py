"""Store contract: an activity result delivered with a claim leases its parent in the same
write (store.base.Store.complete_activity), on every store in conftest.py."""

from __future__ import annotations

import pytest

from backend._proto import history_events_pb2 as hpb
from backend.domain import events as ev
from backend.domain.model import Message
from backend.errors import LeaseLost
from backend.store import Store
from backend.store.base import ActivityLease, Claim
from tests.store.test_contract import (
    APP,
    KEY,
    OTHER_APP,
    SUSPENDED,
    _with_activities,
    at,
    commit_for,
    control,
    drive,
    inbox_names,
    lease_all,
    lease_one,
    new,
    not_leased,
    raised,
)


def result_of(act: ActivityLease, value: str) -> Message:
    return Message(
        target=act.task.parent,
        event=ev.event(
            at(1),
            taskCompleted=hpb.TaskCompletedEvent(
                taskScheduledId=act.task.request.taskId, result=ev.sv(f'"{value}"')
            ),
        ),
    )


def claim(*, now: float, app: str = APP) -> Claim:
    return Claim(owner="w1", until=at(now + 30), slots={app: 1}, now=at(now))


async def _leased_activities(store: Store, *names: str) -> list[ActivityLease]:
    await _with_activities(store, *names)
    acts = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    assert [a.task.request.name for a in acts] == list(names)
    return acts


async def test_result_leases_the_free_parent(store: Store) -> None:
    a1, a2 = await _leased_activities(store, "a1", "a2")
    state = await store.get_state(KEY)
    history = await store.get_history(KEY)
    lease = await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=1))
    assert lease is not None and lease.key == KEY
    assert inbox_names(lease) == ["taskCompleted"]
    assert lease.inbox[0].event.taskCompleted.result.value == '"one"'
    assert lease.state == state and lease.history_len == len(history)
    # Leased to the claimant: nobody else takes the parent before the claim's lease ends.
    assert await not_leased(store, KEY, now=at(29))
    # The parent is leased now: a second result is delivered, and its claim wins nothing.
    assert await store.complete_activity(a2, result_of(a2, "two"), claim=claim(now=2)) is None
    # The claimed lease is a lease like any other: its commit consumes what it took, once.
    await store.commit_workflow(lease, commit_for(lease, history=[ev.workflow_started(at(2))]), now=at(2))
    with pytest.raises(LeaseLost):
        await store.commit_workflow(lease, commit_for(lease), now=at(2))
    nxt = await lease_one(store, now=at(3))
    assert [i.event.taskCompleted.result.value for i in nxt.inbox] == ['"two"']
    assert nxt.history_len == len(history) + 1


async def test_result_claim_takes_the_whole_eligible_inbox(store: Store) -> None:
    [a1] = await _leased_activities(store, "a1")
    await store.send(Message(target=KEY, event=raised("earlier")))
    await store.send(Message(target=KEY, event=raised("timer"), visible_at=at(100)))
    lease = await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=1))
    assert lease is not None
    assert inbox_names(lease) == ["earlier", "taskCompleted"]  # in delivery order; not the timer


async def test_result_claim_without_a_slot_or_claim_leases_nothing(store: Store) -> None:
    a1, a2 = await _leased_activities(store, "a1", "a2")
    other_app = claim(now=1, app=OTHER_APP)  # a slot, but not for the parent's app
    assert await store.complete_activity(a1, result_of(a1, "one"), claim=other_app) is None
    assert await store.complete_activity(a2, result_of(a2, "two")) is None
    leased = await lease_all(store, owner="w2", now=at(2))
    assert inbox_names(leased[KEY]) == ["taskCompleted", "taskCompleted"]


async def test_result_claim_skips_a_waiting_parent(store: Store) -> None:
    """A suspended parent may not take the result now: it is delivered, not leased."""
    [a1] = await _leased_activities(store, "a1")
    await store.send(control(KEY, "suspend"))
    await drive(store, KEY, SUSPENDED, now=at(1), history=[raised("suspended")])
    assert await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=2)) is None
    assert await not_leased(store, KEY, now=at(3))  # waiting: the result is not eligible yet
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == SUSPENDED


async def test_result_claim_after_an_expired_lease(store: Store) -> None:
    """A parent leased elsewhere is not claimed until that lease expires; then the claim takes
    it with everything the lapsed owner left, and the lapsed owner's commit is refused."""
    a1, a2 = await _leased_activities(store, "a1", "a2")
    await store.send(Message(target=KEY, event=raised("wake")))
    [gone] = await store.lease_workflows(
        APP, owner="gone", now=at(1), until=at(5), limit=10, instance_ids=[KEY.instance_id]
    )
    assert await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=4)) is None
    lease = await store.complete_activity(a2, result_of(a2, "two"), claim=claim(now=6))
    assert lease is not None and lease.token != gone.token
    assert inbox_names(lease) == ["wake", "taskCompleted", "taskCompleted"]
    with pytest.raises(LeaseLost):
        await store.commit_workflow(gone, commit_for(gone), now=at(6))


async def test_a_lapsed_claim_leaves_the_result_to_the_next_round(store: Store) -> None:
    """A claimant that dies before its turn commits loses nothing: once its lease expires,
    a general round (of any owner) leases the parent with the result, which the operator
    view counts as waiting meanwhile; the lapsed claimant's commit is refused."""
    a1, a2 = await _leased_activities(store, "a1", "a2")
    gone = await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=1))
    assert gone is not None
    assert await not_leased(store, KEY, now=at(30))  # its lease holds until at(31)
    report = {w.app_id: w.items for w in await store.waiting_work(None, now=at(32))}
    assert report.get(APP) == 1
    lease = await lease_one(store, owner="w2", now=at(32))
    assert inbox_names(lease) == ["taskCompleted"]
    assert lease.inbox[0].event.taskCompleted.result.value == '"one"'
    with pytest.raises(LeaseLost):
        await store.commit_workflow(gone, commit_for(gone), now=at(32))
    await store.commit_workflow(lease, commit_for(lease, history=[raised("took one")]), now=at(33))
    # Consumed once: a later result finds a free parent with only itself to take.
    nxt = await store.complete_activity(a2, result_of(a2, "two"), claim=claim(now=34))
    assert nxt is not None
    assert [i.event.taskCompleted.result.value for i in nxt.inbox] == ['"two"']


async def test_an_abandoned_claim_gives_the_result_back(store: Store) -> None:
    [a1] = await _leased_activities(store, "a1")
    await store.send(Message(target=KEY, event=raised("before")))
    won = await store.complete_activity(a1, result_of(a1, "one"), claim=claim(now=1))
    assert won is not None and inbox_names(won) == ["before", "taskCompleted"]
    await store.abandon_workflow(won, retry_at=None)
    lease = await lease_one(store, owner="w2", now=at(2))
    assert inbox_names(lease) == ["before", "taskCompleted"]  # in delivery order, as claimed
    # The turn takes only the result; the event stays for the next one.
    await store.commit_workflow(
        lease, commit_for(lease, history=[raised("took")], consumed=[lease.inbox[1].id]), now=at(3)
    )
    nxt = await lease_one(store, owner="w3", now=at(4))
    assert inbox_names(nxt) == ["before"]


async def test_a_start_leased_at_creation_survives_its_claimant(store: Store) -> None:
    """A new instance stored leased to a server that dies before the first turn: once the
    lease expires, a general round leases it with its start message."""
    lease = await store.create_instance(
        new(KEY, now=at(0)),
        replace_terminal=False,
        claim=Claim(owner="gone", until=at(5), slots={APP: 1}, now=at(0)),
    )
    assert lease is not None and inbox_names(lease) == ["executionStarted"]
    assert await not_leased(store, KEY, now=at(4))
    again = await lease_one(store, owner="w2", now=at(6))
    assert inbox_names(again) == ["executionStarted"] and again.history_len == 0
    with pytest.raises(LeaseLost):
        await store.commit_workflow(lease, commit_for(lease, history=[ev.workflow_started(at(1))]), now=at(6))
