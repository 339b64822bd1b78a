"""A dapr.ext.workflow worker for the multi-replica (cluster) tests, run as a subprocess.

    python cluster_worker.py --port PORT --app orders|payments --name NAME --count-file FILE

Each process is one WorkflowRuntime connected to one server port; several processes may
serve the same app ID through different servers (replicas). Every activity execution
appends one line `<worker name> <activity> <key> <unix time>` to --count-file (O_APPEND, one small
write per line, so concurrent writers do not interleave), which lets a test count
executions (at-least-once) and see which worker did the work.

Prints `worker-ready` once the work-item stream is open; SIGTERM shuts it down.

app `orders`:
    order_wf(n)   reserve(n) on orders -> charge(n) on payments -> 1 s timer
                  -> child settle(n) on payments; returns all three results
    chain_wf({id, steps, sleep_ms})
                  `steps` chained `step` activities (each sleeps), a 0.5 s timer half-way
    timer_wf({id, seconds})
                  stamp(id, "before") -> timer -> stamp(id, "after")
app `payments`:
    charge(n), settle(n) -> receipt(n)
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import signal
import threading
import time
from datetime import timedelta

from dapr.ext.workflow import WorkflowRuntime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True)
    ap.add_argument("--app", choices=["orders", "payments"], required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--count-file", required=True)
    args = ap.parse_args()
    name = args.name
    fd = os.open(args.count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(activity: str, key: object) -> None:
        os.write(fd, f"{name} {activity} {key} {time.time():.3f}\n".encode())

    # ------------------------------------------------------------------ orders

    def reserve(ctx, n):
        record("reserve", n)
        return f"reserved:{n}"

    def order_wf(ctx, n):
        # A side effect in workflow code on purpose: one line per turn this worker ran
        # (replays included), so a test can see which replica's worker got the turns.
        record("order_wf-turn", n)
        a = yield ctx.call_activity("reserve", input=n)
        p = yield ctx.call_activity("charge", input=n, app_id="payments")
        yield ctx.create_timer(timedelta(seconds=1))
        c = yield ctx.call_child_workflow("settle", input=n, app_id="payments")
        return {"n": n, "a": a, "p": p, "c": c}

    def step(ctx, arg):
        record("step", f"{arg['id']}#{arg['i']}")
        time.sleep(random.uniform(arg["sleep_min_ms"], arg["sleep_max_ms"]) / 1000.0)
        return arg["acc"] + [f"s{arg['i']}"]

    def chain_wf(ctx, arg):
        acc: list[str] = []
        steps = int(arg["steps"])
        for i in range(steps):
            if i == steps // 2:
                yield ctx.create_timer(timedelta(seconds=0.5))
            acc = yield ctx.call_activity(
                "step",
                input={
                    "id": arg["id"],
                    "i": i,
                    "acc": acc,
                    "sleep_min_ms": arg["sleep_min_ms"],
                    "sleep_max_ms": arg["sleep_max_ms"],
                },
            )
        return {"id": arg["id"], "steps": acc}

    def stamp(ctx, arg):
        record("stamp", f"{arg['id']}#{arg['when']}")
        return f"{arg['when']}:{arg['id']}"

    def timer_wf(ctx, arg):
        before = yield ctx.call_activity("stamp", input={"id": arg["id"], "when": "before"})
        yield ctx.create_timer(timedelta(seconds=float(arg["seconds"])))
        after = yield ctx.call_activity("stamp", input={"id": arg["id"], "when": "after"})
        return [before, after]

    # ---------------------------------------------------------------- payments

    def charge(ctx, n):
        record("charge", n)
        return f"charged:{n}"

    def receipt(ctx, n):
        record("receipt", n)
        return f"receipt:{n}"

    def settle(ctx, n):
        record("settle-turn", n)
        r = yield ctx.call_activity("receipt", input=n)
        return {"receipt": r}

    rt = WorkflowRuntime(host=args.host, port=str(args.port))
    if args.app == "orders":
        rt.register_workflow(order_wf, name="order_wf")
        rt.register_workflow(chain_wf, name="chain_wf")
        rt.register_workflow(timer_wf, name="timer_wf")
        rt.register_activity(reserve, name="reserve")
        rt.register_activity(step, name="step")
        rt.register_activity(stamp, name="stamp")
    else:
        rt.register_workflow(settle, name="settle")
        rt.register_activity(charge, name="charge")
        rt.register_activity(receipt, name="receipt")

    # `kill -USR1 <pid>` dumps every thread's stack into the worker's log (for debugging stalls).
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    rt.start()
    print(f"worker-ready app={args.app} name={name} pid={os.getpid()}", flush=True)
    stop.wait()
    rt.shutdown()
    os.close(fd)
    print("worker-stopped", flush=True)


if __name__ == "__main__":
    main()
