"""Read-only operator queries over the engine and its store: instance listings with filters
and keyset paging, instance counts by status, and per-app status (workers, waiting work).

This is the one Python interface the Admin gRPC service (backend/admin/service.py), the CLI
and the web dashboard call; it is stable: fields are only ever added.

Authorization is the caller's job, expressed as a `Visibility`: the set of app IDs whose
instances may be shown, or None for every app (an operator). `visible_apps()` computes it
from a caller's app ID and the policy. A query naming an app outside the visibility raises
PermissionDenied; bad filters or page tokens raise InvalidArgument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backend._proto import orchestration_pb2 as opb
from backend.domain.events import utcnow
from backend.domain.model import InstanceKey, status_name
from backend.errors import InvalidArgument, PermissionDenied
from backend.security.policy import Policy
from backend.store.base import ListedInstance, ListingCursor, ListingFilter

if TYPE_CHECKING:
    from backend.engine.engine import Engine

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
FAILURE_PREFIX_CHARS = 200  # a listing shows the start of a failure message, not all of it
MAX_FILTER_CHARS = 1024

# The app IDs a caller may see; None: every app (an operator, or a local unsecured server).
Visibility = frozenset[str] | None

_STATUSES = frozenset(opb.OrchestrationStatus.values())


@dataclass(frozen=True, kw_only=True)
class InstanceQuery:
    """Which instances to list. Every filter is optional; they combine with AND."""

    app_ids: frozenset[str] = frozenset()  # empty: every app the caller may see
    name: str = ""  # exact workflow name
    statuses: frozenset[int] = frozenset()  # OrchestrationStatus values; empty: any
    created_after: datetime | None = None  # inclusive (created_at >= this)
    created_before: datetime | None = None  # exclusive (created_at < this)
    instance_id_prefix: str = ""
    page_size: int = DEFAULT_PAGE_SIZE  # 1..MAX_PAGE_SIZE; 0 means the default
    page_token: str = ""  # from a previous InstancePage with the same filters; "" for the first


@dataclass(frozen=True, kw_only=True)
class InstanceSummary:
    """One listed instance: what a table row shows (no inputs or outputs)."""

    app_id: str
    instance_id: str
    name: str
    status: int  # OrchestrationStatus value
    created_at: datetime
    last_updated_at: datetime | None
    completed_at: datetime | None = None
    parent: InstanceKey | None = None  # the parent workflow of a child workflow
    failure: str = ""  # the first FAILURE_PREFIX_CHARS of the failure message ("" if none)
    failure_type: str = ""
    version: str = ""
    custom_status: str = ""  # truncated like `failure`

    @property
    def status_name(self) -> str:
        """RUNNING, COMPLETED, ... (the Dapr CLI's spelling)."""
        return status_name(self.status)

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.app_id, self.instance_id)


@dataclass(frozen=True, kw_only=True)
class InstancePage:
    """Newest first: (created_at, app_id, instance_id) descending."""

    instances: list[InstanceSummary]
    next_page_token: str = ""  # "" when this is the last page


@dataclass(frozen=True, kw_only=True)
class AppStatus:
    """One app as this server sees it.

    `workers` counts the GetWorkItems streams connected to *this* server (servers sharing a
    MongoDB each have their own); the waiting figures come from the shared store.
    """

    app_id: str
    served: bool  # this server has a listener for the app (work for others waits for them)
    workers: int  # connected worker streams
    waiting: int  # work items due now that nobody has leased (workflow messages + activities)
    waiting_without_worker: int  # of those, how many wait with no worker of the app connected
    oldest_waiting: datetime | None  # since when the oldest of them has been waiting
    instances: dict[str, int] = field(default_factory=dict)  # status name -> count

    def oldest_waiting_seconds(self, now: datetime | None = None) -> float | None:
        """Age of the oldest waiting item, in seconds (None when nothing waits)."""
        if self.oldest_waiting is None:
            return None
        return max(0.0, ((now or utcnow()) - self.oldest_waiting).total_seconds())


# -- authorization -------------------------------------------------------------------------


def visible_apps(caller: str, policy: Policy, served: Iterable[str]) -> frozenset[str]:
    """The apps a caller identified as `caller` may see: its own, and (only under a policy
    with rules) the served apps whose instances it may `read`. An open policy lets apps manage
    each other by instance ID, but a listing of everything is for operators only."""
    if policy.open:
        return frozenset({caller})
    return frozenset({caller} | {a for a in served if policy.may_manage(caller, a, "read")})


def _scope(requested: Collection[str], visible: Visibility) -> frozenset[str] | None:
    wanted = frozenset(requested)
    if visible is None:
        return wanted or None
    hidden = sorted(wanted - visible)
    if hidden:
        raise PermissionDenied(f"not allowed to see the instances of app(s) {', '.join(map(repr, hidden))}")
    return wanted or visible


# -- listing -------------------------------------------------------------------------------


def _validate(query: InstanceQuery) -> int:
    size = query.page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {query.page_size}")
    unknown = sorted(s for s in query.statuses if s not in _STATUSES)
    if unknown:
        raise InvalidArgument(f"unknown workflow status value(s) {unknown}")
    for label, text in (("name", query.name), ("instance_id_prefix", query.instance_id_prefix)):
        if len(text) > MAX_FILTER_CHARS:
            raise InvalidArgument(f"{label} filter is longer than {MAX_FILTER_CHARS} characters")
    for app in query.app_ids:
        if not app or len(app) > MAX_FILTER_CHARS:
            raise InvalidArgument("app ID filters must be non-empty and at most 1024 characters")
    for label, moment in (("created_after", query.created_after), ("created_before", query.created_before)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidArgument(f"{label} must carry a time zone")
    if query.created_after and query.created_before and query.created_after >= query.created_before:
        raise InvalidArgument("created_after must be earlier than created_before")
    return size


def _fingerprint(where: ListingFilter) -> str:
    """Ties a page token to its filters: a token reused with other filters is refused."""
    text = json.dumps(
        [
            sorted(where.app_ids) if where.app_ids is not None else None,
            where.name,
            sorted(where.statuses),
            where.created_from.isoformat() if where.created_from else None,
            where.created_to.isoformat() if where.created_to else None,
            where.id_prefix,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(cursor: ListingCursor, where: ListingFilter) -> str:
    body = json.dumps(
        {"v": 1, "f": _fingerprint(where), "c": [cursor.created, cursor.app_id, cursor.instance_id]}
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode_token(token: str, where: ListingFilter) -> ListingCursor | None:
    if not token:
        return None
    bad = InvalidArgument("page_token is not one this server returned")
    if len(token) > 4 * MAX_FILTER_CHARS:
        raise bad
    try:
        body: Any = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        created, app_id, instance_id = body["c"]
        version, fingerprint = body["v"], body["f"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise bad from None
    if version != 1 or not isinstance(created, int | float) or isinstance(created, bool):
        raise bad
    if not isinstance(app_id, str) or not isinstance(instance_id, str):
        raise bad
    if fingerprint != _fingerprint(where):
        raise InvalidArgument("page_token belongs to a listing with other filters")
    return ListingCursor(created=created, app_id=app_id, instance_id=instance_id)


def _when(stamp: Any) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def summarize(row: ListedInstance) -> InstanceSummary:
    """A listing row from a stored instance (also used by the dashboard for one instance)."""
    state = row.state
    parent = None
    if state.HasField("parentInstanceId") and state.parentInstanceId.value:
        parent_app = state.parentAppId.value if state.HasField("parentAppId") else ""
        parent = InstanceKey(parent_app or row.key.app_id, state.parentInstanceId.value)
    failure = state.failureDetails if state.HasField("failureDetails") else None
    return InstanceSummary(
        app_id=row.key.app_id,
        instance_id=row.key.instance_id,
        name=state.name,
        status=int(state.workflowStatus),
        created_at=row.created_at,
        last_updated_at=_when(state.lastUpdatedTimestamp),
        completed_at=_when(state.completedTimestamp),
        parent=parent,
        failure=failure.errorMessage[:FAILURE_PREFIX_CHARS] if failure is not None else "",
        failure_type=failure.errorType if failure is not None else "",
        version=state.version.value if state.HasField("version") else "",
        custom_status=state.customStatus.value[:FAILURE_PREFIX_CHARS]
        if state.HasField("customStatus")
        else "",
    )


async def list_instances(engine: Engine, query: InstanceQuery, *, visible: Visibility) -> InstancePage:
    """One page of the instances matching `query` among the `visible` apps, newest first.

    Raises InvalidArgument (bad filter, page size or token) or PermissionDenied (an app
    filter outside `visible`)."""
    size = _validate(query)
    where = ListingFilter(
        app_ids=_scope(query.app_ids, visible),
        name=query.name or None,
        statuses=query.statuses,
        created_from=query.created_after,
        created_to=query.created_before,
        id_prefix=query.instance_id_prefix,
    )
    after = _decode_token(query.page_token, where)
    rows = await engine.store.list_instances(where, after=after, limit=size + 1)
    more = len(rows) > size
    rows = rows[:size]
    token = _encode_token(rows[-1].cursor, where) if more and rows else ""
    return InstancePage(instances=[summarize(r) for r in rows], next_page_token=token)


async def count_instances(
    engine: Engine, *, visible: Visibility, app_ids: Collection[str] = ()
) -> dict[str, dict[str, int]]:
    """Instance counts per app and status name: {app_id: {"RUNNING": 3, ...}} (apps with
    no instances are left out)."""
    scope = _scope(app_ids, visible)
    counts = await engine.store.count_instances(scope)
    out: dict[str, dict[str, int]] = {}
    for (app, status), n in sorted(counts.items()):
        out.setdefault(app, {})[status_name(status)] = n
    return out


async def apps_status(
    engine: Engine, *, visible: Visibility, app_ids: Collection[str] = (), now: datetime | None = None
) -> list[AppStatus]:
    """Every app that is served here, has a worker connected, has instances or has work
    waiting (a multi-app target with no server yet), limited to `app_ids` if given and
    always to `visible`; sorted by app ID."""
    scope = _scope(app_ids, visible)
    moment = now or utcnow()
    served = set(engine.served_apps)
    workers = engine.hub.stream_counts()
    counts = await count_instances(engine, visible=None if scope is None else scope)
    waiting = {w.app_id: w for w in await engine.store.waiting_work(scope, now=moment)}
    names = served | {a for a, n in workers.items() if n} | set(counts) | set(waiting)
    if scope is not None:
        names &= scope
    out = []
    for app in sorted(names):
        w = waiting.get(app)
        items = w.items if w is not None else 0
        connected = workers.get(app, 0)
        out.append(
            AppStatus(
                app_id=app,
                served=app in served,
                workers=connected,
                waiting=items,
                waiting_without_worker=0 if connected else items,
                oldest_waiting=w.oldest if w is not None else None,
                instances=counts.get(app, {}),
            )
        )
    return out
