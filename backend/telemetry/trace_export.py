"""SpanRecords (telemetry/trace_spans.py) as OpenTelemetry spans, and the exporters OTEL_*
configure. Imported only when tracing is on (telemetry/tracing.py): it needs the `otel` extra.

Spans are created through the SDK's own tracer, so samplers, processors and span limits apply;
their IDs are the ones the history fixes, handed out by an IdGenerator, since a workflow span is
emitted long after it began, possibly by another replica.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime

from opentelemetry import trace as otel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, TraceFlags, TraceState

from backend.domain.trace import SpanContext
from backend.telemetry.trace_spans import SpanRecord

SCOPE = "durabletask"  # the reference sidecar's tracer name


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


class _FixedIds(IdGenerator):
    """Hands out the IDs the history fixes, set just before each span starts."""

    def __init__(self) -> None:
        self.next_trace = 0
        self.next_span = 0

    def generate_span_id(self) -> int:
        return self.next_span

    def generate_trace_id(self) -> int:
        return self.next_trace


def _remote(context: SpanContext) -> otel.SpanContext:
    return otel.SpanContext(
        trace_id=int(context.trace_id, 16),
        span_id=int(context.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(context.flags, 16)),
        trace_state=TraceState.from_header([context.state]) if context.state else None,
    )


class Tracing:
    """One TracerProvider per app ID (its `service.name`, unless OTEL_SERVICE_NAME or
    OTEL_RESOURCE_ATTRIBUTES name one), all feeding the same processors."""

    def __init__(self, processors: Sequence[SpanProcessor], env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._processors = list(processors)
        self._base = Resource.create()
        self._named = bool(env.get("OTEL_SERVICE_NAME")) or "service.name" in env.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        )
        self._providers: dict[str, TracerProvider] = {}
        self._ids = _FixedIds()

    def _tracer(self, app_id: str) -> otel.Tracer:
        provider = self._providers.get(app_id)
        if provider is None:
            resource = self._base
            if not self._named:
                resource = resource.merge(Resource({"service.name": app_id}))
            provider = TracerProvider(resource=resource, id_generator=self._ids)
            for processor in self._processors:
                provider.add_span_processor(processor)
            self._providers[app_id] = provider
        return provider.get_tracer(SCOPE)

    def emit(self, records: Sequence[SpanRecord]) -> None:
        for r in records:
            parent = otel.set_span_in_context(NonRecordingSpan(_remote(r.parent))) if r.parent else None
            # Synchronous from here to start_span: nothing else can take these IDs.
            self._ids.next_trace = int(r.context.trace_id, 16)
            self._ids.next_span = int(r.context.span_id, 16)
            span = self._tracer(r.app_id).start_span(
                r.name,
                context=parent,
                kind=SpanKind.SERVER if r.kind == "server" else SpanKind.INTERNAL,
                attributes=r.attributes,
                start_time=_ns(r.start),
            )
            for event in r.events:
                span.add_event(event.name, attributes=event.attributes, timestamp=_ns(event.at))
            if r.error is not None:
                span.set_status(Status(StatusCode.ERROR, r.error))
            span.end(end_time=_ns(r.end))

    def shutdown(self) -> None:
        """Flush what is batched: a stopping server exports the spans it completed."""
        for processor in self._processors:
            processor.shutdown()


def _otlp(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    # Both read their endpoint, headers, certificate, compression and timeout from OTEL_*.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use grpc or http/protobuf")


def exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER: a comma-separated list of otlp (the default), console, none."""
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    out: list[SpanExporter] = []
    for name in names or ["otlp"]:
        if name == "otlp":
            out.append(_otlp(env))
        elif name == "console":
            out.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")
    return out


def from_environment(env: Mapping[str, str] | None = None) -> Tracing:
    """Batching exporters as OTEL_* configure them (OTEL_BSP_* tune the batches)."""
    env = os.environ if env is None else env
    return Tracing([BatchSpanProcessor(exporter) for exporter in exporters(env)], env)
