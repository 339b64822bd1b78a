"""MongoDB goes away mid-run and comes back: two `orders` replicas on a mongod of this
test's own (the session's mongod is shared by the other tests and cannot be restarted
on the same data), with workflows waiting on durable timers, some due during the outage.

mongod is stopped (SIGTERM, or SIGKILL: an unclean stop, recovered from the journal)
for at least 3 s and started again on the same port and data directory. Meanwhile a
client call gets UNAVAILABLE. The servers must ride it out (keep running), answer again
once it is back, every workflow must complete with the right output and an exactly-once
history, and new workflows must run afterwards.
"""

from __future__ import annotations

import contextlib
import time

import grpc
import pytest

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
from tests.e2e.cluster.restartable_mongod import RestartableMongod
from tests.e2e.dapr.support import workflow_client
from tests.e2e.harness import Server, wait_until

pytestmark = pytest.mark.timeout(240)

LEASE_SECONDS = "3"
N = 30
OUTAGE_SECONDS = 3.0
EXPECTED = {
    "executionStarted": 1,
    "taskScheduled": 2,
    "taskCompleted": 2,
    "timerCreated": 1,
    "timerFired": 1,
    "executionCompleted": 1,
}


@pytest.fixture
def own_mongod():
    server = RestartableMongod.create()
    try:
        yield server
    finally:
        server.destroy()


def _waiting_on_timer(db, ids: list[str]) -> int:
    instances = load_instances(db, "orders", ids)
    return sum(1 for inst in instances.values() if any(e.HasField("timerCreated") for e in inst.events))


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_workflows_complete_across_a_mongod_restart(own_mongod, how, tmp_path):
    db_name = f"cluster_mongod_{how}"
    url = store_url(own_mongod.url, db_name)
    args = ["--lease-seconds", LEASE_SECONDS]
    servers = [
        Server({"orders": None}, store=url, extra_args=args, name=f"{db_name}-{tmp_path.name}-s{i}")
        for i in (1, 2)
    ]
    count_file = tmp_path / "activities.log"
    mongo = mongo_client(own_mongod.url)
    db = mongo[db_name]

    with contextlib.ExitStack() as stack:
        for srv in servers:
            stack.enter_context(srv)
        for i, srv in enumerate(servers, 1):
            stack.enter_context(start_worker(srv.port("orders"), "orders", f"w{i}-orders-{how}", count_file))

        # Timers of 1, 3 and 5 s: some are due while mongod is down, some after.
        ids = [f"timer-{k:03d}" for k in range(N)]
        for k, iid in enumerate(ids):
            with workflow_client(servers[k % 2].port("orders")) as client:
                arg = {"id": iid, "seconds": 1 + 2 * (k % 3)}
                assert client.schedule_new_workflow("timer_wf", input=arg, instance_id=iid) == iid
        wait_until(
            lambda: _waiting_on_timer(db, ids) == N,
            timeout=60,
            interval=0.3,
            message="every workflow to reach its timer",
        )
        done_before = count_terminal(db, "orders", ids)

        own_mongod.stop(kill=(how == "sigkill"))
        t_down = time.monotonic()
        # While the database is unreachable, clients get UNAVAILABLE (after the
        # store's server-selection timeout), not a hang and not a crash.
        with workflow_client(servers[0].port("orders")) as client, pytest.raises(grpc.RpcError) as caught:
            client.get_workflow_state(ids[0])
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - t_down)))
        own_mongod.start()
        print(
            f"\nmongod {how}: down for {time.monotonic() - t_down:.1f}s; "
            f"{done_before}/{N} workflows had finished before the outage"
        )
        assert all(s.running for s in servers), "a server exited while MongoDB was down"
        with workflow_client(servers[0].port("orders")) as client:
            assert client.get_workflow_state(ids[0]) is not None  # served again

        wait_all_terminal(
            db, "orders", ids, timeout=90, what=f"all {N} workflows to finish after mongod came back"
        )
        print(f"all {N} finished {time.monotonic() - t_down:.1f}s after mongod went down")

        # New work after the outage, through both replicas.
        after = [f"after-{k}" for k in range(4)]
        for k, iid in enumerate(after):
            with workflow_client(servers[k % 2].port("orders")) as client:
                client.schedule_new_workflow("timer_wf", input={"id": iid, "seconds": 0.5}, instance_id=iid)
        wait_all_terminal(
            db, "orders", after, timeout=60, what="workflows started after the outage to finish"
        )
        assert all(s.running for s in servers), "a server exited after MongoDB came back"

    all_ids = ids + after
    instances = load_instances(db, "orders", all_ids)
    wrong = []
    for iid in all_ids:
        inst = instances.get(iid)
        want = [f"before:{iid}", f"after:{iid}"]
        if inst is None or inst.status != COMPLETED or inst.output() != want:
            wrong.append(inst.describe() if inst else f"{iid}: missing")
    assert not wrong, f"{len(wrong)} workflows did not complete right:\n" + "\n".join(wrong[:5])
    assert_exactly_once(instances, all_ids, EXPECTED, "timer workflow")
    ran = {key for _, activity, key in read_counts(count_file) if activity == "stamp"}
    assert ran >= {f"{iid}#{when}" for iid in all_ids for when in ("before", "after")}
