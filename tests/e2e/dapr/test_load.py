"""Load-ish scenarios: many instances at once, competing workers on one app, big payloads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dapr.ext.workflow import when_all

from tests.e2e.dapr.support import assert_completed, running_runtime, uid, workflow_client
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(180)


def add_one(ctx, x):
    return x + 1


def blob(ctx, n):
    return "y" * n


def busy_wf(ctx, x):
    a = yield ctx.call_activity(add_one, input=x)
    yield ctx.create_timer(timedelta(milliseconds=100))
    bs = yield when_all([ctx.call_activity(add_one, input=a + i) for i in range(3)])
    return sum(bs)


def big_payload_wf(ctx, inp):
    out = yield ctx.call_activity(blob, input=inp["n"])
    return {"in": len(inp["data"]), "out": len(out)}


def expected(x: int) -> int:
    a = x + 1
    return sum(a + i + 1 for i in range(3))


def test_fifty_concurrent_instances():
    with (
        Server(["load"]) as srv,
        running_runtime(srv.port(), [busy_wf], [add_one]),
        workflow_client(srv.port()) as client,
    ):
        ids = {
            client.schedule_new_workflow(busy_wf, input=i, instance_id=uid(f"busy{i}")): i for i in range(50)
        }
        for iid, x in ids.items():
            assert assert_completed(client, iid, timeout=120) == expected(x), iid


def test_two_competing_workers_on_one_app():
    with (
        Server(["shared"]) as srv,
        running_runtime(srv.port(), [busy_wf], [add_one]),
        running_runtime(srv.port(), [busy_wf], [add_one]),
        workflow_client(srv.port()) as client,
    ):
        ids = {
            client.schedule_new_workflow(busy_wf, input=i, instance_id=uid(f"comp{i}")): i for i in range(30)
        }
        for iid, x in ids.items():
            assert assert_completed(client, iid, timeout=120) == expected(x), iid


def test_megabyte_payloads():
    with (
        Server(["big"], max_payload_bytes=16 * 1024 * 1024) as srv,
        running_runtime(srv.port(), [big_payload_wf], [blob]),
        workflow_client(srv.port()) as client,
    ):
        data = "x" * (1024 * 1024)
        iid = client.schedule_new_workflow(
            big_payload_wf, input={"data": data, "n": 1024 * 1024}, instance_id=uid("big")
        )
        assert assert_completed(client, iid) == {"in": 1024 * 1024, "out": 1024 * 1024}
