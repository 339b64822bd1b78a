"""Valid messages for every RPC and every kind of worker answer: what the mutations start from.

A case mutates one or a few fields of a request that is otherwise well formed and aimed at a
real instance, so the server's check for exactly that field is what gets exercised (a request
that is wrong everywhere is refused at its first check and proves little).

Requests only ever name the fuzz's own instances: bystanders (harness.py) are never targeted on
purpose, so any change to them is a leak between instances.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from google.protobuf import empty_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf import message as pbmessage

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from tests.fuzz.garbage import tag, varint
from tests.fuzz.mutate import FieldPath

APPS = ("fuzz", "peer")  # both served by the fuzz server; bystanders live on both
# Router targets: the served apps, an app nobody serves (work waits for it), and hostile names.
TARGET_APPS = (*APPS, "nobody-serves-this", "", "peer\x00", "a/b", "x" * 300)

# The request type of every RPC; tests/service/test_security.py RPCS lists the same 17.
REQUEST_TYPES: dict[str, type[pbmessage.Message]] = {
    "Hello": empty_pb2.Empty,
    "StartInstance": spb.CreateInstanceRequest,
    "GetInstance": spb.GetInstanceRequest,
    "WaitForInstanceStart": spb.GetInstanceRequest,
    "WaitForInstanceCompletion": spb.GetInstanceRequest,
    "RaiseEvent": spb.RaiseEventRequest,
    "TerminateInstance": spb.TerminateRequest,
    "SuspendInstance": spb.SuspendRequest,
    "ResumeInstance": spb.ResumeRequest,
    "PurgeInstances": spb.PurgeInstancesRequest,
    "GetWorkItems": spb.GetWorkItemsRequest,
    "CompleteActivityTask": spb.ActivityResponse,
    "CompleteOrchestratorTask": spb.WorkflowResponse,
    "CompleteWorkflowTask": spb.WorkflowResponse,
    "RerunWorkflowFromEvent": spb.RerunWorkflowFromEventRequest,
    "ListInstanceIDs": spb.ListInstanceIDsRequest,
    "GetInstanceHistory": spb.GetInstanceHistoryRequest,
}


def sv(value: str) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=value)


def stamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return out


def payload(rng: random.Random) -> wrappers_pb2.StringValue:
    return sv(json.dumps({"n": rng.randrange(1000), "s": "fuzz"}))


@dataclass
class Pools:
    """What the fuzz may aim at: its own instances per app, and events to rerun from."""

    t0: timestamp_pb2.Timestamp  # after every bystander was created; purge filters start here
    ids: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in APPS})
    rerun: list[tuple[str, str, list[int]]] = field(default_factory=list)  # (app, source, event IDs)
    tokens: list[str] = field(default_factory=list)  # completion tokens seen (stale by now)

    def add(self, app: str, instance_id: str) -> None:
        ids = self.ids.setdefault(app, [])
        if instance_id not in ids:
            ids.append(instance_id)
            del ids[:-200]  # the newest are the likeliest to exist

    def strings(self) -> list[str]:
        """Values a mutated string field may take: instance IDs, app IDs, tokens, names."""
        return [*(i for ids in self.ids.values() for i in ids[-20:]), *APPS, *self.tokens[-5:], "wf", "e"]

    def target(self, rng: random.Random, caller: str) -> tuple[str, str]:
        """(app, instance ID): mostly the caller's own app, sometimes the other one by router."""
        app = caller if rng.random() < 0.7 else rng.choice(APPS)
        ids = self.ids.get(app) or [f"fz-none-{rng.randrange(99)}"]
        return app, rng.choice(ids)


def _route(msg: pbmessage.Message, caller: str, app: str) -> None:
    if app != caller:
        msg.router.targetAppID = app  # type: ignore[attr-defined]


def client_request(rpc: str, rng: random.Random, pools: Pools, caller: str, case: str) -> pbmessage.Message:
    """A valid request for `rpc` from app `caller`, aimed at one of the fuzz's instances."""
    app, iid = pools.target(rng, caller)
    msg: pbmessage.Message
    if rpc == "Hello":
        return empty_pb2.Empty()
    if rpc == "StartInstance":
        fresh = f"fz-{case}" if rng.random() < 0.8 else iid  # a reused ID: ALREADY_EXISTS or replace
        msg = spb.CreateInstanceRequest(
            instanceId=fresh,
            name=rng.choice(["wf", "chain", "hold", "parent", "fail"]),
            input=payload(rng),
            tags={"team": "fuzz"},
            enforceUniqueInstanceId=rng.random() < 0.3,
        )
        if rng.random() < 0.3:
            msg.version.value = "v1"
        if rng.random() < 0.2:
            msg.scheduledStartTimestamp.CopyFrom(stamp(rng.choice([-60, 0.5, 3600])))
        if rng.random() < 0.3:
            msg.executionId.value = f"exec-{case}"
        if rng.random() < 0.3:
            msg.parentTraceContext.traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            msg.parentTraceContext.spanID = "b7ad6b7169203331"
    elif rpc in ("GetInstance", "WaitForInstanceStart", "WaitForInstanceCompletion"):
        msg = spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=rng.random() < 0.7)
    elif rpc == "RaiseEvent":
        msg = spb.RaiseEventRequest(instanceId=iid, name=rng.choice(["e", "finish"]), input=payload(rng))
    elif rpc == "TerminateInstance":
        msg = spb.TerminateRequest(instanceId=iid, output=payload(rng), recursive=rng.random() < 0.5)
    elif rpc == "SuspendInstance":
        msg = spb.SuspendRequest(instanceId=iid, reason=sv("fuzz"))
    elif rpc == "ResumeInstance":
        msg = spb.ResumeRequest(instanceId=iid, reason=sv("fuzz"))
    elif rpc == "PurgeInstances":
        msg = spb.PurgeInstancesRequest(recursive=rng.random() < 0.5)
        if rng.random() < 0.5:
            msg.force = True
        if rng.random() < 0.7:
            msg.instanceId = iid
        else:
            msg.purgeInstanceFilter.createdTimeFrom.CopyFrom(pools.t0)
            msg.purgeInstanceFilter.createdTimeTo.CopyFrom(stamp(3600))
            msg.purgeInstanceFilter.runtimeStatus.extend(
                rng.sample([opb.ORCHESTRATION_STATUS_COMPLETED, opb.ORCHESTRATION_STATUS_FAILED], 1)
            )
    elif rpc == "GetWorkItems":
        msg = spb.GetWorkItemsRequest(
            capabilities=rng.sample(
                [spb.WORKER_CAPABILITY_STATEFUL_HISTORY, spb.WORKER_CAPABILITY_HEALTH_PING], rng.randrange(3)
            )
        )
    elif rpc == "CompleteActivityTask":
        msg = spb.ActivityResponse(
            instanceId=iid, taskId=rng.randrange(3), result=payload(rng), completionToken=_token(rng, pools)
        )
    elif rpc in ("CompleteOrchestratorTask", "CompleteWorkflowTask"):
        msg = spb.WorkflowResponse(
            instanceId=iid,
            completionToken=_token(rng, pools),
            actions=[complete(0, opb.ORCHESTRATION_STATUS_COMPLETED)],
        )
    elif rpc == "RerunWorkflowFromEvent":
        if pools.rerun:
            app, source, events = rng.choice(pools.rerun)
        else:
            source, events = iid, [0]
        msg = spb.RerunWorkflowFromEventRequest(
            sourceInstanceID=source, eventID=rng.choice(events), newInstanceID=f"fz-rerun-{case}"
        )
        if rng.random() < 0.5:
            msg.input.CopyFrom(payload(rng))
            msg.overwriteInput = True
        if rng.random() < 0.2:
            msg.newChildWorkflowInstanceID = f"fz-rerun-child-{case}"
    elif rpc == "ListInstanceIDs":
        msg = spb.ListInstanceIDsRequest(pageSize=rng.choice([1, 10, 100]))
        if rng.random() < 0.3:
            msg.continuationToken = iid
    elif rpc == "GetInstanceHistory":
        # No router on this request: it always reads the caller's own app.
        return spb.GetInstanceHistoryRequest(instanceId=rng.choice(pools.ids.get(caller) or [iid]))
    else:
        raise AssertionError(f"no builder for {rpc}")
    if "router" in msg.DESCRIPTOR.fields_by_name:
        _route(msg, caller, app)
    return msg


def _token(rng: random.Random, pools: Pools) -> str:
    # No worker of this family holds real tokens: stale ones, random ones, none at all.
    return rng.choice([*pools.tokens[-3:], "0" * 32, rng.randbytes(16).hex(), ""])


def guard(rpc: str, msg: pbmessage.Message, pools: Pools) -> str | None:
    """Keep a mutated request from legitimately touching a bystander; None if it never could.

    The only request that reaches instances without naming them is a purge by filter; bystanders
    were all created before t0, so its lower bound is kept at or after t0 (or made invalid, which
    the server must refuse). Returns what it changed, for the report."""
    if rpc != "PurgeInstances" or not isinstance(msg, spb.PurgeInstancesRequest):
        return None
    if msg.WhichOneof("request") != "purgeInstanceFilter":
        return None
    lower = msg.purgeInstanceFilter.createdTimeFrom
    valid = 0 <= lower.nanos < 10**9 and -62135596800 <= lower.seconds < 253402300800
    if msg.purgeInstanceFilter.HasField("createdTimeFrom") and (
        not valid or (lower.seconds, lower.nanos) >= (pools.t0.seconds, pools.t0.nanos)
    ):
        return None
    lower.CopyFrom(pools.t0)
    return "createdTimeFrom kept at t0 (bystander guard)"


# -- worker answers -----------------------------------------------------------------------------


def complete(action_id: int, status: int, result: str = '"done"') -> apb.WorkflowAction:
    done = apb.CompleteWorkflowAction(workflowStatus=status)  # type: ignore[arg-type]
    if status == opb.ORCHESTRATION_STATUS_FAILED:
        done.failureDetails.CopyFrom(opb.TaskFailureDetails(errorType="Boom", errorMessage="it failed"))
    else:
        done.result.value = result
    return apb.WorkflowAction(id=action_id, completeWorkflow=done)


def _history(req: spb.WorkflowRequest) -> list[hpb.HistoryEvent]:
    return [*req.pastEvents, *req.newEvents]


def _action(kind: str, action_id: int, rng: random.Random, pools: Pools, iid: str) -> apb.WorkflowAction:
    a = apb.WorkflowAction(id=action_id)
    if kind == "scheduleTask":
        a.scheduleTask.name = "act"
        a.scheduleTask.input.CopyFrom(payload(rng))
        a.scheduleTask.taskExecutionId = f"exec-{action_id}"
    elif kind == "createTimer":
        a.createTimer.fireAt.CopyFrom(stamp(rng.uniform(0.05, 0.5)))
        a.createTimer.createTimer.SetInParent()
    elif kind == "createChildWorkflow":
        a.createChildWorkflow.name = "wf"
        a.createChildWorkflow.input.CopyFrom(payload(rng))
        if rng.random() < 0.5:
            a.createChildWorkflow.instanceId = f"{iid}-child-{action_id}"
    elif kind == "createDetachedWorkflow":
        a.createDetachedWorkflow.name = "wf"
        a.createDetachedWorkflow.instanceId = f"{iid}-detached-{action_id}"
        a.createDetachedWorkflow.input.CopyFrom(payload(rng))
        a.createDetachedWorkflow.tags["from"] = "fuzz"
    elif kind == "sendEvent":
        app, target = pools.target(rng, "fuzz")
        a.sendEvent.instance.instanceId = target
        a.sendEvent.name = "e"
        a.sendEvent.data.CopyFrom(payload(rng))
        if app != "fuzz":
            a.router.targetAppID = app
    elif kind == "terminateWorkflow":
        a.terminateWorkflow.instanceId = pools.target(rng, "fuzz")[1]
        a.terminateWorkflow.reason.value = "fuzz"
    elif kind == "workflowVersionNotAvailable":
        a.workflowVersionNotAvailable.SetInParent()
    if kind in ("scheduleTask", "createChildWorkflow") and rng.random() < 0.2:
        a.router.targetAppID = rng.choice(APPS)
    return a


_ACTION_KINDS = [
    "scheduleTask",
    "scheduleTask",
    "createTimer",
    "createChildWorkflow",
    "createDetachedWorkflow",
    "sendEvent",
    "terminateWorkflow",
    "workflowVersionNotAvailable",
]


def first_free_id(req: spb.WorkflowRequest) -> int:
    """An action id no event of the history uses yet (an accepted mutation may have used the
    largest int32 already: then the smallest free one)."""
    used = {e.eventId for e in _history(req)}
    top = max(used, default=-1)
    if top < 2**31 - 100:
        return top + 1
    return next(i for i in range(len(used) + 1) if i not in used)


def workflow_response(
    item: spb.WorkItem, rng: random.Random, pools: Pools, *, finish: bool
) -> spb.WorkflowResponse:
    """What a correct worker could answer to this turn: a few actions, or the end.

    `finish` (too much work queued already) or a fourth turn always ends the workflow, so the
    amount of work the fuzz creates stays bounded."""
    req = item.workflowRequest
    events = _history(req)
    next_id = first_free_id(req)
    turns = sum(1 for e in events if e.HasField("workflowStarted"))
    resp = spb.WorkflowResponse(instanceId=req.instanceId, completionToken=item.completionToken)
    if rng.random() < 0.3:
        resp.customStatus.value = '"busy"'
    if finish or turns >= 4 or rng.random() < 0.3:
        status = rng.choice(
            [
                opb.ORCHESTRATION_STATUS_COMPLETED,
                opb.ORCHESTRATION_STATUS_COMPLETED,
                opb.ORCHESTRATION_STATUS_FAILED,
                opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
                if turns < 3
                else opb.ORCHESTRATION_STATUS_TERMINATED,
            ]
        )
        done = complete(next_id, status)
        if status == opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
            done.completeWorkflow.carryoverEvents.add(
                eventId=-1, timestamp=stamp(0), eventRaised=hpb.EventRaisedEvent(name="e", input=payload(rng))
            )
        resp.actions.append(done)
        return resp
    for n in range(rng.randrange(4)):
        resp.actions.append(_action(rng.choice(_ACTION_KINDS), next_id + n, rng, pools, req.instanceId))
    return resp


def prepare(msg: pbmessage.Message, path: FieldPath, rng: random.Random, pools: Pools, first_id: int) -> None:
    """Make the message ready for a mutation at `path`, so that the mutated field is the only
    thing wrong with it: an action of the kind the path goes through exists (with a fresh id,
    not one the server refuses as a duplicate first), carryover events belong to a
    continue-as-new, a rerun input is used, an activity failure is not also a result."""
    names = [f.name for f in path.fields]
    if isinstance(msg, spb.WorkflowResponse) and names[0] == "actions":
        kinds = {a.WhichOneof("workflowActionType") for a in msg.actions}
        fresh = max([first_id - 1, *(a.id for a in msg.actions if a.id < 2**31 - 100)]) + 1
        kind = names[1] if len(names) > 1 and names[1] in _ALL_KINDS else None
        if kind is not None and kind not in kinds:
            done = [a for a in msg.actions if a.HasField("completeWorkflow")]
            for a in done:  # nothing after a completion runs: keep it last
                msg.actions.remove(a)
            if kind == "completeWorkflow":
                msg.actions.append(complete(fresh, opb.ORCHESTRATION_STATUS_COMPLETED))
            else:
                msg.actions.append(_action(kind, fresh, rng, pools, msg.instanceId))
            msg.actions.extend(done)
        elif not msg.actions:
            msg.actions.append(_action("scheduleTask", fresh, rng, pools, msg.instanceId))
        if names[1:3] == ["completeWorkflow", "carryoverEvents"]:
            for a in msg.actions:
                if a.HasField("completeWorkflow"):
                    a.completeWorkflow.workflowStatus = opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
    elif isinstance(msg, spb.ActivityResponse):
        if names[0] == "failureDetails":
            msg.ClearField("result")
        elif names[0] == "result":
            msg.ClearField("failureDetails")
    elif isinstance(msg, spb.RerunWorkflowFromEventRequest) and names[0] == "input":
        msg.overwriteInput = rng.random() < 0.8


_ALL_KINDS = frozenset(
    f.name for f in apb.WorkflowAction.DESCRIPTOR.oneofs_by_name["workflowActionType"].fields
)


def activity_response(item: spb.WorkItem, rng: random.Random) -> spb.ActivityResponse:
    req = item.activityRequest
    resp = spb.ActivityResponse(
        instanceId=req.workflowInstance.instanceId, taskId=req.taskId, completionToken=item.completionToken
    )
    if rng.random() < 0.8:
        resp.result.CopyFrom(req.input if req.HasField("input") else sv("null"))
    else:
        resp.failureDetails.CopyFrom(
            opb.TaskFailureDetails(errorType="ActivityError", errorMessage="no", stackTrace=sv("at act()"))
        )
    return resp


def unknown_action(action_id: int, rng: random.Random) -> apb.WorkflowAction:
    """An action of a kind this server does not know: the reserved sendEntityMessage (8) or a
    field number from the future, carried as an unknown field."""
    number = rng.choice([8, 12, 99, 536870911])
    body = rng.randbytes(rng.randrange(1, 32))
    raw = apb.WorkflowAction(id=action_id).SerializeToString() + tag(number, 2) + varint(len(body)) + body
    return apb.WorkflowAction.FromString(raw)
