"""Crash takeover loop: two replicas of app `orders` on one database, `--lease-seconds 3`.

One worker per replica (subprocesses; they reconnect by themselves after a restart).
Workflows chain several sleeping activities (with a short timer half-way). While they run,
one of the two servers is SIGKILLed at a random moment, at least KILLS times, and restarted
on the same ports and database at once; which server dies is random. A few new workflows
are started on every round so that there is always work in flight (and leases held) when a
server dies. A dead server's leases expire after 3 s and the other replica (or the restarted
process) takes the work over.

Every workflow must complete with the right output, and every history must be exactly-once:
each TaskScheduled id recorded once with exactly one result. Activities may run more than
once (at-least-once delivery); the test counts executions and asserts each ran at least once.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter

import pytest

from tests.e2e.cluster.common import (
    COMPLETED,
    assert_exactly_once,
    count_terminal,
    load_instances,
    mongo_client,
    new_database_name,
    read_counts,
    start_worker,
    store_url,
    wait_all_terminal,
)
from tests.e2e.dapr.support import workflow_client
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(360)

LEASE_SECONDS = 3
KILLS = int(os.environ.get("CLUSTER_KILLS", "20"))
INITIAL = 40  # workflows started before the first kill
PER_ROUND = 3  # more started on every round, so that work is always in flight
STEPS = 6
SLEEP_MS = (200, 500)

EXPECTED = {
    "executionStarted": 1,
    "taskScheduled": STEPS,
    "taskCompleted": STEPS,
    "timerCreated": 1,
    "timerFired": 1,
    "executionCompleted": 1,
}


def _held_leases(db) -> dict[str, int]:
    now = time.time_ns() // 1000
    live = {"lease_owner": {"$ne": None}, "lease_until": {"$gt": now}}
    # Activities leased at their turn's commit may be held in the parent (store/mongo/held.py).
    held = {"pending": {"$elemMatch": {"lease_until": {"$gt": now}}}}
    held_owners = {
        p["lease_owner"]
        for d in db.instances.find(held, {"pending": 1})
        for p in d["pending"]
        if p["lease_until"] > now
    }
    return {
        "instances": db.instances.count_documents(live),
        "activities": db.activities.count_documents(live) + db.instances.count_documents(held),
        "owners": len(
            set(db.instances.distinct("lease_owner", live))
            | set(db.activities.distinct("lease_owner", live))
            | held_owners
        ),
    }


def test_replicas_take_over_from_a_sigkilled_server_again_and_again(mongodb_base_url, tmp_path):
    seed = int(os.environ.get("CLUSTER_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    print(f"\nseed={seed} (CLUSTER_SEED to replay the kill schedule)")

    db_name = new_database_name("cluster_crash")
    url = store_url(mongodb_base_url, db_name)
    args = ["--lease-seconds", str(LEASE_SECONDS)]
    servers = [
        Server({"orders": None}, store=url, extra_args=args, name=f"{db_name}-s{i}-orders") for i in (1, 2)
    ]
    count_file = tmp_path / "activities.log"
    mongo = mongo_client(mongodb_base_url)
    db = mongo[db_name]
    ids: list[str] = []
    kills: list[str] = []

    def start_some(count: int) -> None:
        for _ in range(count):
            iid = f"chain-{len(ids):04d}"
            arg = {"id": iid, "steps": STEPS, "sleep_min_ms": SLEEP_MS[0], "sleep_max_ms": SLEEP_MS[1]}
            srv = servers[len(ids) % 2]
            with workflow_client(srv.port("orders")) as client:
                assert client.schedule_new_workflow("chain_wf", input=arg, instance_id=iid) == iid
            ids.append(iid)

    with contextlib.ExitStack() as stack:
        for srv in servers:
            stack.enter_context(srv)
        for i, srv in enumerate(servers, 1):
            stack.enter_context(start_worker(srv.port("orders"), "orders", f"w{i}-orders", count_file))

        start_some(INITIAL)
        t0 = time.monotonic()
        for round_no in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            victim_no = rng.randrange(2)
            victim = servers[victim_no]
            held = _held_leases(db)
            victim.kill()
            kills.append(
                f"round {round_no}: SIGKILL s{victim_no + 1} at {time.monotonic() - t0:.1f}s, "
                f"leases held then (all owners): {held}, "
                f"finished {count_terminal(db, 'orders', ids)}/{len(ids)}"
            )
            victim.start()  # same ports, same database
            start_some(PER_ROUND)
        loop_time = time.monotonic() - t0
        print("\n".join(kills))
        print(f"{KILLS} kills in {loop_time:.1f}s; {len(ids)} workflows")

        # 180 s, not a few lease periods: a server SIGKILLed inside a MongoDB transaction leaves
        # it open on mongod until transactionLifetimeLimitSeconds (60 s); a claim on a document
        # that transaction wrote waits for it, and with it the whole lease round of the
        # replica that tried (seen: all dispatching paused for about 70 s after the loop).
        wait_all_terminal(
            db, "orders", ids, timeout=180, what=f"all {len(ids)} workflows to finish after the kill loop"
        )
        print(f"all finished {time.monotonic() - t0:.1f}s after the first kill")
        assert all(s.running for s in servers), "a server died by itself"

    # Enough kills must have hit while work was leased, or the loop proved nothing. (Not
    # most of them: while the dispatchers are stalled behind a dead server's open
    # transaction, see below, nothing is leased at all.)
    hits = sum(1 for k in kills if "'instances': 0, 'activities': 0" not in k)
    assert hits >= KILLS // 4, f"only {hits} of {KILLS} kills happened while leases were held"

    instances = load_instances(db, "orders", ids)
    wrong = []
    for iid in ids:
        inst = instances.get(iid)
        want = {"id": iid, "steps": [f"s{i}" for i in range(STEPS)]}
        if inst is None or inst.status != COMPLETED or inst.output() != want:
            wrong.append(inst.describe() if inst else f"{iid}: missing")
    assert not wrong, f"{len(wrong)} workflows did not complete right:\n" + "\n".join(wrong[:5])
    assert_exactly_once(instances, ids, EXPECTED, "chain workflow")
    assert db.inbox.count_documents({}) == 0, list(db.inbox.find({}, {"event": 0}).limit(5))
    held = {"inline.0": {"$exists": True}}  # messages held in instance documents
    assert db.instances.count_documents(held) == 0, list(db.instances.find(held, {"inline": 1}).limit(5))
    assert db.activities.count_documents({}) == 0, list(db.activities.find({}, {"request": 0}).limit(5))

    rows = read_counts(count_file)
    ran = Counter(key for _, activity, key in rows if activity == "step")
    missing = [f"{iid}#{i}" for iid in ids for i in range(STEPS) if ran[f"{iid}#{i}"] < 1]
    assert not missing, f"activities never ran: {missing[:10]}"
    needed = len(ids) * STEPS
    extra = sum(ran.values()) - needed
    by_worker = Counter(worker for worker, activity, _ in rows if activity == "step")
    print(
        f"{needed} activity results applied, {sum(ran.values())} executions ({extra} re-runs), per worker {dict(by_worker)}"
    )
    assert sum(ran.values()) >= needed
