"""A real 3-member replica set loses its primary (kill -9) in the middle of a load.

Three `orders` servers on one database of a 3-member replica set of this test's own (the
session's mongod is a single node), a Python SDK worker on each. Half the workflows are
started, the primary is killed once some have finished, and the other half is started
during the election (a start that fails while there is no primary is retried with the same
instance ID, as a client would). Then:
- another member is elected primary (in a later term), and no server exits;
- every workflow whose start was acknowledged is in the store, completed, with the right
  output (nothing acknowledged is lost: majority writes survive the loss of one member);
- every history is exactly-once: no duplicated and no missing events.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from pymongo import MongoClient

from tests.e2e.cluster.common import (
    COMPLETED,
    assert_exactly_once,
    count_terminal,
    load_instances,
    mongo_client,
    read_counts,
    start_worker,
    store_url,
    wait_all_terminal,
)
from tests.e2e.cluster.replica_set import ReplicaSet
from tests.e2e.dapr.support import workflow_client
from tests.e2e.harness import Server

N = int(os.environ.get("CLUSTER_FAILOVER_N", "300"))
STEPS = 3
LEASE_SECONDS = "3"
EXPECTED = {
    "executionStarted": 1,
    "taskScheduled": STEPS,
    "taskCompleted": STEPS,
    "timerCreated": 1,
    "timerFired": 1,
    "executionCompleted": 1,
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def replica_set() -> Iterator[ReplicaSet]:
    rs = ReplicaSet.create()
    try:
        yield rs
    finally:
        rs.destroy()


@pytest.fixture
def rs_client(replica_set: ReplicaSet) -> Iterator[MongoClient[dict[str, Any]]]:
    client = mongo_client(replica_set.url)  # closed before the members are killed
    try:
        yield client
    finally:
        client.close()


def _start(port: int, iid: str, deadline: float) -> str:
    """Starts one workflow; retried with the same ID while the database has no primary.
    ALREADY_EXISTS after a failed attempt means that attempt was committed after all."""
    arg = {"id": iid, "steps": STEPS, "sleep_min_ms": 0, "sleep_max_ms": 5}
    failed = False
    while True:
        try:
            with workflow_client(port) as client:
                return client.schedule_new_workflow("chain_wf", input=arg, instance_id=iid)
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if failed and code == grpc.StatusCode.ALREADY_EXISTS:
                return iid
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise AssertionError(f"starting {iid}: {code} {e.details()}") from e  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise
            failed = True
            time.sleep(0.5)


def test_primary_killed_mid_load(
    replica_set: ReplicaSet, rs_client: MongoClient[dict[str, Any]], tmp_path
) -> None:
    db_name = "cluster_failover"
    url = store_url(replica_set.url, db_name)
    servers = [
        Server(
            {"orders": None},
            store=url,
            extra_args=["--lease-seconds", LEASE_SECONDS],
            name=f"failover-{tmp_path.name}-s{i}",
        )
        for i in (1, 2, 3)
    ]
    count_file = tmp_path / "activities.log"
    db = rs_client[db_name]
    ids = [f"failover-{k:04d}" for k in range(N)]
    first, second = ids[: N // 2], ids[N // 2 :]

    with contextlib.ExitStack() as stack, ThreadPoolExecutor(8) as pool:
        for srv in servers:
            stack.enter_context(srv)
        for i, srv in enumerate(servers, 1):
            stack.enter_context(start_worker(srv.port("orders"), "orders", f"w{i}-failover", count_file))

        deadline = time.monotonic() + 120
        acked = list(
            pool.map(lambda kv: _start(servers[kv[0] % 3].port("orders"), kv[1], deadline), enumerate(first))
        )
        assert acked == first

        # Mid-load: kill -9 the primary once some workflows have finished, others are running.
        while count_terminal(db, "orders", first) < N // 10:
            time.sleep(0.2)
        done_before = count_terminal(db, "orders", first)
        old = replica_set.primary()
        assert old is not None, "no primary before the kill"
        term_before = replica_set.term(old)
        replica_set.kill(old)
        t_kill = time.monotonic()
        # The second half starts while the set has no primary or has just elected one.
        starting = pool.map(
            lambda kv: _start(servers[kv[0] % 3].port("orders"), kv[1], time.monotonic() + 120),
            enumerate(second),
        )
        new = replica_set.wait_for_primary(exclude=old)
        elected = time.monotonic() - t_kill
        assert new is not old and new.alive()
        assert replica_set.term(new) > term_before, "the new primary was not elected in a new term"
        assert list(starting) == second

        wait_all_terminal(db, "orders", ids, timeout=150, what=f"all {N} workflows after the failover")
        print(
            f"\nprimary m{old.index} killed with {done_before}/{N} finished; m{new.index} primary after "
            f"{elected:.1f}s; all done {time.monotonic() - t_kill:.1f}s after the kill"
        )
        assert all(s.running for s in servers), "a server exited across the failover"

    instances = load_instances(db, "orders", ids)
    wrong = []
    for iid in ids:
        inst = instances.get(iid)
        want = {"id": iid, "steps": [f"s{i}" for i in range(STEPS)]}
        if inst is None or inst.status != COMPLETED or inst.output() != want:
            wrong.append(inst.describe() if inst else f"{iid}: missing")
    assert not wrong, f"{len(wrong)} of {N} acknowledged workflows did not complete right:\n" + "\n".join(
        wrong[:5]
    )
    assert_exactly_once(instances, ids, EXPECTED, "chain workflow")
    ran = {key for _, activity, key in read_counts(count_file) if activity == "step"}
    assert ran >= {f"{iid}#{i}" for iid in ids for i in range(STEPS)}
