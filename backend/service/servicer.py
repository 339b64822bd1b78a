"""The TaskHubSidecarService servicer, shared by every listener.

Each RPC acts for the caller's app ID, which security/interceptor.py resolved from the
listener and the caller's credentials before the servicer runs.
"""

from __future__ import annotations

from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.engine.engine import Engine
from backend.security.policy import Policy
from backend.service.client import ClientRpcs
from backend.service.worker import WorkerRpcs


class SidecarServicer(ClientRpcs, WorkerRpcs, sgrpc.TaskHubSidecarServiceServicer):
    def __init__(self, engine: Engine, policy: Policy) -> None:
        ClientRpcs.__init__(self, engine.instances, policy)
        WorkerRpcs.__init__(self, engine.hub)
