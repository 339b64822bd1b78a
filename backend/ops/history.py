"""`workflow history INSTANCE_ID`: the events, with times relative to the previous event, the
app each ran on (multi-app routing), and inputs/outputs cut to a line unless --full."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.domain.model import status_name
from backend.ops.connect import OK, Connection
from backend.ops.render import clip, dump, human, iso, table
from backend.ops.workflow import exists

PAYLOAD_CHARS = 120  # an input, output or message in a row, unless --full


def _type(event: hpb.HistoryEvent) -> str:
    kind = event.WhichOneof("eventType") or "unknown"
    return kind[0].upper() + kind[1:]


def _payload(value: Any, full: bool) -> str:
    """A StringValue's text; JSON strings are shown unquoted, as the Dapr CLI does."""
    text: str = value.value
    try:
        decoded = json.loads(text)
        if isinstance(decoded, str):
            text = decoded
    except ValueError:
        pass
    return text if full else clip(text, PAYLOAD_CHARS)


def _details(event: hpb.HistoryEvent, full: bool) -> tuple[str | None, str, dict[str, str]]:
    """(name, details, attributes) of one event."""
    kind = event.WhichOneof("eventType")
    body = getattr(event, kind) if kind else None
    attrs: dict[str, str] = {}

    def put(key: str, value: Any) -> None:
        if value is not None and value.value != "":
            attrs[key] = _payload(value, full)

    def failure(details: Any, prefix: str) -> None:
        if details.errorType:
            attrs[f"{prefix}Type"] = details.errorType
        if details.errorMessage:
            attrs[f"{prefix}Message"] = (
                details.errorMessage if full else clip(details.errorMessage, PAYLOAD_CHARS)
            )

    name: str | None = None
    text = ""
    if isinstance(body, hpb.ExecutionStartedEvent):
        name, text = body.name, "workflow start"
        put("input", body.input if body.HasField("input") else None)
    elif isinstance(body, hpb.ExecutionCompletedEvent):
        text = f"status={status_name(body.workflowStatus)}"
        put("output", body.result if body.HasField("result") else None)
        if body.HasField("failureDetails"):
            failure(body.failureDetails, "failure")
    elif isinstance(body, hpb.TaskScheduledEvent):
        name, text = body.name, f"activity={body.name}"
        put("input", body.input if body.HasField("input") else None)
    elif isinstance(body, hpb.TaskCompletedEvent):
        text = f"eventId={body.taskScheduledId}"
        put("result", body.result if body.HasField("result") else None)
    elif isinstance(body, hpb.TaskFailedEvent):
        text = f"eventId={body.taskScheduledId}"
        failure(body.failureDetails, "error")
    elif isinstance(body, hpb.ChildWorkflowInstanceCreatedEvent):
        name, text = body.name, f"child={body.instanceId}"
        put("input", body.input if body.HasField("input") else None)
    elif isinstance(body, hpb.ChildWorkflowInstanceCompletedEvent):
        text = f"eventId={body.taskScheduledId}"
        put("result", body.result if body.HasField("result") else None)
    elif isinstance(body, hpb.ChildWorkflowInstanceFailedEvent):
        text = f"eventId={body.taskScheduledId}"
        failure(body.failureDetails, "error")
    elif isinstance(body, hpb.TimerCreatedEvent):
        name = body.name if body.HasField("name") else None
        text = f"fireAt={iso(body.fireAt.ToDatetime(tzinfo=UTC))}"
    elif isinstance(body, hpb.TimerFiredEvent):
        text = f"timerId={body.timerId}"
    elif isinstance(body, hpb.EventRaisedEvent):
        name, text = body.name, f"event={body.name}"
        put("payload", body.input if body.HasField("input") else None)
    elif isinstance(body, hpb.EventSentEvent):
        name, text = body.name, f"event={body.name} -> {body.instanceId}"
        put("payload", body.input if body.HasField("input") else None)
    elif isinstance(
        body, hpb.ExecutionTerminatedEvent | hpb.ExecutionSuspendedEvent | hpb.ExecutionResumedEvent
    ):
        put(
            "reason" if not isinstance(body, hpb.ExecutionTerminatedEvent) else "output",
            body.input if body.HasField("input") else None,
        )
    elif isinstance(body, hpb.ContinueAsNewEvent):
        put("input", body.input if body.HasField("input") else None)
    return name, text, attrs


def _status(event: hpb.HistoryEvent) -> str:
    kind = event.WhichOneof("eventType")
    if kind in ("taskFailed", "childWorkflowInstanceFailed"):
        return "FAILED"
    if kind == "executionCompleted":
        return status_name(event.executionCompleted.workflowStatus)
    return {
        "executionTerminated": "TERMINATED",
        "executionSuspended": "SUSPENDED",
        "executionResumed": "RESUMED",
        "executionStalled": "STALLED",
    }.get(kind or "", "RUNNING")


def rows(events: list[hpb.HistoryEvent], *, app: str, full: bool, now: datetime) -> list[dict[str, Any]]:
    """The history as rows with the Dapr CLI's JSON names, plus `app` (where it ran)."""
    if not app:  # the instance's app, as far as the history says
        app = next(
            (e.router.sourceAppID for e in events if e.HasField("router") and e.router.sourceAppID), ""
        )
    out = []
    play = 0
    previous: datetime | None = None
    for index, event in enumerate(events):
        moment = event.timestamp.ToDatetime(tzinfo=UTC)
        if event.WhichOneof("eventType") == "workflowStarted":
            play += 1
        name, text, attrs = _details(event, full)
        target = (
            event.router.targetAppID
            if event.HasField("router") and event.router.HasField("targetAppID")
            else ""
        )
        elapsed = (
            "Age:" + human((now - moment).total_seconds())
            if index == 0 or previous is None
            else human((moment - previous).total_seconds())
        )
        previous = moment
        out.append(
            {
                "play": play,
                "type": _type(event),
                "name": name,
                "eventId": event.eventId,
                "timestamp": iso(moment),
                "elapsed": elapsed,
                "app": target or app,
                "status": _status(event),
                "details": text,
                "router": (f"{event.router.sourceAppID}->{target}" if target else event.router.sourceAppID)
                if event.HasField("router")
                else None,
                "attrs": attrs,
            }
        )
    return out


def show(c: Connection, stub: sgrpc.TaskHubSidecarServiceStub, args: argparse.Namespace) -> int:
    exists(c, stub, args, args.instance_id)
    response = c.call(
        stub.GetInstanceHistory, spb.GetInstanceHistoryRequest(instanceId=args.instance_id), what="history"
    )
    data = rows(list(response.events), app=args.app_id or "", full=args.full, now=datetime.now(UTC))
    if args.output in ("json", "yaml"):
        dump(data, args.output)
        return OK
    if args.output == "short":
        table(
            ["TYPE", "NAME", "EVENTID", "APP", "ELAPSED", "STATUS", "DETAILS"],
            [
                [
                    d["type"],
                    d["name"] or "-",
                    str(d["eventId"]) if d["eventId"] >= 0 else "-",
                    d["app"] or "-",
                    d["elapsed"],
                    d["status"],
                    d["details"] or "-",
                ]
                for d in data
            ],
        )
    else:
        table(
            [
                "PLAY",
                "TYPE",
                "NAME",
                "EVENTID",
                "TIMESTAMP",
                "ELAPSED",
                "APP",
                "STATUS",
                "ROUTER",
                "DETAILS",
                "ATTRS",
            ],
            [
                [
                    str(d["play"]),
                    d["type"],
                    d["name"] or "-",
                    str(d["eventId"]) if d["eventId"] >= 0 else "-",
                    d["timestamp"],
                    d["elapsed"],
                    d["app"] or "-",
                    d["status"],
                    d["router"] or "-",
                    d["details"] or "-",
                    ";".join(f"{k}={v}" for k, v in d["attrs"].items()) or "-",
                ]
                for d in data
            ],
        )
    return OK
