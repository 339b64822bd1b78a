"""The fuzz server, its bystanders, and how every case is judged and reported.

A Harness owns one in-process server on one store with two apps (`fuzz`, `peer`). Before any
case runs it creates *bystanders* on both apps (finished, failed, terminated, waiting on an
event, waiting on a far timer, suspended, scheduled far ahead, a parent with its child): no case
ever names them, so their state and history must come out of every batch byte for byte
unchanged. After each batch every listener must still answer Hello.

Every case is judged on its own status (see ALLOWED) and on what the server logged while it ran
(an ERROR record is an unexpected exception inside the server, even when the caller was told
something polite). Problems are collected, not raised at once, so one run lists every distinct
failure; `report()` groups them for the people fixing the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf import message as pbmessage

from backend._proto import history_events_pb2 as hpb
from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_actions_pb2 as apb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from backend.config import AppListener, Config
from backend.server import Server
from tests.fuzz import builders, settings
from tests.fuzz.builders import APPS, Pools, sv
from tests.fuzz.mutate import oversized
from tests.service.conftest import RawWorker

Code = grpc.StatusCode

# What a hostile request may get back. UNKNOWN and INTERNAL mean the server did not expect it;
# CANCELLED is fine only on a stream the fuzz cancelled itself (judged per call).
ALLOWED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
        Code.FAILED_PRECONDITION,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
        Code.RESOURCE_EXHAUSTED,
        Code.DEADLINE_EXCEEDED,
    }
)
# Error messages quote at most a short prefix of any input (issue 10); a message this long
# echoes the input, and past ~8 KB gRPC's metadata limit turns it into another status.
MAX_DETAILS = 2048
CALL_TIMEOUT = 20.0  # every unary call; MongoDB writes of ~20 MB on 2 cores stay well below it
WAIT_TIMEOUT = 0.3  # WaitForInstance*: a short client deadline is part of the case
STREAM_HOLD = 0.2  # GetWorkItems cases: read this long, then cancel
STREAM_DEADLINE = 600.0  # worker streams; recycled every batch long before this
MAX_RECEIVE = 128 * 1024 * 1024  # see the server's real answers, not our client's own limit
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_RECEIVE), ("grpc.max_send_message_length", -1)]
PAYLOAD_LIMIT = 256 * 1024  # the fuzz server's --max-payload-bytes: HUGE_SIZES all exceed it


def fuzz_config(store_url: str) -> Config:
    # Only fields main has had for long: the engine-side limits being added must not be needed.
    return Config(
        apps=tuple(AppListener(app_id=a, host="127.0.0.1", port=0) for a in APPS),
        store_url=store_url,
        max_payload_bytes=PAYLOAD_LIMIT,
        poll_seconds=0.2,
        retry_failed_turn_seconds=0.2,
        control_wait_seconds=0.3,
        shutdown_grace_seconds=0.5,
    )


# -- cases and problems ---------------------------------------------------------------------------


@dataclass
class Case:
    family: str
    index: int
    rpc: str
    app: str = ""
    mutations: list[str] = field(default_factory=list)
    code: str = ""
    details: str = ""
    seconds: float = 0.0
    logs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    touched: list[tuple[str, str]] = field(default_factory=list)  # (app, instance ID) it aimed at

    @property
    def id(self) -> str:
        return f"{self.family}#{self.index}"


def _normalize(text: str) -> str:
    """A message with its variable parts blanked, so one bug is one group."""
    text = re.sub(r"'[^']{0,200}'?", "'…'", text)
    text = re.sub(r"\b[0-9a-f]{16,}\b", "<hex>", text)
    text = re.sub(r"\d+", "N", text)
    return text[:200]


class LogTap(logging.Handler):
    """ERROR records from the server and from gRPC: an exception nobody expected. Kept as text
    at once: a record's traceback holds frames, and frames hold multi-MB requests."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("backend", "grpc")):
            self.lines.append(describe(record))


def describe(record: logging.LogRecord) -> str:
    """`logger 'template' | Error at file:line in function — message`: the part before the dash
    names the bug (the report groups by it), the message after it is an example."""
    out = f"{record.name} {record.msg if isinstance(record.msg, str) else record.getMessage()!r}"
    if record.exc_info and record.exc_info[1] is not None:
        err = record.exc_info[1]
        frames = traceback.extract_tb(record.exc_info[2])
        ours = [f for f in frames if "/backend/" in f.filename] or frames
        where = ""
        if ours:
            f = ours[-1]
            name = "backend/" + f.filename.split("/backend/")[-1] if "/backend/" in f.filename else f.filename
            where = f" at {name}:{f.lineno} in {f.name}"
        return f"{out} | {type(err).__name__}{where} — {str(err)[:160]}"
    return f"{out} — {record.getMessage()[:160]}"


# -- workers ---------------------------------------------------------------------------------------


class FuzzWorker(RawWorker):
    """RawWorker whose stream has a deadline and remembers how it ended (RawWorker swallows it):
    a stream the server tears down is a failure, one we closed is not."""

    def __init__(self, stub: Any, capabilities: list[int] | None = None) -> None:
        self.ended: tuple[Code, str] | None = None
        self.closing = False
        self.stub = stub
        self.items: asyncio.Queue[spb.WorkItem] = asyncio.Queue()
        request = spb.GetWorkItemsRequest(capabilities=capabilities or [])
        self._call = stub.GetWorkItems(request, timeout=STREAM_DEADLINE)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for item in self._call:
                if not item.HasField("healthPing"):
                    await self.items.put(item)
            self.ended = (Code.OK, "the server ended the stream")
        except grpc.aio.AioRpcError as err:
            self.ended = (err.code(), err.details() or "")

    def torn_down(self) -> tuple[Code, str] | None:
        if self.closing or self.ended is None or self.ended[0] == Code.DEADLINE_EXCEEDED:
            return None
        return self.ended

    async def close(self) -> None:
        self.closing = True
        await super().close()


def _events(req: spb.WorkflowRequest) -> list[hpb.HistoryEvent]:
    return [*req.pastEvents, *req.newEvents]


def honest_answer(item: spb.WorkItem) -> tuple[str, pbmessage.Message]:
    """What a correct SDK would answer, by workflow name: the scripts the bystanders and the
    fuzz's targets run ("chain": activity, timer, done; "hold": wait for event "finish"; ...)."""
    if item.HasField("activityRequest"):
        act = item.activityRequest
        return "CompleteActivityTask", spb.ActivityResponse(
            instanceId=act.workflowInstance.instanceId,
            taskId=act.taskId,
            completionToken=item.completionToken,
            result=act.input if act.HasField("input") else sv("null"),
        )
    req = item.workflowRequest
    events = _events(req)
    start = next((e.executionStarted for e in events if e.HasField("executionStarted")), None)
    name = start.name if start is not None else ""
    result = start.input if start is not None and start.HasField("input") else sv("null")
    next_id = builders.first_free_id(req)
    new = {e.WhichOneof("eventType") for e in req.newEvents}
    had = {e.WhichOneof("eventType") for e in req.pastEvents}
    resp = spb.WorkflowResponse(instanceId=req.instanceId, completionToken=item.completionToken)

    def done(status: int = opb.ORCHESTRATION_STATUS_COMPLETED) -> None:
        resp.actions.append(builders.complete(next_id, status, result.value))

    if name in ("hold", "hold-timer"):
        finish = [e.eventRaised for e in req.newEvents if e.HasField("eventRaised")]
        if any(r.name == "finish" for r in finish):
            done()
        elif name == "hold-timer" and "timerCreated" not in had:
            resp.customStatus.value = '"waiting"'
            timer = apb.CreateTimerAction(fireAt=builders.stamp(80 * 365 * 86400))
            resp.actions.append(apb.WorkflowAction(id=next_id, createTimer=timer))
    elif name == "chain":
        if "taskScheduled" not in had:
            task = apb.ScheduleTaskAction(name="echo", input=result)
            resp.actions.append(apb.WorkflowAction(id=next_id, scheduleTask=task))
        elif "taskFailed" in new:
            done(opb.ORCHESTRATION_STATUS_FAILED)
        elif "taskCompleted" in new:
            timer = apb.CreateTimerAction(fireAt=builders.stamp(0.05))
            resp.actions.append(apb.WorkflowAction(id=next_id, createTimer=timer))
        elif "timerFired" in new:
            done()
    elif name == "parent":
        if "childWorkflowInstanceCreated" not in had:
            child = apb.CreateChildWorkflowAction(
                instanceId=f"{req.instanceId}-child", name="wf", input=result
            )
            resp.actions.append(apb.WorkflowAction(id=next_id, createChildWorkflow=child))
        elif new & {"childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"}:
            done()
    elif name == "fail":
        done(opb.ORCHESTRATION_STATUS_FAILED)
    else:
        done()
    return "CompleteOrchestratorTask", resp


# -- the harness -----------------------------------------------------------------------------------

# Bystanders per app: (suffix, workflow name, expected status, then).
_BYSTANDERS = [
    ("done", "chain", opb.ORCHESTRATION_STATUS_COMPLETED, None),
    ("failed", "fail", opb.ORCHESTRATION_STATUS_FAILED, None),
    ("parent", "parent", opb.ORCHESTRATION_STATUS_COMPLETED, None),
    ("waiting", "hold", opb.ORCHESTRATION_STATUS_RUNNING, None),
    ("waiting-timer", "hold-timer", opb.ORCHESTRATION_STATUS_RUNNING, None),
    ("terminated", "hold", opb.ORCHESTRATION_STATUS_TERMINATED, "terminate"),
    ("suspended", "hold", opb.ORCHESTRATION_STATUS_SUSPENDED, "suspend"),
    ("scheduled", "wf", opb.ORCHESTRATION_STATUS_PENDING, "far"),
]
# The fuzz's own targets per app, made again when a case purged them.
_TARGETS = [
    ("fz-done", "chain", "wait"),
    ("fz-parent", "parent", "wait"),
    ("fz-fail", "fail", "wait"),
    ("fz-hold", "hold", "running"),
    ("fz-susp", "hold", "suspend"),
    ("fz-pending", "wf", "later"),
]


class Fatal(AssertionError):
    """The server stopped answering: nothing after this would mean anything."""


class Harness:
    def __init__(self, store: str, store_url: str, seed: int, family: str) -> None:
        self.store = store
        self.seed = seed
        self.family = family
        self.server = Server(fuzz_config(store_url))
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.stubs: dict[str, Any] = {}
        self.bystanders: list[tuple[str, str]] = []
        self.baseline: dict[tuple[str, str], tuple[str, str]] = {}
        self.pools = Pools(t0=builders.stamp(0))
        self.cases: list[Case] = []
        self.tap = LogTap()
        self._seen_logs = 0
        self._honest: list[asyncio.Task[None]] = []
        self._honest_workers: dict[str, FuzzWorker] = {}
        self.current: Case | None = None
        self._audited: set[tuple[str, str]] = set()
        self._flagged: set[tuple[tuple[str, str] | None, str]] = set()
        self._started = False
        self._aimed_at: dict[tuple[str, str], list[Case]] = {}  # cases with big values, by target

    def rng(self, index: int, salt: str = "") -> random.Random:
        """Case `index`'s own generator: the same message for the same seed, whatever the server
        answered to the cases before it."""
        return random.Random(f"{self.seed}/{self.store}/{self.family}/{index}/{salt}")

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger().addHandler(self.tap)
        await self.server.start()
        self._started = True
        for app in APPS:
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.ports[app]}", options=CHANNEL_OPTIONS)
            self.channels[app] = ch
            self.stubs[app] = sgrpc.TaskHubSidecarServiceStub(ch)  # type: ignore[no-untyped-call]
        await self.start_honest_workers()
        await self._make_bystanders()
        self.pools.t0 = builders.stamp(0.001)  # every bystander was created before this
        await asyncio.sleep(0.01)
        self.baseline = await self.digests()

    async def stop(self) -> None:
        try:
            await self.stop_honest_workers()
            for ch in self.channels.values():
                await ch.close()
            if self._started:
                await self.server.stop()
        finally:
            logging.getLogger().removeHandler(self.tap)

    # -- the honest worker (client and garbage families) -----------------------------------

    async def start_honest_workers(self) -> None:
        for app in APPS:
            self._honest_workers[app] = FuzzWorker(self.stubs[app])
            self._honest.append(asyncio.create_task(self._honest_loop(app)))

    async def stop_honest_workers(self) -> None:
        for task in self._honest:
            task.cancel()
        await asyncio.gather(*self._honest, return_exceptions=True)
        self._honest.clear()
        for worker in self._honest_workers.values():
            await worker.close()
        self._honest_workers.clear()

    async def _honest_loop(self, app: str) -> None:
        while True:
            worker = self._honest_workers[app]
            try:
                item = await asyncio.wait_for(worker.items.get(), 0.5)
            except TimeoutError:
                if worker.ended is not None:  # ended by the server, or by its deadline: reconnect
                    if (torn := worker.torn_down()) is not None:
                        self._background(app, "GetWorkItems", torn, "the honest worker's stream", "torn down")
                    self._honest_workers[app] = FuzzWorker(self.stubs[app])
                continue
            rpc, response = honest_answer(item)
            code, details = await self.unary(self.stubs[app], rpc, response)
            # Not necessarily OK: the instance may carry what a case put in it (a name no
            # bound allows, say), and the server may refuse the turn for it; never UNKNOWN/INTERNAL.
            if code not in ALLOWED:
                self._background(app, rpc, (code, details), "a correct worker answer", _item_name(item))

    def _background(self, app: str, rpc: str, status: tuple[Code, str], what: str, who: str) -> None:
        """A problem outside any case (a correct worker refused, a stream killed): charged to the
        case that was running, which is usually the one that caused it."""
        code, details = status
        now = self.current
        case = Case(family=self.family, index=now.index if now else -1, rpc=rpc, app=app)
        during = f"{now.id}: {now.rpc} {'; '.join(now.mutations)[:200]}" if now else "set-up"
        case.mutations = [f"(in the background, during {during})"]
        case.code, case.details = code.name, details[:300]
        case.problems.append(f"{what} got {code.name} — {who}: {details[:160]}")
        self.cases.append(case)

    # -- bystanders and targets ------------------------------------------------------------

    async def _make_bystanders(self) -> None:
        started: list[tuple[str, str, int, str | None]] = []
        for app in APPS:
            stub = self.stubs[app]
            for suffix, name, status, then in _BYSTANDERS:
                iid = f"bystander-{suffix}"
                req = spb.CreateInstanceRequest(
                    instanceId=iid, name=name, input=sv(f'"{app}/{suffix}"'), tags={"role": "bystander"}
                )
                if then == "far":
                    req.scheduledStartTimestamp.CopyFrom(builders.stamp(80 * 365 * 86400))
                await stub.StartInstance(req, timeout=CALL_TIMEOUT)
                started.append((app, iid, status, then))
                if name == "parent":  # the honest worker starts it as `<parent>-child`
                    started.append((app, f"{iid}-child", opb.ORCHESTRATION_STATUS_COMPLETED, None))
        for app, iid, status, then in started:
            stub = self.stubs[app]
            if then in ("terminate", "suspend"):
                await self._until(app, iid, lambda s: s == opb.ORCHESTRATION_STATUS_RUNNING)
                if then == "terminate":
                    await stub.TerminateInstance(
                        spb.TerminateRequest(instanceId=iid, output=sv('"stop"')), timeout=CALL_TIMEOUT
                    )
                else:
                    await stub.SuspendInstance(
                        spb.SuspendRequest(instanceId=iid, reason=sv("hold")), timeout=CALL_TIMEOUT
                    )
            await self._until(app, iid, lambda s, want=status: s == want)  # type: ignore[misc]
            if iid == "bystander-waiting-timer":  # its timer is in its history, not just asked for
                await self._until_history(app, iid, "timerCreated")
            self.bystanders.append((app, iid))

    async def _until(self, app: str, iid: str, ok: Callable[[int], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = await self.stubs[app].GetInstance(
                spb.GetInstanceRequest(instanceId=iid), timeout=CALL_TIMEOUT
            )
            if got.exists and ok(got.workflowState.workflowStatus):
                return
            if time.monotonic() > deadline:
                status = (
                    opb.OrchestrationStatus.Name(got.workflowState.workflowStatus) if got.exists else "none"
                )
                raise AssertionError(f"set-up: {app}/{iid} did not reach its state (it is {status})")
            await asyncio.sleep(0.05)

    async def _until_history(self, app: str, iid: str, kind: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = await self.stubs[app].GetInstanceHistory(
                spb.GetInstanceHistoryRequest(instanceId=iid), timeout=CALL_TIMEOUT
            )
            if any(e.HasField(kind) for e in history.events):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"set-up: {app}/{iid} has no {kind} event")

    async def make_targets(self, *, wait: bool) -> None:
        """The fuzz's own instances in every state, for cases to aim at (and destroy)."""
        for app in APPS:
            stub = self.stubs[app]
            for iid, name, how in _TARGETS:
                self.pools.add(app, iid)
                got = await stub.GetInstance(spb.GetInstanceRequest(instanceId=iid), timeout=CALL_TIMEOUT)
                if got.exists:
                    continue
                req = spb.CreateInstanceRequest(instanceId=iid, name=name, input=sv('"target"'))
                if how == "later":
                    req.scheduledStartTimestamp.CopyFrom(builders.stamp(3600))
                code, _ = await self.unary(stub, "StartInstance", req)
                if code != Code.OK or not wait:
                    continue
                if how == "wait":
                    await self._until(app, iid, lambda s: s not in _LIVE)
                elif how in ("running", "suspend"):
                    await self._until(app, iid, lambda s: s == opb.ORCHESTRATION_STATUS_RUNNING)
                    if how == "suspend":
                        await self.unary(stub, "SuspendInstance", spb.SuspendRequest(instanceId=iid))
            if wait:
                self.pools.add(app, "fz-parent-child")
                history = await stub.GetInstanceHistory(
                    spb.GetInstanceHistoryRequest(instanceId="fz-done"), timeout=CALL_TIMEOUT
                )
                ids = sorted({e.eventId for e in history.events if e.eventId >= 0})
                self.pools.rerun.append((app, "fz-done", [*ids, 0, 99, 2**32 - 1]))
                self.pools.rerun.append((app, "fz-parent", [0, 1]))

    # -- the checks ------------------------------------------------------------------------

    async def _snapshot(self, app: str, iid: str) -> tuple[str, str]:
        stub = self.stubs[app]
        state = await stub.GetInstance(
            spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True), timeout=CALL_TIMEOUT
        )
        history = await stub.GetInstanceHistory(
            spb.GetInstanceHistoryRequest(instanceId=iid), timeout=CALL_TIMEOUT
        )
        h = hashlib.sha256(state.SerializeToString(deterministic=True))
        h.update(history.SerializeToString(deterministic=True))
        status = opb.OrchestrationStatus.Name(state.workflowState.workflowStatus) if state.exists else "GONE"
        return h.hexdigest(), f"{status}, {len(history.events)} events"

    async def digests(self) -> dict[tuple[str, str], tuple[str, str]]:
        """Each bystander's state (payloads included) and history, hashed."""
        try:
            return {key: await self._snapshot(*key) for key in self.bystanders}
        except grpc.aio.AioRpcError as err:
            raise Fatal(
                f"[{self.store}] reading the bystanders failed after {self._last_id()}: "
                f"{err.code().name} {err.details()}\n\n{self.report()}"
            ) from None

    async def hello(self) -> None:
        for app in APPS:
            try:
                await self.stubs[app].Hello(empty_pb2.Empty(), timeout=10.0)
            except grpc.aio.AioRpcError as err:
                raise Fatal(
                    f"[{self.store}] the server stopped answering Hello on app {app} after {self._last_id()}: "
                    f"{err.code().name} {err.details()}\n\n{self.report()}"
                ) from None

    def _last_id(self) -> str:
        return self.cases[-1].id if self.cases else "set-up"

    async def end_batch(self, batch: list[Case]) -> None:
        """The server answers, and no bystander changed, after every batch of cases."""
        self.collect_logs()
        await self.hello()
        now = await self.digests()
        changed = [
            f"{app}/{iid}: {self.baseline[(app, iid)][1]} -> {now[(app, iid)][1]}"
            for app, iid in self.bystanders
            if now[(app, iid)][0] != self.baseline[(app, iid)][0]
        ]
        if changed:
            first, last = (batch[0].id, batch[-1].id) if batch else ("-", "-")
            case = Case(family=self.family, index=batch[0].index if batch else -1, rpc="(batch)")
            case.mutations = [f"one of the cases {first}..{last}"]
            case.problems.append("bystander changed: " + "; ".join(changed))
            self.cases.append(case)
            self.baseline = now  # later batches are judged on their own
        await self.audit(batch)

    async def _listed(self) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for app in APPS:
            token = None
            for _ in range(200):  # pages of up to 1000: far more instances than any run makes
                req = spb.ListInstanceIDsRequest(pageSize=1000)
                if token:
                    req.continuationToken = token
                page = await self.stubs[app].ListInstanceIDs(req, timeout=CALL_TIMEOUT)
                out.update((app, iid) for iid in page.instanceIds)
                token = page.continuationToken if page.HasField("continuationToken") else None
                if not token or not page.instanceIds:
                    break
        return out

    async def audit(self, batch: list[Case]) -> None:
        """What the batch stored: no field of an instance's state or history is larger than
        --max-payload-bytes (the largest bound any single field may have: every field has one),
        and every instance the server lists can be read by its ID (issue 10, item 3: worker-made
        child and detached IDs that no RPC accepts)."""
        try:
            listed = await self._listed()
        except grpc.aio.AioRpcError as err:
            self._flag(
                batch,
                None,
                f"ListInstanceIDs failed in the audit: {err.code().name} {(err.details() or '')[:200]}",
            )
            return
        bystanders = set(self.bystanders)
        for c in batch:  # suspects for findings in later batches
            if any("huge-" in m or "many-" in m for m in c.mutations):
                for key in c.touched:
                    self._aimed_at.setdefault(key, []).append(c)
        new = listed - self._audited - bystanders
        touched = {t for c in batch for t in c.touched if t[0] in APPS} - bystanders
        self._audited |= new
        for key in sorted(new | touched)[:400]:  # bounded: a batch makes far fewer
            app, iid = key
            state_code, state_details, state = await self._read(app, "GetInstance", iid)
            unreadable = state_code != Code.OK or (state is not None and not state.exists)
            if key in new and unreadable and (state_code != Code.OK or key in await self._listed()):
                # (exists=false is checked against a second listing: a purge may have come between)
                self._flag(
                    batch,
                    key,
                    f"an instance the server lists cannot be read by its ID: GetInstance -> {state_code.name}"
                    + (" exists=false" if state_code == Code.OK else f" {_normalize(state_details)}"),
                    created=True,
                    example=f"ID of {len(iid)} characters: {iid[:60]!r}",
                )
            if state is None or not state.exists:
                continue
            findings = [
                (f"state.{name}", size) for name, size in oversized(state.workflowState, PAYLOAD_LIMIT)
            ]
            _, _, history = await self._read(app, "GetInstanceHistory", iid)
            if history is not None:
                findings += [(f"history.{name}", size) for name, size in oversized(history, PAYLOAD_LIMIT)]
            # A field kept in both (state.tags, history...executionStarted.tags) is one finding.
            history_paths = [w for w, _ in findings if w.startswith("history.")]
            for where, size in dict(findings).items():
                if where.startswith("state.") and any(h.endswith(where[5:]) for h in history_paths):
                    continue
                self._flag(
                    batch,
                    key,
                    f"stored a field over --max-payload-bytes ({PAYLOAD_LIMIT} B): {where}",
                    size=size,
                    example=f"{size} B",
                )

    async def _read(self, app: str, rpc: str, iid: str) -> tuple[Code, str, Any]:
        request: pbmessage.Message
        if rpc == "GetInstance":
            request = spb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True)
        else:
            request = spb.GetInstanceHistoryRequest(instanceId=iid)
        try:
            return Code.OK, "", await getattr(self.stubs[app], rpc)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            if err.code() not in ALLOWED:
                self._flag([], (app, iid), f"audit: {rpc} of a stored instance got {err.code().name}")
            return err.code(), err.details() or "", None

    def _flag(
        self,
        batch: list[Case],
        key: tuple[str, str] | None,
        problem: str,
        size: int | None = None,
        created: bool = False,
        example: str = "",
    ) -> None:
        """Charge an audit finding, once, to the case that most likely caused it.

        A value too large: a case that carried one of about that size (preferably aimed at the
        instance, in this batch or before), else one aimed at it with many entries or copies. An instance that cannot be read by its ID (`created`):
        a case that put an ID like it into an action (a worker-made child is known only by its
        ID; the cases that later answered its turns did not make it). Else the batch."""
        if (key, problem) in self._flagged:
            return  # an instance is audited again whenever a later case touches it
        self._flagged.add((key, problem))
        # An activity's result reaches its workflow's history only with a later turn, maybe in
        # a later batch: every case that ever aimed a big value at the instance is a suspect.
        aimed = []
        if not created and key is not None:
            aimed = [*self._aimed_at.get(key, []), *(c for c in batch if key in c.touched)]
        if created and key is not None:
            hints = _id_hints(key[1])
            sized = [
                c
                for c in batch
                if any("instanceid" in m.lower() and any(h in m for h in hints) for m in c.mutations)
            ]
        else:
            sized = (
                [c for c in aimed if _carried(c, size)]
                or [c for c in batch if _carried(c, size)]
                or [c for c in aimed if any("many-" in m for m in c.mutations)]
            )
        chosen = (sized or aimed or [None])[-1]
        if chosen is None:
            chosen = Case(family=self.family, index=batch[0].index if batch else -1, rpc="(batch)")
            span = f"{batch[0].id}..{batch[-1].id}" if batch else "set-up"
            chosen.mutations = [f"one of the cases {span}"]
            self.cases.append(chosen)
        where = f" on {key[0]}/{key[1][:40]!r}" if key else ""
        chosen.problems.append(f"{problem} — {example}{where}")  # after the dash: not grouped on

    def collect_logs(self) -> list[str]:
        new = self.tap.lines[self._seen_logs :]
        self._seen_logs = len(self.tap.lines)
        return new

    @contextlib.contextmanager
    def case(self, index: int, rpc: str, app: str = "") -> Iterator[Case]:
        case = Case(family=self.family, index=index, rpc=rpc, app=app)
        self.collect_logs()  # what came before belongs to earlier cases
        self.current = case
        began = time.monotonic()
        try:
            yield case
        finally:
            case.seconds = time.monotonic() - began
            case.logs = self.collect_logs()
            for line in case.logs:
                case.problems.append(f"server logged an error: {line}")
            self.cases.append(case)

    def judge(
        self, case: Case, code: Code, details: str, *, cancelled_by_us: bool = False, decodable: bool = True
    ) -> None:
        case.code, case.details = code.name, details[:300]
        if code not in ALLOWED and not (code == Code.CANCELLED and cancelled_by_us):
            case.problems.append(f"status {code.name}")
        if code == Code.RESOURCE_EXHAUSTED and "metadata" in details.lower():
            case.problems.append("error message too large for gRPC metadata (it echoes the input)")
        if len(details) > MAX_DETAILS:
            case.problems.append(f"error message of {len(details)} characters (it echoes the input)")
        if not decodable and code == Code.OK:
            case.problems.append("an undecodable request was answered OK")

    # -- calls -------------------------------------------------------------------------------

    async def unary(
        self, stub: Any, rpc: str, request: pbmessage.Message, timeout: float = CALL_TIMEOUT
    ) -> tuple[Code, str]:
        return await _status(getattr(stub, rpc)(request, timeout=timeout))

    async def stream(self, call: Any) -> tuple[Code, str, bool]:
        """(status, details, cancelled by us) of a GetWorkItems stream read for STREAM_HOLD."""
        try:
            async with asyncio.timeout(STREAM_HOLD):
                while True:
                    item = await call.read()
                    if item is grpc.aio.EOF:
                        break
        except TimeoutError:
            call.cancel()
            return Code.CANCELLED, "", True
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or "", False
        return await call.code(), await call.details() or "", False

    def raw(self, app: str, rpc: str, timeout: float | None = None) -> Callable[[bytes], Any]:
        """The method with identity serializers: bytes in, bytes out."""
        path = f"/TaskHubSidecarService/{rpc}"
        if rpc == "GetWorkItems":
            method = self.channels[app].unary_stream(path)
        else:
            method = self.channels[app].unary_unary(path)
        return lambda data: method(data, timeout=timeout or CALL_TIMEOUT)

    # -- the report ----------------------------------------------------------------------------

    def failures(self) -> list[Case]:
        return [c for c in self.cases if c.problems]

    def report(self) -> str:
        bad = self.failures()
        if not bad:
            return ""
        groups: dict[str, list[Case]] = {}
        examples: dict[str, str] = {}
        for c in bad:
            for signature, example in _signatures(c):
                groups.setdefault(signature, []).append(c)
                examples.setdefault(signature, f"{c.code or '-'}: {example[:200]}" if example else "")
        lines = [
            f"fuzz[{self.store}] {self.family}: {len(bad)} of {len(self.cases)} cases failed, "
            f"{len(groups)} distinct failures. Reproduce with FUZZ_SEED={self.seed} "
            f"FUZZ_CASES={settings.CASES}; cases are family#index (index in this family's run).",
        ]
        for n, (signature, members) in enumerate(sorted(groups.items()), 1):
            lines.append(f"{n}. {signature}")
            shown: dict[str, str] = {}
            for c in members:
                what = "; ".join(m[:120] for m in c.mutations) or "(no mutation)"
                shown.setdefault(_normalize(what), f"{c.id} app {c.app}: {what}")
            lines.extend(f"     {s}" for s in list(shown.values())[:6])
            if len(shown) > 6:
                lines.append(f"     ... {len(members)} cases in all")
            if examples[signature]:
                lines.append(f"     e.g. {examples[signature]}")
        self._dump(bad)
        return "\n".join(lines)

    def _dump(self, bad: list[Case]) -> None:
        """FUZZ_REPORT=path appends every failing case as a JSON line, for whoever fixes them."""
        path = os.environ.get("FUZZ_REPORT")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as out:
            for c in bad:
                row = {"store": self.store, "seed": self.seed, **c.__dict__}
                out.write(json.dumps(row, default=str) + "\n")


def _id_hints(instance_id: str) -> list[str]:
    """The mutation labels (mutate.string_value) that make IDs like this one."""
    if "\x00" in instance_id:
        return ["nul"]
    if any(ord(c) < 32 or ord(c) == 127 for c in instance_id):
        return ["control"]
    if "/" in instance_id:
        return ["slash", "injection"]
    if len(instance_id) > 1024:
        return ["len-", "huge-"]
    return ["unicode", "blank", "injection"]


def _carried(case: Case, size: int | None) -> bool:
    return size is not None and any(_near(m, size) for m in case.mutations)


def _near(mutation: str, size: int) -> bool:
    """Whether a mutation put in a value of about `size` bytes: one huge value (stored as it
    came, or with a prefix), or several in a map."""
    sizes = [int(b) for b in re.findall(r"huge-(\d+)B", mutation)]
    sizes += [int(n) * int(b) for n, b in re.findall(r"(\d+)x(\d+)B", mutation)]
    return any(abs(s - size) <= max(4096, s // 50) for s in sizes)


def _signatures(case: Case) -> list[tuple[str, str]]:
    """(signature, example) per distinct failure in a case: the RPC, the status and what went
    wrong, with what the server logged folded into the status it caused. Whatever follows " — "
    in a problem or log line is an example, kept out of the signature."""
    logs = [line.split(" — ", 1) for line in case.logs]
    out = []
    for problem in case.problems:
        head, _, tail = problem.partition(" — ")
        if problem.startswith("server logged") and any(p.startswith("status ") for p in case.problems):
            continue  # folded into the status below
        if problem.startswith("status "):
            cause = f"logged: {logs[0][0]}" if logs else _normalize(case.details)
            example = logs[0][-1] if logs else case.details
            out.append((f"{case.rpc} -> {case.code}: {cause}", example))
        elif problem.startswith("server logged"):
            out.append((f"{case.rpc} -> {case.code}: {head}", tail))
        else:
            out.append((f"{case.rpc} -> {case.code or '-'}: {_normalize(head)}", tail or case.details))
    return out


_LIVE = frozenset(
    {opb.ORCHESTRATION_STATUS_PENDING, opb.ORCHESTRATION_STATUS_RUNNING, opb.ORCHESTRATION_STATUS_SUSPENDED}
)


def _item_name(item: spb.WorkItem) -> str:
    if item.HasField("activityRequest"):
        return f"activity {item.activityRequest.workflowInstance.instanceId[:60]!r}/{item.activityRequest.taskId}"
    return f"turn of {item.workflowRequest.instanceId[:60]!r}"


async def _status(call: Awaitable[Any]) -> tuple[Code, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return Code.OK, ""
