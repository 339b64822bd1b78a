"""Scale-out: three server processes on one MongoDB database.

S1 and S2 both host app `orders` (replicas), S3 hosts `payments`. One `orders` worker is
connected to S1, another to S2, a `payments` worker to S3 (each a subprocess). Workflows
are started alternately through S1 and S2; each runs an activity on orders, an activity on
payments, a durable timer and a child workflow on payments. All must complete with the
right output, every history (parent and child) must be exactly-once, and both orders
replicas must have done part of the work.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from dapr.ext.workflow import WorkflowStatus

from tests.e2e.cluster.common import (
    COMPLETED,
    assert_exactly_once,
    load_instances,
    mongo_client,
    new_database_name,
    read_counts,
    start_worker,
    store_url,
    wait_all_terminal,
)
from tests.e2e.dapr.support import describe, workflow_client
from tests.e2e.harness import Server

# 500 workflows (about 3,500 workflow turns and 1,500 activities across three servers)
# finished in about 31 s (35 s for the whole test) on a 2-core machine. CLUSTER_SCALE_N overrides the count.
N = int(os.environ.get("CLUSTER_SCALE_N", "500"))
LEASE_SECONDS = "3"

pytestmark = pytest.mark.timeout(420)

PARENT_EVENTS = {
    "executionStarted": 1,
    "taskScheduled": 2,
    "taskCompleted": 2,
    "timerCreated": 1,
    "timerFired": 1,
    "childWorkflowInstanceCreated": 1,
    "childWorkflowInstanceCompleted": 1,
    "executionCompleted": 1,
}
CHILD_EVENTS = {
    "executionStarted": 1,
    "taskScheduled": 1,
    "taskCompleted": 1,
    "executionCompleted": 1,
}


def test_two_orders_replicas_and_a_payments_server_share_one_database(mongodb_base_url, tmp_path):
    db_name = new_database_name("cluster_scale")
    url = store_url(mongodb_base_url, db_name)
    # Not --log-level debug: that turns on pymongo's command logging too (about 150 KB of
    # log per workflow per server). The workers record every turn and activity they run,
    # and each worker is connected to one server, which shows the share of each replica.
    common = {"store": url, "extra_args": ["--lease-seconds", LEASE_SECONDS]}
    s1 = Server({"orders": None}, name=f"{db_name}-s1-orders", **common)
    s2 = Server({"orders": None}, name=f"{db_name}-s2-orders", **common)
    s3 = Server({"payments": None}, name=f"{db_name}-s3-payments", **common)
    count_file = tmp_path / "activities.log"
    mongo = mongo_client(mongodb_base_url)
    db = mongo[db_name]

    with contextlib.ExitStack() as stack:
        for srv in (s1, s2, s3):
            stack.enter_context(srv)
        stack.enter_context(start_worker(s1.port("orders"), "orders", "w1-orders", count_file))
        stack.enter_context(start_worker(s2.port("orders"), "orders", "w2-orders", count_file))
        stack.enter_context(start_worker(s3.port("payments"), "payments", "w3-payments", count_file))
        c1 = stack.enter_context(workflow_client(s1.port("orders")))
        c2 = stack.enter_context(workflow_client(s2.port("orders")))

        t0 = time.monotonic()
        ids = [f"order-{n:04d}" for n in range(N)]

        def schedule(n: int) -> str:
            client = c1 if n % 2 == 0 else c2  # alternately through each orders replica
            return client.schedule_new_workflow("order_wf", input=n, instance_id=ids[n])

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(schedule, range(N))) == ids
        scheduled = time.monotonic() - t0

        # Wait on the database (not N long-polls): every instance terminal.
        wait_all_terminal(db, "orders", ids, timeout=300, what=f"all {N} workflows to finish")
        elapsed = time.monotonic() - t0
        print(f"\n{N} workflows: scheduled in {scheduled:.1f}s, all finished after {elapsed:.1f}s")

        # A few outputs through the SDK, from both replicas.
        for client, iid in ((c1, ids[0]), (c2, ids[-1]), (c2, ids[N // 2]), (c1, ids[N // 3])):
            st = client.get_workflow_state(iid, fetch_payloads=True)
            assert st is not None and st.runtime_status == WorkflowStatus.COMPLETED, describe(st)
        assert all(s.running for s in (s1, s2, s3)), "a server died during the run"

    # ---- every output, and every history exactly once (read straight from MongoDB)
    parents = load_instances(db, "orders", ids)
    wrong = []
    for n, iid in enumerate(ids):
        inst = parents.get(iid)
        want = {"n": n, "a": f"reserved:{n}", "p": f"charged:{n}", "c": {"receipt": f"receipt:{n}"}}
        got = inst.output() if inst else None
        if inst is None or inst.status != COMPLETED or got != want:
            wrong.append(inst.describe() if inst else f"{iid}: missing")
    assert not wrong, f"{len(wrong)} workflows did not complete with the right output:\n" + "\n".join(
        wrong[:5]
    )
    assert_exactly_once(parents, ids, PARENT_EVENTS, "orders workflow")

    child_ids = []
    for iid in ids:
        created = [e for e in parents[iid].events if e.HasField("childWorkflowInstanceCreated")]
        child_ids.append(created[0].childWorkflowInstanceCreated.instanceId)
    assert len(set(child_ids)) == N, "two parents share a child instance ID"
    children = load_instances(db, "payments", child_ids)
    assert_exactly_once(children, child_ids, CHILD_EVENTS, "payments child")
    assert db.instances.count_documents({"app_id": "payments"}) == N, "unexpected extra payments instances"
    assert db.instances.count_documents({"app_id": "orders"}) == N, "unexpected extra orders instances"
    # Nothing left behind: no message or activity still queued.
    assert db.inbox.count_documents({}) == 0, list(db.inbox.find({}, {"event": 0}).limit(5))
    held = {"inline.0": {"$exists": True}}  # messages held in instance documents
    assert db.instances.count_documents(held) == 0, list(db.instances.find(held, {"inline": 1}).limit(5))
    assert db.activities.count_documents({}) == 0, list(db.activities.find({}, {"request": 0}).limit(5))

    # ---- every activity ran (at least once), on the app it belongs to
    rows = read_counts(count_file)
    ran = Counter((activity, key) for _, activity, key in rows)
    for n in range(N):
        for activity in ("reserve", "charge", "receipt"):
            assert ran[(activity, str(n))] >= 1, f"{activity}({n}) never ran"
    by_worker = Counter((worker, activity) for worker, activity, _ in rows)
    assert {w for (w, a) in by_worker if a in ("charge", "receipt", "settle-turn")} == {"w3-payments"}
    assert {w for (w, a) in by_worker if a in ("reserve", "order_wf-turn")} <= {"w1-orders", "w2-orders"}

    # ---- both orders replicas did work: workflow turns and activities on each
    turns = {w: by_worker[(w, "order_wf-turn")] for w in ("w1-orders", "w2-orders")}
    reserves = {w: by_worker[(w, "reserve")] for w in ("w1-orders", "w2-orders")}
    print(f"orders turns per worker {turns}, reserve runs per worker {reserves}")
    for share in (turns, reserves):
        total = sum(share.values())
        assert min(share.values()) >= 0.1 * total, f"one orders replica did (almost) nothing: {share}"
