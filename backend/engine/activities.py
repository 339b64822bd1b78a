"""One activity run: hand a leased activity to a worker of its app, and
deliver the result to the parent workflow's inbox on the parent's app.

A result the store refuses (not an outage) is replaced at once by a small non-retriable
failure naming the reason, so the parent learns of it and the activity does not run again;
when even that fails, or the store is unreachable, the activity is retried after a backoff
that grows with its consecutive failures (never at once, never in a hot loop)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import Config
from backend.domain import events as ev
from backend.domain.model import Message
from backend.engine import backoff
from backend.engine.handover import HandOver
from backend.engine.notify import Notifier
from backend.engine.streams import StreamGone, StreamHub
from backend.engine.strikes import Strikes
from backend.errors import LeaseLost, NotFound, PayloadTooLarge, Unavailable
from backend.store.base import ActivityLease, Store
from backend.telemetry import logs, metrics

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
    def __init__(
        self, *, store: Store, hub: StreamHub, notifier: Notifier, config: Config, handover: HandOver
    ) -> None:
        self._store = store
        self._handover = handover  # delivers results, starting the parent's turn here if it can
        self._hub = hub
        self._notifier = notifier
        self._config = config
        self._strikes: Strikes[int | str] = Strikes()

    def _later(self, lease: ActivityLease) -> datetime:
        strikes = self._strikes.hit(lease.id)
        seconds = backoff.delay(
            strikes, base=self._config.retry_failed_turn_seconds, cap=self._config.retry_max_seconds
        )
        return ev.utcnow() + timedelta(seconds=seconds)

    async def _deliver(self, lease: ActivityLease, result: hpb.HistoryEvent) -> hpb.HistoryEvent:
        """Store the result in the parent's inbox; one the store refuses becomes a failure."""
        task = lease.task
        try:
            await self._handover.deliver_result(lease, Message(target=task.parent, event=result))
            return result
        except (LeaseLost, Unavailable):
            raise
        except Exception as err:
            log.exception(
                "the result of activity %s for %s was refused by the store", task.request.name, task.parent
            )
            refused = ev.event(
                ev.utcnow(),
                taskFailed=hpb.TaskFailedEvent(
                    taskScheduledId=task.request.taskId,
                    failureDetails=ev.failure(
                        "ActivityResultNotStored",
                        f"the result of activity '{task.request.name[:100]}' could not be stored: "
                        f"{type(err).__name__}: {str(err)[:200]}",
                        non_retriable=True,
                    ),
                    taskExecutionId=task.request.taskExecutionId,
                ),
            )
            refused.router.CopyFrom(task.router)
            await self._handover.deliver_result(lease, Message(target=task.parent, event=refused))
            return refused

    async def _release(self, lease: ActivityLease, retry_at: datetime | None) -> None:
        """Give the activity back; its app's dispatcher looks again when it is due."""
        await self._store.abandon_activity(lease, retry_at=retry_at)
        if retry_at is None:
            self._notifier.wake(lease.task.app_id)
        else:
            self._notifier.due(lease.task.app_id, retry_at)

    async def run(self, lease: ActivityLease) -> None:
        task = lease.task
        logs.bind(
            instance_id=task.parent.instance_id, app_id=task.app_id, work_item="activity", token=lease.token
        )
        stream = self._hub.pick(task.app_id, "activity")
        if stream is None:
            await self._release(lease, None)
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
        started = time.perf_counter()
        try:
            try:
                response = await pending.response
            except StreamGone:
                metrics.activity_done(task.app_id, request.name, "recoverable", started)
                await self._release(lease, None)
                return
            assert isinstance(response, spb.ActivityResponse)
            result = result_event(lease, response, self._config.max_payload_bytes)
            metrics.activity_done(
                task.app_id, request.name, "failed" if result.HasField("taskFailed") else "success", started
            )
            try:
                result = await self._deliver(lease, result)
            except LeaseLost as err:
                # The parent moved on (finished, restarted or was purged): nothing to deliver.
                log.info("result of activity %s for %s dropped: %s", request.name, task.parent, err)
            self._strikes.clear(lease.id)
            if (
                result.HasField("taskFailed")
                and result.taskFailed.failureDetails.errorType == "PayloadSizeExceeded"
            ):
                pending.outcome.set_exception(PayloadTooLarge(result.taskFailed.failureDetails.errorMessage))
            else:
                pending.outcome.set_result(None)
        except Exception as err:
            retry_at = self._later(lease)
            log.exception(
                "activity %s for %s failed to complete; it runs again after %s",
                request.name,
                task.parent,
                retry_at.isoformat(timespec="seconds"),
            )
            if not pending.outcome.done():
                pending.outcome.set_exception(err)
            try:
                await self._release(lease, retry_at)
            except Exception:
                log.exception("could not release activity lease; it expires by itself")
        finally:
            if not pending.outcome.done():
                pending.outcome.set_exception(NotFound("the activity was abandoned; it is offered again"))
            self._hub.finish(pending)
