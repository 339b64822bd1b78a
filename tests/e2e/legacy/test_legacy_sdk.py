"""durabletask-dapr 0.17.4 (module `durabletask`) against `python -m backend serve`.

That SDK predates stateful history, sends the old GetWorkItems fields and only ever calls
CompleteOrchestratorTask, so it exercises the server's backwards-compatible paths.
Never import `backend` or `dapr.ext.workflow` in this process.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import grpc
import pytest
from durabletask import client as dt_client
from durabletask import task
from durabletask.worker import TaskHubGrpcWorker

from tests.e2e.harness import Server, wait_until

pytestmark = pytest.mark.timeout(120)

Status = dt_client.OrchestrationStatus
HOST = "127.0.0.1"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


_gate_lock = threading.Lock()
_gates: dict[str, threading.Event] = {}
_entered: dict[str, threading.Event] = {}


def _ev(table: dict[str, threading.Event], key: str) -> threading.Event:
    with _gate_lock:
        return table.setdefault(key, threading.Event())


# ---------------------------------------------------------------- activities


def lg_hello(ctx: task.ActivityContext, name):
    return f"Hello {name}!"


def lg_square(ctx, x):
    return x * x


def lg_gate(ctx, key):
    _ev(_entered, key).set()
    assert _ev(_gates, key).wait(90)
    return key


class LegacyBoom(Exception):
    pass


def lg_boom(ctx, msg):
    raise LegacyBoom(msg)


# ---------------------------------------------------------------- orchestrators


def lg_chain(ctx: task.OrchestrationContext, names):
    out = []
    for n in names:
        out.append((yield ctx.call_activity(lg_hello, input=n)))
    return out


def lg_fan_out(ctx, n):
    results = yield task.when_all([ctx.call_activity(lg_square, input=i) for i in range(n)])
    return results


def lg_timer(ctx, seconds):
    t0 = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - t0).total_seconds()


def lg_wait_event(ctx, name):
    v = yield ctx.wait_for_external_event(name)
    return v


def lg_events_after_gate(ctx, key):
    yield ctx.call_activity(lg_gate, input=key)
    a = yield ctx.wait_for_external_event("e")
    b = yield ctx.wait_for_external_event("e")
    return [a, b]


def lg_child(ctx, x):
    v = yield ctx.call_activity(lg_square, input=x)
    return {"id": ctx.instance_id, "v": v}


def lg_parent(ctx, xs):
    results = yield task.when_all([ctx.call_sub_orchestrator(lg_child, input=x) for x in xs])
    return results


def lg_waiting_child(ctx, _):
    ctx.set_custom_status("child-waiting")
    v = yield ctx.wait_for_external_event("go")
    return v


def lg_parent_of_waiters(ctx, n):
    results = yield task.when_all([ctx.call_sub_orchestrator(lg_waiting_child, input=i) for i in range(n)])
    return results


def lg_suspendable(ctx, _):
    ctx.set_custom_status("waiting")
    v = yield ctx.wait_for_external_event("go")
    r = yield ctx.call_activity(lg_hello, input=v)
    return r


def lg_can(ctx, inp):
    n, seen = inp["n"], inp["seen"]
    if n < inp["target"]:
        v = yield ctx.wait_for_external_event("tick")
        ctx.continue_as_new({"n": n + 1, "seen": [*seen, v], "target": inp["target"]}, save_events=True)
        return None
    return seen


def lg_fails(ctx, msg):
    yield ctx.call_activity(lg_boom, input=msg)
    return "unreachable"


def lg_catches(ctx, msg):
    try:
        yield ctx.call_activity(lg_boom, input=msg)
    except task.TaskFailedError as e:
        return {"type": e.details.error_type, "message": e.details.message}
    return "unreachable"


ORCHESTRATORS = [
    lg_chain,
    lg_fan_out,
    lg_timer,
    lg_wait_event,
    lg_events_after_gate,
    lg_child,
    lg_parent,
    lg_waiting_child,
    lg_parent_of_waiters,
    lg_suspendable,
    lg_can,
    lg_fails,
    lg_catches,
]
ACTIVITIES = [lg_hello, lg_square, lg_gate, lg_boom]


@pytest.fixture(scope="module")
def c():
    with Server(["legacy"]) as srv:
        worker = TaskHubGrpcWorker(host_address=srv.address())
        for o in ORCHESTRATORS:
            worker.add_orchestrator(o)
        for a in ACTIVITIES:
            worker.add_activity(a)
        worker.start()
        client = dt_client.TaskHubGrpcClient(host_address=srv.address())
        try:
            yield client
        finally:
            client.close()
            worker.stop()


def done(c, iid, timeout=60):
    st = c.wait_for_orchestration_completion(iid, timeout=timeout)
    assert st is not None, f"{iid} not found"
    return st


def describe(st) -> str:
    if st is None:
        return "<none>"
    fd = st.failure_details
    return f"{st.instance_id} {st.runtime_status} out={st.serialized_output!r} " + (
        f"failure=[{fd.error_type}] {fd.message}" if fd else ""
    )


def completed(c, iid, timeout=60):
    st = done(c, iid, timeout)
    assert st.runtime_status == Status.COMPLETED, describe(st)
    return None if st.serialized_output is None else json.loads(st.serialized_output)


def wait_custom_status(c, iid, value, timeout=30):
    def check():
        st = c.get_orchestration_state(iid)
        # This SDK passes a str custom status through unencoded.
        return st if st is not None and st.serialized_custom_status == value else None

    return wait_until(check, timeout=timeout, message=f"{iid} custom status {value!r}")


def wait_status(c, iid, status, timeout=30):
    return wait_until(
        lambda: (st := c.get_orchestration_state(iid)) is not None and st.runtime_status == status and st,
        timeout=timeout,
        message=f"{iid} status {status}",
    )


# ---------------------------------------------------------------- tests


def test_chaining(c):
    iid = c.schedule_new_orchestration(lg_chain, input=["a", "b", "c"], instance_id=uid("lchain"))
    assert completed(c, iid) == ["Hello a!", "Hello b!", "Hello c!"]


def test_fan_out_fan_in(c):
    iid = c.schedule_new_orchestration(lg_fan_out, input=50, instance_id=uid("lfan"))
    assert completed(c, iid) == [i * i for i in range(50)]


def test_durable_timer(c):
    iid = c.schedule_new_orchestration(lg_timer, input=2, instance_id=uid("ltimer"))
    assert completed(c, iid) >= 2.0


def test_external_event_while_waiting(c):
    iid = c.schedule_new_orchestration(lg_wait_event, input="approve", instance_id=uid("lev"))
    c.wait_for_orchestration_start(iid, timeout=30)
    c.raise_orchestration_event(iid, "approve", data={"ok": 1})
    assert completed(c, iid) == {"ok": 1}


def test_external_events_buffered_before_wait(c):
    key = uid("lbuf")
    iid = c.schedule_new_orchestration(lg_events_after_gate, input=key, instance_id=key)
    assert _ev(_entered, key).wait(30), "gate activity never started"
    c.raise_orchestration_event(iid, "e", data="first")
    c.raise_orchestration_event(iid, "e", data="second")
    _ev(_gates, key).set()
    assert completed(c, iid) == ["first", "second"]


def test_child_orchestrations(c):
    iid = uid("lparent")
    c.schedule_new_orchestration(lg_parent, input=[2, 3], instance_id=iid)
    assert completed(c, iid) == [
        {"id": f"{iid}:0001", "v": 4},
        {"id": f"{iid}:0002", "v": 9},
    ]
    st = c.get_orchestration_state(f"{iid}:0002")
    assert st is not None and st.runtime_status == Status.COMPLETED


def test_terminate_recursive(c):
    iid = c.schedule_new_orchestration(lg_parent_of_waiters, input=2, instance_id=uid("lterm"))
    kids = [f"{iid}:0001", f"{iid}:0002"]
    for k in kids:
        wait_custom_status(c, k, "child-waiting")
    c.terminate_orchestration(iid, output="bye", recursive=True)
    st = done(c, iid, 30)
    assert st.runtime_status == Status.TERMINATED, describe(st)
    for k in kids:
        kst = done(c, k, 30)
        assert kst.runtime_status == Status.TERMINATED, describe(kst)


def test_suspend_resume(c):
    iid = c.schedule_new_orchestration(lg_suspendable, instance_id=uid("lsusp"))
    wait_custom_status(c, iid, "waiting")
    c.suspend_orchestration(iid)
    wait_status(c, iid, Status.SUSPENDED)
    c.raise_orchestration_event(iid, "go", data="world")
    with pytest.raises(TimeoutError):
        c.wait_for_orchestration_completion(iid, timeout=2)
    assert c.get_orchestration_state(iid).runtime_status == Status.SUSPENDED
    c.resume_orchestration(iid)
    assert completed(c, iid) == "Hello world!"


def test_purge(c):
    iid = uid("lpurge")
    c.schedule_new_orchestration(lg_parent, input=[1], instance_id=iid)
    assert completed(c, iid) == [{"id": f"{iid}:0001", "v": 1}]
    c.purge_orchestration(iid, recursive=True)
    assert c.get_orchestration_state(iid) is None
    assert c.get_orchestration_state(f"{iid}:0001") is None


def test_purge_running_fails(c):
    iid = c.schedule_new_orchestration(lg_suspendable, instance_id=uid("lpurgerun"))
    wait_custom_status(c, iid, "waiting")
    with pytest.raises(grpc.RpcError):
        c.purge_orchestration(iid)
    assert c.get_orchestration_state(iid) is not None
    c.terminate_orchestration(iid)
    assert done(c, iid, 30).runtime_status == Status.TERMINATED
    c.purge_orchestration(iid)
    assert c.get_orchestration_state(iid) is None


def test_continue_as_new(c):
    iid = c.schedule_new_orchestration(
        lg_can, input={"n": 0, "seen": [], "target": 3}, instance_id=uid("lcan")
    )
    c.wait_for_orchestration_start(iid, timeout=30)
    for i in range(3):
        c.raise_orchestration_event(iid, "tick", data=i + 1)
    assert completed(c, iid) == [1, 2, 3]


def test_failure_details(c):
    msg = uid("lboom")
    iid = c.schedule_new_orchestration(lg_fails, input=msg, instance_id=uid("lfail"))
    st = done(c, iid)
    assert st.runtime_status == Status.FAILED, describe(st)
    assert st.failure_details is not None
    assert st.failure_details.error_type == "TaskFailedError"
    assert msg in st.failure_details.message

    iid2 = c.schedule_new_orchestration(lg_catches, input=msg, instance_id=uid("lcatch"))
    assert completed(c, iid2) == {"type": "LegacyBoom", "message": msg}


def test_unknown_instance_is_none(c):
    assert c.get_orchestration_state(uid("lnone")) is None
