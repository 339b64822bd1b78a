"""`workflow list` and `status`: through our Admin service (protos/admin.proto), which only a
durabletask-sidecar has; elsewhere they exit with NO_ADMIN and say so."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from backend._proto import admin_pb2 as apb
from backend._proto import admin_pb2_grpc as agrpc
from backend.ops.connect import OK, USAGE, CommandError, Connection
from backend.ops.render import clip, dump, human, iso, parse_moment, table

_SHORT_CELL = 40  # custom status / failure message in a table


def _when(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _row(s: apb.InstanceSummary) -> dict[str, Any]:
    """One instance with the Dapr CLI's JSON names, plus ours (parent, failureType)."""
    return {
        "appID": s.app_id,
        "name": s.name,
        "instanceID": s.instance_id,
        "created": iso(_when(s.created_at, s.HasField("created_at"))),
        "lastUpdate": iso(_when(s.last_updated_at, s.HasField("last_updated_at"))),
        "completed": iso(_when(s.completed_at, s.HasField("completed_at"))),
        "runtimeStatus": apb.InstanceStatus.Name(s.status),
        "customStatus": s.custom_status,
        "failureMessage": s.failure_message,
        "failureType": s.failure_type,
        "parentAppID": s.parent_app_id,
        "parentInstanceID": s.parent_instance_id,
        "version": s.version,
    }


def _age(created: str | None, now: datetime) -> str:
    if created is None:
        return "<scheduled>"
    return human((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())


def list_instances(c: Connection, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CommandError(USAGE, "--limit must not be negative")
    stub = agrpc.AdminStub(c.channel)  # type: ignore[no-untyped-call]
    request = apb.ListInstancesRequest(
        app_ids=args.app_id,
        name=args.filter_name or "",
        instance_id_prefix=args.filter_id_prefix or "",
        page_token=args.page_token,
    )
    if args.filter_status:
        request.statuses.append(apb.InstanceStatus.Value(args.filter_status))  # type: ignore[arg-type]
    if args.filter_max_age:
        after = parse_moment(args.filter_max_age, flag="--filter-max-age", past=True)
        request.created_after.FromDatetime(after)
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        if args.limit:
            request.page_size = min(1000, args.limit - len(rows))
        response = c.call(stub.ListInstances, request, what="list", admin=True)
        rows.extend(_row(s) for s in response.instances)
        token = response.next_page_token
        if not token or (args.limit and len(rows) >= args.limit):
            break
        request.page_token = token
    if token:
        sys.stderr.write(f"more instances: continue with --page-token {token}\n")
    if args.output in ("json", "yaml"):
        dump(rows, args.output)
        return OK
    if not rows:
        apps = ", ".join(args.app_id) or "any app you may see"
        sys.stderr.write(f"No workflow found for {apps}\n")
        return OK
    now = datetime.now(UTC)
    if args.output == "short":
        table(
            ["APP ID", "NAME", "ID", "STATUS", "CUSTOM STATUS", "AGE"],
            [
                [
                    r["appID"],
                    r["name"],
                    r["instanceID"],
                    r["runtimeStatus"],
                    clip(r["customStatus"], _SHORT_CELL),
                    _age(r["created"], now),
                ]
                for r in rows
            ],
        )
    else:
        table(
            [
                "APP ID",
                "NAME",
                "INSTANCE ID",
                "CREATED",
                "LAST UPDATE",
                "STATUS",
                "PARENT",
                "CUSTOM STATUS",
                "FAILURE MESSAGE",
            ],
            [
                [
                    r["appID"],
                    r["name"],
                    r["instanceID"],
                    r["created"] or "-",
                    r["lastUpdate"] or "-",
                    r["runtimeStatus"],
                    f"{r['parentAppID']}/{r['parentInstanceID']}" if r["parentInstanceID"] else "-",
                    clip(r["customStatus"], _SHORT_CELL) or "-",
                    clip(r["failureMessage"], 80) or "-",
                ]
                for r in rows
            ],
        )
    return OK


_COUNTED = ("RUNNING", "PENDING", "SUSPENDED", "STALLED", "COMPLETED", "FAILED", "TERMINATED", "CANCELED")


def status(c: Connection, args: argparse.Namespace) -> int:
    stub = agrpc.AdminStub(c.channel)  # type: ignore[no-untyped-call]
    response = c.call(
        stub.GetAppsStatus, apb.GetAppsStatusRequest(app_ids=args.app_id), what="status", admin=True
    )
    apps = [
        {
            "appID": a.app_id,
            "served": a.served,
            "workers": a.workers,
            "waiting": a.waiting,
            "waitingWithoutWorker": a.waiting_without_worker,
            "oldestWaitingSince": iso(_when(a.oldest_waiting_since, a.HasField("oldest_waiting_since"))),
            "oldestWaitingSeconds": round(a.oldest_waiting_seconds, 3)
            if a.HasField("oldest_waiting_since")
            else None,
            "instances": dict(sorted(a.instances.items())),
        }
        for a in response.apps
    ]
    if args.output in ("json", "yaml"):
        dump(apps, args.output)
        return OK
    if not apps:
        sys.stderr.write("No app found\n")
        return OK
    headers = ["APP ID", "SERVED", "WORKERS", "WAITING", "NO WORKER", "OLDEST WAITING"]
    rows = []
    for a in apps:
        row = [
            a["appID"],
            "yes" if a["served"] else "no",
            str(a["workers"]),
            str(a["waiting"]),
            str(a["waitingWithoutWorker"]),
            human(a["oldestWaitingSeconds"]) if a["oldestWaitingSeconds"] is not None else "-",
        ]
        counts: dict[str, int] = a["instances"]
        if args.output == "wide":
            row += [str(counts.get(s, 0)) for s in _COUNTED]
        else:
            row.append(" ".join(f"{k}={v}" for k, v in counts.items()) or "-")
        rows.append(row)
    headers += list(_COUNTED) if args.output == "wide" else ["INSTANCES"]
    table(headers, rows)
    return OK
