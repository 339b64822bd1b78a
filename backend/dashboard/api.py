"""Dashboard: what each page asks for, as JSON-ready dicts (independent of the web framework).

Listing and per-app status come from the admin query layer (backend/admin); one instance,
its history and its timeline are read from the store; actions call the engine's own
operations (what the client RPCs do, backend/service/client.py). Errors are the server's
error tree (backend/errors.py); the HTTP adapter (routes.py) maps them to statuses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf import wrappers_pb2

from backend import admin
from backend._proto import orchestration_pb2 as opb
from backend.dashboard import events, timeline
from backend.dashboard.events import Json
from backend.domain import validate
from backend.domain.model import InstanceKey
from backend.domain.rerun import RerunRequest
from backend.engine.instances import new_id
from backend.errors import InvalidArgument, NotFound, PermissionDenied
from backend.security.policy import Policy

if TYPE_CHECKING:
    from backend.engine.engine import Engine

HISTORY_PAGE = 200
MAX_HISTORY_PAGE = 1000
MAX_CHILDREN_LISTED = 20  # the timeline has every one
ACTIONS = ("terminate", "suspend", "resume", "raise", "purge", "rerun")
_STATUS_VALUES = {
    name.removeprefix("ORCHESTRATION_STATUS_"): v for name, v in opb.OrchestrationStatus.items()
}
_AGES = {"m": 60, "h": 3600, "d": 86400}


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _age(text: str) -> timedelta:
    """'15m', '2h', '7d': how far back the created filter reaches."""
    unit = text[-1:]
    if unit not in _AGES or not text[:-1].isdigit() or len(text) > 12:
        raise InvalidArgument(f"created age must look like 15m, 2h or 7d, not {text[:32]!r}")
    return timedelta(seconds=int(text[:-1]) * _AGES[unit])


def _int(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= high:
        raise InvalidArgument(f"{name} must be a whole number from 0 to {high}")
    return int(raw)


def _split(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def summary_json(s: admin.InstanceSummary) -> Json:
    out: Json = {
        "app": s.app_id,
        "id": s.instance_id,
        "name": s.name,
        "status": s.status_name,
        "created": _ms(s.created_at),
        "updated": _ms(s.last_updated_at),
        "completed": _ms(s.completed_at),
    }
    if s.parent is not None:
        out["parent"] = {"app": s.parent.app_id, "id": s.parent.instance_id}
    if s.failure or s.failure_type:
        out["failure"] = {"errorType": s.failure_type, "errorMessage": s.failure}
    if s.custom_status:
        out["customStatus"] = s.custom_status
    return out


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """Who looks: `visible` apps (None: all, an operator) and whether actions are allowed."""

    visible: admin.Visibility = None
    may_act: bool = False
    caller: str | None = None  # an app's credentials; None: an operator
    policy: Policy | None = None


class DashboardApi:
    def __init__(self, engine: Engine, *, actions_enabled: bool) -> None:
        self._engine = engine
        self.actions_enabled = actions_enabled

    # -- reading ---------------------------------------------------------------------

    def info(self, viewer: Viewer) -> Json:
        served = self._engine.served_apps
        apps = [a for a in served if viewer.visible is None or a in viewer.visible]
        return {
            "apps": apps,
            "actions": self.actions_enabled and viewer.may_act,
            "statuses": list(_STATUS_VALUES),
            "now": int(time.time() * 1000),
        }

    async def instances(self, params: Mapping[str, str], viewer: Viewer) -> Json:
        """One page of the list, with counts by status for the apps asked for."""
        statuses = set()
        for name in _split(params.get("status", "")):
            if name.upper() not in _STATUS_VALUES:
                raise InvalidArgument(f"unknown status {name[:32]!r}; one of {', '.join(_STATUS_VALUES)}")
            statuses.add(_STATUS_VALUES[name.upper()])
        apps = frozenset(_split(params.get("app", "")))
        created_after = None
        if params.get("age"):
            created_after = datetime.now(UTC) - _age(params["age"])
        query = admin.InstanceQuery(
            app_ids=apps,
            name=params.get("name", ""),
            statuses=frozenset(statuses),
            created_after=created_after,
            instance_id_prefix=params.get("prefix", ""),
            page_size=_int(params, "size", 50, admin.MAX_PAGE_SIZE),
            page_token=params.get("page", ""),
        )
        page = await admin.list_instances(self._engine, query, visible=viewer.visible)
        counts = await admin.count_instances(self._engine, visible=viewer.visible, app_ids=apps)
        totals: dict[str, int] = {}
        for per_app in counts.values():
            for status, n in per_app.items():
                totals[status] = totals.get(status, 0) + n
        return {
            "instances": [summary_json(s) for s in page.instances],
            "next": page.next_page_token or None,
            "counts": totals,
            "countsByApp": counts,
        }

    async def apps(self, viewer: Viewer) -> Json:
        now = datetime.now(UTC)
        out = []
        for a in await admin.apps_status(self._engine, visible=viewer.visible, now=now):
            out.append(
                {
                    "app": a.app_id,
                    "served": a.served,
                    "workers": a.workers,
                    "waiting": a.waiting,
                    "waitingWithoutWorker": a.waiting_without_worker,
                    "oldestWaiting": _ms(a.oldest_waiting),
                    "oldestWaitingSeconds": a.oldest_waiting_seconds(now),
                    "instances": a.instances,
                }
            )
        return {"apps": out, "now": _ms(now)}

    def _key(self, app: str, instance_id: str, viewer: Viewer) -> InstanceKey:
        if not app or len(app) > admin.queries.MAX_FILTER_CHARS:
            raise InvalidArgument("the app ID must be 1-1024 characters")
        if viewer.visible is not None and app not in viewer.visible:
            raise PermissionDenied(f"not allowed to see the instances of app {app[:64]!r}")
        return InstanceKey(app, validate.existing_instance_id(instance_id))

    async def _state(self, key: InstanceKey) -> opb.WorkflowState:
        state = await self._engine.store.get_state(key)
        if state is None:
            raise NotFound(f"no instance {key.instance_id[:64]!r} on app {key.app_id[:64]!r}")
        return state

    async def instance(self, app: str, instance_id: str, viewer: Viewer) -> Json:
        key = self._key(app, instance_id, viewer)
        state = await self._state(key)
        history = await self._engine.store.get_history(key)
        out = events.state_json(app, state)
        out["historyLength"] = len(history)
        children = []
        for event in history:
            if event.HasField("childWorkflowInstanceCreated"):
                created = event.childWorkflowInstanceCreated
                children.append(
                    {
                        "app": event.router.targetAppID or app,
                        "id": created.instanceId,
                        "name": created.name,
                        "route": events.route(event),
                    }
                )
        out["children"] = children[:MAX_CHILDREN_LISTED]
        out["childrenTotal"] = len(children)
        return out

    async def history(self, app: str, instance_id: str, params: Mapping[str, str], viewer: Viewer) -> Json:
        key = self._key(app, instance_id, viewer)
        await self._state(key)
        offset = _int(params, "offset", 0, 10**9)
        limit = _int(params, "limit", HISTORY_PAGE, MAX_HISTORY_PAGE) or HISTORY_PAGE
        history = await self._engine.store.get_history(key)
        names = {
            e.eventId: getattr(e, kind).name
            for e in history
            if (kind := e.WhichOneof("eventType")) in ("taskScheduled", "childWorkflowInstanceCreated")
        }
        page = history[offset : offset + limit]
        rows = [events.row(offset + i, e, app, names) for i, e in enumerate(page)]
        return {"offset": offset, "total": len(history), "events": rows}

    async def event(self, app: str, instance_id: str, seq: int, viewer: Viewer) -> Json:
        key = self._key(app, instance_id, viewer)
        await self._state(key)
        history = await self._engine.store.get_history(key, seq)
        if not history:
            raise NotFound(f"instance {instance_id[:64]!r} has no event {seq}")
        return {"seq": seq, "event": events.full_event(history[0])}

    async def timeline(self, app: str, instance_id: str, viewer: Viewer) -> Json:
        key = self._key(app, instance_id, viewer)
        await self._state(key)
        history = await self._engine.store.get_history(key)
        return timeline.build(history, app, now=int(time.time() * 1000))

    # -- acting ----------------------------------------------------------------------

    async def _first_task(self, key: InstanceKey) -> int:
        for event in await self._engine.store.get_history(key):
            if event.WhichOneof("eventType") in _RERUNNABLE:
                return event.eventId
        raise InvalidArgument("this instance ran no activity, timer or child workflow to rerun from")

    async def act(
        self, app: str, instance_id: str, action: str, body: Mapping[str, Any], viewer: Viewer
    ) -> Json:
        """An operator action. Refused (PermissionDenied) unless the server was started with
        actions enabled and this viewer may act, whatever the page sent."""
        if not self.actions_enabled:
            raise PermissionDenied(
                "dashboard actions are disabled; start the server with --dashboard-actions"
            )
        if not viewer.may_act:
            raise PermissionDenied("these credentials may not act on instances")
        if action not in ACTIONS:
            raise NotFound(f"no action {action[:32]!r}; one of {', '.join(ACTIONS)}")
        key = self._key(app, instance_id, viewer)
        caller, policy = viewer.caller, viewer.policy
        if (
            caller is not None
            and policy is not None
            and app != caller
            and not policy.may_manage(caller, app, action)
        ):
            raise PermissionDenied(f"app {caller[:64]!r} may not {action} instances of app {app[:64]!r}")
        ops = self._engine.instances
        text = _text(body, "reason")
        if action == "terminate":
            await ops.terminate(key, _text(body, "output"), recursive=bool(body.get("recursive", True)))
        elif action == "suspend":
            validate.reason(text, "reason", ops.max_payload)
            await ops.suspend(key, text)
        elif action == "resume":
            validate.reason(text, "reason", ops.max_payload)
            await ops.resume(key, text)
        elif action == "raise":
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidArgument("raise needs an event name")
            data = _text(body, "data")
            validate.payload(data, "the event data", ops.max_payload)
            await ops.raise_event(key, name, data)
        elif action == "purge":
            count = await ops.purge(key, recursive=bool(body.get("recursive", True)), force=False)
            return {"ok": True, "purged": count}
        else:  # rerun
            event_id = body.get("eventId")
            if event_id is None:  # from the first task: the whole workflow again
                event_id = await self._first_task(key)
            if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 0:
                raise InvalidArgument("rerun's eventId must be a whole number")
            new_key = InstanceKey(app, validate.new_instance_id(new_id(), "newInstanceID"))
            created = await ops.rerun(
                RerunRequest(
                    source=key,
                    new_key=new_key,
                    event_id=event_id,
                    new_input=None,
                    overwrite_input=False,
                    new_child_id=None,
                )
            )
            return {"ok": True, "instance": {"app": app, "id": created}}
        return {"ok": True}


_RERUNNABLE = ("taskScheduled", "childWorkflowInstanceCreated", "timerCreated")


def _text(body: Mapping[str, Any], name: str) -> wrappers_pb2.StringValue | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    return wrappers_pb2.StringValue(value=value)
