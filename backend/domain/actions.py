"""One small function per workflow action kind: how each becomes history, messages, activity
tasks and new instances. `ACTIONS` is the table the applier walks; `validate` rejects a
malformed response before any of them runs. Pure, like the rest of domain/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from backend import limits
from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend.domain import action_checks, failures, propagation, trace
from backend.domain import events as ev
from backend.domain.context import TurnContext
from backend.domain.creation import activity_task, child_instance_id, make_instance
from backend.domain.endings import continue_as_new, notify_parent
from backend.domain.model import ActivityTask, Gate, InstanceKey, Message, NewInstance, WorkflowCommit
from backend.domain.state import RuntimeState
from backend.errors import InvalidArgument
from backend.limits import quote


@dataclass
class Applying:
    """One response being applied: what the actions have produced so far."""

    ctx: TurnContext
    state: RuntimeState
    busy_children: frozenset[InstanceKey]
    history: list[hpb.HistoryEvent]
    messages: list[Message] = field(default_factory=list)
    activities: list[ActivityTask] = field(default_factory=list)
    instances: list[NewInstance] = field(default_factory=list)
    completed: bool = False  # a completeWorkflow ran: nothing after it counts
    restart: WorkflowCommit | None = None  # continue-as-new replaces the whole commit
    _trace: opb.TraceContext | None = None  # the workflow span's context, once computed

    @property
    def key(self) -> InstanceKey:
        return self.ctx.key

    def share(self, scope: int) -> hpb.PropagatedHistory | None:
        """The history this workflow hands on in `scope`: its events so far, this turn's included."""
        if scope == propagation.NONE:
            return None
        start = self.state.start
        return propagation.assemble(
            self.key, start.name if start else "", [*self.ctx.past, *self.history], scope, self.ctx.received
        )

    def trace_context(self) -> opb.TraceContext | None:
        """The workflow span's context: what its activities and children are stamped with."""
        if self._trace is None and self.state.start is not None:
            self._trace = trace.workflow_span(self.state.start)[0].to_proto()
        return self._trace

    def too_large(self, shared: hpb.PropagatedHistory | None) -> opb.TaskFailureDetails | None:
        """Propagated history is bounded like any payload: past the limit the task fails."""
        if shared is None:
            return None
        size = shared.ByteSize()
        if size <= self.ctx.max_payload_bytes:
            return None
        return ev.failure(
            "PropagatedHistoryTooLarge",
            f"the history to propagate is {size} bytes; the server accepts at most "
            f"{self.ctx.max_payload_bytes} (--max-payload-bytes): propagate less (OWN_HISTORY instead of "
            "LINEAGE) or continue as new to shorten the history",
            non_retriable=True,
        )


def target_app_of(key: InstanceKey, action: apb.WorkflowAction) -> str:
    if action.HasField("router") and action.router.targetAppID:
        return action.router.targetAppID
    return key.app_id


def _stamp(key: InstanceKey, action: apb.WorkflowAction) -> opb.TaskRouter:
    """Every action leaves with sourceAppID = the workflow's app (Java relies on it)."""
    r = opb.TaskRouter(sourceAppID=key.app_id)
    if action.HasField("router"):
        if action.router.targetAppID:
            r.targetAppID = action.router.targetAppID
        if action.router.targetAppNamespace:
            r.targetAppNamespace = action.router.targetAppNamespace
    return r


# The payload fields of action bodies: a terminateWorkflow's reason becomes the terminated
# instance's output, completeWorkflow's details are kept with it.
_PAYLOADS = ("input", "result", "data", "reason", "details")


def payload_sizes(action: apb.WorkflowAction) -> list[int]:
    k = action.WhichOneof("workflowActionType")
    body = getattr(action, k) if k else None
    sizes = []
    for name in _PAYLOADS:
        if body is not None and name in body.DESCRIPTOR.fields_by_name and body.HasField(name):
            sizes.append(len(getattr(body, name).value.encode()))
    if k == "completeWorkflow":  # carried events are raised again in the next generation
        sizes.extend(
            len(e.eventRaised.input.value.encode())
            for e in action.completeWorkflow.carryoverEvents
            if e.HasField("eventRaised") and e.eventRaised.HasField("input")
        )
    return sizes


def _denied(source: str, target: str, what: str) -> opb.TaskFailureDetails:
    """The failure a task gets when the policy forbids its cross-app call: final, never retried."""
    return ev.failure(
        "CrossAppCallDenied",
        f"app {quote(source)} may not {what} on app {quote(target)} (authorization policy of the server)",
        non_retriable=True,
    )


def validate_shape(response: spb.WorkflowResponse) -> None:
    """Reject a malformed or oversized response, whatever the workflow's state (domain/action_checks.py)."""
    seen: set[int] = set()
    action_checks.check_response(response)
    for action in response.actions:
        k = action.WhichOneof("workflowActionType")
        if k is None:
            raise InvalidArgument(
                f"action {action.id} has no known type; supported: scheduleTask, "
                "createChildWorkflow, createTimer, sendEvent, completeWorkflow, "
                "terminateWorkflow, workflowVersionNotAvailable, createDetachedWorkflow"
            )
        if action.id in seen:
            raise InvalidArgument(f"duplicate action id {action.id} in one response")
        seen.add(action.id)
        action_checks.check_action(action, k)


def validate(state: RuntimeState, response: spb.WorkflowResponse) -> None:
    """Reject a malformed response before anything is written."""
    validate_shape(response)
    for action in response.actions:
        k = action.WhichOneof("workflowActionType")
        if k in ("scheduleTask", "createChildWorkflow", "createTimer") and action.id in state.action_ids:
            raise InvalidArgument(
                f"action id {action.id} ({k}) is already used by an event in this workflow's history"
            )


def _refuse(a: Applying, target_app: str, event: hpb.HistoryEvent) -> None:
    """A task the policy forbids fails at once in the workflow's own inbox."""
    event.router.CopyFrom(ev.router(target_app, a.key.app_id))
    a.messages.append(Message(target=a.key, event=event))


def schedule_task(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    task = action.scheduleTask
    target_app = route.targetAppID or a.key.app_id
    scope = propagation.scope_of(task)
    scheduled = ev.event(
        a.ctx.now,
        event_id=action.id,
        taskScheduled=hpb.TaskScheduledEvent(
            name=task.name,
            version=task.version if task.HasField("version") else None,
            input=task.input if task.HasField("input") else None,
            taskExecutionId=task.taskExecutionId,
            parentTraceContext=a.trace_context(),
        ),
    )
    if scope != propagation.NONE:
        scheduled.taskScheduled.historyPropagationScope = scope  # type: ignore[assignment]
    scheduled.router.CopyFrom(route)
    a.history.append(scheduled)
    details = None
    if not a.ctx.policy.may_call(a.key.app_id, target_app):
        details = _denied(a.key.app_id, target_app, f"run activity {quote(task.name)}")
    shared = None if details else a.share(scope)
    details = details or a.too_large(shared)
    if details is not None:
        failed = hpb.TaskFailedEvent(
            taskScheduledId=action.id, failureDetails=details, taskExecutionId=task.taskExecutionId
        )
        _refuse(a, target_app, ev.event(a.ctx.now, taskFailed=failed))
        return
    a.activities.append(activity_task(a.key, a.state.execution_id, scheduled, shared))


def create_timer(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    timer, now = action.createTimer, a.ctx.now
    created = hpb.TimerCreatedEvent(fireAt=timer.fireAt)
    if timer.HasField("name"):
        created.name = timer.name
    origin = timer.WhichOneof("origin")
    if origin:
        getattr(created, origin).CopyFrom(getattr(timer, origin))
    a.history.append(ev.event(now, event_id=action.id, timerCreated=created))
    if ev.never_fires(created):
        return  # a "wait forever": nothing to queue (events.py)
    fire_at = ev.from_ts(timer.fireAt) if timer.HasField("fireAt") else now
    fired = ev.event(now, timerFired=hpb.TimerFiredEvent(fireAt=timer.fireAt, timerId=action.id))
    a.messages.append(Message(target=a.key, event=fired, visible_at=max(fire_at, now)))


def create_child_workflow(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    child, key, now = action.createChildWorkflow, a.key, a.ctx.now
    target_app = route.targetAppID or key.app_id
    scope = propagation.scope_of(child)
    child_key = InstanceKey(target_app, child.instanceId or child_instance_id(key.instance_id, action.id))
    created = ev.event(
        now,
        event_id=action.id,
        childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(
            instanceId=child_key.instance_id,
            name=child.name,
            version=child.version if child.HasField("version") else None,
            input=child.input if child.HasField("input") else None,
            parentTraceContext=a.trace_context(),
        ),
    )
    if scope != propagation.NONE:
        created.childWorkflowInstanceCreated.historyPropagationScope = scope  # type: ignore[assignment]
    created.router.CopyFrom(route)
    a.history.append(created)
    details = None
    if len(child_key.instance_id) > limits.MAX_INSTANCE_ID_CHARS:
        # A default child ID (the parent's plus ":NNNN") can pass the bound of a long parent ID;
        # such an instance could never be addressed again, so it is not created.
        details = ev.failure(
            "InvalidChildInstanceId",
            f"the child's default instance ID would be {len(child_key.instance_id)} characters; at most "
            f"{limits.MAX_INSTANCE_ID_CHARS} are accepted: give the child an instance ID of its own",
            non_retriable=True,
        )
    elif not a.ctx.policy.may_call(key.app_id, target_app):
        details = _denied(key.app_id, target_app, f"start child workflow {quote(child.name)}")
    shared = None if details else a.share(scope)
    details = details or a.too_large(shared)
    if details is not None:
        failed = hpb.ChildWorkflowInstanceFailedEvent(taskScheduledId=action.id, failureDetails=details)
        _refuse(a, target_app, ev.event(now, childWorkflowInstanceFailed=failed))
        return
    if child_key in a.busy_children:
        details = ev.failure(
            "WorkflowInstanceAlreadyExists",
            f"a workflow instance with ID {quote(child_key.instance_id)} already exists "
            f"and is not finished on app {quote(child_key.app_id)}",
            non_retriable=True,
        )
        failed = hpb.ChildWorkflowInstanceFailedEvent(taskScheduledId=action.id, failureDetails=details)
        a.messages.append(Message(target=key, event=ev.event(now, childWorkflowInstanceFailed=failed)))
        return
    start = a.state.start
    parent = opb.ParentInstanceInfo(
        taskScheduledId=action.id,
        name=ev.sv(start.name if start else ""),
        workflowInstance=opb.WorkflowInstance(
            instanceId=key.instance_id, executionId=ev.sv(a.state.execution_id)
        ),
        appID=key.app_id,
    )
    a.instances.append(
        make_instance(
            child_key,
            name=child.name,
            version=child.version if child.HasField("version") else None,
            input_=child.input if child.HasField("input") else None,
            parent=parent,
            route=route,
            now=now,
            propagated=shared,
            parent_trace=a.trace_context(),
        )
    )


def create_detached_workflow(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    detached, now = action.createDetachedWorkflow, a.ctx.now
    target_app = route.targetAppID or a.key.app_id
    detached_key = InstanceKey(target_app, detached.instanceId)
    created = hpb.DetachedWorkflowInstanceCreatedEvent(instanceId=detached.instanceId)
    a.history.append(ev.event(now, event_id=action.id, detachedWorkflowInstanceCreated=created))
    if detached_key in a.busy_children or not a.ctx.policy.may_call(a.key.app_id, target_app):
        return  # fire-and-forget: an unfinished instance with that ID exists, or the policy forbids it
    only_target = opb.TaskRouter(sourceAppID=target_app)
    if route.targetAppID:
        only_target.targetAppID = route.targetAppID
    start_at = (
        ev.from_ts(detached.scheduledStartTimestamp) if detached.HasField("scheduledStartTimestamp") else None
    )
    a.instances.append(
        make_instance(
            detached_key,
            name=detached.name,
            version=detached.version if detached.HasField("version") else None,
            input_=detached.input if detached.HasField("input") else None,
            parent=None,
            route=only_target,
            now=now,
            start_at=start_at,
            tags=dict(detached.tags),
            # The author's context if the action has one, else the creating workflow's span.
            parent_trace=detached.parentTraceContext
            if detached.HasField("parentTraceContext")
            else a.trace_context(),
        )
    )


def send_event(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    send, now = action.sendEvent, a.ctx.now
    target_app = route.targetAppID or a.key.app_id
    data = send.data if send.HasField("data") else None
    sent = ev.event(
        now,
        event_id=action.id,
        eventSent=hpb.EventSentEvent(instanceId=send.instance.instanceId, name=send.name, input=data),
    )
    sent.router.CopyFrom(route)
    a.history.append(sent)
    if not a.ctx.policy.may_manage(a.key.app_id, target_app, "raise"):
        return  # recorded as sent; the policy keeps it from the other app's instance
    raised = ev.event_raised(now, send.name, data)
    raised.router.CopyFrom(route)
    a.messages.append(Message(target=InstanceKey(target_app, send.instance.instanceId), event=raised))


def terminate_workflow(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    term = action.terminateWorkflow
    target_app = route.targetAppID or a.key.app_id
    if not a.ctx.policy.may_manage(a.key.app_id, target_app, "terminate"):
        return
    terminated = ev.execution_terminated(
        a.ctx.now, term.reason if term.HasField("reason") else None, recurse=term.recurse
    )
    a.messages.append(
        Message(target=InstanceKey(target_app, term.instanceId), event=terminated, gate=Gate.CONTROL)
    )


def complete_workflow(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    done = action.completeWorkflow
    a.completed = True  # only the first completion counts; nothing after it runs
    if done.workflowStatus == opb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
        # The next generation receives what this one received, in its scope, with this
        # generation's own events as the newest chunk.
        received = a.ctx.received
        handed = a.share(received.scope) if received is not None else None
        a.restart = continue_as_new(a.ctx, a.state, a.history, done, propagated=handed)
        return
    completed = ev.execution_completed(
        a.ctx.now,
        done.workflowStatus,
        event_id=action.id,
        result=done.result if done.HasField("result") else None,
        failure=failures.bounded(done.failureDetails) if done.HasField("failureDetails") else None,
    )
    completed.router.CopyFrom(route)
    a.history.append(completed)
    a.messages.extend(notify_parent(a.key, a.state, completed.executionCompleted, a.ctx.now))


def _unreachable(a: Applying, action: apb.WorkflowAction, route: opb.TaskRouter) -> None:
    """workflowVersionNotAvailable stalls the turn before any action runs."""


ACTIONS: dict[str, Callable[[Applying, apb.WorkflowAction, opb.TaskRouter], None]] = {
    "scheduleTask": schedule_task,
    "createTimer": create_timer,
    "createChildWorkflow": create_child_workflow,
    "createDetachedWorkflow": create_detached_workflow,
    "sendEvent": send_event,
    "terminateWorkflow": terminate_workflow,
    "completeWorkflow": complete_workflow,
    "workflowVersionNotAvailable": _unreachable,
}


def run(a: Applying, response: spb.WorkflowResponse) -> None:
    """Every action of the response, in order, through its table entry."""
    for action in response.actions:
        kind = action.WhichOneof("workflowActionType")
        assert kind is not None  # validate() refused unknown kinds
        ACTIONS[kind](a, action, _stamp(a.key, action))
        if a.completed:
            return
