"""Registers the TaskHubSidecarService servicer, as the generated code does, except that
GetWorkItems serializes with engine/encoded.py's serializer: a stream carries both protobuf
work items and workflow work items assembled from cached bytes."""

from __future__ import annotations

from typing import Any

import grpc

from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.engine.encoded import serialize_work_item


class _Captured:
    """Stands in for the server while the generated code registers: keeps its handlers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # made again below from the same method handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_sidecar_service(servicer: object, server: grpc.aio.Server) -> None:
    captured = _Captured()
    sgrpc.add_TaskHubSidecarServiceServicer_to_server(servicer, captured)  # type: ignore[no-untyped-call]
    handlers = captured.handlers
    stream = handlers["GetWorkItems"]
    handlers["GetWorkItems"] = grpc.unary_stream_rpc_method_handler(
        stream.unary_stream,
        request_deserializer=stream.request_deserializer,
        response_serializer=serialize_work_item,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(captured.service, handlers),))
    # The same lookup the generated code installs, by method path (grpc >= 1.63).
    server.add_registered_method_handlers(captured.service, handlers)  # type: ignore[attr-defined]
