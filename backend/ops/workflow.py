"""`durabletask-sidecar workflow run|suspend|resume|terminate|raise-event|rerun|purge`: the
lifecycle commands, over TaskHubSidecarService only, so they work against any durabletask
sidecar; and the dispatch of every operator command."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime

from google.protobuf import timestamp_pb2, wrappers_pb2

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.ops.connect import FAILED, NOT_FOUND, OK, USAGE, CommandError, Connection, connect
from backend.ops.render import parse_moment

TERMINAL = (
    opb.ORCHESTRATION_STATUS_COMPLETED,
    opb.ORCHESTRATION_STATUS_FAILED,
    opb.ORCHESTRATION_STATUS_TERMINATED,
    opb.ORCHESTRATION_STATUS_CANCELED,
)


def status_value(name: str) -> opb.OrchestrationStatus:
    return opb.OrchestrationStatus.Value("ORCHESTRATION_STATUS_" + name)  # type: ignore[return-value]


def _json(text: str | None, flag: str) -> wrappers_pb2.StringValue | None:
    """The SDKs exchange JSON: refuse what they could not decode, before it is stored."""
    if text is None:
        return None
    try:
        json.loads(text)
    except ValueError as err:
        raise CommandError(USAGE, f"{flag} must be a JSON string ({err}); quote text as '\"text\"'") from None
    return wrappers_pb2.StringValue(value=text)


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def router(args: argparse.Namespace) -> opb.TaskRouter | None:
    """--app-id: address another app's instance through this sidecar (router.targetAppID)."""
    app = getattr(args, "app_id", None)
    return opb.TaskRouter(targetAppID=app) if isinstance(app, str) and app else None


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def run_workflow(c: Connection, stub: sgrpc.TaskHubSidecarServiceStub, args: argparse.Namespace) -> int:
    request = spb.CreateInstanceRequest(name=args.name, instanceId=args.instance_id or "")
    if not request.instanceId:
        request.instanceId = uuid.uuid4().hex
    value = _json(args.input, "--input")
    if value is not None:
        request.input.CopyFrom(value)
    if args.start_time:
        request.scheduledStartTimestamp.CopyFrom(
            _ts(parse_moment(args.start_time, flag="--start-time", past=False))
        )
    r = router(args)
    if r is not None:
        request.router.CopyFrom(r)
    response = c.call(stub.StartInstance, request, what="run")
    _say(f"Workflow instance started successfully: {response.instanceId}")
    return OK


def exists(c: Connection, stub: sgrpc.TaskHubSidecarServiceStub, args: argparse.Namespace, iid: str) -> None:
    """Sidecars differ on unknown IDs (some answer OK): ask first, so the exit code is NOT_FOUND."""
    request = spb.GetInstanceRequest(instanceId=iid)
    r = router(args)
    if r is not None:
        request.router.CopyFrom(r)
    response = c.call(stub.GetInstance, request, what=f"instance {iid!r}")
    if not response.exists:
        raise CommandError(NOT_FOUND, f"no workflow instance {iid!r}")


def control(c: Connection, stub: sgrpc.TaskHubSidecarServiceStub, args: argparse.Namespace) -> int:
    command: str = args.workflow_command
    iid: str = args.instance_id if command != "raise-event" else ""
    r = router(args)
    if command == "raise-event":
        iid, sep, event = str(args.target).partition("/")
        if not sep or not iid or not event:
            raise CommandError(USAGE, "the argument must be in the format '<instance-id>/<event-name>'")
        exists(c, stub, args, iid)
        raise_req = spb.RaiseEventRequest(
            instanceId=iid, name=event, input=_json(args.input, "--input"), router=r
        )
        c.call(stub.RaiseEvent, raise_req, what="raise-event")
        _say(f"Workflow '{iid}' raised event '{event}' successfully")
        return OK
    exists(c, stub, args, iid)
    if command == "suspend":
        reason = wrappers_pb2.StringValue(value=args.reason) if args.reason else None
        c.call(
            stub.SuspendInstance, spb.SuspendRequest(instanceId=iid, reason=reason, router=r), what="suspend"
        )
        _say(f"Workflow '{iid}' suspended successfully")
    elif command == "resume":
        reason = wrappers_pb2.StringValue(value=args.reason) if args.reason else None
        c.call(stub.ResumeInstance, spb.ResumeRequest(instanceId=iid, reason=reason, router=r), what="resume")
        _say(f"Workflow '{iid}' resumed successfully")
    elif command == "terminate":
        output = _json(args.terminate_output, "--output")
        request = spb.TerminateRequest(instanceId=iid, output=output, recursive=True, router=r)
        c.call(stub.TerminateInstance, request, what="terminate")
        _say(f"Workflow '{iid}' terminated successfully")
    elif command == "rerun":
        rerun = spb.RerunWorkflowFromEventRequest(sourceInstanceID=iid, eventID=args.event_id, router=r)
        if args.new_instance_id:
            rerun.newInstanceID = args.new_instance_id
        value = _json(args.input, "--input")
        if value is not None:
            rerun.input.CopyFrom(value)
            rerun.overwriteInput = True
        response = c.call(stub.RerunWorkflowFromEvent, rerun, what="rerun")
        _say(f"Rerunning workflow instance: {response.newInstanceID}")
    return OK


def purge(c: Connection, stub: sgrpc.TaskHubSidecarServiceStub, args: argparse.Namespace) -> int:
    by_filter = args.all or args.all_older_than
    if by_filter and args.instance_ids:
        raise CommandError(USAGE, "no instance IDs are accepted with --all or --all-older-than")
    if args.all and args.all_older_than:
        raise CommandError(USAGE, "--all and --all-older-than exclude each other")
    if args.all_filter_status and not args.all_older_than:
        raise CommandError(USAGE, "--all-filter-status can only be used with --all-older-than")
    if not by_filter and not args.instance_ids:
        raise CommandError(USAGE, "give one or more instance IDs, or --all / --all-older-than")
    r = router(args)
    if by_filter:
        where = spb.PurgeInstanceFilter(
            runtimeStatus=[status_value(args.all_filter_status)] if args.all_filter_status else list(TERMINAL)
        )
        if args.all_older_than:
            where.createdTimeTo.CopyFrom(
                _ts(parse_moment(args.all_older_than, flag="--all-older-than", past=True))
            )
        total = 0
        while True:  # a server may purge in batches (isComplete false): go on until it is done
            request = spb.PurgeInstancesRequest(purgeInstanceFilter=where, recursive=True, router=r)
            if args.force:
                request.force = True
            response = c.call(stub.PurgeInstances, request, what="purge")
            total += response.deletedInstanceCount
            if (
                not response.HasField("isComplete")
                or response.isComplete.value
                or not response.deletedInstanceCount
            ):
                break
        _say(f"Purged {total} workflow instance(s)")
        return OK
    for iid in args.instance_ids:
        exists(c, stub, args, iid)
        request = spb.PurgeInstancesRequest(instanceId=iid, recursive=True, router=r)
        if args.force:
            request.force = True
        response = c.call(stub.PurgeInstances, request, what=f"purge {iid!r}")
        if response.deletedInstanceCount == 0:
            raise CommandError(FAILED, f"workflow '{iid}' was not purged: it has not finished (use --force)")
        _say(f"Workflow '{iid}' purged successfully")
    return OK


def main(args: argparse.Namespace) -> int:
    try:
        c = connect(args)
        try:
            if args.command == "status":
                from backend.ops import listing

                return listing.status(c, args)
            command = args.workflow_command
            if command in ("list", "ls"):
                from backend.ops import listing

                return listing.list_instances(c, args)
            stub = sgrpc.TaskHubSidecarServiceStub(c.channel)  # type: ignore[no-untyped-call]
            if command == "history":
                from backend.ops import history

                return history.show(c, stub, args)
            if command == "run":
                return run_workflow(c, stub, args)
            if command == "purge":
                return purge(c, stub, args)
            return control(c, stub, args)
        finally:
            c.channel.close()
    except CommandError as err:
        sys.stderr.write(f"durabletask-sidecar: {err}\n")
        return err.code
