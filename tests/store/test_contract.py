"""The Store contract (backend/store/base.py), run against every store URL in conftest.py.

Time is simulated: every call gets an explicit `now`/`until`, so lease expiry and
visibility are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import applier
from backend.domain import events as ev
from backend.domain.model import (
    ActivityTask,
    Gate,
    InstanceKey,
    Message,
    NewInstance,
    WorkflowCommit,
)
from backend.errors import AlreadyExists, InvalidArgument, LeaseLost
from backend.store import Store, open_store
from backend.store.base import ActivityLease, Change, Claim, InstanceFilter, WorkflowLease
from tests.store.conftest import _mongodb_params

APP = "app-a"
OTHER_APP = "app-b"
KEY = InstanceKey(APP, "wf-1")
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

RUNNING = opb.ORCHESTRATION_STATUS_RUNNING
PENDING = opb.ORCHESTRATION_STATUS_PENDING
SUSPENDED = opb.ORCHESTRATION_STATUS_SUSPENDED
STALLED = opb.ORCHESTRATION_STATUS_STALLED
COMPLETED = opb.ORCHESTRATION_STATUS_COMPLETED
FAILED = opb.ORCHESTRATION_STATUS_FAILED
TERMINATED = opb.ORCHESTRATION_STATUS_TERMINATED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- builders -----------------------------------------------------------------------


def new(
    key: InstanceKey = KEY, *, now: datetime = T0, input_: str | None = "in", start_at: datetime | None = None
) -> NewInstance:
    return applier.new_instance(
        key,
        name="wf",
        version=None,
        input_=ev.sv(input_),
        route=ev.router(key.app_id),
        now=now,
        start_at=start_at,
    )


def raised(name: str) -> hpb.HistoryEvent:
    return ev.event_raised(T0, name, ev.sv(f'"{name}"'))


def msg(
    key: InstanceKey, name: str, *, gate: Gate = Gate.EVENT, visible_at: datetime | None = None
) -> Message:
    return Message(target=key, event=raised(name), gate=gate, visible_at=visible_at)


def control(key: InstanceKey, name: str = "pause") -> Message:
    return Message(target=key, event=ev.execution_suspended(T0, ev.sv(name)), gate=Gate.CONTROL)


def with_status(state: opb.WorkflowState, status: int, **fields: str) -> opb.WorkflowState:
    out = opb.WorkflowState()
    out.CopyFrom(state)
    out.workflowStatus = status  # type: ignore[assignment]
    for name, value in fields.items():
        getattr(out, name).value = value
    return out


def commit_for(
    lease: WorkflowLease,
    *,
    status: int = RUNNING,
    history: list[hpb.HistoryEvent] | None = None,
    consumed: list[int | str] | None = None,
    **kw: object,
) -> WorkflowCommit:
    return WorkflowCommit(
        key=lease.key,
        consumed=[i.id for i in lease.inbox] if consumed is None else consumed,
        new_history=history or [],
        state=with_status(lease.state, status),
        **kw,  # type: ignore[arg-type]
    )


def activity(parent: InstanceKey, name: str, *, app_id: str = OTHER_APP, task_id: int = 0) -> ActivityTask:
    return ActivityTask(
        app_id=app_id,
        parent=parent,
        request=spb.ActivityRequest(
            name=name,
            input=ev.sv(f'"{name}-in"'),
            taskId=task_id,
            workflowInstance=opb.WorkflowInstance(instanceId=parent.instance_id),
        ),
        router=ev.router(parent.app_id, app_id),
    )


def inbox_names(lease: WorkflowLease) -> list[str]:
    out = []
    for item in lease.inbox:
        k = ev.kind(item.event)
        out.append(item.event.eventRaised.name if k == "eventRaised" else k)
    return out


async def lease_all(
    store: Store, app_id: str = APP, *, owner: str = "o1", now: datetime = T0, until: datetime | None = None
) -> dict[InstanceKey, WorkflowLease]:
    leases = await store.lease_workflows(
        app_id, owner=owner, now=now, until=until or now + timedelta(seconds=30), limit=100
    )
    keys = [lease.key for lease in leases]
    assert len(keys) == len(set(keys)), "an instance was leased twice in one call"
    return {lease.key: lease for lease in leases}


async def lease_one(
    store: Store,
    key: InstanceKey = KEY,
    *,
    owner: str = "o1",
    now: datetime = T0,
    until: datetime | None = None,
) -> WorkflowLease:
    leases = await lease_all(store, key.app_id, owner=owner, now=now, until=until)
    assert key in leases, f"{key} was not leased; got {list(leases)}"
    for other, lease in leases.items():
        if other != key:
            await store.abandon_workflow(lease, retry_at=None)
    return leases[key]


async def drive(
    store: Store,
    key: InstanceKey,
    status: int,
    *,
    now: datetime = T0,
    history: list[hpb.HistoryEvent] | None = None,
    **kw: object,
) -> None:
    """Take the instance's eligible inbox in one turn and commit it with `status`."""
    lease = await lease_one(store, key, owner="driver", now=now)
    await store.commit_workflow(lease, commit_for(lease, status=status, history=history, **kw), now=now)


async def started(store: Store, key: InstanceKey = KEY, *, status: int = RUNNING, now: datetime = T0) -> None:
    """Create an instance and run its first turn."""
    await store.create_instance(new(key, now=now), replace_terminal=False)
    await drive(store, key, status, now=now, history=[ev.workflow_started(now), raised("first-turn")])


async def not_leased(store: Store, key: InstanceKey, *, now: datetime, owner: str = "probe") -> bool:
    leases = await lease_all(store, key.app_id, owner=owner, now=now)
    for lease in leases.values():
        await store.abandon_workflow(lease, retry_at=None)
    return key not in leases


async def assert_fresh_inbox(store: Store, key: InstanceKey, *, now: datetime) -> None:
    """The instance's inbox holds only its start message: take it, then nothing is left,
    not even EVENT messages (which a PENDING instance would hide)."""
    lease = await lease_one(store, key, now=now)
    assert lease.history_len == 0
    assert inbox_names(lease) == ["executionStarted"]
    await store.commit_workflow(lease, commit_for(lease, status=RUNNING), now=now)
    assert await not_leased(store, key, now=now + timedelta(days=1))


# -- create / get / send -----------------------------------------------------------------


async def test_create_leased_to_the_claimant(store: Store) -> None:
    """With a claim slot for its app, a new instance whose start is due is stored leased to
    the claimant, with its start message, and nobody else can lease it until that expires."""
    now = datetime.now(UTC)
    claim = Claim(owner="o1", until=now + timedelta(seconds=30), slots={APP: 1})
    lease = await store.create_instance(new(KEY, now=now), replace_terminal=False, claim=claim)
    assert lease is not None and lease.key == KEY and lease.history_len == 0
    assert inbox_names(lease) == ["executionStarted"]
    assert lease.state.workflowStatus == PENDING
    assert await lease_all(store, owner="o2", now=now + timedelta(seconds=29)) == {}
    await store.commit_workflow(lease, commit_for(lease, history=[ev.workflow_started(now)]), now=now)
    # Not leased: no slot for its app, a start that is not due yet, or no claim at all.
    other = InstanceKey(APP, "no-slot")
    assert (
        await store.create_instance(
            new(other, now=now),
            replace_terminal=False,
            claim=dataclasses.replace(claim, slots={OTHER_APP: 1}),
        )
        is None
    )
    later = InstanceKey(APP, "later")
    assert (
        await store.create_instance(
            new(later, now=now, start_at=now + timedelta(hours=1)), replace_terminal=False, claim=claim
        )
        is None
    )
    assert (
        await store.create_instance(new(InstanceKey(APP, "plain"), now=now), replace_terminal=False) is None
    )
    leased = await lease_all(store, owner="o2", now=now + timedelta(seconds=1))
    assert set(leased) == {other, InstanceKey(APP, "plain")}


async def test_create_and_get_state(store: Store) -> None:
    created = new(input_="hello")
    await store.create_instance(created, replace_terminal=False)

    state = await store.get_state(KEY)
    assert state == created.state
    assert state is not None and state.input.value == "hello"
    assert state.workflowStatus == PENDING
    assert await store.get_state(InstanceKey(APP, "nope")) is None
    assert await store.get_state(InstanceKey(OTHER_APP, KEY.instance_id)) is None
    assert await store.get_history(KEY) == []

    lease = await lease_one(store)
    assert lease.history_len == 0
    assert lease.state == created.state
    assert [i.event for i in lease.inbox] == [created.start.event]


async def test_duplicate_instance_raises_already_exists(store: Store) -> None:
    await store.create_instance(new(input_="first"), replace_terminal=False)
    with pytest.raises(AlreadyExists):
        await store.create_instance(new(input_="second"), replace_terminal=False)
    with pytest.raises(AlreadyExists):  # not terminal: replace_terminal does not apply
        await store.create_instance(new(input_="third"), replace_terminal=True)
    state = await store.get_state(KEY)
    assert state is not None and state.input.value == "first"
    # the same instance ID on another app is another instance
    await store.create_instance(new(InstanceKey(OTHER_APP, KEY.instance_id)), replace_terminal=False)
    assert await store.get_state(InstanceKey(OTHER_APP, KEY.instance_id)) is not None


@pytest.mark.parametrize("status", [RUNNING, SUSPENDED, STALLED])
async def test_replace_terminal_refuses_live_instances(store: Store, status: int) -> None:
    await started(store, status=status)
    with pytest.raises(AlreadyExists):
        await store.create_instance(new(input_="again"), replace_terminal=True)
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == status
    assert len(await store.get_history(KEY)) == 2


@pytest.mark.parametrize("status", [COMPLETED, FAILED, TERMINATED])
async def test_replace_terminal_replaces_whole_instance(store: Store, status: int) -> None:
    await started(store, status=status)
    assert await store.send(msg(KEY, "late"))  # an event that arrived after completion

    with pytest.raises(AlreadyExists):
        await store.create_instance(new(input_="again"), replace_terminal=False)

    replacement = new(now=at(5), input_="again")
    await store.create_instance(replacement, replace_terminal=True)
    assert await store.get_state(KEY) == replacement.state
    assert await store.get_history(KEY) == []
    lease = await lease_one(store, now=at(5))
    assert [i.event for i in lease.inbox] == [replacement.start.event]
    await store.abandon_workflow(lease, retry_at=None)
    await assert_fresh_inbox(store, KEY, now=at(6))  # the old inbox ("late") is gone


async def test_send(store: Store) -> None:
    assert await store.send(msg(KEY, "e1")) is False
    await store.create_instance(new(), replace_terminal=False)
    assert await store.send(msg(InstanceKey(OTHER_APP, KEY.instance_id), "e1")) is False
    assert await store.send(msg(KEY, "e2")) is True
    await drive(store, KEY, RUNNING)  # takes the START only: the EVENT waits while PENDING
    lease = await lease_one(store, now=at(1))
    assert inbox_names(lease) == ["e2"]  # e1 was never stored, not even for later


# -- eligibility -----------------------------------------------------------------------------


ELIGIBILITY = [
    (
        status,
        gate,
        gate is Gate.CONTROL
        or (gate is Gate.START and status != STALLED)
        or status not in (PENDING, SUSPENDED, STALLED),
    )
    for status in (PENDING, RUNNING, SUSPENDED, STALLED, COMPLETED, FAILED, TERMINATED)
    for gate in (Gate.EVENT, Gate.START, Gate.CONTROL)
]


@pytest.mark.parametrize(
    ("status", "gate", "eligible"),
    ELIGIBILITY,
    ids=[f"{opb.OrchestrationStatus.Name(s)[21:]}-{g.name}" for s, g, _ in ELIGIBILITY],
)
async def test_gate_eligibility(store: Store, status: int, gate: Gate, eligible: bool) -> None:
    await store.create_instance(new(), replace_terminal=False)
    await drive(store, KEY, status)  # consumes the START; the stored status is `status`
    assert await not_leased(store, KEY, now=at(1))  # nothing left in the inbox

    probe = Message(target=KEY, event=raised("probe"), gate=gate)
    assert await store.send(probe)
    leases = await lease_all(store, now=at(2))
    if eligible:
        assert KEY in leases
        assert [i.event for i in leases[KEY].inbox] == [probe.event]
        assert leases[KEY].state.workflowStatus == status
    else:
        assert KEY not in leases


async def test_lease_returns_only_eligible_messages(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    await store.send(msg(KEY, "early-event"))
    await store.send(control(KEY, "suspend-1"))

    lease = await lease_one(store)
    assert inbox_names(lease) == ["executionStarted", "executionSuspended"]  # not the EVENT
    await store.commit_workflow(lease, commit_for(lease, status=RUNNING), now=T0)

    lease = await lease_one(store, now=at(1))
    assert inbox_names(lease) == ["early-event"]  # eligible now that the instance runs


async def test_lease_control_only(store: Store) -> None:
    """control_only: only instances with CONTROL messages, and only those messages (with the
    START message of an instance not started yet, so nothing is recorded before it)."""
    both, events_only, pending = (
        InstanceKey(APP, "both"),
        InstanceKey(APP, "events"),
        InstanceKey(APP, "pending"),
    )
    await started(store, both)
    await started(store, events_only)
    await store.create_instance(new(pending), replace_terminal=False)  # a START message only
    await store.send(msg(both, "e1"))
    await store.send(control(both, "c1"))
    await store.send(msg(both, "e2"))
    await store.send(msg(events_only, "e3"))

    leases = await store.lease_workflows(
        APP, owner="o1", now=at(1), until=at(30), limit=10, control_only=True
    )
    assert [lease.key for lease in leases] == [both]
    assert inbox_names(leases[0]) == ["executionSuspended"]
    await store.commit_workflow(leases[0], commit_for(leases[0]), now=at(1))
    assert (
        await store.lease_workflows(APP, owner="o1", now=at(2), until=at(30), limit=10, control_only=True)
        == []
    )
    # the other messages are still there for a full lease
    everything = await lease_all(store, now=at(3))
    assert inbox_names(everything[both]) == ["e1", "e2"]
    assert inbox_names(everything[events_only]) == ["e3"]
    assert inbox_names(everything[pending]) == ["executionStarted"]
    for lease in everything.values():
        await store.abandon_workflow(lease, retry_at=None)
    # A control message for the pending instance takes its start along.
    await store.send(control(pending, "c2"))
    (lease,) = await store.lease_workflows(
        APP, owner="o1", now=at(4), until=at(30), limit=10, control_only=True
    )
    assert lease.key == pending
    assert inbox_names(lease) == ["executionStarted", "executionSuspended"]


async def test_events_kept_in_arrival_order(store: Store) -> None:
    await started(store)
    names = [f"e{n}" for n in range(12)]
    for name in names:
        assert await store.send(msg(KEY, name))
    lease = await lease_one(store, now=at(1))
    assert inbox_names(lease) == names


async def test_invisible_messages_are_not_leased(store: Store) -> None:
    await started(store)
    await store.send(msg(KEY, "timer", visible_at=at(60)))
    await store.send(msg(KEY, "now"))

    lease = await lease_one(store, now=at(10))
    assert inbox_names(lease) == ["now"]
    await store.commit_workflow(lease, commit_for(lease), now=at(10))

    assert await not_leased(store, KEY, now=at(59))
    lease = await lease_one(store, now=at(61))
    assert inbox_names(lease) == ["timer"]


async def test_scheduled_start_waits(store: Store) -> None:
    await store.create_instance(new(start_at=at(100)), replace_terminal=False)
    await store.send(control(KEY))  # control messages are not held back by the scheduled start
    lease = await lease_one(store, now=at(1))
    assert inbox_names(lease) == ["executionSuspended"]
    await store.commit_workflow(lease, commit_for(lease, status=PENDING), now=at(1))
    assert await not_leased(store, KEY, now=at(99))
    lease = await lease_one(store, now=at(101))
    assert inbox_names(lease) == ["executionStarted"]


# -- workflow leases ---------------------------------------------------------------------------


async def test_lease_is_exclusive_until_it_expires(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    first = await lease_one(store, owner="o1", now=T0, until=at(30))
    await store.send(control(KEY))  # new work does not make a leased instance leasable

    assert await not_leased(store, KEY, now=at(10), owner="o2")
    assert await not_leased(store, KEY, now=at(29), owner="o2")

    second = await lease_one(store, owner="o2", now=at(31), until=at(60))
    assert second.token != first.token
    assert inbox_names(second) == ["executionStarted", "executionSuspended"]
    assert await not_leased(store, KEY, now=at(40), owner="o3")

    with pytest.raises(LeaseLost):
        await store.commit_workflow(first, commit_for(first), now=at(40))
    await store.commit_workflow(second, commit_for(second), now=at(40))
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == RUNNING


async def test_lease_limit(store: Store) -> None:
    keys = [InstanceKey(APP, f"wf-{n}") for n in range(3)]
    for key in keys:
        await store.create_instance(new(key), replace_terminal=False)
    first = await store.lease_workflows(APP, owner="o1", now=T0, until=at(30), limit=2)
    assert len(first) == 2
    rest = await store.lease_workflows(APP, owner="o1", now=T0, until=at(30), limit=2)
    assert len(rest) == 1
    assert {lease.key for lease in first + rest} == set(keys)
    assert await store.lease_workflows(APP, owner="o1", now=T0, until=at(30), limit=2) == []


async def test_lease_is_per_app(store: Store) -> None:
    await store.create_instance(new(InstanceKey(OTHER_APP, "x")), replace_terminal=False)
    assert await store.lease_workflows(APP, owner="o1", now=T0, until=at(30), limit=10) == []
    [lease] = await store.lease_workflows(OTHER_APP, owner="o1", now=T0, until=at(30), limit=10)
    assert lease.key == InstanceKey(OTHER_APP, "x")


async def test_abandon_workflow(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    lease = await lease_one(store, owner="o1", until=at(30))
    await store.abandon_workflow(lease, retry_at=at(50))
    assert await not_leased(store, KEY, now=at(31), owner="o2")  # the retry time, not the lease, counts
    assert await not_leased(store, KEY, now=at(49), owner="o2")
    lease = await lease_one(store, owner="o2", now=at(51))
    assert inbox_names(lease) == ["executionStarted"]  # nothing was consumed

    await store.abandon_workflow(lease, retry_at=None)
    again = await lease_one(store, owner="o3", now=at(52))
    assert again.token != lease.token
    assert await store.get_history(KEY) == []


async def test_abandon_with_stale_lease_leaves_current_lease(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    stale = await lease_one(store, owner="o1", until=at(30))
    current = await lease_one(store, owner="o2", now=at(31), until=at(60))
    await store.abandon_workflow(stale, retry_at=None)
    assert await not_leased(store, KEY, now=at(40), owner="o3")
    await store.commit_workflow(current, commit_for(current), now=at(40))


# -- commit_workflow ------------------------------------------------------------------------------


async def test_commit_workflow(store: Store) -> None:
    existing = InstanceKey(APP, "peer")
    missing = InstanceKey(APP, "ghost")
    child = new(InstanceKey(OTHER_APP, "wf-1:0001"), input_="child-in")
    await store.create_instance(new(), replace_terminal=False)
    await store.create_instance(new(existing), replace_terminal=False)
    await drive(store, existing, RUNNING)
    await store.send(msg(KEY, "kept"))  # an EVENT: not eligible while PENDING, so not consumed

    lease = await lease_one(store)
    assert inbox_names(lease) == ["executionStarted"]
    first_turn = [ev.workflow_started(T0), lease.inbox[0].event, raised("h3")]
    task = activity(KEY, "charge", task_id=2)
    commit = WorkflowCommit(
        key=KEY,
        consumed=[lease.inbox[0].id],
        new_history=first_turn,
        state=with_status(lease.state, RUNNING, customStatus="busy"),
        messages=[
            msg(existing, "hello-peer"),
            msg(missing, "hello-ghost"),
            msg(KEY, "my-timer", visible_at=at(60)),
        ],
        new_instances=[child],
        activities=[task],
    )
    await store.commit_workflow(lease, commit, now=T0)

    assert await store.get_history(KEY) == first_turn
    assert await store.get_history(KEY, 1) == first_turn[1:]
    assert await store.get_history(KEY, 3) == []
    assert await store.get_state(KEY) == commit.state
    # new instance with its start message
    assert await store.get_state(child.key) == child.state
    child_lease = await lease_one(store, child.key, now=at(1))
    assert [i.event for i in child_lease.inbox] == [child.start.event]
    await store.abandon_workflow(child_lease, retry_at=None)
    # messages: only to instances that exist
    peer = await lease_one(store, existing, now=at(1))
    assert inbox_names(peer) == ["hello-peer"]
    await store.commit_workflow(peer, commit_for(peer), now=at(1))
    assert await store.get_state(missing) is None
    await store.create_instance(new(missing), replace_terminal=False)
    await assert_fresh_inbox(store, missing, now=at(1))  # "hello-ghost" was not kept for later
    # the activity, on its target app
    [act] = await store.lease_activities(OTHER_APP, owner="w", now=at(1), until=at(30), limit=10)
    assert act.task == task
    assert await store.lease_activities(APP, owner="w", now=at(1), until=at(30), limit=10) == []
    # the lease was released: the remaining EVENT is leasable now (RUNNING), the timer later
    lease = await lease_one(store, owner="o2", now=at(1))
    assert lease.history_len == 3
    assert lease.state == commit.state
    assert inbox_names(lease) == ["kept"]

    second_turn = [ev.workflow_started(at(1)), lease.inbox[0].event]
    await store.commit_workflow(lease, commit_for(lease, history=second_turn), now=at(1))
    assert await store.get_history(KEY) == first_turn + second_turn
    assert await store.get_history(KEY, 3) == second_turn
    assert await not_leased(store, KEY, now=at(59))
    lease = await lease_one(store, now=at(61))
    assert lease.history_len == 5
    assert inbox_names(lease) == ["my-timer"]


async def test_commit_updates_status_used_by_the_gate(store: Store) -> None:
    await started(store)
    await store.send(control(KEY, "suspend"))
    lease = await lease_one(store, now=at(1))
    await store.commit_workflow(lease, commit_for(lease, status=SUSPENDED), now=at(1))
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == SUSPENDED
    await store.send(msg(KEY, "held"))
    assert await not_leased(store, KEY, now=at(2))

    await store.send(control(KEY, "resume"))
    lease = await lease_one(store, now=at(3))
    assert inbox_names(lease) == ["executionSuspended"]  # the held EVENT stays out of this turn
    await store.commit_workflow(lease, commit_for(lease, status=RUNNING), now=at(3))
    lease = await lease_one(store, now=at(4))
    assert inbox_names(lease) == ["held"]


async def test_commit_with_stale_lease_changes_nothing(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    await store.create_instance(new(InstanceKey(APP, "peer")), replace_terminal=False)
    stale = await lease_one(store, owner="o1", until=at(30))
    current = await lease_one(store, owner="o2", now=at(31), until=at(60))
    before = await store.get_state(KEY)

    child = new(InstanceKey(APP, "child"))
    doomed = WorkflowCommit(
        key=KEY,
        consumed=[i.id for i in stale.inbox],
        new_history=[ev.workflow_started(T0), raised("x")],
        state=with_status(stale.state, COMPLETED),
        messages=[msg(InstanceKey(APP, "peer"), "from-stale")],
        new_instances=[child],
        activities=[activity(KEY, "stale-task")],
        cancel_pending=True,
    )
    with pytest.raises(LeaseLost):
        await store.commit_workflow(stale, doomed, now=at(40))

    assert await store.get_state(KEY) == before
    assert await store.get_history(KEY) == []
    assert await store.get_state(child.key) is None
    assert await store.lease_activities(OTHER_APP, owner="w", now=at(40), until=at(70), limit=10) == []
    peer = await lease_one(store, InstanceKey(APP, "peer"), owner="o3", now=at(40))
    assert inbox_names(peer) == ["executionStarted"]  # no message from the stale commit
    # the current lease still works and still sees the inbox
    assert inbox_names(current) == ["executionStarted"]
    await store.commit_workflow(current, commit_for(current, history=[raised("ok")]), now=at(40))
    assert [e.eventRaised.name for e in await store.get_history(KEY)] == ["ok"]


async def test_commit_twice_with_one_lease_raises(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    lease = await lease_one(store)
    await store.commit_workflow(lease, commit_for(lease, history=[raised("a")]), now=T0)
    with pytest.raises(LeaseLost):
        await store.commit_workflow(lease, commit_for(lease, history=[raised("b")]), now=T0)
    assert [e.eventRaised.name for e in await store.get_history(KEY)] == ["a"]


async def test_reset_history(store: Store) -> None:
    await started(store)
    assert len(await store.get_history(KEY)) == 2
    await store.send(msg(KEY, "go"))
    lease = await lease_one(store, now=at(1))
    assert lease.history_len == 2
    fresh = [raised("gen-2")]
    await store.commit_workflow(lease, commit_for(lease, history=fresh, reset_history=True), now=at(1))
    assert await store.get_history(KEY) == fresh

    await store.send(msg(KEY, "next"))
    lease = await lease_one(store, now=at(2))
    assert lease.history_len == 1
    await store.commit_workflow(lease, commit_for(lease, history=[raised("more")]), now=at(2))
    assert [e.eventRaised.name for e in await store.get_history(KEY)] == ["gen-2", "more"]


async def test_cancel_pending(store: Store) -> None:
    bystander = InstanceKey(APP, "bystander")
    await started(store, bystander)
    await store.send(msg(bystander, "schedule"))
    await drive(store, bystander, RUNNING, activities=[activity(bystander, "theirs")], now=at(0.5))
    await store.create_instance(new(), replace_terminal=False)
    lease = await lease_one(store)
    await store.commit_workflow(
        lease,
        commit_for(
            lease, activities=[activity(KEY, "mine")], messages=[msg(KEY, "timer", visible_at=at(100))]
        ),
        now=T0,
    )
    await store.send(msg(KEY, "visible"))
    await store.send(msg(bystander, "bystander-timer", visible_at=at(100)))

    lease = await lease_one(store, now=at(1))
    assert inbox_names(lease) == ["visible"]
    await store.commit_workflow(
        lease,
        commit_for(
            lease,
            consumed=[],
            reset_history=True,
            cancel_pending=True,
            messages=[msg(KEY, "carried")],
        ),
        now=at(1),
    )
    # our queued activity is gone, the bystander's is not
    acts = await store.lease_activities(OTHER_APP, owner="w", now=at(2), until=at(30), limit=10)
    assert [a.task.request.name for a in acts] == ["theirs"]
    # the future timer is gone; visible events and the commit's own messages remain
    lease = await lease_one(store, now=at(200))
    assert inbox_names(lease) == ["visible", "carried"]
    other = await lease_one(store, bystander, now=at(200))
    assert inbox_names(other) == ["bystander-timer"]


async def test_front_messages_go_ahead_of_pending_ones_in_their_order(store: Store) -> None:
    """Continue-as-new: the new start and carried events come before events that arrived
    while the continuing turn ran (they were raised after the carried ones)."""
    await started(store)
    await store.send(msg(KEY, "continue-now"))
    lease = await lease_one(store, now=at(1))
    await store.send(msg(KEY, "raised-during-turn-1"))
    await store.send(msg(KEY, "raised-during-turn-2"))
    front = [dataclasses.replace(msg(KEY, f"carried-{n}"), front=True) for n in range(3)]
    await store.commit_workflow(
        lease, commit_for(lease, reset_history=True, messages=[msg(KEY, "own-message"), *front]), now=at(1)
    )
    lease = await lease_one(store, now=at(2))
    assert inbox_names(lease) == [
        "carried-0",
        "carried-1",
        "carried-2",
        "raised-during-turn-1",
        "raised-during-turn-2",
        "own-message",
    ]
    # A second generation's front messages go ahead again.
    await store.send(msg(KEY, "late"))
    await store.commit_workflow(
        lease,
        commit_for(lease, reset_history=True, messages=[dataclasses.replace(msg(KEY, "again"), front=True)]),
        now=at(2),
    )
    assert inbox_names(await lease_one(store, now=at(3))) == ["again", "late"]


def _shared(app: str, name: str) -> hpb.PropagatedHistory:
    chunk = hpb.PropagatedHistoryChunk(
        rawEvents=[raised(name).SerializeToString()], appId=app, instanceId=f"{app}-1", workflowName=name
    )
    return hpb.PropagatedHistory(scope=opb.HISTORY_PROPAGATION_SCOPE_LINEAGE, chunks=[chunk])


async def test_propagated_history_lives_with_its_instance(store: Store) -> None:
    """What a parent shared comes with every lease; continue-as-new replaces it."""
    received = _shared("parent-app", "parent")
    await store.create_instance(dataclasses.replace(new(), propagated=received), replace_terminal=False)
    lease = await lease_one(store, now=at(1))
    assert lease.propagated == received
    await store.commit_workflow(lease, commit_for(lease), now=at(1))
    await store.send(msg(KEY, "again"))
    lease = await lease_one(store, now=at(2))
    assert lease.propagated == received  # every turn, not only the first
    handed = _shared(APP, "next-generation")
    await store.commit_workflow(
        lease,
        commit_for(lease, reset_history=True, propagated=handed, messages=[msg(KEY, "restart")]),
        now=at(2),
    )
    lease = await lease_one(store, now=at(3))
    assert lease.propagated == handed
    await store.commit_workflow(
        lease, commit_for(lease, reset_history=True, messages=[msg(KEY, "root-again")]), now=at(3)
    )
    lease = await lease_one(store, now=at(4))
    assert lease.propagated is None
    # A child created by a commit gets what the commit gave it.
    child = InstanceKey(APP, "child")
    child_new = dataclasses.replace(new(child), propagated=received)
    await store.commit_workflow(lease, commit_for(lease, new_instances=[child_new]), now=at(4))
    assert (await lease_one(store, child, now=at(5))).propagated == received


# -- activities -------------------------------------------------------------------------------------


async def _with_activities(store: Store, *names: str, app_id: str = OTHER_APP) -> None:
    """KEY is running and has queued one activity per name (on `app_id`)."""
    await started(store)
    await store.send(msg(KEY, "schedule"))
    lease = await lease_one(store, now=at(0.5))
    await store.commit_workflow(
        lease,
        commit_for(
            lease, activities=[activity(KEY, n, app_id=app_id, task_id=i) for i, n in enumerate(names)]
        ),
        now=at(0.5),
    )


async def test_lease_activities(store: Store) -> None:
    await _with_activities(store, "a1", "a2", "a3")
    assert await store.lease_activities(APP, owner="w1", now=at(1), until=at(30), limit=10) == []

    first = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=2)
    assert [a.task.request.name for a in first] == ["a1", "a2"]
    assert first[0].task == activity(KEY, "a1", task_id=0)
    rest = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    assert [a.task.request.name for a in rest] == ["a3"]
    # leased: nobody else gets them before expiry
    assert await store.lease_activities(OTHER_APP, owner="w2", now=at(29), until=at(60), limit=10) == []
    again = await store.lease_activities(OTHER_APP, owner="w2", now=at(31), until=at(60), limit=10)
    assert sorted(a.task.request.name for a in again) == ["a1", "a2", "a3"]
    assert {a.token for a in again}.isdisjoint({a.token for a in first + rest})


async def test_commit_stores_claimed_activities_leased(store: Store) -> None:
    """A commit with an Claim stores up to the claimed number of each app's new
    activities leased to the claimant (no lease query); the rest are queued as usual."""
    await started(store)
    await store.send(msg(KEY, "schedule"))
    lease = await lease_one(store, now=at(0.5))
    names = ["a1", "a2", "a3", "local"]
    tasks = [activity(KEY, n, task_id=i) for i, n in enumerate(names[:3])]
    tasks.append(activity(KEY, "local", app_id=APP, task_id=3))
    claim = Claim(owner="w1", until=at(30), slots={OTHER_APP: 2, "app-unused": 5})
    leased = await store.commit_workflow(lease, commit_for(lease, activities=tasks), now=at(0.5), claim=claim)
    assert [a.task.request.name for a in leased] == ["a1", "a2"]
    assert [a.task for a in leased] == tasks[:2]
    assert len({a.token for a in leased}) == 2
    # Only the unclaimed ones are leasable; the claimed ones are held until their lease ends.
    rest = await store.lease_activities(OTHER_APP, owner="w2", now=at(1), until=at(60), limit=10)
    assert [a.task.request.name for a in rest] == ["a3"]
    [local] = await store.lease_activities(APP, owner="w2", now=at(1), until=at(60), limit=10)
    assert local.task.request.name == "local"
    # A claimed lease completes like any other, once.
    result = Message(
        target=KEY,
        event=ev.event(at(1), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0, result=ev.sv("1"))),
    )
    await store.complete_activity(leased[0], result)
    with pytest.raises(LeaseLost):
        await store.complete_activity(leased[0], result)
    # Renewed by token, and after expiry it goes to whoever leases it next.
    await store.renew_leases([leased[1].token], until=at(45))
    assert await store.lease_activities(OTHER_APP, owner="w3", now=at(40), until=at(90), limit=10) == []
    [again] = await store.lease_activities(OTHER_APP, owner="w3", now=at(46), until=at(90), limit=10)
    assert again.task.request.name == "a2" and again.token != leased[1].token
    # A commit without a claim leases nothing.
    nxt = await lease_one(store, now=at(2))
    assert (
        await store.commit_workflow(nxt, commit_for(nxt, activities=[activity(KEY, "a4")]), now=at(2)) == []
    )


async def test_lease_named_instances(store: Store) -> None:
    """lease_workflows(instance_ids=...) claims only those instances, under the same rules."""
    keys = [InstanceKey(APP, f"wf-{n}") for n in range(4)]
    for key in keys:
        await store.create_instance(new(key), replace_terminal=False)
    got = await store.lease_workflows(
        APP,
        owner="o1",
        now=at(1),
        until=at(30),
        limit=10,
        instance_ids=[keys[1].instance_id, keys[3].instance_id],
    )
    assert sorted(lease.key for lease in got) == [keys[1], keys[3]]
    assert all(inbox_names(lease) == ["executionStarted"] for lease in got)
    # Leased: a second named claim gets nothing; an unknown ID or one with no eligible
    # message is not leased (and stays leasable for the messages it gets later).
    assert (
        await store.lease_workflows(
            APP, owner="o2", now=at(2), until=at(30), limit=10, instance_ids=[keys[1].instance_id, "nope"]
        )
        == []
    )
    first = got[0]
    await store.commit_workflow(first, commit_for(first, history=[ev.workflow_started(at(1))]), now=at(2))
    assert (
        await store.lease_workflows(
            APP, owner="o2", now=at(3), until=at(30), limit=10, instance_ids=[first.key.instance_id]
        )
        == []
    )
    await store.send(msg(first.key, "later"))
    [again] = await store.lease_workflows(
        APP, owner="o2", now=at(3), until=at(30), limit=10, instance_ids=[first.key.instance_id]
    )
    assert inbox_names(again) == ["later"]
    # limit bounds a named claim too; the rest are found by a general lease.
    [one] = await store.lease_workflows(
        APP,
        owner="o3",
        now=at(4),
        until=at(30),
        limit=1,
        instance_ids=[keys[0].instance_id, keys[2].instance_id],
    )
    rest = await lease_all(store, owner="o4", now=at(4))
    assert set(rest) == {keys[0], keys[2]} - {one.key}


async def test_complete_activity(store: Store) -> None:
    await _with_activities(store, "a1")
    [act] = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    result = Message(
        target=act.task.parent,
        event=ev.event(at(1), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0, result=ev.sv("42"))),
    )
    await store.complete_activity(act, result)

    lease = await lease_one(store, now=at(2))
    assert [i.event for i in lease.inbox] == [result.event]
    # deleted: not leasable even after the lease would have expired
    assert await store.lease_activities(OTHER_APP, owner="w2", now=at(100), until=at(130), limit=10) == []
    with pytest.raises(LeaseLost):
        await store.complete_activity(act, result)
    await store.abandon_workflow(lease, retry_at=None)
    lease = await lease_one(store, now=at(3))
    assert len(lease.inbox) == 1  # the second completion delivered nothing


async def test_complete_activity_with_stale_lease(store: Store) -> None:
    await _with_activities(store, "a1")
    [stale] = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    [current] = await store.lease_activities(OTHER_APP, owner="w2", now=at(31), until=at(60), limit=10)
    result = Message(
        target=KEY, event=ev.event(at(1), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0))
    )
    with pytest.raises(LeaseLost):
        await store.complete_activity(stale, result)
    assert await not_leased(store, KEY, now=at(40))  # no result was delivered
    await store.complete_activity(current, result)
    lease = await lease_one(store, now=at(41))
    assert len(lease.inbox) == 1


async def test_concurrent_results_for_one_parent_each_land_once(store: Store) -> None:
    """A fan-out's results arrive together (MongoDB writes them in batches per parent):
    every held one is delivered once, in the inbox, and a stale one alone is refused."""
    names = [f"a{i}" for i in range(12)]
    await _with_activities(store, *names)
    acts = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=20)
    assert len(acts) == 12
    # a3's lease expired and another server holds it now: ours is stale
    stale = next(a for a in acts if a.task.request.name == "a3")
    await store.abandon_activity(stale, retry_at=None)
    [current] = await store.lease_activities(OTHER_APP, owner="w2", now=at(2), until=at(30), limit=1)

    def result(a: ActivityLease) -> Message:
        done = hpb.TaskCompletedEvent(
            taskScheduledId=a.task.request.taskId, result=ev.sv(f'"{a.task.request.name}"')
        )
        return Message(target=KEY, event=ev.event(at(3), taskCompleted=done))

    outcomes = await asyncio.gather(
        *(store.complete_activity(a, result(a)) for a in acts), return_exceptions=True
    )
    refused = [a.task.request.name for a, o in zip(acts, outcomes, strict=True) if isinstance(o, LeaseLost)]
    assert refused == ["a3"], outcomes
    assert all(o is None for a, o in zip(acts, outcomes, strict=True) if a is not stale)
    await store.complete_activity(current, result(current))

    lease = await lease_one(store, now=at(4))
    delivered = sorted(i.event.taskCompleted.result.value for i in lease.inbox)
    assert delivered == sorted(f'"{n}"' for n in names)  # each exactly once
    assert await store.lease_activities(OTHER_APP, owner="w3", now=at(100), until=at(130), limit=20) == []


async def test_complete_activity_of_purged_parent(store: Store) -> None:
    await _with_activities(store, "a1")
    [act] = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    assert await store.purge(KEY, only_terminal=False)
    result = Message(
        target=KEY, event=ev.event(at(1), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0))
    )
    with contextlib.suppress(LeaseLost):  # the purge may delete the activity: also fine
        await store.complete_activity(act, result)
    assert await store.get_state(KEY) is None  # no instance appears for the orphan result
    await store.create_instance(new(now=at(2)), replace_terminal=False)
    await assert_fresh_inbox(store, KEY, now=at(2))  # nor is the result kept for a new instance


async def test_complete_activity_result_for_missing_instance_is_dropped(store: Store) -> None:
    await _with_activities(store, "a1")
    [act] = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    gone = InstanceKey(APP, "gone")
    result = Message(
        target=gone, event=ev.event(at(1), taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=0))
    )
    await store.complete_activity(act, result)
    assert await store.lease_activities(OTHER_APP, owner="w2", now=at(100), until=at(130), limit=10) == []
    assert await store.get_state(gone) is None
    await store.create_instance(new(gone, now=at(2)), replace_terminal=False)
    await assert_fresh_inbox(store, gone, now=at(2))


async def test_abandon_activity(store: Store) -> None:
    await _with_activities(store, "a1")
    [act] = await store.lease_activities(OTHER_APP, owner="w1", now=at(1), until=at(30), limit=10)
    await store.abandon_activity(act, retry_at=at(100))
    assert await store.lease_activities(OTHER_APP, owner="w2", now=at(31), until=at(60), limit=10) == []
    assert await store.lease_activities(OTHER_APP, owner="w2", now=at(99), until=at(130), limit=10) == []
    [act2] = await store.lease_activities(OTHER_APP, owner="w2", now=at(101), until=at(130), limit=10)
    assert act2.task == act.task

    await store.abandon_activity(act2, retry_at=None)
    [act3] = await store.lease_activities(OTHER_APP, owner="w3", now=at(102), until=at(130), limit=10)
    assert act3.task == act.task
    # abandoning with a stale lease leaves the current one alone
    await store.abandon_activity(act2, retry_at=None)
    assert await store.lease_activities(OTHER_APP, owner="w4", now=at(103), until=at(130), limit=10) == []


async def test_renew_leases_by_token_only(store: Store) -> None:
    """Only the leases named are renewed, even among one owner's: a claim whose
    acknowledgement was lost is ours in the store but held by no task, and must expire."""
    mine, lost, theirs = InstanceKey(APP, "mine"), InstanceKey(APP, "lost"), InstanceKey(APP, "theirs")
    await _with_activities(store, "act-mine", "act-lost", "act-theirs")
    for key in (mine, lost, theirs):
        await store.create_instance(new(key), replace_terminal=False)

    wf_mine = await lease_one(store, mine, owner="o1", now=at(1), until=at(30))
    wf_lost = await lease_one(store, lost, owner="o1", now=at(1), until=at(30))
    wf_theirs = await lease_one(store, theirs, owner="o2", now=at(1), until=at(30))
    acts = await store.lease_activities(OTHER_APP, owner="o1", now=at(1), until=at(30), limit=2)
    [act_theirs] = await store.lease_activities(OTHER_APP, owner="o2", now=at(1), until=at(30), limit=1)
    by_name = {a.task.request.name: a for a in acts}
    assert sorted(by_name) == ["act-lost", "act-mine"]
    act_mine, act_lost = by_name["act-mine"], by_name["act-lost"]
    assert act_theirs.task.request.name == "act-theirs"

    await store.renew_leases({wf_mine.token, act_mine.token}, until=at(100))
    await store.renew_leases(set(), until=at(200))  # nothing held: a no-op

    leases = await lease_all(store, owner="o3", now=at(50))
    assert mine not in leases
    assert lost in leases and theirs in leases
    acts = await store.lease_activities(OTHER_APP, owner="o3", now=at(50), until=at(60), limit=10)
    assert sorted(a.task.request.name for a in acts) == ["act-lost", "act-theirs"]
    # the renewed leases are still valid; the expired ones were taken over
    await store.commit_workflow(wf_mine, commit_for(wf_mine), now=at(50))
    await store.complete_activity(act_mine, Message(target=KEY, event=raised("done")))
    for stale in (wf_lost, wf_theirs):
        with pytest.raises(LeaseLost):
            await store.commit_workflow(stale, commit_for(stale), now=at(50))
    with pytest.raises(LeaseLost):
        await store.complete_activity(act_lost, Message(target=KEY, event=raised("late")))


# -- queries -----------------------------------------------------------------------------------------


async def test_list_instance_ids_pages_in_id_order(store: Store) -> None:
    ids = ["c", "a", "d", "b", "b:0001", "a-2"]
    for iid in ids:
        await store.create_instance(new(InstanceKey(APP, iid)), replace_terminal=False)
    await store.create_instance(new(InstanceKey(OTHER_APP, "a0")), replace_terminal=False)

    ordered = sorted(ids)
    pages, after = [], None
    while True:
        page = await store.list_instance_ids(APP, after=after, limit=2)
        if not page:
            break
        assert len(page) <= 2
        pages.append(page)
        after = page[-1]
    assert [i for p in pages for i in p] == ordered
    assert len(pages) == 3
    assert await store.list_instance_ids(APP, after=None, limit=100) == ordered
    assert await store.list_instance_ids(APP, after="b", limit=100) == ["b:0001", "c", "d"]
    assert await store.list_instance_ids(APP, after="d", limit=100) == []
    assert await store.list_instance_ids(OTHER_APP, after=None, limit=100) == ["a0"]
    assert await store.list_instance_ids("nobody", after=None, limit=100) == []


async def test_find_instances(store: Store) -> None:
    k1, k2, k3 = (InstanceKey(APP, f"f{n}") for n in (1, 2, 3))
    await store.create_instance(new(k1, now=T0), replace_terminal=False)
    await store.create_instance(new(k2, now=at(10)), replace_terminal=False)
    await store.create_instance(new(k3, now=at(20)), replace_terminal=False)
    await store.create_instance(new(InstanceKey(OTHER_APP, "f9"), now=at(10)), replace_terminal=False)
    await drive(store, k2, COMPLETED, now=at(21))
    await drive(store, k3, FAILED, now=at(21))

    async def find(**kw: object) -> set[InstanceKey]:
        found = await store.find_instances(InstanceFilter(app_id=APP, **kw))  # type: ignore[arg-type]
        assert len(found) == len(set(found))
        return set(found)

    assert await find() == {k1, k2, k3}
    assert await find(statuses=frozenset({COMPLETED})) == {k2}
    assert await find(statuses=frozenset({COMPLETED, FAILED})) == {k2, k3}
    assert await find(statuses=frozenset({PENDING})) == {k1}
    assert await find(statuses=frozenset({RUNNING})) == set()
    assert await find(created_from=at(5)) == {k2, k3}
    assert await find(created_to=at(10)) == {k1, k2}  # inclusive
    assert await find(created_from=at(10), created_to=at(10)) == {k2}
    assert await find(created_from=at(5), statuses=frozenset({FAILED, PENDING})) == {k3}
    assert await find(created_from=at(30)) == set()
    other = await store.find_instances(InstanceFilter(app_id=OTHER_APP))
    assert other == [InstanceKey(OTHER_APP, "f9")]


# -- purge ---------------------------------------------------------------------------------------------


async def _busy_instance(store: Store, status: int) -> None:
    """An instance with history, a pending inbox item and a queued activity."""
    await _with_activities(store, "queued")
    await store.send(msg(KEY, "pending", visible_at=at(100)))
    if status != RUNNING:
        await store.send(control(KEY, "end"))
        await drive(store, KEY, status, now=at(1), history=[raised("ending")])


@pytest.mark.parametrize("status", [RUNNING, SUSPENDED, STALLED])
async def test_purge_only_terminal_refuses_live_instance(store: Store, status: int) -> None:
    await _busy_instance(store, status)
    history = await store.get_history(KEY)
    assert await store.purge(KEY, only_terminal=True) is False
    state = await store.get_state(KEY)
    assert state is not None and state.workflowStatus == status
    assert await store.get_history(KEY) == history
    assert len(await store.lease_activities(OTHER_APP, owner="w", now=at(2), until=at(30), limit=10)) == 1


@pytest.mark.parametrize(
    ("status", "only_terminal"),
    [(COMPLETED, True), (FAILED, True), (TERMINATED, True), (COMPLETED, False), (RUNNING, False)],
)
async def test_purge_removes_everything(store: Store, status: int, only_terminal: bool) -> None:
    await _busy_instance(store, status)
    bystander = InstanceKey(APP, "bystander")
    await started(store, bystander)
    await store.send(msg(bystander, "keep-me"))

    assert await store.purge(KEY, only_terminal=only_terminal) is True
    assert await store.get_state(KEY) is None
    assert await store.get_history(KEY) == []
    assert await store.list_instance_ids(APP, after=None, limit=10) == ["bystander"]
    assert await store.lease_activities(OTHER_APP, owner="w", now=at(2), until=at(30), limit=10) == []
    assert await store.purge(KEY, only_terminal=False) is False  # already gone

    # the ID is free again, with an empty history and only the new start in its inbox
    await store.create_instance(new(now=at(3)), replace_terminal=False)
    await assert_fresh_inbox(store, KEY, now=at(200))
    assert inbox_names(await lease_one(store, bystander, now=at(200))) == ["keep-me"]


async def test_purge_missing(store: Store) -> None:
    assert await store.purge(KEY, only_terminal=True) is False
    assert await store.purge(KEY, only_terminal=False) is False


# -- next_due ------------------------------------------------------------------------------------------


async def test_next_due(store: Store) -> None:
    assert await store.next_due(APP, now=T0) is None
    await started(store)
    assert await store.next_due(APP, now=T0) is None
    await store.send(msg(KEY, "late", visible_at=at(10)))
    await store.send(msg(KEY, "early", visible_at=at(5)))
    await store.send(msg(KEY, "past", visible_at=at(-5)))
    await store.create_instance(new(InstanceKey(OTHER_APP, "x")), replace_terminal=False)
    await store.send(msg(InstanceKey(OTHER_APP, "x"), "other-app", visible_at=at(3)))

    assert await store.next_due(APP, now=T0) == at(5)
    assert await store.next_due(APP, now=at(6)) == at(10)
    assert await store.next_due(APP, now=at(11)) is None
    assert await store.next_due(OTHER_APP, now=T0) == at(3)


async def test_next_due_far_future_timer(store: Store) -> None:
    """SDKs wait "forever" with timers at 9999-12-31."""
    forever = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    await started(store)
    await store.send(msg(KEY, "never", visible_at=forever))
    due = await store.next_due(APP, now=T0)
    assert due is not None
    assert due.year == 9999
    assert await not_leased(store, KEY, now=datetime(9999, 1, 1, tzinfo=UTC))


async def test_next_due_includes_retry_times(store: Store) -> None:
    await store.create_instance(new(), replace_terminal=False)
    lease = await lease_one(store)
    await store.abandon_workflow(lease, retry_at=at(40))
    assert await store.next_due(APP, now=T0) == at(40)
    assert await store.next_due(APP, now=at(41)) is None


# -- durability (file-backed stores) ---------------------------------------------------------------------


async def test_data_survives_close_and_open(durable_url: str) -> None:
    store = open_store(durable_url)
    await store.open()
    try:
        await store.create_instance(new(), replace_terminal=False)
        lease = await lease_one(store)
        history = [ev.workflow_started(T0), lease.inbox[0].event]
        commit = commit_for(
            lease, history=history, activities=[activity(KEY, "durable")], messages=[msg(KEY, "queued")]
        )
        await store.commit_workflow(lease, commit, now=T0)
    finally:
        await store.close()

    store = open_store(durable_url)
    await store.open()
    try:
        assert await store.get_state(KEY) == commit.state
        assert await store.get_history(KEY) == history
        assert await store.list_instance_ids(APP, after=None, limit=10) == [KEY.instance_id]
        lease = await lease_one(store, now=at(1))
        assert lease.history_len == 2
        assert inbox_names(lease) == ["queued"]
        [act] = await store.lease_activities(OTHER_APP, owner="w", now=at(1), until=at(30), limit=10)
        assert act.task.request.name == "durable"
    finally:
        await store.close()


async def test_sqlite_clears_stale_leases_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/leases.db"
    store = open_store(url)
    await store.open()
    try:
        await _with_activities(store, "a1")
        await store.send(msg(KEY, "e"))
        await lease_one(store, owner="crashed", now=at(1), until=at(10_000))
        [act] = await store.lease_activities(
            OTHER_APP, owner="crashed", now=at(1), until=at(10_000), limit=10
        )
        assert await not_leased(store, KEY, now=at(2))
    finally:
        await store.close()

    store = open_store(url)
    await store.open()
    try:
        lease = await lease_one(store, owner="fresh", now=at(2))
        assert inbox_names(lease) == ["e"]
        [again] = await store.lease_activities(OTHER_APP, owner="fresh", now=at(2), until=at(30), limit=10)
        assert again.task == act.task
    finally:
        await store.close()


# -- change feed (stores shared by several servers) -----------------------------------


async def test_change_feed_reports_other_servers_writes(store: Store, store_url: str) -> None:
    if not store_url.startswith("mongodb"):
        # One process owns an embedded store: nothing else writes, there is no feed.
        assert store.changes() is None
        return
    feed = store.changes()
    assert feed is not None
    other = open_store(store_url)  # a second server on the same database
    await other.open()
    try:
        seen: list[Change] = []
        start = Change(app_id=APP, instance_id=KEY.instance_id, message=True)  # new work, visible now
        changed = Change(app_id=APP, instance_id=KEY.instance_id)  # the instance changed

        async def collect() -> None:
            async for change in feed:
                seen.append(change)
                if start in seen and changed in seen:
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.5)  # the change stream is open before the writes
        await other.create_instance(new(), replace_terminal=False)
        await asyncio.wait_for(task, 20)
        assert start in seen and changed in seen
    finally:
        await other.close()


# -- MongoDB durability settings ---------------------------------------------------------------


@pytest.mark.parametrize("durable_url", _mongodb_params(), indirect=True)
@pytest.mark.parametrize(
    ("option", "write", "read"),
    [
        ("", {"w": "majority", "j": True}, "majority"),
        ("durability=majority", {"w": "majority", "j": True}, "majority"),
        ("durability=local", {"w": 1, "j": True}, "local"),
    ],
)
async def test_mongodb_is_majority_durable_unless_opted_out(
    durable_url: str, option: str, write: dict[str, object], read: str
) -> None:
    url = f"{durable_url}&{option}" if option else durable_url
    store = open_store(url)
    await store.open()
    try:
        # What the driver sends with every write and read (no public accessor on the store).
        client = store._client  # type: ignore[attr-defined]
        assert client.write_concern.document == write
        assert client.read_concern.level == read
        assert store._db.write_concern.document == write  # type: ignore[attr-defined]
        await store.create_instance(new(), replace_terminal=False)
        assert (await store.get_state(KEY)) is not None
    finally:
        await store.close()


def test_mongodb_durability_option_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="durability must be one of majority, local"):
        open_store("mongodb://127.0.0.1:1/db?replicaSet=rs0&durability=fast")
