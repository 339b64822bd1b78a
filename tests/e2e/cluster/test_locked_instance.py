"""A server SIGKILLed inside a MongoDB transaction leaves that transaction open on mongod
until transactionLifetimeLimitSeconds (60 s by default) runs out. A later single-document
write to a document it touched waits for it. Such a wait on one instance must not hold
up the other workflows of the app on the replicas that are still alive.

The test opens that transaction itself (pymongo, one update on one instance's document,
never committed) instead of killing a server at exactly the right moment, so the situation
is the same every time. Two replicas of `orders` share the database.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.e2e.cluster.common import (
    COMPLETED,
    load_instances,
    mongo_client,
    new_database_name,
    start_worker,
    store_url,
    unfinished_report,
    wait_all_terminal,
)
from tests.e2e.dapr.support import workflow_client
from tests.e2e.harness import Server, wait_until

pytestmark = pytest.mark.timeout(180)

LEASE_SECONDS = "3"
# A correct server finishes the unrelated workflows in a second or two; this bound is
# generous for a slow CI machine and still far below the 60 s an open transaction lives.
OTHERS_DEADLINE = 20.0


def test_an_instance_locked_by_an_open_transaction_does_not_stall_other_workflows(mongodb_base_url, tmp_path):
    db_name = new_database_name("cluster_locked")
    url = store_url(mongodb_base_url, db_name)
    args = ["--lease-seconds", LEASE_SECONDS]
    servers = [Server({"orders": None}, store=url, extra_args=args, name=f"{db_name}-s{i}") for i in (1, 2)]
    count_file = tmp_path / "activities.log"
    mongo = mongo_client(mongodb_base_url)
    db = mongo[db_name]

    with contextlib.ExitStack() as stack:
        for srv in servers:
            stack.enter_context(srv)
        for i, srv in enumerate(servers, 1):
            stack.enter_context(start_worker(srv.port("orders"), "orders", f"{db_name}-w{i}", count_file))
        c1 = stack.enter_context(workflow_client(servers[0].port("orders")))

        locked = "locked-0"
        c1.schedule_new_workflow("timer_wf", input={"id": locked, "seconds": 2}, instance_id=locked)
        wait_until(
            lambda: any(
                e.HasField("timerCreated") for e in load_instances(db, "orders", [locked])[locked].events
            ),
            timeout=30,
            message=f"{locked} to wait on its timer",
        )

        # What a server killed in the middle of a commit leaves behind: an open transaction
        # that wrote the instance's document.
        session = mongo.start_session()
        session.start_transaction()
        try:
            db.instances.update_one(
                {"app_id": "orders", "instance_id": locked}, {"$set": {"probe": 1}}, session=session
            )
            time.sleep(3)  # the timer of `locked` is due now: the servers try to lease it

            others = [f"other-{k}" for k in range(6)]
            t0 = time.monotonic()
            for k, iid in enumerate(others):
                with workflow_client(servers[k % 2].port("orders")) as client:
                    client.schedule_new_workflow(
                        "timer_wf", input={"id": iid, "seconds": 0.2}, instance_id=iid
                    )
            try:
                wait_all_terminal(
                    db,
                    "orders",
                    others,
                    timeout=OTHERS_DEADLINE,
                    what="workflows unrelated to the locked instance to finish while it is locked",
                )
            except AssertionError as e:
                raise AssertionError(
                    f"{e}\n\nThe locked instance:\n{unfinished_report(db, 'orders', [locked])}"
                ) from None
            print(f"\nunrelated workflows finished in {time.monotonic() - t0:.1f}s while {locked} was locked")
        finally:
            session.abort_transaction()
            session.end_session()

        # Once the transaction is gone the locked instance goes on too.
        wait_all_terminal(db, "orders", [locked], timeout=60, what=f"{locked} to finish after the unlock")
        instances = load_instances(db, "orders", [locked, *others])
        for iid, inst in instances.items():
            assert inst.status == COMPLETED and inst.output() == [f"before:{iid}", f"after:{iid}"], (
                inst.describe()
            )
