"""The fuzz suite of issue 10: raw gRPC against a real server, on SQLite and on MongoDB.

Three families of cases, each against a fresh server with its bystanders (harness.py):
- client: every one of the 17 RPCs with a valid request, aimed at the fuzz's own instances,
  with one or more fields mutated by type (mutate.py walks the descriptors, so every field of
  every request type takes its turn);
- worker: real work items, answered by raw workers with mutated WorkflowResponse /
  ActivityResponse messages (random actions, malformed and oversized fields, bad timestamps,
  wrong or missing tokens and task IDs, other apps' tokens, unknown action kinds, random
  router targets);
- garbage: bytes that are not a valid message, to every method, with identity serializers.

Every case must get a status other than UNKNOWN/INTERNAL (harness.ALLOWED), log no error on
the server, and keep its error message short; after every batch each app answers Hello and no
bystander's state or history changed. Failures are collected over the whole run and reported
grouped (one line per distinct failure, with the mutations that cause it and the seed).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message as pbmessage

from backend._proto import orchestrator_service_pb2 as spb
from tests.fuzz import builders, settings
from tests.fuzz.builders import APPS, REQUEST_TYPES, TARGET_APPS
from tests.fuzz.garbage import decodes, garbage
from tests.fuzz.harness import WAIT_TIMEOUT, Case, Code, FuzzWorker, Harness
from tests.fuzz.mutate import MAX_MESSAGE_BYTES, FieldPath, field_paths, mutate, string_value

RPCS = list(REQUEST_TYPES)
_WAITS = ("WaitForInstanceStart", "WaitForInstanceCompletion")


class Rotation:
    """Every field path of a message type in turn (a seeded order), so a run of at least as
    many cases as paths mutates each of them."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"{seed}/rotation")
        self._paths: dict[str, list[FieldPath]] = {}
        self._next: dict[str, int] = {}

    def paths(self, msg: pbmessage.Message) -> list[FieldPath]:
        name = msg.DESCRIPTOR.full_name
        if name not in self._paths:
            paths = field_paths(msg.DESCRIPTOR)
            self._rng.shuffle(paths)
            self._paths[name], self._next[name] = paths, 0
        return self._paths[name]

    def next(self, msg: pbmessage.Message) -> FieldPath:
        paths = self.paths(msg)
        name = msg.DESCRIPTOR.full_name
        n = self._next[name]
        self._next[name] = n + 1
        return paths[n % len(paths)]


def mutate_message(
    msg: pbmessage.Message,
    rng: random.Random,
    rotation: Rotation,
    pool: list[str],
    prepare: Callable[[pbmessage.Message, FieldPath], None] | None = None,
) -> list[str]:
    """One field by rotation, sometimes one or two more at random; a few cases stay valid."""
    paths = rotation.paths(msg)
    if not paths or rng.random() < 0.08:
        return ["(valid, unmutated)"]
    chosen = [rotation.next(msg), *(rng.choice(paths) for _ in range(rng.choice([0, 0, 0, 1, 2])))]
    labels = []
    for path in chosen:
        trial = type(msg)()
        trial.CopyFrom(msg)
        if prepare is not None:
            prepare(trial, path)
        label = mutate(trial, path, rng, pool)
        if trial.ByteSize() <= MAX_MESSAGE_BYTES:  # else skipped: memory stays bounded
            msg.CopyFrom(trial)
            labels.append(label)
    return labels or ["(valid, unmutated)"]


def _schedule(seed: int) -> list[str]:
    """The client family's order of RPCs: each RPC about as often as its request has field
    paths (at least 4), so every path of every request gets several mutations. The completions
    are here with made-up tokens only; the worker family answers real work items."""
    rotation = Rotation(seed)
    weights = {
        rpc: 4 if rpc.startswith("Complete") else max(4, len(rotation.paths(cls())))
        for rpc, cls in REQUEST_TYPES.items()
    }
    order = [rpc for rpc, w in weights.items() for _ in range(w)]
    random.Random(f"{seed}/schedule").shuffle(order)
    return order


def _aimed(msg: pbmessage.Message, caller: str) -> list[tuple[str, str]]:
    """The instance a request names, on the app it acts on (the router's target, if any)."""
    app = caller
    if "router" in msg.DESCRIPTOR.fields_by_name and msg.HasField("router"):
        app = msg.router.targetAppID or caller  # type: ignore[attr-defined]
    for name in ("instanceId", "sourceInstanceID", "newInstanceID"):
        if name in msg.DESCRIPTOR.fields_by_name and getattr(msg, name):
            return [(app, getattr(msg, name))]
    return []


async def _run(fuzz_store: tuple[str, str], family: str, body: Any) -> None:
    store, url = fuzz_store
    h = Harness(store, url, settings.SEED, family)
    try:
        await h.start()
        await body(h, settings.cases(family))
        await h.end_batch([])
    finally:
        await h.stop()
    if h.failures():
        pytest.fail(h.report(), pytrace=False)


# -- client RPCs -----------------------------------------------------------------------------------


async def _client_case(h: Harness, case: Case, rpc: str, caller: str, msg: pbmessage.Message) -> None:
    stub = h.stubs[caller]
    if rpc == "GetWorkItems":
        code, details, cancelled = await h.stream(stub.GetWorkItems(msg, timeout=30.0))
        h.judge(case, code, details, cancelled_by_us=cancelled)
        return
    timeout = WAIT_TIMEOUT if rpc in _WAITS else None
    code, details = await (h.unary(stub, rpc, msg, timeout) if timeout else h.unary(stub, rpc, msg))
    h.judge(case, code, details)
    if rpc == "StartInstance" and code == Code.OK:
        assert isinstance(msg, spb.CreateInstanceRequest)
        app = msg.router.targetAppID if msg.HasField("router") and msg.router.targetAppID else caller
        if app in APPS and msg.instanceId:
            h.pools.add(app, msg.instanceId)


async def _client_family(h: Harness, n: int) -> None:
    await h.make_targets(wait=True)
    rotation = Rotation(h.seed)
    schedule = _schedule(h.seed)
    batch: list[Case] = []
    for index in range(n):
        rpc = schedule[index % len(schedule)]
        rng = h.rng(index)
        caller = rng.choice(APPS)
        msg = builders.client_request(rpc, rng, h.pools, caller, f"c{index}")

        def prepare(m: pbmessage.Message, path: FieldPath, rng: random.Random = rng) -> None:
            builders.prepare(m, path, rng, h.pools, 0)

        with h.case(index, rpc, caller) as case:
            case.mutations = mutate_message(msg, rng, rotation, h.pools.strings(), prepare)
            if note := builders.guard(rpc, msg, h.pools):
                case.mutations.append(note)
            case.touched = _aimed(msg, caller)
            await _client_case(h, case, rpc, caller, msg)
        batch.append(case)
        if len(batch) == settings.BATCH:
            await h.end_batch(batch)
            await h.make_targets(wait=False)  # what cases purged or terminated comes back
            batch = []


async def test_client_rpcs(fuzz_store: tuple[str, str]) -> None:
    await _run(fuzz_store, "client", _client_family)


# -- worker completions -----------------------------------------------------------------------------


class Work:
    """The raw workers of both apps, what they received, and items to answer again."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.workers: dict[str, FuzzWorker] = {}
        self.again: list[tuple[str, spb.WorkItem, int]] = []  # not answered OK yet: (app, item, tries)
        self.started = 0

    def connect(self, rng: random.Random) -> None:
        for app in APPS:
            caps = rng.sample(
                [spb.WORKER_CAPABILITY_STATEFUL_HISTORY, spb.WORKER_CAPABILITY_HEALTH_PING, 99],
                rng.randrange(4),
            )
            self.workers[app] = FuzzWorker(self.h.stubs[app], caps)

    async def recycle(self, rng: random.Random, batch: list[Case]) -> None:
        """New streams each batch: what the old ones held unanswered is dispatched again, so no
        item waits on a case that chose not to answer it."""
        for app, worker in self.workers.items():
            if (ended := worker.torn_down()) is not None:
                case = Case(
                    family="worker", index=batch[-1].index if batch else -1, rpc="GetWorkItems", app=app
                )
                where = f"during {batch[0].id}..{batch[-1].id}" if batch else "while waiting for work"
                case.mutations = [f"(the fuzz worker's own stream, {where})"]
                case.code, case.details = ended[0].name, ended[1][:300]
                case.problems.append("the server tore down a worker stream")
                self.h.cases.append(case)
            await worker.close()
        self.again.clear()
        self.connect(rng)

    def queued(self) -> int:
        return sum(w.items.qsize() for w in self.workers.values()) + len(self.again)

    async def _start(self, rng: random.Random, index: int) -> None:
        for k in range(2):
            app = rng.choice(APPS)
            iid = f"fz-w{index}-{k}"
            req = spb.CreateInstanceRequest(
                instanceId=iid, name=rng.choice(["wf", "chain"]), input=builders.payload(rng)
            )
            code, _ = await self.h.unary(self.h.stubs[app], "StartInstance", req)
            if code == Code.OK:
                self.h.pools.add(app, iid)
                self.started += 1

    async def next(self, rng: random.Random, index: int) -> tuple[str, spb.WorkItem, int] | None:
        """The next item to answer; starts new workflows when there is none. Streams that may be
        full of items no case answered are replaced after 5 s (a server may rightly bound what
        one stream holds); None when nothing came within 15 s."""
        if self.again and rng.random() < 0.3:
            return self.again.pop(0)
        began = time.monotonic()
        idle_since = None
        recycled = False
        while time.monotonic() - began < 15.0:
            for app in rng.sample(APPS, len(APPS)):
                items = self.workers[app].items
                if not items.empty():
                    return app, items.get_nowait(), 0
            if self.again:
                return self.again.pop(0)
            if not recycled and time.monotonic() - began > 5.0:
                await self.recycle(rng, [])
                recycled = True
            if idle_since is None or time.monotonic() - idle_since > 2.0:
                await self._start(rng, index)
                idle_since = time.monotonic()
            await asyncio.sleep(0.02)
        return None


_SPECIALS = [
    "token: random",
    "token: empty",
    "token: stale",
    "token: of another item",
    "app: the other app's listener",
    "instanceId: another instance",
    "action: unknown kind",
    "router: random targetAppID",
    "taskId: another task",
]


def _special(rng: random.Random, resp: Any, work: Work, pools: builders.Pools) -> str:
    """An identity or routing mutation (what the descriptor walk cannot mean), by its label; for
    "app: ..." the caller sends the answer on the other app's listener."""
    kind = rng.choice(_SPECIALS)
    workflow = isinstance(resp, spb.WorkflowResponse)
    if kind == "token: random":
        resp.completionToken = rng.randbytes(16).hex()
    elif kind == "token: empty":
        resp.completionToken = ""  # the untokened path: matched by instance (and task) in the app
    elif kind == "token: stale" and pools.tokens:
        resp.completionToken = rng.choice(pools.tokens)
    elif kind == "token: of another item" and work.again:
        resp.completionToken = rng.choice(work.again)[1].completionToken
    elif kind == "app: the other app's listener":
        pass  # the caller sends it there
    elif kind == "instanceId: another instance":
        resp.instanceId = pools.target(rng, "fuzz")[1]
    elif kind == "action: unknown kind" and workflow:
        resp.actions.append(builders.unknown_action(len(resp.actions) + 50, rng))
    elif kind == "router: random targetAppID" and workflow and resp.actions:
        action = rng.choice(resp.actions)
        action.router.targetAppID = (
            rng.choice(TARGET_APPS) if rng.random() < 0.6 else string_value(rng, [])[0]
        )
        kind += f" {action.router.targetAppID[:20]!r}"
    elif kind == "taskId: another task" and not workflow:
        # int32 field: the neighbour wraps at the top so every choice stays encodable
        resp.taskId = rng.choice([-1, (resp.taskId + 1) % 2**31, 2**31 - 1])
    else:
        return "(no identity mutation applies)"
    return kind


def _maybe_pending(code: Code, mutations: list[str]) -> bool:
    """Whether a refused answer left the item in flight (refused before it was matched to its
    work item: a token, app, instance or task that did not fit) and worth answering again; an
    answer refused for its content has consumed the item (the turn is offered anew)."""
    if code in (Code.NOT_FOUND, Code.PERMISSION_DENIED):
        return True
    identity = ("token", "app:", "instanceId", "taskId", "completionToken")
    return code == Code.INVALID_ARGUMENT and any(m.startswith(identity) for m in mutations)


async def _worker_family(h: Harness, n: int) -> None:
    await h.stop_honest_workers()  # from here on only the fuzz's raw workers answer
    rotation = Rotation(h.seed)
    work = Work(h)
    work.connect(h.rng(-1))
    batch: list[Case] = []
    try:
        for index in range(n):
            rng = h.rng(index)
            got = await work.next(rng, index)
            if got is None:
                with h.case(index, "(dispatch)") as case:
                    case.problems.append("no work item arrived within 15 s of starting new workflows")
                    case.mutations = [f"{work.started} workflows started so far"]
                batch.append(case)
                continue
            app, item, tries = got
            resp: pbmessage.Message
            first_id = 0
            if item.HasField("workflowRequest"):
                rpc = rng.choice(["CompleteOrchestratorTask", "CompleteWorkflowTask"])
                resp = builders.workflow_response(item, rng, h.pools, finish=work.queued() > 30)
                first_id = builders.first_free_id(item.workflowRequest)
                iid = item.workflowRequest.instanceId
            else:
                rpc = "CompleteActivityTask"
                resp = builders.activity_response(item, rng)
                iid = item.activityRequest.workflowInstance.instanceId

            def prepare(
                m: pbmessage.Message, path: FieldPath, rng: random.Random = rng, first: int = first_id
            ) -> None:
                builders.prepare(m, path, rng, h.pools, first)

            send_app = app
            with h.case(index, rpc, app) as case:
                case.touched = [(app, iid)]
                case.mutations = []
                if rng.random() < 0.75:
                    case.mutations += mutate_message(resp, rng, rotation, h.pools.strings(), prepare)
                if rng.random() < 0.3:
                    label = _special(rng, resp, work, h.pools)
                    case.mutations.append(label)
                    if label.startswith("app:"):
                        send_app = next(a for a in APPS if a != app)
                if not case.mutations:
                    case.mutations = ["(valid, unmutated)"]
                if tries:
                    case.mutations.append(f"(answer {tries + 1} to this item)")
                code, details = await h.unary(h.stubs[send_app], rpc, resp)
                h.judge(case, code, details)
                if send_app != app and code == Code.OK and resp.completionToken == item.completionToken:
                    case.problems.append(f"app {send_app} completed a work item dispatched to app {app}")
            if code == Code.OK:
                h.pools.tokens.append(item.completionToken)
                del h.pools.tokens[:-50]
            elif tries < 2 and _maybe_pending(code, case.mutations):
                work.again.append((app, item, tries + 1))
            batch.append(case)
            if len(batch) == settings.BATCH:
                await work.recycle(rng, batch)
                await h.end_batch(batch)
                batch = []
    finally:
        for worker in work.workers.values():
            await worker.close()


async def test_worker_completions(fuzz_store: tuple[str, str]) -> None:
    await _run(fuzz_store, "worker", _worker_family)


# -- garbage bytes ------------------------------------------------------------------------------------


async def _garbage_family(h: Harness, n: int) -> None:
    await h.make_targets(wait=True)
    batch: list[Case] = []
    for index in range(n):
        rpc = RPCS[index % len(RPCS)]
        rng = h.rng(index)
        caller = rng.choice(APPS)
        cls = REQUEST_TYPES[rpc]
        valid = builders.client_request(rpc, rng, h.pools, caller, f"g{index}").SerializeToString()
        for _ in range(20):
            data, kind = garbage(rng, cls, valid)
            decoded = decodes(cls, data)
            # Bytes that happen to decode as a purge by filter might rightly purge bystanders.
            if decoded is None or builders.guard(rpc, decoded, h.pools) is None:
                break
        else:
            data, kind, decoded = b"\xff", "fallback (a lone varint byte)", None
        with h.case(index, rpc, caller) as case:
            case.mutations = [
                f"bytes: {kind}, {len(data)} B, {'decodable' if decoded is not None else 'undecodable'}"
            ]
            call = h.raw(caller, rpc, WAIT_TIMEOUT if rpc in _WAITS else None)(data)
            if rpc == "GetWorkItems":
                code, details, cancelled = await h.stream(call)
            else:
                try:
                    await call
                    code, details, cancelled = Code.OK, "", False
                except grpc.aio.AioRpcError as err:
                    code, details, cancelled = err.code(), err.details() or "", False
            h.judge(case, code, details, cancelled_by_us=cancelled, decodable=decoded is not None)
        batch.append(case)
        if len(batch) == settings.BATCH:
            await h.end_batch(batch)
            batch = []


async def test_garbage_bytes(fuzz_store: tuple[str, str]) -> None:
    await _run(fuzz_store, "garbage", _garbage_family)


# -- the mutator itself (no server) -----------------------------------------------------------------


def test_every_field_of_every_request_type_is_mutated() -> None:
    """The paths reach every field of every RPC's request type, and each path takes mutations
    (four seeded draws) that stay below the size cap and still encode as that message."""
    assert len(RPCS) == 17
    assert set(RPCS) == {m.name for m in spb.DESCRIPTOR.services_by_name["TaskHubSidecarService"].methods}
    for rpc, cls in REQUEST_TYPES.items():
        paths = field_paths(cls.DESCRIPTOR)
        assert {p.fields[0].name for p in paths} == {f.name for f in cls.DESCRIPTOR.fields}, rpc
        for path in paths:
            for k in range(4):
                msg = cls()
                label = mutate(msg, path, random.Random(f"{rpc}/{path}/{k}"), ["x"])
                assert label.startswith(str(path))
                assert msg.ByteSize() <= MAX_MESSAGE_BYTES, label
                cls.FromString(msg.SerializeToString())  # still a message our own runtime reads


@pytest.mark.parametrize("rpc", RPCS)
def test_requests_never_aim_at_bystanders(rpc: str) -> None:
    """Base requests name only the fuzz's own instances, and the guard leaves them alone, for
    many draws: a bystander that changes is then a leak, never a request that asked for it."""
    pools = builders.Pools(t0=builders.stamp(0))
    pools.add("fuzz", "fz-hold")
    pools.add("peer", "fz-done")
    for k in range(50):
        msg = builders.client_request(rpc, random.Random(f"{rpc}/{k}"), pools, "fuzz", f"c{k}")
        assert isinstance(msg, REQUEST_TYPES[rpc])
        assert b"bystander" not in msg.SerializeToString()
        assert builders.guard(rpc, msg, pools) is None
