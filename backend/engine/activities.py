"""One activity run: hand a leased activity to a worker of its app, and
deliver the result to the parent workflow's inbox on the parent's app."""

from __future__ import annotations

import logging

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import Config
from backend.domain import events as ev
from backend.domain.model import Message
from backend.engine.notify import Notifier
from backend.engine.streams import StreamGone, StreamHub
from backend.errors import LeaseLost, PayloadTooLarge
from backend.store.base import ActivityLease, Store

log = logging.getLogger("backend.activities")


def result_event(lease: ActivityLease, response: spb.ActivityResponse, max_payload: int) -> hpb.HistoryEvent:
    request = lease.task.request
    if response.HasField("failureDetails"):
        out = ev.event(
            ev.utcnow(),
            taskFailed=hpb.TaskFailedEvent(
                taskScheduledId=request.taskId,
                failureDetails=response.failureDetails,
                taskExecutionId=request.taskExecutionId,
            ),
        )
    elif response.HasField("result") and len(response.result.value.encode()) > max_payload:
        out = ev.event(
            ev.utcnow(),
            taskFailed=hpb.TaskFailedEvent(
                taskScheduledId=request.taskId,
                failureDetails=ev.failure(
                    "PayloadSizeExceeded",
                    f"the result of activity '{request.name}' is {len(response.result.value.encode())} bytes; "
                    f"the server accepts at most {max_payload} (--max-payload-bytes)",
                    non_retriable=True,
                ),
                taskExecutionId=request.taskExecutionId,
            ),
        )
    else:
        out = ev.event(
            ev.utcnow(),
            taskCompleted=hpb.TaskCompletedEvent(
                taskScheduledId=request.taskId,
                result=response.result if response.HasField("result") else None,
                taskExecutionId=request.taskExecutionId,
            ),
        )
    out.router.CopyFrom(lease.task.router)
    return out


class ActivityRuns:
    def __init__(self, *, store: Store, hub: StreamHub, notifier: Notifier, config: Config) -> None:
        self._store = store
        self._hub = hub
        self._notifier = notifier
        self._config = config

    async def run(self, lease: ActivityLease) -> None:
        task = lease.task
        stream = self._hub.pick(task.app_id, "activity")
        if stream is None:
            await self._store.abandon_activity(lease, retry_at=None)
            return
        request = spb.ActivityRequest()
        request.CopyFrom(task.request)
        pending = self._hub.send(
            stream,
            spb.WorkItem(activityRequest=request),
            kind="activity",
            instance_id=request.workflowInstance.instanceId,
            task_id=request.taskId,
        )
        try:
            try:
                response = await pending.response
            except StreamGone:
                await self._store.abandon_activity(lease, retry_at=None)
                return
            assert isinstance(response, spb.ActivityResponse)
            result = result_event(lease, response, self._config.max_payload_bytes)
            try:
                await self._store.complete_activity(lease, Message(target=task.parent, event=result))
            except LeaseLost as err:
                # The parent moved on (finished, restarted or was purged): nothing to deliver.
                log.info("result of activity %s for %s dropped: %s", request.name, task.parent, err)
            if (
                result.HasField("taskFailed")
                and result.taskFailed.failureDetails.errorType == "PayloadSizeExceeded"
            ):
                pending.outcome.set_exception(PayloadTooLarge(result.taskFailed.failureDetails.errorMessage))
            else:
                pending.outcome.set_result(None)
            self._notifier.wake(task.parent.app_id)
        except Exception as err:
            log.exception(
                "activity %s for %s failed to complete; it will run again", request.name, task.parent
            )
            if not pending.outcome.done():
                pending.outcome.set_exception(err)
            try:
                await self._store.abandon_activity(lease, retry_at=None)
            except Exception:
                log.exception("could not release activity lease; it expires by itself")
        finally:
            if not pending.outcome.done():
                pending.outcome.set_exception(LeaseLost("the activity was abandoned"))
            self._hub.finish(pending)
