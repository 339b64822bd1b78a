"""Micro-benchmarks of one workflow turn's hot paths, across history sizes.

    tox -e bench-micro        (writes bench/results/micro.json)

- fold:    RuntimeState.of(history): what a turn pays without the history cache
- clone:   RuntimeState.clone(): what it pays with the cache (flat if the design holds)
- plan:    dedup of a one-event inbox against the state
- apply:   a worker response of one activity + one timer becoming a WorkflowCommit
- commit:  Store.commit_workflow of that turn on SQLite (file, synchronous=FULL and NORMAL)
- load:    Store.get_history of the whole history from SQLite
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import applier
from backend.domain import events as ev
from backend.domain.applier import new_instance
from backend.domain.model import InboxItem, InstanceKey, Message, WorkflowCommit
from backend.domain.projection import project
from backend.domain.state import RuntimeState
from backend.domain.turn import plan, turn_started
from backend.store.base import WorkflowLease
from backend.store.sqlite import SqliteStore

SIZES = [10, 1_000, 10_000]
KEY = InstanceKey("bench", "wf-1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=2)


def history_of(size: int) -> list[hpb.HistoryEvent]:
    """A chain: start, then (WorkflowStarted, TaskScheduled, TaskCompleted) per step."""
    started = hpb.ExecutionStartedEvent(
        name="chain",
        workflowInstance=opb.WorkflowInstance(instanceId=KEY.instance_id, executionId=ev.sv("e1")),
    )
    out = [ev.workflow_started(T0), ev.event(T0, executionStarted=started)]
    step = 0
    while len(out) < size:
        at = T0 + timedelta(milliseconds=step)
        out.append(ev.workflow_started(at))
        out.append(
            ev.event(
                at, event_id=step, taskScheduled=hpb.TaskScheduledEvent(name="act", input=ev.sv(f'"{step}"'))
            )
        )
        out.append(
            ev.event(
                at, taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=step, result=ev.sv(f'"{step}"'))
            )
        )
        step += 1
    return out[:size]


def next_id(history: list[hpb.HistoryEvent]) -> int:
    return max((e.eventId for e in history), default=-1) + 1


def response(history: list[hpb.HistoryEvent]) -> spb.WorkflowResponse:
    n = next_id(history)
    fire = ev.ts(T0 + timedelta(days=1))
    return spb.WorkflowResponse(
        instanceId=KEY.instance_id,
        actions=[
            apb.WorkflowAction(
                id=n,
                scheduleTask=apb.ScheduleTaskAction(name="act", input=wrappers_pb2.StringValue(value='"x"')),
            ),
            apb.WorkflowAction(id=n + 1, createTimer=apb.CreateTimerAction(fireAt=fire)),
        ],
    )


@pytest.fixture(params=SIZES, ids=lambda n: f"history={n}")
def history(request: pytest.FixtureRequest) -> list[hpb.HistoryEvent]:
    return history_of(request.param)


def test_fold(benchmark, history) -> None:  # type: ignore[no-untyped-def]
    state = benchmark(RuntimeState.of, history)
    assert state.length == len(history)


def test_clone(benchmark, history) -> None:  # type: ignore[no-untyped-def]
    state = RuntimeState.of(history)
    copy = benchmark(state.clone)
    assert copy.length == state.length and copy.tasks is not state.tasks


def test_plan(benchmark, history) -> None:  # type: ignore[no-untyped-def]
    state = RuntimeState.of(history)
    inbox = [InboxItem(id=1, event=ev.event_raised(T0, "go", None))]
    result = benchmark(plan, state, inbox)
    assert len(result.batch) == 1


def _turn(
    history: list[hpb.HistoryEvent],
) -> tuple[applier.TurnContext, RuntimeState, list[hpb.HistoryEvent], spb.WorkflowResponse]:
    state = RuntimeState.of(history)
    new_events = [turn_started(state, T0 + timedelta(days=1)), ev.event_raised(T0, "go", None)]
    for e in new_events:
        state.add(e)
    ctx = applier.TurnContext(
        key=KEY,
        now=T0 + timedelta(days=1),
        stored=opb.WorkflowState(instanceId=KEY.instance_id),
        consumed=[1],
        max_payload_bytes=4 << 20,
    )
    return ctx, state, new_events, response(history)


def test_apply(benchmark, history) -> None:  # type: ignore[no-untyped-def]
    ctx, state, new_events, resp = _turn(history)

    def run() -> object:
        return applier.apply(ctx, state.clone(), list(new_events), resp)

    commit = benchmark(run)
    assert len(commit.activities) == 1 and len(commit.messages) == 1


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


async def _seeded_store(path: Path, history: list[hpb.HistoryEvent], synchronous: str) -> SqliteStore:
    """A SQLite store holding one RUNNING instance with `history` committed."""
    store = SqliteStore(str(path), synchronous=synchronous)
    await store.open()
    await store.create_instance(
        new_instance(KEY, name="chain", version=None, input_=None, route=ev.router(KEY.app_id), now=T0),
        replace_terminal=False,
    )
    lease = await _lease(store)
    seed = WorkflowCommit(
        key=KEY,
        consumed=[i.id for i in lease.inbox],
        new_history=list(history),
        state=project(lease.state, RuntimeState.of(history), now=T0),
    )
    await store.commit_workflow(lease, seed, now=T0)
    return store


async def _lease(store: SqliteStore) -> WorkflowLease:
    leases = await store.lease_workflows(
        KEY.app_id, owner="bench", now=LATER, until=LATER + timedelta(hours=1), limit=1
    )
    assert len(leases) == 1
    return leases[0]


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_commit(benchmark, history, tmp_path, loop, synchronous) -> None:  # type: ignore[no-untyped-def]
    """One whole turn against the store: an event arrives, lease, apply, commit."""
    store = loop.run_until_complete(_seeded_store(tmp_path / "b.db", history, synchronous))
    state = RuntimeState.of(history)

    async def one_turn() -> None:
        await store.send(Message(target=KEY, event=ev.event_raised(T0, "go", None)))
        lease = await _lease(store)
        turn_state = state.clone()
        new_events = [turn_started(turn_state, LATER), *(i.event for i in lease.inbox)]
        for e in new_events:
            turn_state.add(e)
        ctx = applier.TurnContext(
            key=KEY,
            now=LATER,
            stored=lease.state,
            consumed=[i.id for i in lease.inbox],
            max_payload_bytes=4 << 20,
        )
        # A fresh action id per round: the benchmark's history keeps growing slightly.
        resp = spb.WorkflowResponse(
            instanceId=KEY.instance_id,
            actions=[apb.WorkflowAction(id=next(ids), createTimer=apb.CreateTimerAction(fireAt=ev.ts(T0)))],
        )
        await store.commit_workflow(lease, applier.apply(ctx, turn_state, new_events, resp), now=LATER)

    ids = iter(range(next_id(history) + 1, 10**9))
    benchmark.pedantic(lambda: loop.run_until_complete(one_turn()), rounds=30, iterations=1, warmup_rounds=2)
    loop.run_until_complete(store.close())


def test_load(benchmark, history, tmp_path, loop) -> None:  # type: ignore[no-untyped-def]
    store = loop.run_until_complete(_seeded_store(tmp_path / "b.db", history, "normal"))
    events = benchmark(lambda: loop.run_until_complete(store.get_history(KEY)))
    assert len(events) == len(history)
    loop.run_until_complete(store.close())
