"""Helpers for the multi-replica tests: databases, worker processes, and exactly-once
checks on the history that the servers wrote to MongoDB.

Never import `backend` or `durabletask` here (their protos clash with dapr's); history
events are decoded with the dapr wheel's own generated protos.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dapr.ext.workflow._durabletask.internal import history_events_pb2 as hpb
from dapr.ext.workflow._durabletask.internal import orchestration_pb2 as opb
from pymongo import MongoClient

from tests.e2e import harness

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "cluster_worker.py"

COMPLETED = int(opb.ORCHESTRATION_STATUS_COMPLETED)
TERMINAL = [
    COMPLETED,
    int(opb.ORCHESTRATION_STATUS_FAILED),
    int(opb.ORCHESTRATION_STATUS_TERMINATED),
    int(opb.ORCHESTRATION_STATUS_CANCELED),
]

# Event kinds that only mark turn boundaries: their number depends on how the work was
# batched into turns, so the exact-once checks do not count them.
TURN_MARKERS = {"workflowStarted", "workflowCompleted"}


def require_mongodb_url() -> str:
    url = os.environ.get(harness.MONGODB_ENV)
    if not url:
        raise RuntimeError(
            f"tests/e2e/cluster needs a MongoDB replica set: {harness.MONGODB_ENV} is not set. "
            "Run with E2E_MONGOD=1 (starts a throwaway mongod for the session) or point "
            f"{harness.MONGODB_ENV} at a replica set (mongodb://HOST:PORT/?replicaSet=NAME)."
        )
    return url


def new_database_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def store_url(base_url: str, database: str) -> str:
    """`base_url` (mongodb://host:port/?query) with its path set to /database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def mongo_client(base_url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(base_url, serverSelectionTimeoutMS=10000)


# ---------------------------------------------------------------------------- workers


def start_worker(port: int, app: str, name: str, count_file: Path) -> harness.PythonScript:
    return harness.run_worker_script(
        WORKER_SCRIPT,
        ["--port", str(port), "--app", app, "--name", name, "--count-file", str(count_file)],
        name=name,
    )


def read_counts(count_file: Path) -> list[tuple[str, str, str]]:
    """(worker, activity, key) per recorded activity execution (or workflow turn)."""
    if not count_file.exists():
        return []
    rows = []
    for line in count_file.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) == 4:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


DISPATCH_RE = re.compile(r"dispatch workflow instance=(\S+) app=(\S+)")


def dispatches(log_text: str, app: str) -> Counter[str]:
    """Workflow turns that a server dispatched for `app` (from its debug log), per instance."""
    return Counter(m.group(1) for m in DISPATCH_RE.finditer(log_text) if m.group(2) == app)


# ---------------------------------------------------------------------------- history


def event_kind(event: hpb.HistoryEvent) -> str:
    kind = event.WhichOneof("eventType")
    assert kind is not None, f"history event without a type: {event}"
    return kind


@dataclass
class Stored:
    """One instance as the store has it."""

    app_id: str
    instance_id: str
    status: int
    history_len: int
    seqs: list[int] = field(default_factory=list)
    events: list[hpb.HistoryEvent] = field(default_factory=list)

    def output(self) -> Any:
        done = [e for e in self.events if e.HasField("executionCompleted")]
        if not done or not done[-1].executionCompleted.HasField("result"):
            return None
        return json.loads(done[-1].executionCompleted.result.value)

    def describe(self) -> str:
        lines = [
            f"{self.app_id}/{self.instance_id}: status={opb.OrchestrationStatus.Name(self.status)} "
            f"history_len={self.history_len} stored_events={len(self.events)}"
        ]
        for seq, e in zip(self.seqs, self.events, strict=False):
            lines.append(f"  [{seq}] {describe_event(e)}")
        return "\n".join(lines)


def describe_event(e: hpb.HistoryEvent) -> str:
    kind = event_kind(e)
    body = getattr(e, kind)
    detail = ""
    if kind == "taskScheduled":
        detail = f" name={body.name}"
    elif kind in (
        "taskCompleted",
        "taskFailed",
        "childWorkflowInstanceCompleted",
        "childWorkflowInstanceFailed",
    ):
        detail = f" taskScheduledId={body.taskScheduledId}"
    elif kind == "timerFired":
        detail = f" timerId={body.timerId}"
    elif kind == "childWorkflowInstanceCreated":
        detail = f" instanceId={body.instanceId} name={body.name}"
    elif kind == "executionCompleted":
        detail = f" status={body.workflowStatus} result={body.result.value[:120]!r}"
    elif kind == "executionStarted":
        detail = f" name={body.name}"
    return f"eventId={e.eventId} {kind}{detail}"


def load_instances(db: Any, app_id: str, instance_ids: Iterable[str] | None = None) -> dict[str, Stored]:
    """Every instance of `app_id` (or only `instance_ids`) with its history, in seq order."""
    filt: dict[str, Any] = {"app_id": app_id}
    if instance_ids is not None:
        filt["instance_id"] = {"$in": list(instance_ids)}
    out: dict[str, Stored] = {}
    chunks: dict[str, list[dict[str, Any]]] = {}
    for doc in db.instances.find(filt, {"state": 0}):
        out[doc["instance_id"]] = Stored(
            app_id=app_id,
            instance_id=doc["instance_id"],
            status=int(doc["status"]),
            history_len=int(doc.get("history_len", 0)),
        )
        # Small early turns are held in the instance document (store/mongo/history.py).
        chunks[doc["instance_id"]] = list(doc.get("hist") or [])
    for doc in db.history.find(filt):
        if doc["instance_id"] not in out:  # history for an instance that has no instance document
            out[doc["instance_id"]] = Stored(app_id, doc["instance_id"], -1, -1)
        chunks.setdefault(doc["instance_id"], []).append(doc)
    for iid, found in chunks.items():
        inst = out[iid]
        for doc in sorted(found, key=lambda d: int(d["seq"])):
            # One event per document, or a turn's events in one document holding [seq, end).
            raw = doc["events"] if "events" in doc else [doc["event"]]
            for i, data in enumerate(raw):
                inst.seqs.append(int(doc["seq"]) + i)
                inst.events.append(hpb.HistoryEvent.FromString(data))
    return out


def count_terminal(db: Any, app_id: str, instance_ids: list[str]) -> int:
    return db.instances.count_documents(
        {"app_id": app_id, "instance_id": {"$in": instance_ids}, "status": {"$in": TERMINAL}}
    )


def exactly_once_problems(inst: Stored, expected: Mapping[str, int]) -> list[str]:
    """Everything wrong with one completed instance's history.

    `expected`: exact number of each non-turn-marker event kind (kinds not named must not
    appear at all). Checks, besides the counts: the stored seqs are 0..n-1 and n equals the
    instance's history_len; one ExecutionStarted first and one ExecutionCompleted (COMPLETED)
    last among the non-marker events; the ids of TaskScheduled / TimerCreated /
    ChildWorkflowInstanceCreated are unique; every one of them has exactly one result
    (TaskCompleted / TimerFired / ChildWorkflowInstanceCompleted) and every result answers one
    of them.
    """
    p: list[str] = []
    if inst.status != COMPLETED:
        p.append(f"status is {inst.status}, not COMPLETED")
    if inst.seqs != list(range(len(inst.seqs))):
        p.append(f"history seqs are not 0..n-1: {inst.seqs}")
    if inst.history_len != len(inst.events):
        p.append(f"history_len={inst.history_len} but {len(inst.events)} history documents")

    kinds = [event_kind(e) for e in inst.events]
    counts = Counter(k for k in kinds if k not in TURN_MARKERS)
    if dict(counts) != dict(expected):
        p.append(f"event counts {dict(sorted(counts.items()))} != expected {dict(sorted(expected.items()))}")
    real = [e for e in inst.events if event_kind(e) not in TURN_MARKERS]
    if not real or event_kind(real[0]) != "executionStarted":
        p.append("first event (besides turn markers) is not ExecutionStarted")
    if not real or event_kind(real[-1]) != "executionCompleted":
        p.append("last event (besides turn markers) is not ExecutionCompleted")
    elif real[-1].executionCompleted.workflowStatus != COMPLETED:
        p.append(f"ExecutionCompleted has status {real[-1].executionCompleted.workflowStatus}")

    actions: dict[str, defaultdict[int, int]] = {
        "taskScheduled": defaultdict(int),
        "timerCreated": defaultdict(int),
        "childWorkflowInstanceCreated": defaultdict(int),
    }
    results_for = {
        "taskCompleted": "taskScheduled",
        "taskFailed": "taskScheduled",
        "timerFired": "timerCreated",
        "childWorkflowInstanceCompleted": "childWorkflowInstanceCreated",
        "childWorkflowInstanceFailed": "childWorkflowInstanceCreated",
    }
    answered: dict[str, defaultdict[int, int]] = {k: defaultdict(int) for k in actions}
    for e in inst.events:
        kind = event_kind(e)
        if kind in actions:
            actions[kind][e.eventId] += 1
        elif kind in results_for:
            body = getattr(e, kind)
            ref = body.timerId if kind == "timerFired" else body.taskScheduledId
            answered[results_for[kind]][ref] += 1
    for kind, ids in actions.items():
        dup = sorted(i for i, n in ids.items() if n != 1)
        if dup:
            p.append(f"{kind} ids recorded more than once: {dup}")
        neg = sorted(i for i in ids if i < 0)
        if neg:
            p.append(f"{kind} with negative ids: {neg}")
        for i in ids:
            n = answered[kind].get(i, 0)
            if n != 1:
                p.append(f"{kind} id {i} has {n} results (expected exactly 1)")
        orphans = sorted(i for i in answered[kind] if i not in ids)
        if orphans:
            p.append(f"results for unknown {kind} ids: {orphans}")
    return p


def assert_exactly_once(
    instances: Mapping[str, Stored], ids: Iterable[str], expected: Mapping[str, int], label: str
) -> None:
    bad: list[str] = []
    ids = list(ids)
    for iid in ids:
        inst = instances.get(iid)
        if inst is None:
            bad.append(f"{label} {iid}: not in the store")
            continue
        problems = exactly_once_problems(inst, expected)
        if problems:
            bad.append(f"{label} {iid}: " + "; ".join(problems) + "\n" + inst.describe())
    assert not bad, f"{len(bad)} of {len(ids)} {label} histories are not exactly-once:\n" + "\n\n".join(
        bad[:5]
    )


def _now_micros() -> int:
    import time

    return time.time_ns() // 1000


def unfinished_report(db: Any, app_id: str, instance_ids: list[str], limit: int = 8) -> str:
    """Why instances are not terminal: their lease, queued messages and activities, history."""
    now = _now_micros()
    docs = list(
        db.instances.find(
            {"app_id": app_id, "instance_id": {"$in": instance_ids}, "status": {"$nin": TERMINAL}},
            {"state": 0},
        )
    )
    found = {
        d["instance_id"] for d in db.instances.find({"app_id": app_id, "instance_id": {"$in": instance_ids}})
    }
    missing = [i for i in instance_ids if i not in found]
    lines = [f"{len(docs)} of {len(instance_ids)} {app_id} instances not terminal; missing: {missing[:10]}"]
    stored = load_instances(db, app_id, [d["instance_id"] for d in docs[:limit]])
    for d in docs[:limit]:
        until = d.get("lease_until")
        lease = (
            f"lease_owner={d.get('lease_owner')} lease_until=now{(until - now) / 1e6:+.1f}s"
            if until
            else "unleased"
        )
        key = {"app_id": app_id, "instance_id": d["instance_id"]}
        inbox = [
            f"seq={m['seq']} gate={m.get('gate')} "
            + (
                f"visible_at=now{(m['visible_at'] - now) / 1e6:+.1f}s"
                if m.get("visible_at")
                else "visible_at=0"
            )
            for m in sorted([*db.inbox.find(key, {"event": 0}), *d.get("inline", [])], key=lambda m: m["seq"])
        ]
        acts = [
            f"owner={a.get('lease_owner')} until={a.get('lease_until')}"
            for a in db.activities.find({"parent_app": app_id, "parent_id": d["instance_id"]}, {"request": 0})
        ] + [f"held owner={a.get('lease_owner')} until={a.get('lease_until')}" for a in d.get("pending", [])]
        lines.append(
            f"- {d['instance_id']}: status={d['status']} generation={d.get('generation')} {lease}; "
            f"inbox={inbox} activities={acts}"
        )
        if d["instance_id"] in stored:
            lines.append(stored[d["instance_id"]].describe())
    return "\n".join(lines)


def wait_all_terminal(db: Any, app_id: str, instance_ids: list[str], timeout: float, what: str) -> None:
    """Poll MongoDB until every instance is terminal; on timeout fail with the evidence."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if count_terminal(db, app_id, instance_ids) == len(instance_ids):
                return
        except Exception:  # the database may be coming back
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}:\n"
                + unfinished_report(db, app_id, instance_ids)
            )
        time.sleep(1.0)
