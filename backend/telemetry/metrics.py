"""Prometheus metrics: one registry, the metric objects, and the one-line hooks the engine calls.

Names and labels follow daprd's workflow metrics (dapr pkg/diagnostics/workflow_monitoring.go)
where an equivalent exists, so Dapr dashboards keep working: latencies in milliseconds, labels
`app_id`, `namespace`, `workflow_name` / `activity_name`, `operation`, `status`. Counters get
prometheus-client's `_total` suffix (daprd's OpenCensus exporter writes none). The rest is ours,
prefixed `durabletask_sidecar_`, in seconds as Prometheus recommends.

Process-wide on purpose: hooks stay one-liners, and several servers in one (test) process add up.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend._proto import orchestration_pb2 as opb

if TYPE_CHECKING:
    from backend.engine.streams import StreamHub
    from backend.store.base import Store, WorkflowLease

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: daprd has none either
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAMESPACE = ""  # daprd's `namespace` label; set from the TLS namespace when there is one

# daprd's buckets (ms): its default latency distribution, and a longer one for whole executions.
_MS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400,
       500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000)  # fmt: skip
_MS_LONG = (*_MS, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

_D = ("app_id", "namespace")

# -- daprd's ------------------------------------------------------------------------------------
WORKFLOW_OPERATIONS = Counter(
    "dapr_runtime_workflow_operation_count",
    "Successful/failed workflow operation requests (create, get, add_event, purge, ...).",
    [*_D, "operation", "status"],
    registry=REGISTRY,
)
WORKFLOW_OPERATION_LATENCY = Histogram(
    "dapr_runtime_workflow_operation_latency",
    "Latency of workflow operation requests, ms.",
    [*_D, "operation", "status"],
    buckets=_MS,
    registry=REGISTRY,
)
WORKFLOW_EXECUTIONS = Counter(
    "dapr_runtime_workflow_execution_count",
    "Workflow executions ended (success, failed, terminated) or retried (recoverable).",
    [*_D, "workflow_name", "status"],
    registry=REGISTRY,
)
WORKFLOW_EXECUTION_LATENCY = Histogram(
    "dapr_runtime_workflow_execution_latency",
    "From creation to the end of an execution, ms.",
    [*_D, "workflow_name", "status"],
    buckets=_MS_LONG,
    registry=REGISTRY,
)
WORKFLOW_SCHEDULING_LATENCY = Histogram(
    "dapr_runtime_workflow_scheduling_latency",
    "From the start request (or its scheduled time) to the first turn handed to a worker, ms.",
    [*_D, "workflow_name"],
    buckets=_MS,
    registry=REGISTRY,
)
ACTIVITY_EXECUTIONS = Counter(
    "dapr_runtime_workflow_activity_execution_count",
    "Activity executions: success, failed, recoverable (its worker went away; offered again).",
    [*_D, "activity_name", "status"],
    registry=REGISTRY,
)
ACTIVITY_EXECUTION_LATENCY = Histogram(
    "dapr_runtime_workflow_activity_execution_latency",
    "From handing an activity to a worker to its result, ms.",
    [*_D, "activity_name", "status"],
    buckets=_MS_LONG,
    registry=REGISTRY,
)

# -- ours ---------------------------------------------------------------------------------------
WORKFLOWS_STARTED = Counter(
    "durabletask_sidecar_workflows_started",
    "Workflow instances created (client starts, child workflows and reruns are counted by the caller's path).",
    ["app_id", "workflow_name"],
    registry=REGISTRY,
)
WORKFLOWS_ENDED = Counter(
    "durabletask_sidecar_workflows_ended",
    "Executions that reached a final status: completed, failed, terminated, continued_as_new.",
    ["app_id", "workflow_name", "status"],
    registry=REGISTRY,
)
WORK_ITEM_SECONDS = Histogram(
    "durabletask_sidecar_work_item_seconds",
    "One leased work item from lease to release: a workflow turn, or an activity run.",
    ["app_id", "kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "durabletask_sidecar_schedule_to_start_seconds",
    "Queue wait: from the oldest message of a turn becoming due to its dispatch to a worker.",
    ["app_id", "kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
LEASES_LOST = Counter(
    "durabletask_sidecar_leases_lost",
    "Commits refused because the lease had moved on (taken over by another server, or purged).",
    ["kind"],
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "durabletask_sidecar_store_operation_seconds",
    "Store operation latency.",
    ["store", "operation"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "durabletask_sidecar_store_operation_errors",
    "Store operations that raised, by exception type (LeaseLost, AlreadyExists, Unavailable, ...).",
    ["store", "operation", "error"],
    registry=REGISTRY,
)
WORK_WAITING = Gauge(
    "durabletask_sidecar_work_waiting",
    "Work due and not leased by anyone (inbox messages and activities), per app; read at each scrape.",
    ["app_id"],
    registry=REGISTRY,
)
WORK_WAITING_OLDEST = Gauge(
    "durabletask_sidecar_work_waiting_oldest_seconds",
    "How long the longest-waiting due item of the app has waited; read at each scrape.",
    ["app_id"],
    registry=REGISTRY,
)
HISTORY_EVENTS = Histogram(
    "durabletask_sidecar_history_events",
    "History length of executions as they end.",
    ["app_id"],
    buckets=(10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 51_200),
    registry=REGISTRY,
)
HISTORY_BYTES = Histogram(
    "durabletask_sidecar_history_bytes",
    "History size in bytes of executions as they end.",
    ["app_id"],
    buckets=tuple(2**i for i in range(10, 27, 2)),
    registry=REGISTRY,
)

_FINAL = {
    opb.ORCHESTRATION_STATUS_COMPLETED: ("success", "completed"),
    opb.ORCHESTRATION_STATUS_FAILED: ("failed", "failed"),
    opb.ORCHESTRATION_STATUS_TERMINATED: ("terminated", "terminated"),
    opb.ORCHESTRATION_STATUS_CANCELED: ("terminated", "canceled"),
}


# -- hooks --------------------------------------------------------------------------------------
@contextmanager
def operation(app_id: str, name: str) -> Iterator[None]:
    """A client operation (daprd's create_workflow, get_workflow, add_event, purge_workflow, ...)."""
    started = time.perf_counter()
    status = "failed"
    try:
        yield
        status = "success"
    finally:
        labels = (app_id, NAMESPACE, name, status)
        WORKFLOW_OPERATIONS.labels(*labels).inc()
        WORKFLOW_OPERATION_LATENCY.labels(*labels).observe((time.perf_counter() - started) * 1000)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def counted(name: str) -> Callable[[F], F]:
    """An engine.Instances method as a daprd workflow operation; its app is its key's (or filter's)."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def run(self: object, target: Any, *args: Any, **kwargs: Any) -> Any:
            app = str(
                getattr(target, "app_id", None) or getattr(getattr(target, "source", None), "app_id", "")
            )
            with operation(app, name):
                return await method(self, target, *args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap


def turn_leased(lease: WorkflowLease) -> None:
    """A new execution's first turn: it counts as started (child workflows and reruns too)."""
    if lease.history_len == 0 and any(i.event.HasField("executionStarted") for i in lease.inbox):
        WORKFLOWS_STARTED.labels(lease.key.app_id, lease.state.name).inc()


def turn_committed(app_id: str, state: opb.WorkflowState, events: int, size: int, restarted: bool) -> None:
    """After a commit: an ended execution (or one continued as new) is counted and measured."""
    if restarted:
        WORKFLOWS_ENDED.labels(app_id, state.name, "continued_as_new").inc()
    else:
        workflow_ended(app_id, state, events, size)


def workflow_ended(app_id: str, state: opb.WorkflowState, events: int, size: int) -> None:
    """An execution reached a final status (continue-as-new counts as an end of its execution)."""
    status = state.workflowStatus
    if status == opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
        WORKFLOWS_ENDED.labels(app_id, state.name, "continued_as_new").inc()
        return
    if status not in _FINAL:
        return
    dapr_status, ours = _FINAL[status]
    WORKFLOWS_ENDED.labels(app_id, state.name, ours).inc()
    WORKFLOW_EXECUTIONS.labels(app_id, NAMESPACE, state.name, dapr_status).inc()
    if state.HasField("createdTimestamp") and state.HasField("lastUpdatedTimestamp"):
        took = state.lastUpdatedTimestamp.ToMilliseconds() - state.createdTimestamp.ToMilliseconds()
        WORKFLOW_EXECUTION_LATENCY.labels(app_id, NAMESPACE, state.name, dapr_status).observe(max(0, took))
    HISTORY_EVENTS.labels(app_id).observe(events)
    HISTORY_BYTES.labels(app_id).observe(size)


def turn_retried(app_id: str, name: str) -> None:
    """A turn failed and will run again (daprd's `recoverable`)."""
    WORKFLOW_EXECUTIONS.labels(app_id, NAMESPACE, name, "recoverable").inc()


def turn_dispatched(lease: WorkflowLease, now: datetime, first: bool) -> None:
    """A turn goes to a worker: its queue wait (since its oldest message), and for an
    execution's first turn daprd's scheduling latency (since creation or the scheduled start)."""
    app_id, state = lease.key.app_id, lease.state
    now_ms = int(now.timestamp() * 1000)
    stamps = [i.event.timestamp.ToMilliseconds() for i in lease.inbox if i.event.HasField("timestamp")]
    if stamps:
        QUEUE_WAIT_SECONDS.labels(app_id, "workflow").observe(max(0, now_ms - min(stamps)) / 1000)
    if first:
        since = state.createdTimestamp.ToMilliseconds()
        if state.HasField("scheduledStartTimestamp"):
            since = max(since, state.scheduledStartTimestamp.ToMilliseconds())
        WORKFLOW_SCHEDULING_LATENCY.labels(app_id, NAMESPACE, state.name).observe(max(0, now_ms - since))


def activity_done(app_id: str, name: str, status: str, started: float) -> None:
    """status: success, failed (the activity raised) or recoverable (its stream went away)."""
    labels = (app_id, NAMESPACE, name, status)
    ACTIVITY_EXECUTIONS.labels(*labels).inc()
    ACTIVITY_EXECUTION_LATENCY.labels(*labels).observe((time.perf_counter() - started) * 1000)


def work_item_done(app_id: str, kind: str, started: float) -> None:
    WORK_ITEM_SECONDS.labels(app_id, kind).observe(time.perf_counter() - started)


def lease_lost(kind: str) -> None:
    LEASES_LOST.labels(kind).inc()


# -- gauges read at scrape time -----------------------------------------------------------------
class _Hubs(Collector):
    """Connected worker streams and work in flight per app, from every live engine's hub."""

    def __init__(self) -> None:
        self.hubs: weakref.WeakSet[StreamHub] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        streams = GaugeMetricFamily(
            "durabletask_sidecar_worker_streams", "Connected GetWorkItems streams.", labels=["app_id"]
        )
        in_flight = GaugeMetricFamily(
            "durabletask_sidecar_work_in_flight",
            "Work items handed to workers and not yet completed.",
            labels=["app_id", "kind"],
        )
        counts: dict[str, list[int]] = {}
        for hub in list(self.hubs):
            for app_id, app_streams in hub._streams.items():  # read-only, at scrape time
                c = counts.setdefault(app_id, [0, 0, 0])
                c[0] += len(app_streams)
                c[1] += sum(s.workflows for s in app_streams)
                c[2] += sum(s.activities for s in app_streams)
        for app_id, (n, workflows, activities) in sorted(counts.items()):
            streams.add_metric([app_id], n)
            in_flight.add_metric([app_id, "workflow"], workflows)
            in_flight.add_metric([app_id, "activity"], activities)
        return [streams, in_flight]


_HUBS = _Hubs()
REGISTRY.register(_HUBS)


def watch(hub: StreamHub) -> None:
    """Report this hub's streams (weakly held: a stopped engine drops out)."""
    _HUBS.hubs.add(hub)


async def refresh(store: Store, app_ids: Iterable[str]) -> None:
    """Before a scrape: the work waiting per app, from the store (a store without the
    query leaves the gauges out)."""
    try:
        waiting = {w.app_id: w for w in await store.waiting_work(None, now=datetime.now(tz=UTC))}
    except NotImplementedError:
        return
    now = time.time()
    for app in sorted({*app_ids, *waiting}):
        w = waiting.get(app)
        WORK_WAITING.labels(app).set(w.items if w else 0)
        oldest = w.oldest.timestamp() if w and w.oldest else now
        WORK_WAITING_OLDEST.labels(app).set(max(0.0, now - oldest))


def render() -> bytes:
    return generate_latest(REGISTRY)
