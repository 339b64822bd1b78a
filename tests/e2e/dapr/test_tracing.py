"""OpenTelemetry traces of multi-app workflows run by the real dapr 1.19 Python SDK.

The server (a subprocess, tracing on through the standard OTEL_* environment) exports over
OTLP/gRPC to a receiver in this test process: the real TraceService of opentelemetry-proto.
The SDK's own activity spans are recorded in this process by the OpenTelemetry SDK (dapr's
worker traces activities when OpenTelemetry is installed), so the test sees both sides of the
trace context the server hands to workers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from opentelemetry import trace as otel
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.e2e.dapr.support import assert_completed, running_runtime, uid, wait_custom_status, workflow_client
from tests.e2e.harness import Server, durable_store, free_port, wait_until

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------- a test-only OTLP receiver


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        got = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            name=s.name,
                            service=service,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(got)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str, instance_id: str) -> list[Span]:
        with self._lock:
            return [
                s
                for s in self.spans
                if s.name == name and s.attributes.get("durabletask.task.instance_id") == instance_id
            ]

    def one_under(self, name: str, prefix: str) -> Span:
        """The one span `name` of an instance whose ID starts with `prefix` (a default child ID)."""

        def found() -> list[Span]:
            with self._lock:
                return [
                    s
                    for s in self.spans
                    if s.name == name
                    and str(s.attributes.get("durabletask.task.instance_id")).startswith(prefix)
                ]

        spans = wait_until(found, message=f"span {name} of {prefix}*")
        assert len(spans) == 1, spans
        return spans[0]

    def one(self, name: str, instance_id: str) -> Span:
        found = wait_until(lambda: self.named(name, instance_id), message=f"span {name} of {instance_id}")
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    port = free_port()
    rec = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rec, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield rec, port
    finally:
        server.stop(None)


def otel_env(port: int) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export each batch quickly: the test waits for spans
    }


@pytest.fixture(scope="module")
def sdk_spans() -> InMemorySpanExporter:
    """The spans dapr's worker records in this process (its activities)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.set_tracer_provider(provider)
    current = otel.get_tracer_provider()
    assert current is provider, "another tracer provider was set in this process first"
    return exporter


# ---------------------------------------------------------------- the workflows


def charge(ctx, amount):
    return f"charged {amount}"


def pack(ctx, item):
    return f"packed {item}"


def ship(ctx, item):
    packed = yield ctx.call_activity("pack", input=item)
    return packed


def order(ctx, amount):
    receipt = yield ctx.call_activity("charge", input=amount, app_id="payments")
    yield ctx.create_timer(timedelta(milliseconds=200))
    shipped = yield ctx.call_child_workflow("ship", input="book", app_id="payments")
    return [receipt, shipped]


def waiting_order(ctx, amount):
    receipt = yield ctx.call_activity("charge", input=amount, app_id="payments")
    ctx.set_custom_status(json.dumps("waiting"))
    go = yield ctx.wait_for_external_event("go")
    return [receipt, go]


ORDERS = [order, waiting_order]
PAYMENTS_WORKFLOWS = [ship]
PAYMENTS_ACTIVITIES = [charge, pack]


# ---------------------------------------------------------------- tests


def test_multi_app_workflow_is_one_trace(receiver, sdk_spans) -> None:
    rec, port = receiver
    iid = uid("traced")
    with (
        Server(["orders", "payments"], env=otel_env(port)) as srv,
        running_runtime(srv.port("orders"), ORDERS, []),
        running_runtime(srv.port("payments"), PAYMENTS_WORKFLOWS, PAYMENTS_ACTIVITIES),
        workflow_client(srv.port("orders")) as client,
    ):
        client.schedule_new_workflow(order, input=42, instance_id=iid)
        assert assert_completed(client, iid) == ["charged 42", "packed book"]
        root = rec.one("orchestration||order", iid)
        activity = rec.one("activity||charge", iid)
        timer = rec.one("timer", iid)
        child = rec.one_under("orchestration||ship", f"{iid}:")
        child_id = child.attributes["durabletask.task.instance_id"]
        grandchild = rec.one("activity||pack", child_id)

    # One trace; the client sent no trace context, so the workflow is its root.
    spans = [root, activity, timer, child, grandchild]
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert root.parent_id == ""
    # The tree: activity, timer and child under the workflow, the child's activity under the child.
    assert activity.parent_id == root.span_id
    assert timer.parent_id == root.span_id
    assert child.parent_id == root.span_id
    assert grandchild.parent_id == child.span_id
    assert len({s.span_id for s in spans}) == len(spans)
    # Each span belongs to the app that ran it.
    assert (root.service, timer.service) == ("orders", "orders")
    assert (activity.service, child.service, grandchild.service) == ("payments", "payments", "payments")
    # The reference sidecar's attributes.
    assert root.attributes == {
        "durabletask.type": "orchestration",
        "durabletask.task.name": "order",
        "durabletask.task.instance_id": iid,
        "durabletask.runtime_status": "COMPLETED",
    }
    assert activity.attributes["durabletask.type"] == "activity"
    # Task IDs as the SDK numbered them: the activity, then the timer (then the child).
    assert int(activity.attributes["durabletask.task.task_id"]) < int(
        timer.attributes["durabletask.task.task_id"]
    )
    assert timer.attributes["durabletask.type"] == "timer" and "durabletask.fire_at" in timer.attributes
    assert child.attributes["durabletask.runtime_status"] == "COMPLETED"
    # Spans nest in time too: the workflow covers its activity and its child.
    assert root.start_ns <= activity.start_ns <= activity.end_ns <= root.end_ns
    assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns

    # The SDK's own activity spans joined the trace, under the server's activity spans.
    theirs = {
        s.name: s
        for s in sdk_spans.get_finished_spans()
        if s.attributes
        and s.attributes.get("dapr.ext.workflow._durabletask.task.instance_id") in (iid, child_id)
    }
    assert sorted(theirs) == ["activity: charge", "activity: pack"], theirs
    for sdk_name, ours in (("activity: charge", activity), ("activity: pack", grandchild)):
        span = theirs[sdk_name]
        assert span.context is not None and span.parent is not None
        assert f"{span.context.trace_id:032x}" == root.trace_id
        assert f"{span.parent.span_id:016x}" == ours.span_id


def test_trace_survives_a_server_crash(receiver, sdk_spans, tmp_path) -> None:
    rec, port = receiver
    iid = uid("traced-crash")
    srv = Server(["orders", "payments"], store=durable_store(tmp_path), env=otel_env(port))
    with (
        srv,
        running_runtime(srv.port("orders"), ORDERS, []),
        running_runtime(srv.port("payments"), PAYMENTS_WORKFLOWS, PAYMENTS_ACTIVITIES),
    ):
        with workflow_client(srv.port("orders")) as client:
            client.schedule_new_workflow(waiting_order, input=7, instance_id=iid)
            wait_custom_status(client, iid, "waiting")
        activity = rec.one("activity||charge", iid)  # exported before the crash

        srv.kill()
        srv.start()

        with workflow_client(srv.port("orders")) as client:
            client.raise_workflow_event(iid, "go", data="after-crash")
            assert assert_completed(client, iid) == ["charged 7", "after-crash"]
        root = rec.one("orchestration||waiting_order", iid)  # exported by the restarted server

    assert root.trace_id == activity.trace_id
    assert activity.parent_id == root.span_id
    assert root.start_ns <= activity.start_ns <= root.end_ns
