"""One workflow turn: load state, plan, run on a worker (or not), commit.

Called by the Dispatcher with a leased instance. Any failure abandons the
lease, leaving the inbox untouched for a later turn.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestrator_service_pb2 as spb
from backend.config import Config
from backend.domain import applier
from backend.domain.events import utcnow
from backend.domain.model import InboxItem, InstanceKey, WorkflowCommit, is_terminal
from backend.domain.state import RuntimeState
from backend.domain.turn import Mode, plan, turn_started, workflow_request
from backend.engine.history_cache import Entry, HistoryCache
from backend.engine.notify import Notifier
from backend.engine.streams import StreamGone, StreamHub
from backend.errors import InvalidArgument, LeaseLost
from backend.store.base import Store, WorkflowLease

log = logging.getLogger("backend.turns")


class WorkflowTurns:
    def __init__(self, *, store: Store, hub: StreamHub, notifier: Notifier, config: Config) -> None:
        self._store = store
        self._hub = hub
        self._notifier = notifier
        self._config = config
        self._cache = HistoryCache(config.history_cache_instances)

    async def _load(self, lease: WorkflowLease) -> tuple[list[hpb.HistoryEvent], RuntimeState]:
        """The committed history and a private copy of its folded state."""
        execution_id = lease.state.executionId.value
        entry = self._cache.get(lease.key, execution_id, lease.history_len)
        if entry is None:
            events = await self._store.get_history(lease.key)
            entry = Entry(execution_id=execution_id, events=events, state=RuntimeState.of(events))
            self._cache.put(lease.key, entry)
        elif len(entry.events) < lease.history_len:  # another replica committed turns
            tail = await self._store.get_history(lease.key, len(entry.events))
            entry.events.extend(tail)
            for event in tail:
                entry.state.add(event)
        return entry.events, entry.state.clone()

    async def run(self, lease: WorkflowLease) -> None:
        key = lease.key
        try:
            history, state = await self._load(lease)
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
            )
            if turn.mode is Mode.WAIT:
                await self._store.abandon_workflow(lease, retry_at=now + timedelta(seconds=1))
                return
            if turn.mode is Mode.TERMINATE:
                commit = applier.terminate(ctx, state, turn.batch)
            elif turn.mode in (Mode.DROP, Mode.RECORD):
                commit = applier.record(ctx, state, turn.batch)
            else:
                worker_commit = await self._on_worker(lease, ctx, state, history, turn.batch)
                if worker_commit is None:
                    return
                commit = worker_commit
                # The worker turn commits itself (it must answer the worker's RPC).
                self._after_commit(lease, commit, history, state)
                return
            await self._store.commit_workflow(lease, commit, now=now)
            self._after_commit(lease, commit, history, state)
        except LeaseLost as err:
            log.warning("turn for %s dropped: %s", key, err)
        except Exception:
            log.exception("turn for %s failed; the lease is released for a retry", key)
            await self._abandon(lease, retry=True)

    async def _abandon(self, lease: WorkflowLease, *, retry: bool) -> None:
        try:
            await self._store.abandon_workflow(
                lease,
                retry_at=utcnow() + timedelta(seconds=self._config.retry_failed_turn_seconds)
                if retry
                else None,
            )
        except Exception:
            log.exception("could not release lease on %s; it expires by itself", lease.key)

    def _after_commit(
        self,
        lease: WorkflowLease,
        commit: WorkflowCommit,
        history: list[hpb.HistoryEvent],
        state: RuntimeState,
    ) -> None:
        key = lease.key
        committed = len(history) + len(commit.new_history)
        if commit.reset_history or is_terminal(commit.state.workflowStatus) or state.length != committed:
            # Restarted, finished, or a stall (the state folded events that were not committed).
            self._cache.drop(key)
        else:
            history.extend(commit.new_history)
            self._cache.put(
                key, Entry(execution_id=commit.state.executionId.value, events=history, state=state)
            )
        self._notifier.changed(key, commit.state)
        self._notifier.wake(None)

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
        batch: list[InboxItem],
    ) -> WorkflowCommit | None:
        key = lease.key
        stream = self._hub.pick(key.app_id, "workflow", key.instance_id)
        if stream is None:  # no worker now (it left, or this was a control-only lease)
            await self._store.abandon_workflow(
                lease, retry_at=ctx.now + timedelta(seconds=self._config.poll_seconds)
            )
            return None
        new_events = [turn_started(state, ctx.now), *(i.event for i in batch)]
        for event in new_events:
            state.add(event)
        cached = stream.warm.get(key.instance_id, 0) if stream.stateful else 0
        if cached > len(history):
            cached = 0
        request = workflow_request(key.instance_id, state.execution_id, history, new_events, cached=cached)
        if lease.propagated is not None:
            request.propagatedHistory.CopyFrom(lease.propagated)
        log.debug(
            "dispatch workflow instance=%s app=%s past=%d new=%d cached=%s",
            key.instance_id,
            key.app_id,
            len(request.pastEvents),
            len(new_events),
            cached or "none",
        )
        pending = self._hub.send(
            stream, spb.WorkItem(workflowRequest=request), kind="workflow", instance_id=key.instance_id
        )
        try:
            try:
                response = await pending.response
            except StreamGone:
                stream.warm.pop(key.instance_id, None)
                await self._abandon(lease, retry=False)
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
                log.warning("worker answered %s with a malformed response: %s", key, err)
                await self._abandon(lease, retry=True)
                return None
            try:
                await self._store.commit_workflow(lease, commit, now=ctx.now)
            except BaseException as err:
                pending.outcome.set_exception(err if isinstance(err, Exception) else asyncio.CancelledError())
                raise
            pending.outcome.set_result(None)
            if commit.reset_history or is_terminal(commit.state.workflowStatus):
                stream.warm.pop(key.instance_id, None)  # the worker drops its cache too
            return commit
        finally:
            if not pending.outcome.done():
                pending.outcome.set_exception(LeaseLost("the turn was abandoned"))
            self._hub.finish(pending)
