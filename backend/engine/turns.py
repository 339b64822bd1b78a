"""One workflow turn: load state, plan, run on a worker (or not), commit.

Called by the Dispatcher with a leased instance. Any failure abandons the lease, leaving
the inbox untouched for a later turn, after a backoff that grows with the instance's
consecutive failures; none of them loops hot, and each has an end:
- the worker's stream went away, or the turn waited --workflow-task-timeout with no completion
  coming from that stream (ten times that in any case): offered again
  (at once the first time); a large work item that keeps losing its stream FAILS the workflow
  (workers whose gRPC receive limit is below it would otherwise disconnect forever);
- the worker answered with malformed actions: parked STALLED after max_turn_failures answers,
  offered again when a worker of the app connects;
- the store refused the commit: the execution FAILS after max_turn_failures tries;
- the store is unreachable: retried, backing off up to retry_max_seconds, for as long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import Config
from backend.domain import applier, endings
from backend.domain import events as ev
from backend.domain.events import utcnow
from backend.domain.model import InboxItem, InstanceKey, WorkflowCommit, is_terminal
from backend.domain.state import RuntimeState
from backend.domain.turn import Mode, plan, turn_started, workflow_request
from backend.engine import backoff
from backend.engine.encoded import EncodedItem, EventEncodings
from backend.engine.handover import HandOver
from backend.engine.history_cache import Entry, HistoryCache
from backend.engine.notify import Notifier
from backend.engine.streams import Pending, StreamGone, StreamHub
from backend.engine.strikes import Strikes
from backend.errors import InvalidArgument, LeaseLost, NotFound, Unavailable
from backend.store.base import Store, WorkflowLease
from backend.telemetry import logs, metrics, tracing

log = logging.getLogger("backend.turns")

# Items larger than the SDKs' default gRPC receive limit (4 MiB) that keep losing their stream
# are taken to be undeliverable to these workers.
_SDK_DEFAULT_RECEIVE = 4 * 1024 * 1024
_LOST_STREAMS_BEFORE_FAILING = 3


class WorkflowTurns:
    def __init__(
        self, *, store: Store, hub: StreamHub, notifier: Notifier, config: Config, handover: HandOver
    ) -> None:
        self._handover = handover
        self._store = store
        self._hub = hub
        self._notifier = notifier
        self._config = config
        self._cache = HistoryCache(config.history_cache_instances, config.history_cache_bytes)
        self._strikes: Strikes[InstanceKey] = Strikes()
        self._max_send = config.max_send_bytes

    async def _load(
        self, lease: WorkflowLease
    ) -> tuple[list[hpb.HistoryEvent], RuntimeState, EventEncodings]:
        """The committed history and its folded state, both private copies, and the history's
        encodings (shared: only ever extended, so the first len(history) stay these)."""
        execution_id = lease.state.executionId.value
        entry = self._cache.get(lease.key, execution_id, lease.history_len)
        if entry is None:
            # A new instance has no history to read (its first turn is the common case).
            events = [] if lease.history_len == 0 else await self._store.get_history(lease.key)
            entry = Entry(execution_id=execution_id, events=events, state=RuntimeState.of(events))
            self._cache.put(lease.key, entry)
        elif len(entry.events) < lease.history_len:  # another replica committed turns
            tail = await self._store.get_history(lease.key, len(entry.events))
            entry.events.extend(tail)
            for event in tail:
                entry.state.add(event)
        entry.encoded.sync(entry.events)
        # Copies: a turn adopted right after this one committed may load while this one
        # still extends its own view (engine/handover.py); the cache holds whole entries.
        return list(entry.events), entry.state.clone(), entry.encoded

    async def run(self, lease: WorkflowLease) -> None:
        key = lease.key
        logs.bind(instance_id=key.instance_id, app_id=key.app_id, work_item="workflow", token=lease.token)
        metrics.turn_leased(lease)
        try:
            history, state, encoded = await self._load(lease)
            turn = plan(state, lease.inbox)
            now = utcnow()
            ctx = applier.TurnContext(
                key=key,
                now=now,
                stored=lease.state,
                consumed=turn.consumed,
                max_payload_bytes=self._config.max_payload_bytes,
                stalled_before=state.stalled,
                policy=self._config.security.policy,
                past=history,
                received=lease.propagated,
                max_history_bytes=self._config.max_history_bytes,
                max_history_events=self._config.max_history_events,
            )
            if turn.mode is Mode.WAIT:
                await self._abandon(lease, after=1.0)
                return
            if turn.mode is Mode.TERMINATE:
                commit = applier.terminate(ctx, state, turn.batch)
            elif turn.mode in (Mode.DROP, Mode.RECORD):
                commit = applier.record(ctx, state, turn.batch)
            else:
                worker_commit = await self._on_worker(lease, ctx, state, history, encoded, turn.batch)
                if worker_commit is None:
                    return
                commit = worker_commit
                # The worker turn commits itself (it must answer the worker's RPC).
                self._after_commit(lease, commit, history, state)
                return
            await self._commit(lease, commit, now=now)
            self._after_commit(lease, commit, history, state)
        except LeaseLost as err:
            log.warning("turn for %s dropped: %s", key, err)
        except Unavailable as err:
            strikes = self._strikes.hit(key)
            log.warning("turn for %s waits for the store (try %d): %s", key, strikes, err)
            await self._abandon(lease, after=self._delay(strikes))
        except Exception as err:
            strikes = self._strikes.hit(key)
            if strikes >= self._config.max_turn_failures:
                log.exception("turn for %s failed %d times; failing the workflow", key, strikes)
                await self._give_up(lease, err, strikes)
            else:
                log.exception("turn for %s failed (try %d); retrying later", key, strikes)
                metrics.turn_retried(key.app_id, lease.state.name)
                await self._abandon(lease, after=self._delay(strikes))

    async def _commit(self, lease: WorkflowLease, commit: WorkflowCommit, *, now: datetime) -> None:
        """Store the turn; its new work is handed to this server's dispatchers (engine/handover.py)."""
        await self._handover.commit(lease, commit, now=now)

    def _delay(self, strikes: int) -> float:
        return backoff.delay(
            strikes, base=self._config.retry_failed_turn_seconds, cap=self._config.retry_max_seconds
        )

    async def _abandon(self, lease: WorkflowLease, *, after: float | None) -> None:
        """Release the lease; nobody takes the instance again for `after` seconds."""
        retry_at = None if after is None else utcnow() + timedelta(seconds=after)
        try:
            await self._store.abandon_workflow(lease, retry_at=retry_at)
        except Exception:
            log.exception("could not release lease on %s; it expires by itself", lease.key)
            return
        # Its dispatcher looks again when it is due (at once: a general round finds it).
        if retry_at is None:
            self._notifier.wake(lease.key.app_id)
        else:
            self._notifier.due(lease.key.app_id, retry_at)

    def _context(self, lease: WorkflowLease, state: RuntimeState) -> applier.TurnContext:
        return applier.TurnContext(
            key=lease.key,
            now=utcnow(),
            stored=lease.state,
            consumed=[i.id for i in lease.inbox],
            max_payload_bytes=self._config.max_payload_bytes,
            stalled_before=state.stalled,
        )

    async def _park(
        self, lease: WorkflowLease, state: RuntimeState, stalled: hpb.ExecutionStalledEvent
    ) -> None:
        """STALLED with the reason; offered again when a worker of the app connects."""
        ctx = self._context(lease, state)
        log.warning("workflow %s is STALLED: %s", lease.key, stalled.description)
        commit = applier.stall(ctx, state, stalled)
        await self._commit(lease, commit, now=ctx.now)
        self._strikes.clear(lease.key)
        self._cache.drop(lease.key)
        self._notifier.changed(lease.key, commit.state)

    async def _give_up(self, lease: WorkflowLease, err: Exception, strikes: int) -> None:
        """The store keeps refusing this turn: the execution fails with the reason."""
        details = ev.failure(
            "TurnNotApplied",
            f"the server could not apply this workflow's turn {strikes} times: "
            f"{type(err).__name__}: {str(err)[:200]}",
            non_retriable=True,
        )
        await self._fail(lease, details)

    async def _fail(self, lease: WorkflowLease, details: opb.TaskFailureDetails) -> None:
        """The server ends the execution as FAILED with the reason; the leased inbox (which may
        hold what could not be applied) is consumed with it."""
        try:
            past, state, _ = await self._load(lease)
            ctx = self._context(lease, state)
            commit = endings.fail(ctx, state, [], details)
            await self._commit(lease, commit, now=ctx.now)
        except Exception:
            log.exception("could not fail workflow %s either; retrying later", lease.key)
            await self._abandon(lease, after=self._config.retry_max_seconds)
            return
        log.warning("workflow %s FAILED: %s", lease.key, details.errorMessage)
        tracing.workflow_committed(lease.key, past, commit.new_history, now=ctx.now)
        metrics.turn_committed(lease.key.app_id, commit.state, state.length, state.size, False)
        self._strikes.clear(lease.key)
        self._cache.drop(lease.key)
        self._notifier.changed(lease.key, commit.state)

    def _after_commit(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        history: list[hpb.HistoryEvent],
        state: RuntimeState,
    ) -> None:
        key = lease.key
        # Before `history` takes in the new events: the spans this turn completed.
        tracing.workflow_committed(
            key, history, commit.new_history, now=utcnow(), continued_as_new=commit.reset_history
        )
        self._strikes.clear(key)
        self._warn_if_large(key, state)
        committed = len(history) + len(commit.new_history)
        metrics.turn_committed(key.app_id, commit.state, committed, state.size, commit.reset_history)
        if commit.reset_history or is_terminal(commit.state.workflowStatus) or state.length != committed:
            # Restarted, finished, or a stall (the state folded events that were not committed).
            self._cache.drop(key)
        else:
            history.extend(commit.new_history)
            execution_id = commit.state.executionId.value
            before = self._cache.get(key, execution_id, len(history))
            # The encodings go on with the history (the next load encodes just the new events).
            encoded = before.encoded if before is not None else EventEncodings()
            self._cache.put(
                key, Entry(execution_id=execution_id, events=history, state=state, encoded=encoded)
            )
        self._notifier.changed(key, commit.state)

    def _warn_if_large(self, key: InstanceKey, state: RuntimeState) -> None:
        """Once, as the history passes the warning size (the log is the operator's signal)."""
        c = self._config
        events_crossed = c.warn_history_events and state.length >= c.warn_history_events > state.warned_events
        bytes_crossed = c.warn_history_bytes and state.size >= c.warn_history_bytes > state.warned_bytes
        if events_crossed or bytes_crossed:
            state.warned_events, state.warned_bytes = state.length, state.size
            log.warning(
                "workflow %s has a large history: %d events, %d bytes (the workflow fails past %d events "
                "or %d bytes): consider continue-as-new",
                key,
                state.length,
                state.size,
                c.max_history_events,
                c.max_history_bytes,
            )

    async def _response(self, pending: Pending) -> object:
        """The worker's answer. Taken back (TimeoutError) after --workflow-task-timeout without a
        completion from that stream (a worker busy completing other items keeps its queue), and in
        any case after ten timeouts."""
        timeout = self._config.workflow_task_timeout_seconds
        sent = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(pending.response)
            except TimeoutError:
                now = time.monotonic()
                if now - max(sent, pending.stream.last_completion) >= timeout:
                    pending.stream.silent = True  # no more work for it until it completes something
                    raise
                if now - sent >= 10 * timeout:
                    raise

    async def _lost(self, lease: WorkflowLease, state: RuntimeState, size: int, err: Exception) -> None:
        """The work item went out and no answer came back (stream gone or task timeout)."""
        key = lease.key
        strikes = self._strikes.hit(key)
        why = "its stream disconnected" if isinstance(err, StreamGone) else "it timed out"
        log.info("workflow work item for %s taken back (%s, %d in a row)", key, why, strikes)
        if size > _SDK_DEFAULT_RECEIVE and strikes >= _LOST_STREAMS_BEFORE_FAILING:
            # Terminal, not STALLED: a stall is offered again whenever a worker connects, and each
            # offer would cost that worker its stream again.
            await self._fail(
                lease,
                ev.failure(
                    "WorkItemUndeliverable",
                    f"{strikes} times in a row this workflow's work item ({size} bytes) was lost on its "
                    "way to a worker: the workers' gRPC receive limit is probably below it (SDK default "
                    "4 MiB). Raise it (e.g. DAPR_GRPC_MAX_INBOUND_MESSAGE_SIZE_BYTES), or keep the "
                    "history small with continue-as-new, then rerun the workflow",
                    non_retriable=True,
                ),
            )
            return
        await self._abandon(lease, after=None if strikes == 1 else self._delay(strikes - 1))

    async def _busy_children(
        self, key: InstanceKey, response: spb.WorkflowResponse
    ) -> frozenset[InstanceKey]:
        busy = set()
        for child in applier.child_keys(key, response):
            existing = await self._store.get_state(child)
            if existing is not None and not is_terminal(existing.workflowStatus):
                busy.add(child)
        return frozenset(busy)

    async def _on_worker(
        self,
        lease: WorkflowLease,
        ctx: applier.TurnContext,
        state: RuntimeState,
        history: list[hpb.HistoryEvent],
        encoded: EventEncodings,
        batch: list[InboxItem],
    ) -> WorkflowCommit | None:
        key = lease.key
        stream = self._hub.pick(key.app_id, "workflow", key.instance_id)
        if stream is None:  # no worker now (it left, or this was a control-only lease)
            await self._abandon(lease, after=self._config.poll_seconds)
            return None
        new_events = [turn_started(state, ctx.now), *(i.event for i in batch)]
        for event in new_events:
            state.add(event)
        cached = stream.warm.get(key.instance_id, 0) if stream.stateful else 0
        if cached > len(history):
            cached = 0
        # The request without its past events, which follow as their cached encodings.
        request = workflow_request(key.instance_id, state.execution_id, [], new_events, cached=cached)
        if lease.propagated is not None:
            request.propagatedHistory.CopyFrom(lease.propagated)
        log.debug(
            "dispatch workflow instance=%s app=%s past=%d new=%d cached=%s",
            key.instance_id,
            key.app_id,
            len(history) - cached,
            len(new_events),
            cached or "none",
        )
        item = EncodedItem(request, encoded.between(cached, len(history)))
        size = item.ByteSize()
        if size > self._max_send:
            # Never put on a stream what gRPC cannot send: it would tear the stream down.
            details = ev.failure(
                "WorkItemTooLarge",
                f"this workflow's next work item is {size} bytes; the server sends at most "
                f"{self._max_send}: continue as new to start a fresh history",
                non_retriable=True,
            )
            commit = endings.fail(ctx, state, new_events, details)
            await self._commit(lease, commit, now=ctx.now)
            return commit
        pending = self._hub.send(stream, item, kind="workflow", instance_id=key.instance_id, size=size)
        metrics.turn_dispatched(lease, ctx.now, first=not history)
        if cached:
            stream.delta_sends += 1
        else:
            stream.full_sends += 1
        try:
            try:
                response = await self._response(pending)
            except (StreamGone, TimeoutError) as err:
                stream.warm.pop(key.instance_id, None)
                await self._lost(lease, state, size, err)
                return None
            assert isinstance(response, spb.WorkflowResponse)
            if stream.stateful:
                stream.warm[key.instance_id] = len(history)
            try:
                busy = await self._busy_children(key, response)
                commit = applier.apply(ctx, state, new_events, response, busy_children=busy)
            except InvalidArgument as err:
                pending.outcome.set_exception(err)
                stream.warm.pop(key.instance_id, None)
                strikes = self._strikes.hit(key)
                log.warning("worker answered %s with a malformed response (%d): %s", key, strikes, err)
                if strikes >= self._config.max_turn_failures:
                    await self._park(
                        lease,
                        RuntimeState.of(history),
                        hpb.ExecutionStalledEvent(
                            reason=opb.VERSION_NOT_AVAILABLE,
                            description=f"the worker answered {strikes} turns with malformed actions "
                            f"(last: {str(err)[:200]}); fix the workflow or SDK: it is offered again "
                            "when a worker of the app connects",
                        ),
                    )
                else:
                    await self._abandon(lease, after=self._delay(strikes))
                return None
            try:
                await self._commit(lease, commit, now=ctx.now)
            except LeaseLost:
                # Purged, or taken over by another server, while the worker ran the turn: the
                # worker learns its answer was not applied (LeaseLost itself never reaches one).
                pending.outcome.set_exception(
                    NotFound(
                        "the workflow instance was purged or moved to another server while this turn "
                        "ran; the answer was not applied"
                    )
                )
                raise
            except BaseException as err:
                pending.outcome.set_exception(err if isinstance(err, Exception) else asyncio.CancelledError())
                raise
            pending.outcome.set_result(None)
            if commit.reset_history or is_terminal(commit.state.workflowStatus):
                stream.warm.pop(key.instance_id, None)  # the worker drops its cache too
            return commit
        finally:
            if not pending.outcome.done():
                pending.outcome.set_exception(
                    NotFound("the turn was abandoned; the work item is offered again")
                )
            self._hub.finish(pending)
