"""Fill a SQLite store for the dashboard's large-data test, through the real store's API
(Store.create_instance, the call StartInstance and rerun make), in its own process: it imports
`backend`, whose protos clash with the SDK the browser tests load.

    python -m tests.e2e.dashboard.seed sqlite:////abs/path.db COUNT BIG_EVENTS

COUNT small instances over two apps (app `bulk-a`, `bulk-b`; statuses in turn COMPLETED,
FAILED, RUNNING, TERMINATED), created one second apart so that paging order is known, and
one instance `big` on `bulk-a` whose history has BIG_EVENTS events: activities (some failed
and retried), timers, and child workflows on `bulk-b`.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend.domain.model import InstanceKey, NewInstance, WorkflowCommit
from backend.store import open_store

STATUSES = (
    opb.ORCHESTRATION_STATUS_COMPLETED,
    opb.ORCHESTRATION_STATUS_FAILED,
    opb.ORCHESTRATION_STATUS_RUNNING,
    opb.ORCHESTRATION_STATUS_TERMINATED,
)
BASE = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 500


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def _state(instance_id: str, name: str, status: int, created: datetime) -> opb.WorkflowState:
    return opb.WorkflowState(
        instanceId=instance_id,
        name=name,
        workflowStatus=status,
        createdTimestamp=_ts(created),
        lastUpdatedTimestamp=_ts(created + timedelta(seconds=1)),
        input=wrappers_pb2.StringValue(value='{"n": 1}'),
    )


def _instance(key: InstanceKey, state: opb.WorkflowState, created: datetime, history: list[hpb.HistoryEvent]):
    new = NewInstance(key=key, state=state, start=None, created_at=created)
    seed = WorkflowCommit(key=key, consumed=[], new_history=history, state=state)
    return new, seed


def small(i: int) -> tuple[NewInstance, WorkflowCommit]:
    app = "bulk-a" if i % 2 == 0 else "bulk-b"
    created = BASE + timedelta(seconds=i)
    key = InstanceKey(app, f"bulk-{i:06d}")
    state = _state(key.instance_id, "bulk", STATUSES[i % len(STATUSES)], created)
    start = hpb.HistoryEvent(
        eventId=-1,
        timestamp=_ts(created),
        executionStarted=hpb.ExecutionStartedEvent(name="bulk", input=state.input),
    )
    return _instance(key, state, created, [start])


def big(events: int) -> tuple[NewInstance, WorkflowCommit]:
    """A finished workflow of `events` events: per step an activity (every 7th fails once and
    is retried after a back-off timer), a timer, or a child workflow on bulk-b."""
    created = BASE + timedelta(days=200)  # newer than every small one
    key = InstanceKey("bulk-a", "big")
    t = created
    out: list[hpb.HistoryEvent] = []

    def add(eventId: int = -1, **body: object) -> hpb.HistoryEvent:
        e = hpb.HistoryEvent(eventId=eventId, timestamp=_ts(t), **body)
        out.append(e)
        return e

    add(executionStarted=hpb.ExecutionStartedEvent(name="big"))
    next_id = 0
    step = 0
    while len(out) < events - 1:
        step += 1
        t += timedelta(milliseconds=40)
        if step % 11 == 0:  # a timer
            fire = t + timedelta(milliseconds=100)
            add(eventId=next_id, timerCreated=hpb.TimerCreatedEvent(fireAt=_ts(fire)))
            add(timerFired=hpb.TimerFiredEvent(fireAt=_ts(fire), timerId=next_id))
        elif step % 13 == 0:  # a child workflow on the other app
            e = add(
                eventId=next_id,
                childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(
                    instanceId=f"big:{next_id:04x}", name="part"
                ),
            )
            e.router.CopyFrom(opb.TaskRouter(sourceAppID="bulk-a", targetAppID="bulk-b"))
            t += timedelta(milliseconds=60)
            add(
                childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(
                    taskScheduledId=next_id
                )
            )
        else:
            e = add(eventId=next_id, taskScheduled=hpb.TaskScheduledEvent(name=f"step{step % 5}"))
            t += timedelta(milliseconds=30)
            if step % 7 == 0:
                add(
                    taskFailed=hpb.TaskFailedEvent(
                        taskScheduledId=next_id,
                        failureDetails=opb.TaskFailureDetails(errorType="ValueError", errorMessage="flaky"),
                    )
                )
            else:
                add(
                    taskCompleted=hpb.TaskCompletedEvent(
                        taskScheduledId=next_id, result=wrappers_pb2.StringValue(value="1")
                    )
                )
        next_id += 1
    add(executionCompleted=hpb.ExecutionCompletedEvent(workflowStatus=opb.ORCHESTRATION_STATUS_COMPLETED))
    state = _state(key.instance_id, "big", opb.ORCHESTRATION_STATUS_COMPLETED, created)
    return _instance(key, state, created, out)


async def main(url: str, count: int, big_events: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        for first in range(0, count, BATCH):
            made = [small(i) for i in range(first, min(count, first + BATCH))]
            await asyncio.gather(*(store.create_instance(n, replace_terminal=False, seed=s) for n, s in made))
        new, seed = big(big_events)
        await store.create_instance(new, replace_terminal=False, seed=seed)
    finally:
        await store.close()
    print(f"seeded {count} instances and one of {big_events} events", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
