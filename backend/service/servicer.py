"""The TaskHubSidecarService servicer of one app ID listener."""

from __future__ import annotations

from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.engine.engine import Engine
from backend.service.client import ClientRpcs
from backend.service.worker import WorkerRpcs


class SidecarServicer(ClientRpcs, WorkerRpcs, sgrpc.TaskHubSidecarServiceServicer):
    """Every RPC acts for `app_id`, the app the listening port is bound to."""

    def __init__(self, app_id: str, engine: Engine) -> None:
        ClientRpcs.__init__(self, app_id, engine.instances)
        WorkerRpcs.__init__(self, app_id, engine.hub)
