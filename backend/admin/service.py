"""The Admin gRPC service (protos/admin.proto): a thin translation onto backend/admin/queries.py."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from backend._proto import admin_pb2 as apb
from backend._proto import admin_pb2_grpc as agrpc
from backend.admin import queries
from backend.admin.access import visibility
from backend.domain.events import utcnow
from backend.engine.engine import Engine
from backend.errors import InvalidArgument
from backend.security.interceptor import caller
from backend.security.policy import Policy
from backend.service.status import Ctx, grpc_errors


def _ts(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def _moment(request: object, field: str) -> datetime | None:
    if not request.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} has out-of-range nanos")
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is out of range") from None


def _summary(s: queries.InstanceSummary) -> apb.InstanceSummary:
    return apb.InstanceSummary(
        app_id=s.app_id,
        instance_id=s.instance_id,
        name=s.name,
        status=s.status,  # type: ignore[arg-type]  # the same numbers as OrchestrationStatus
        created_at=_ts(s.created_at),
        last_updated_at=_ts(s.last_updated_at),
        completed_at=_ts(s.completed_at),
        parent_app_id=s.parent.app_id if s.parent else "",
        parent_instance_id=s.parent.instance_id if s.parent else "",
        failure_message=s.failure,
        failure_type=s.failure_type,
        version=s.version,
        custom_status=s.custom_status,
    )


class AdminServicer(agrpc.AdminServicer):
    """One per listener: whether the listener is open (loopback, no credentials) decides
    what an unidentified caller sees."""

    def __init__(self, engine: Engine, policy: Policy, *, open_listener: bool) -> None:
        self._engine = engine
        self._policy = policy
        self._open = open_listener

    def _visible(self) -> queries.Visibility:
        return visibility(
            caller(), open_listener=self._open, policy=self._policy, served=self._engine.served_apps
        )

    async def ListInstances(
        self, request: apb.ListInstancesRequest, context: Ctx
    ) -> apb.ListInstancesResponse:
        async with grpc_errors(context, "ListInstances"):
            if request.page_size < 0:
                raise InvalidArgument("page_size must not be negative")
            query = queries.InstanceQuery(
                app_ids=frozenset(request.app_ids),
                name=request.name,
                statuses=frozenset(int(s) for s in request.statuses),
                created_after=_moment(request, "created_after"),
                created_before=_moment(request, "created_before"),
                instance_id_prefix=request.instance_id_prefix,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            page = await queries.list_instances(self._engine, query, visible=self._visible())
            return apb.ListInstancesResponse(
                instances=[_summary(s) for s in page.instances], next_page_token=page.next_page_token
            )
        raise AssertionError("unreachable")

    async def GetAppsStatus(
        self, request: apb.GetAppsStatusRequest, context: Ctx
    ) -> apb.GetAppsStatusResponse:
        async with grpc_errors(context, "GetAppsStatus"):
            now = utcnow()
            apps = await queries.apps_status(
                self._engine, visible=self._visible(), app_ids=frozenset(request.app_ids), now=now
            )
            return apb.GetAppsStatusResponse(
                now=_ts(now),
                apps=[
                    apb.AppStatus(
                        app_id=a.app_id,
                        served=a.served,
                        workers=a.workers,
                        waiting=a.waiting,
                        waiting_without_worker=a.waiting_without_worker,
                        oldest_waiting_since=_ts(a.oldest_waiting),
                        oldest_waiting_seconds=a.oldest_waiting_seconds(now) or 0.0,
                        instances=a.instances,
                    )
                    for a in apps
                ],
            )
        raise AssertionError("unreachable")

    async def CountInstances(
        self, request: apb.CountInstancesRequest, context: Ctx
    ) -> apb.CountInstancesResponse:
        async with grpc_errors(context, "CountInstances"):
            counts = await queries.count_instances(
                self._engine, visible=self._visible(), app_ids=frozenset(request.app_ids)
            )
            return apb.CountInstancesResponse(
                apps=[apb.AppCounts(app_id=app, counts=c) for app, c in counts.items()]
            )
        raise AssertionError("unreachable")
